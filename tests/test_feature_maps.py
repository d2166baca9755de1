"""Feature maps, Grad-CAM and attributions: shapes, hand-worked cases, and captum / plain PyTorch as oracles."""
from dataclasses import replace

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients
from torch import nn

from resviz import models
from resviz.inputs import weights
from resviz.lessons import feature_maps as fm
from resviz.pair import TrainedPair


def tiny(residual=True, **kw):
    cfg = models.ResNetConfig(block="basic", layers=(1, 2), widths=(4, 8), stem="cifar", stem_width=4,
                              input_size=16, num_classes=5, shortcut="B", residual=residual, **kw)
    model = models.build_model(cfg, seed=0).eval()
    for p in model.parameters():
        p.requires_grad_(False)  # like the app's shared model
    return model


@pytest.fixture
def x():
    return torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def stem(model, x):
    return model.relu(model.bn1(model.conv1(x)))


def test_block_names_in_depth_order():
    assert tiny().block_names() == ["layer1.0", "layer2.0", "layer2.1"]


def test_three_views_have_the_right_shapes_and_add_up(x):
    model = tiny()
    r = fm.capture(model, x, block=1, max_channels=5)
    assert r.block == "layer2.0" and r.n_channels == 8
    for view in (r.fx, r.x, r.out):
        assert view.shape == (5, 8, 8)  # 5 most active of 8 channels, stride 2 halves 16 -> 8
    np.testing.assert_allclose(r.out, np.maximum(r.fx + r.x, 0), atol=1e-6)  # relu(F(x) + x)
    # oracle: the block's output computed by hand, channels in the order returned
    with torch.no_grad():
        ref = model.layer2[0](model.layer1(stem(model, x)))[0].numpy()
    np.testing.assert_allclose(r.out, ref[r.channels], atol=1e-5)
    means = ref.mean(axis=(1, 2))
    assert list(r.channels) == list(np.argsort(-means)[:5])  # most active first


def test_zero_init_residual_blocks_pass_the_input_through(x):
    # Hand-worked: with the last BN's weight 0 (and bias 0), F(x) = 0, so relu(F(x) + x) = relu(x) = x.
    model = tiny(zero_init_residual=True)
    r = fm.capture(model, x, block=0)
    assert np.abs(r.fx).max() == 0
    np.testing.assert_allclose(r.out, r.x, atol=0)
    assert r.norms[0].fx == 0 and r.norms[0].out == pytest.approx(r.norms[0].x)


def test_plain_twin_has_no_shortcut_view(x):
    plain = models.plain_twin(tiny())
    r = fm.capture(plain, x, block=2)
    assert r.x is None and not r.residual
    np.testing.assert_allclose(r.out, np.maximum(r.fx, 0), atol=1e-6)
    assert r.norms[2].x is None and r.norms[2].fx > 0 and r.norms[2].out > 0


def test_shared_model_is_left_exactly_as_it_was(x):
    model = tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fm.capture(model, x)
    assert all(not p.requires_grad for p in model.parameters())
    assert all(not m._forward_hooks for m in model.modules())
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k])


def test_hooks_are_removed_even_when_the_forward_fails():
    model = tiny()
    with pytest.raises(RuntimeError):
        fm.capture(model, torch.zeros(1, 2, 16, 16), copy_model=False)  # 2 channels: conv1 fails
    assert all(not m._forward_hooks for m in model.modules())


@pytest.mark.parametrize("cam_block", [0, -1])
def test_grad_cam_matches_captum(x, cam_block):
    model = tiny()
    r = fm.capture(model, x, cam_block=cam_block, target=3)
    ref = fm.grad_cam(model, x, block=cam_block, target=3)
    assert r.cam.shape == (16, 16) and r.target == 3
    assert r.cam_lowres.shape == ((16, 16) if cam_block == 0 else (8, 8))
    assert r.cam.max() > 0
    np.testing.assert_allclose(r.cam, ref, rtol=1e-4, atol=1e-6)


def test_prediction_and_top_k(x):
    model = tiny()
    r = fm.capture(model, x, cam_block=None)
    with torch.no_grad():
        ref = torch.softmax(model(x), 1)[0].numpy()
    np.testing.assert_allclose(r.probs, ref, rtol=1e-5)
    assert r.target == int(ref.argmax()) and r.cam is None and r.cam_block is None
    top = fm.top_k(np.array([0.1, 0.6, 0.3]), ["cat", "dog", "fish"], k=2)
    assert top == [{"index": 1, "name": "dog", "prob": 0.6}, {"index": 2, "name": "fish", "prob": 0.3}]
    assert fm.top_k(np.array([0.2, 0.8]), None, 1)[0]["name"] == "class 1"


def test_integrated_gradients_matches_captum_and_is_complete(x):
    model = tiny()
    seen = []
    r = fm.integrated_gradients(model, x, target=2, steps=12, chunk=5,
                                         on_progress=lambda done, total: seen.append((done, total)))
    assert seen == [(5, 12), (10, 12), (12, 12)]
    ref = IntegratedGradients(fm.working_copy(model)).attribute(x, target=2, n_steps=12)
    np.testing.assert_allclose(r.attr, ref[0].detach().numpy(), rtol=1e-4, atol=1e-6)
    assert r.heat.shape == (16, 16)
    assert abs(r.delta) < 0.05 * max(1.0, abs(r.score - r.baseline_score))


class TopLeftSum(nn.Module):
    """Score = sum of the top-left 2x2 pixels: occluding exactly them drops it by 4 on an image of ones."""

    def forward(self, x):
        return x[:, :, :2, :2].sum(dim=(1, 2, 3)).unsqueeze(1)


def test_occlusion_hand_worked():
    heat = fm.occlusion(TopLeftSum(), torch.ones(1, 1, 4, 4), target=0, window=2, stride=2)
    expected = np.zeros((4, 4))
    expected[:2, :2] = 4.0
    np.testing.assert_allclose(heat, expected)


def test_occlusion_of_a_colour_picture_is_the_score_drop_not_one_drop_per_channel():
    # Hand-worked: on 3 channels of ones, hiding the top-left 2x2 square on every channel drops the score by
    # 3 channels x 4 pixels = 12, so the map shows 12 there (summing captum's channels would show 36)
    heat = fm.occlusion(TopLeftSum(), torch.ones(1, 3, 4, 4), target=0, window=2, stride=2)
    expected = np.zeros((4, 4))
    expected[:2, :2] = 12.0
    np.testing.assert_allclose(heat, expected)


def test_occlusion_on_a_resnet_is_the_drop_of_hiding_each_square_by_hand(x):
    model = tiny()
    heat = fm.occlusion(model, x, target=3, window=4, stride=4)  # squares side by side: one square per pixel
    assert heat.shape == (16, 16) and np.abs(heat).max() > 1e-3
    with torch.no_grad():
        score = model(x)[0, 3]
        for r in range(0, 16, 4):
            for c in range(0, 16, 4):
                hidden = x.clone()
                hidden[:, :, r:r + 4, c:c + 4] = 0.0  # every channel of the square
                drop = float(score - model(hidden)[0, 3])
                np.testing.assert_allclose(heat[r:r + 4, c:c + 4], drop, rtol=1e-4, atol=1e-6)


def test_occlusion_caption_names_the_square_and_the_largest_drop(x):
    a = fm.attribute(fm.Attribution.OCC, tiny(), x, target=3)
    assert a.title == "Occlusion: score drop" and a.heat.shape == (16, 16)
    assert a.note.startswith("A 4x4 square, moved 2 px at a time, hides every channel")
    assert f"Largest drop {a.heat.max():.3f}" in a.note


def test_block_view_figures_show_channel_and_range(x):
    from resviz.plots import feature_maps as plots

    r = fm.capture(tiny(), x, block=0, max_channels=4)
    figs = plots.plot_block_views(r, k=2)
    assert [f.layout.title.text for f in figs] == ["main path F(x)", "shortcut x", "output relu(F(x) + x)"]
    trace = figs[2].data[0]  # one heat map holding every channel's tile
    c, m = r.channels[0], r.out[0]
    h, w = m.shape
    info = np.asarray(trace.customdata)[:h, :w]  # the first tile: channel, value, its range on hover
    assert (info[..., 0] == c).all() and np.allclose(info[..., 1], m)
    assert np.allclose(info[..., 2], m.min()) and np.allclose(info[..., 3], m.max())
    shared = max(np.abs(v[0]).max() for v in (r.fx, r.x, r.out))  # one colour scale per channel, all views
    assert np.allclose(np.asarray(trace.z)[:h, :w], m / shared)
    assert figs[2].layout.annotations[0].text == f"ch {c}"
    plain = fm.capture(models.plain_twin(tiny()), x, block=0)
    plain_figs = plots.plot_block_views(plain, k=3)  # no shortcut view in the plain twin, and it says whose maps
    assert [f.layout.title.text for f in plain_figs] == ["plain twin, layer1.0:<br>main path F(x)",
                                                        "plain twin, layer1.0:<br>output relu(F(x))"]


# --- which weights ---

def tiny_pair(class_names=("disc", "square", "triangle", "cross", "ring")):
    resnet, plain = tiny(), models.build_model(models.plain_config(tiny().cfg), seed=4)
    return TrainedPair(resnet.cfg, resnet.state_dict(), plain.state_dict(), "tiny trained 4 steps on Built-in shapes",
                       class_names=class_names, data_name="Built-in shapes", steps=4)


def test_sources_offer_imagenet_only_for_imagenet_presets_and_trained_only_after_a_race(monkeypatch):
    from resviz import builtin_pair

    S = fm.WeightsSource
    assert fm.sources(models.get_config("resnet20"), None) == [S.SHIPPED, S.RANDOM, S.UPLOAD]  # trained first
    assert fm.sources(models.get_config("resnet18"), tiny_pair()) == [S.PRETRAINED, S.TRAINED, S.SHIPPED, S.RANDOM,
                                                                      S.UPLOAD]
    assert fm.untrained_note(models.get_config("resnet20")).endswith(  # every way out, in one sentence
        "Choose **ResNet-20 trained by resviz** above, train one on the **Training race** page, or pick an ImageNet "
        "preset in the sidebar and its ImageNet weights.")
    monkeypatch.setattr(builtin_pair, "shipped_info", lambda preset: None)  # assets/pairs without it
    assert fm.sources(models.get_config("resnet20"), None) == [S.RANDOM, S.UPLOAD]
    assert "shipped" not in fm.untrained_note(models.get_config("resnet20"))  # no way that is not there


def test_shipped_weights_are_the_shipped_pair_trained_well_above_guessing_and_said_so():
    from resviz import builtin_pair, pair as pairs

    shipped = builtin_pair.shipped(fm.SHIPPED_PRESET)
    w = fm.shipped()
    assert w.source is fm.WeightsSource.SHIPPED and not w.untrained and not w.owned
    torch.testing.assert_close(w.model.state_dict(), shipped.state_dict)
    torch.testing.assert_close(fm.plain_model(w).state_dict(), shipped.plain_state_dict)  # its own twin
    assert w.class_names == shipped.class_names and w.preprocess().crop == shipped.cfg.input_size
    info = builtin_pair.shipped_info(fm.SHIPPED_PRESET)  # the manifest's accuracy, measured again here
    assert w.accuracy == pytest.approx(info.resnet_accuracy, abs=0.03)
    assert not pairs.is_guessing(w.accuracy, pairs.EVAL_IMAGES, 1 / w.cfg.num_classes)
    verdict, other = fm.notices(w, models.get_config("resnet20"))
    assert verdict.box is fm.Box.SUCCESS and verdict.text.startswith("**These weights learned something")
    assert "knows only the built-in images' 10 classes (disc, square, triangle, …)" in verdict.text
    assert other.box is fm.Box.INFO and "input 16x16 pixels instead of 32x32 pixels" in other.text
    assert "Training race" not in other.text and "shipped with resviz (1200 SGD steps" in other.text
    assert fm.WeightsRequest(fm.WeightsSource.SHIPPED, models.get_config("resnet20")).ready
    assert "shipped with it" in fm.PLAIN_TWIN_NOTES[fm.WeightsSource.SHIPPED]


def test_trained_weights_keep_their_classes_and_the_race_preprocessing():
    pair = tiny_pair()
    w = fm.trained(pair)
    assert w.source is fm.WeightsSource.TRAINED and not w.untrained
    assert w.class_names == pair.class_names and w.class_name(1) == "square" and w.class_name(7) == "class 7"
    assert w.preprocess().mean == (0.5, 0.5, 0.5) and w.preprocess().crop == 16  # trained on (x - 0.5) / 0.5
    torch.testing.assert_close(w.model.state_dict(), pair.state_dict)
    assert all(not p.requires_grad for p in w.model.parameters()) and not w.model.training
    plain = fm.trained(pair, plain=True)
    assert not plain.cfg.residual and plain.key != w.key and plain.label.startswith("the plain twin of ")
    torch.testing.assert_close(plain.model.state_dict(), pair.plain_state_dict)


def test_plain_model_uses_the_race_twin_own_weights_else_the_same_weights_without_shortcuts():
    pair = tiny_pair()
    torch.testing.assert_close(fm.plain_model(fm.trained(pair)).state_dict(), pair.plain_state_dict)
    w = fm.random(tiny().cfg, tiny())
    plain = fm.plain_model(w)
    assert w.untrained and not plain.cfg.residual
    assert all(torch.equal(v, w.model.state_dict()[k]) for k, v in plain.state_dict().items())  # copied, not redrawn
    dropped = set(w.model.state_dict()) - set(plain.state_dict())
    assert dropped and all(".downsample." in k for k in dropped)  # only the projection shortcuts are left out
    assert w.model.cfg.residual  # the shared model was not changed


def saved_tiny() -> bytes:
    import io

    buf = io.BytesIO()
    torch.save(tiny().state_dict(), buf)
    return buf.getvalue()


def test_uploaded_weights_are_keyed_by_content():
    data = saved_tiny()
    a = fm.uploaded(data, "a.pt", tiny().cfg)
    b = fm.uploaded(data, "b.pt", tiny().cfg)
    assert a.key == b.key and a.label == r"uploaded a\.pt" and a.class_names == ()  # markdown: the name escaped
    assert not a.imagenet_normalised  # a CIFAR-stem net: the race's normalisation
    with pytest.raises(weights.WeightsError, match="output classes"):
        fm.uploaded(data, "a.pt", replace(tiny().cfg, num_classes=3))


def test_imagenet_weights_for_a_custom_net_are_refused_in_plain_words():
    with pytest.raises(weights.WeightsError, match="no ImageNet weights"):
        fm.imagenet(tiny().cfg)


# --- figures: readable, one visual language ---

def all_fonts(fig) -> list[tuple[str, float, str]]:
    """(where, size, colour) of every text of a figure, with the defaults plotly would use filled in."""
    base = fig.layout.font
    out = [("layout", base.size, base.color), ("title", fig.layout.title.font.size, fig.layout.title.font.color)]
    out += [(f"annotation {a.text}", a.font.size or base.size, a.font.color or base.color)
            for a in fig.layout.annotations]
    for axis in [fig.layout[k] for k in fig.layout if k.startswith(("xaxis", "yaxis"))]:
        out.append(("ticks", axis.tickfont.size or base.size, axis.tickfont.color or base.color))
    return out


def test_every_figure_has_text_of_14_px_or_more_in_a_dark_colour(x):
    from PIL import ImageColor

    from resviz.inputs import images
    from resviz.plots import feature_maps as plots

    r = fm.capture(tiny(), x, block=0, max_channels=4)
    img = images.load_image(images.sample_bytes("cat"))
    figs = [*plots.plot_block_views(r, 4), plots.plot_block_norms(r.norms, r.block),
            plots.plot_top_k(fm.top_k(r.probs, None)),
            plots.plot_overlay(np.zeros((16, 16, 3), np.uint8), r.cam, "cam"),
            plots.plot_preprocessing(images.preprocess_steps(img, images.preprocess_for(16)))]
    for fig in figs:
        for where, size, colour in all_fonts(fig):
            assert size >= 14, (fig.layout.title.text, where, size)
            assert sum(ImageColor.getrgb(colour)) < 3 * 80, (where, colour)  # dark on the white page


def projector_figures(x, k=9):
    """Every figure of the page at projector scale (the sidebar's Projector toggle), as the page sizes them."""
    from resviz.plots import feature_maps as plots
    from resviz.plots.projector import for_projector

    r = fm.capture(tiny(), x, block=1)  # layer2.0: 8 channels of 8 x 8
    long_title = "Grad-CAM at layer4.2: 'American Staffordshire terrier'"
    figs = [*plots.plot_block_views(r, k, 330), plots.plot_block_norms(r.norms, r.block),
            plots.plot_prediction(r, fm.random(tiny().cfg, tiny())), plots.plot_overlay(r.cam[..., None].repeat(3, 2),
                                                                                   r.cam, long_title)]
    return [for_projector(f) for f in figs]


def test_titles_fit_a_third_of_a_projector_screen_and_their_margin_holds_them(x):
    from resviz.plots.projector import SCALE

    for fig in projector_figures(x):
        lines = fig.layout.title.text.split("<br>")
        size = fig.layout.title.font.size
        assert size >= 17 * SCALE  # the Projector toggle's size
        assert max(len(line) for line in lines) * 0.45 * size <= 300, lines  # 300 px: one of three columns
        assert fig.layout.title.yanchor == "top" and fig.layout.title.y == 1 and fig.layout.title.yref == "container"
        # Measured in Chromium: plotly draws the first line's top 0.2 em above the anchor, 0.7 em more when the title
        # has several lines; each line below adds 1.3 em.
        first = fig.layout.title.pad.t - (0.2 + (0.7 if len(lines) > 1 else 0)) * size
        assert first >= 0, lines  # not cut off at the top
        assert fig.layout.margin.t >= first + (1.2 + 1.3 * (len(lines) - 1)) * size, lines  # the plot starts below


def test_channel_labels_fit_between_the_rows_at_projector_scale(x):
    for fig in projector_figures(x)[:3]:
        labels = fig.layout.annotations
        assert [a.text for a in labels][:1] == [f"ch {c}" for c in fm.capture(tiny(), x, block=1).channels[:1]]
        rows = sorted({a.y for a in labels})
        assert len(labels) == 8 and len(rows) == 3  # 8 channels: a 3 x 3 grid, a label over each row
        tile = 8  # layer2.0 of the tiny net halves the 16 x 16 input
        gap = rows[1] - rows[0] - tile
        height_units, width_units = 3 * tile + 2 * gap, 3 * tile + 2 * gap
        lines = fig.layout.title.text.count("<br>") + 1
        plot_px = fig.layout.height - fig.layout.margin.t
        px_per_unit = min(plot_px / height_units, 300 / width_units)
        size = labels[0].font.size
        assert gap * px_per_unit >= 1.2 * size, (gap, px_per_unit, size)  # a label's line fits in the gap
        assert fig.layout.margin.t >= 1.2 * (lines * fig.layout.title.font.size + size)  # title + first row's labels


def test_preprocessing_titles_fit_their_panels_at_projector_scale():
    from resviz.inputs import images
    from resviz.plots import feature_maps as plots
    from resviz.plots.projector import for_projector

    img = images.load_image(images.sample_bytes("cat"))
    fig = for_projector(plots.plot_preprocessing(images.preprocess_steps(img, images.preprocess_for(224))))
    titles = fig.layout.annotations
    assert [t.text for t in titles][3] == "R: (x-0.485)<br>/ 0.229"
    paper_px = 900 - 60  # the chart across the page on a 1400 px screen, less its colour bar
    for i, t in enumerate(titles):
        domain = fig.layout[f"xaxis{'' if i == 0 else i + 1}"].domain
        widest = max(len(line) for line in t.text.split("<br>")) * 0.45 * t.font.size
        assert widest <= (domain[1] - domain[0] + 0.02) * paper_px, t.text  # its panel and the gap beside it
    assert fig.layout.margin.t >= 2 * 1.2 * max(t.font.size for t in titles)  # two lines above the panels


def test_many_channels_leave_out_the_labels_and_keep_the_hover():
    from resviz.plots import feature_maps as plots

    maps = np.random.default_rng(0).normal(size=(32, 16, 16))
    fig = plots.plot_feature_grid(maps, range(32), "main path F(x)", height=330)
    assert not fig.layout.annotations  # 32 channels in the page's 330 px: 6 x 6 tiles, too small for labels
    assert "channel %{customdata[0]" in fig.data[0].hovertemplate
    assert len(plots.plot_feature_grid(maps[:9], range(9), "main path F(x)", height=330).layout.annotations) == 9


def test_heat_maps_use_the_one_sequential_and_the_one_diverging_map(x):
    import plotly.colors

    from resviz.plots import feature_maps as plots, style

    r = fm.capture(tiny(), x)
    image = np.zeros((16, 16, 3), np.uint8)
    cam = plots.plot_overlay(image, r.cam, "Grad-CAM").data[1]
    signed = plots.plot_overlay(image, r.cam - r.cam.mean(), "IG", signed=True).data[1]

    def rgb(scale):
        return [c[c.index("(") + 1:].rsplit(",", 1)[0].replace(" ", "") for _, c in scale]

    def named(name):
        return [c[c.index("(") + 1:-1].replace(" ", "") for c in
                plotly.colors.convert_colors_to_same_type([c for _, c in plotly.colors.get_colorscale(name)], "rgb")[0]]

    assert rgb(cam.colorscale) == named(style.SEQUENTIAL) != named("Jet") and cam.zmin == 0
    assert rgb(signed.colorscale) == named(style.DIVERGING) and signed.zmin == -signed.zmax
    alpha = [float(c.rsplit(",", 1)[1].rstrip(")")) for _, c in cam.colorscale]
    assert alpha[0] == 0 and alpha == sorted(alpha)  # zero shows the photo; stronger values cover more of it
    assert plots.plot_block_views(r, 2)[0].data[0].colorscale == plots.plot_block_views(r, 2)[1].data[0].colorscale


def test_every_sample_photo_has_a_source_and_a_free_licence():
    from resviz.inputs import images

    notes = (images.SAMPLES_DIR / "ATTRIBUTION.md").read_text()
    photos = sorted(p.name for p in images.SAMPLES_DIR.glob("*.jpg"))
    assert len(photos) >= 3 and {"cat.jpg", "coffee.jpg"} <= set(photos)
    for name in photos:
        row = next(line for line in notes.splitlines() if line.startswith(f"| `{name}`"))
        assert "CC0" in row or "public domain" in row, row
        assert (images.SAMPLES_DIR / name).stat().st_size < 60_000


# --- what the page asks the lesson ---

def test_a_look_keys_results_by_what_they_depend_on(x):
    model = tiny()
    w = fm.random(model.cfg, model)
    pic = fm.Picture({}, x, key="picture")
    look = fm.Look(w, pic, block=1, cam_block=-1)
    plain = models.plain_twin(model)
    assert look.capture_key(model, fm.PREDICTED) != look.capture_key(plain, fm.PREDICTED) != look.capture_key(model, 3)
    assert look.capture(model, fm.PREDICTED).target == int(look.capture(model, 0).probs.argmax())
    assert look.capture_key(model, 3) == fm.Look(w, fm.Picture({}, x, key="picture"), 1, -1).capture_key(model, 3)
    ig, occ = fm.Attribution.IG, fm.Attribution.OCC
    assert look.attribution_key(ig, 3, 8) != look.attribution_key(ig, 3, 16)  # Integrated Gradients: its steps
    assert look.attribution_key(occ, 3, 8) == look.attribution_key(occ, 3, 16) != look.attribution_key(occ, 2, 8)
    r = look.capture(model, 3)
    assert r.block == "layer2.0" and r.cam_block == "layer2.1" and r.target == 3
    np.testing.assert_allclose(look.attribute(occ, 3, 8).heat, fm.occlusion(model, x, 3))


def test_notices_say_untrained_first_and_name_another_model():
    model = tiny()
    random_w = fm.random(model.cfg, model)
    notes = fm.notices(random_w, model.cfg)
    assert [n.box for n in notes] == [fm.Box.WARNING] and "untrained" in notes[0].text
    trained = fm.trained(tiny_pair())
    assert trained.accuracy is not None  # learnt the built-in images' names: measured on fresh ones
    assert [n.box for n in fm.notices(trained, model.cfg)] == [fm.Box.WARNING]  # random init: guessing
    other = fm.notices(trained, models.get_config("resnet20"))
    assert [n.box for n in other] == [fm.Box.WARNING, fm.Box.INFO] and "not the sidebar's **resnet20**" in other[1].text


def test_another_model_says_what_differs_not_a_name_that_is_the_same():
    resnet20 = models.get_config("resnet20")
    pair = TrainedPair(replace(resnet20, input_size=16), {}, {}, "resnet20 trained 4 steps on Built-in shapes")
    w = fm.LoadedWeights(fm.WeightsSource.TRAINED, tiny(), pair.cfg, "k", pair.label)
    note = fm.other_model_note(w, resnet20)
    assert "not the sidebar's" not in note  # both are resnet20
    assert "the sidebar's model, but with input 16x16 pixels instead of 32x32 pixels." in note
    note = fm.other_model_note(w, models.get_config("resnet32"))
    assert "not the sidebar's **resnet32**: blocks per stage (3, 3, 3) instead of (5, 5, 5); input 16x16" in note
    assert fm.other_model_note(w, pair.cfg) is None


@pytest.mark.parametrize("accuracy, box", [(0.20, fm.Box.WARNING), (0.23, fm.Box.WARNING), (0.25, fm.Box.SUCCESS),
                                           (0.9, fm.Box.SUCCESS)])
def test_trained_weights_get_a_verdict_only_clear_of_guessing(accuracy, box):
    # 5 classes: guessing is 20%; on 500 images 23% has a 95% interval reaching 20% (guessing), 25% does not
    w = replace(fm.trained(tiny_pair()), accuracy=accuracy)
    note = fm.accuracy_note(w)
    assert note.box is box and f"gets {accuracy:.0%} (95% interval" in note.text and "guessing gets 20%" in note.text
    assert ("no better than guessing" in note.text) == (box is fm.Box.WARNING)
    assert fm.accuracy_note(replace(w, accuracy=None)) is None  # learnt other images: nothing to say


def test_builtin_accuracy_is_the_lesion_pages_measure_and_none_for_other_images():
    from resviz import pair as pairs

    w = fm.trained(tiny_pair())
    assert w.accuracy == pairs.accuracy(w.model, *pairs.eval_data(w.cfg))
    assert fm.trained(tiny_pair(class_names=("a", "b", "c", "d", "e"))).accuracy is None
    good = tiny_pair()
    sd = {k: v.clone() for k, v in good.state_dict.items()}
    sd["layer1.0.bn1.running_var"][0] = -1.0  # NaN outputs: no accuracy (argmax of NaN is class 0)
    assert fm.trained(TrainedPair(good.cfg, sd, good.plain_state_dict, "bad", good.class_names)).accuracy is None


def test_weights_that_cannot_be_had_are_said_once_without_the_choice_that_failed():
    cfg = models.get_config("resnet18")
    model = tiny()
    missing = fm.notices(fm.random(cfg, model, fm.Unavailable.of(
        fm.WeightsSource.PRETRAINED, fm.ImageNetMissing("torchvision's ImageNet weights for resnet18 are not here."))),
        cfg)
    assert [n.box for n in missing] == [fm.Box.WARNING]
    text = missing[0].text
    assert "press **Download the ImageNet weights**" in text and "`python -m resviz.prepare --weights resnet18`" in text
    assert text.count("random weights") == 1 and "choose **ImageNet weights**" not in text
    failed = fm.notices(fm.random(cfg, model, fm.Unavailable.of(
        fm.WeightsSource.PRETRAINED, weights.WeightsError("This server could not download them."))), cfg)
    assert [n.box for n in failed] == [fm.Box.ERROR] and "press" not in failed[0].text
    assert failed[0].text.count("random weights") == 1 and "ImageNet weights** above" not in failed[0].text
    upload = fm.notices(fm.random(cfg, model, fm.Unavailable.of(
        fm.WeightsSource.UPLOAD, weights.WeightsError("Unexpected key <a href='x'>[y](z)</a>"))), cfg)
    assert [n.box for n in upload] == [fm.Box.ERROR] and "choose **ImageNet weights** above" in upload[0].text
    assert r"\<a href='x'\>\[y\]\(z\)\</a\>" in upload[0].text  # the key is text, not a link
    assert "prepare" not in upload[0].text


def test_offline_imagenet_messages_name_no_server_path(tmp_path, monkeypatch):
    import os

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "download_url_to_file",
                        lambda url, dst, *a, **k: (_ for _ in ()).throw(OSError(f"No space left: {dst}")))
    cfg = models.get_config("resnet18")
    said = []
    for step in (fm.imagenet, fm.download_imagenet):
        with pytest.raises(weights.WeightsError) as e:
            step(cfg)
        note = fm.notices(fm.random(cfg, tiny(), fm.Unavailable.of(fm.WeightsSource.PRETRAINED, e.value)), cfg)
        said.append(note[0].text)
    assert "not on this server yet" in said[0] and "could not download" in said[1]
    for text in said:
        assert not any(p in text for p in (str(tmp_path), "checkpoints", os.path.expanduser("~"), ".pth")), text


# --- weights that make NaN or inf ---

def test_non_finite_watch_names_the_first_module_and_removes_its_hooks():
    from resviz.hooks import NonFiniteWatch

    net = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)))
    with torch.no_grad():
        net[1][0].weight.fill_(float("inf"))
    with NonFiniteWatch(net) as watch:
        net(torch.ones(1, 2))
    assert watch.first == "1.0" and watch.module is net[1][0]  # not "1": only leaves, in the order they ran
    assert all(not m._forward_hooks for m in net.modules())
    with NonFiniteWatch(nn.Linear(2, 2)) as fine:
        fine.first or nn.Linear(2, 2)(torch.ones(1, 2))
    assert fine.first is None


def test_negative_running_variance_is_found_and_explained(x):
    model = tiny()
    with torch.no_grad():
        model.layer2[0].bn1.running_var[3] = -2.0
    r = fm.capture(model, x, block=0)
    assert r.non_finite.where == "layer2.0.bn1"
    assert "running variance is negative (-2 in channel 3; 1 of 8 channels)" in r.non_finite.why
    assert r.cam is None  # no Grad-CAM of NaN
    with pytest.raises(fm.NonFiniteError, match="first at layer2.0.bn1, where its running variance is negative"):
        fm.finite(r)
    assert fm.finite(None) is None and fm.finite(fm.capture(tiny(), x)).non_finite is None


def test_huge_weights_overflow_where_the_products_pass_float32(x):
    model = tiny()
    with torch.no_grad():
        model.layer1[0].conv1.weight.mul_(1e20)  # finite weights, finite activations (about 1e20)...
        model.layer1[0].conv2.weight.mul_(1e20)  # ...until this conv multiplies them by 1e20 again
    r = fm.capture(model, x)
    assert r.non_finite.where == "layer1.0.conv2"
    biggest = float(model.layer1[0].conv2.weight.abs().max())
    assert f"and its weights {biggest:.3g}: their sums of products pass the largest float32 (3.4e+38)" in \
        r.non_finite.why
    assert not np.isfinite(r.probs).all()  # what the page would have drawn


def test_targets_captions_and_downloads_say_what_the_weights_are():
    w = fm.trained(tiny_pair())
    assert w.targets == [fm.PREDICTED, 0, 1, 2, 3, 4]
    assert [w.target_label(t) for t in w.targets[:3]] == ["the predicted one", "0: disc", "1: square"]
    assert w.caption == f"Model: **{w.cfg.label}** with tiny trained 4 steps on Built\\-in shapes."
    hostile = fm.uploaded(saved_tiny(), "[x](http:evil.example) $\\Huge X$.pt", tiny().cfg)
    assert r"with uploaded \[x\]\(http\:evil\.example\) \$\\Huge X\$\.pt. These" in hostile.caption
    model = tiny()
    assert fm.random(model.cfg, model).caption == f"Model: **{model.cfg.label}** with random weights (seed 0)."
    nameless = fm.trained(tiny_pair(class_names=()))
    assert nameless.caption.endswith("These weights come without class names: the classes are numbered.")
    assert not fm.WeightsRequest(fm.WeightsSource.RANDOM, model.cfg).needs_download
    assert not fm.WeightsRequest(fm.WeightsSource.PRETRAINED, model.cfg).needs_download  # no ImageNet weights at all


def test_a_model_over_the_budget_is_refused_with_numbers(monkeypatch):
    from resviz.inputs import budget

    monkeypatch.setenv("RESVIZ_BUDGET_MB", "1")
    with pytest.raises(budget.BudgetError, match="Feature maps needs about"):
        fm.check_budget(models.get_config("resnet50"))


HOSTILE = ('<a href="http://evil.example/">cat</a>', "![x](http://evil.example/i.png)", r"$\Huge X$", "d", "e")


def test_class_names_are_plain_text_in_the_charts_and_captions(x):
    from resviz.inputs import text
    from resviz.plots import feature_maps as plots

    w = fm.trained(tiny_pair(class_names=HOSTILE))
    for target in range(3):
        r = fm.capture(w.model, x, target=target)
        labels = plots.plot_prediction(r, w).data[0].y
        title = plots.plot_grad_cam(np.zeros((16, 16, 3)), r, w).layout.title.text
        for shown in (*labels, title):
            assert "<a" not in shown and "<img" not in shown and "$" not in shown, shown
        assert '&lt;a href="http://evil.ex… (0)' in labels  # cut to plots.LABEL_CHARS; the hover has it whole
        hover = plots.plot_prediction(r, w).data[0].customdata
        assert '&lt;a href="http://evil.example/"&gt;cat&lt;/a&gt; (0)' in hover
        assert "&#36;\\Huge X&#36; (2)" in labels
        assert title.replace("<br>", " ").endswith(f"'{text.plotly(HOSTILE[target])}'")  # wrapped at spaces
        best = fm.top_k(r.probs, w.class_names, 1)[0]["name"]
        caption = fm.plain_twin_caption(r, w)
        assert f"top class: {text.md(best)} (" in caption and (best in "de" or best not in caption)
