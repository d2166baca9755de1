"""The shortcut lab's library: every number against a hand-worked value on a small case."""
import numpy as np
import pytest
import torch

from resviz import models
from resviz.lessons import shortcut_lab as sc
from resviz.lessons.shortcut_lab import FixKind, NextLayer
from resviz.models import ConfigError
from resviz.plots import shortcut_lab as plots
from resviz.trace import conv_macs, trace_shapes


@pytest.fixture(scope="module")
def lab():
    # x: 2x4x4. F(x): 3x3 conv 2->4, stride 2 -> 4x2x2.
    return sc.compare_fixes(2, 4, 2, 4, 4)


def test_conv_macs_of_a_grouped_conv_by_hand():
    conv = torch.nn.Conv2d(6, 4, 3, groups=2)
    assert conv_macs(conv, (4, 5, 5)) == 100 * 3 * 9  # 100 outputs x (6/2) inputs x 3 x 3


def test_branch_and_naive_addition(lab):
    assert lab.x_shape == (2, 4, 4) and lab.fx_shape == (4, 2, 2)
    assert lab.branch_params == 2 * 4 * 9 + 2 * 4  # conv weights + BN weight and bias
    assert lab.branch_macs == 4 * 2 * 2 * 2 * 9
    naive = lab.naive
    assert not naive.ok
    assert naive.error == ("The size of tensor a (2) must match the size of tensor b (4) "
                           "at non-singleton dimension 3")  # PyTorch's own words
    assert naive.torch_dim == 3
    assert [(m.name, m.fx, m.x) for m in naive.mismatches] == [("channels", 4, 2), ("height", 2, 4), ("width", 2, 4)]
    text = sc.mismatch_text(naive)
    assert "**channels** (F(x) has 4, x has 2)" in text and "dimension 3 (width) only" in text


def test_fixes_shapes_params_macs(lab):
    assert not lab.fix(FixKind.IDENTITY).works
    a = lab.fix(FixKind.ZERO_PAD)
    assert a.works and a.result_shape == (4, 2, 2) and (a.params, a.macs) == (0, 0)
    b = lab.fix(FixKind.PROJECTION)
    assert b.works and b.result_shape == (4, 2, 2)
    assert b.params == 2 * 4 + 2 * 4  # 1x1 conv weights + BN weight and bias
    assert b.macs == 4 * 2 * 2 * 2  # 16 output elements x 2 input channels x 1 x 1
    cat = lab.fix(FixKind.CONCAT)
    assert cat.works and cat.result_shape == (6, 2, 2) and cat.shortcut_shape == (2, 2, 2)
    assert lab.after_add == NextLayer(in_channels=4, params=4 * 4 * 9, macs=4 * 2 * 2 * 4 * 9)
    assert lab.after_cat == NextLayer(in_channels=6, params=6 * 4 * 9, macs=4 * 2 * 2 * 6 * 9)
    table = sc.fix_table(lab)
    assert [r["fix"] for r in table] == [k.value for k in FixKind]
    assert [r["result"] for r in table] == ["—", "4×2×2", "4×2×2", "6×2×2"]
    assert [r["MACs"] for r in table] == [0, 0, 16 * 2, 0]


def test_option_a_is_models_padshortcut():
    x = sc.lab_input(2, 4, 4)
    out = models.PadShortcut(2, 4, 2)(x)
    torch.testing.assert_close(out[:, :2], x[:, :, ::2, ::2])  # the kept pixels, unchanged
    assert out[:, 2:].abs().sum() == 0  # the new channels are zeros
    assert isinstance(models.make_shortcut(sc._LAB_CFG, 2, 4, 2), models.PadShortcut)


def test_equal_shapes_and_broadcast_and_fewer_channels():
    same = sc.compare_fixes(3, 3, 1, 4, 4)
    assert same.naive.ok and not same.naive.mismatches
    assert "identity shortcut works" in sc.mismatch_text(same.naive)
    # 1 channel vs 4: PyTorch broadcasts silently; the lab must not call that a working shortcut
    bc = sc.compare_fixes(1, 4, 1, 3, 3)
    assert bc.naive.ok and bc.naive.broadcast and bc.naive.result_shape == (1, 4, 3, 3)
    assert not bc.fix(FixKind.IDENTITY).works and "broadcast" in sc.mismatch_text(bc.naive)
    fewer = sc.compare_fixes(8, 4, 1, 3, 3)
    assert not fewer.fix(FixKind.ZERO_PAD).works and "only add channels" in fewer.fix(FixKind.ZERO_PAD).error
    assert fewer.fix(FixKind.PROJECTION).works


def test_a_stride_larger_than_the_image_runs_as_in_pytorch():
    """PyTorch runs a stride-4 3x3 conv (padding 1) on a 2x8 map: (2 - 1) // 4 + 1 = 1 row, (8 - 1) // 4 + 1 = 2."""
    big = sc.compare_fixes(4, 4, 4, 2, 8)
    real = torch.nn.Conv2d(4, 4, 3, stride=4, padding=1)(torch.zeros(1, 4, 2, 8))
    assert big.fx_shape == tuple(real.shape[1:]) == (4, 1, 2)
    assert big.fix(FixKind.ZERO_PAD).works and big.fix(FixKind.ZERO_PAD).shortcut_shape == (4, 1, 2)


@pytest.mark.parametrize("args, message", [
    ((0, 4, 1, 4, 4), "at least one channel"),
    ((4, 0, 1, 4, 4), "at least one channel"),
    ((4, 4, 1, 0, 4), "at least one pixel"),
    ((4, 4, 1, 4, 4000), "at most"),
    ((2048, 2048, 1, 256, 256), "billion multiply-accumulates"),
])
def test_impossible_inputs(args, message):
    with pytest.raises(ConfigError, match=message):
        sc.compare_fixes(*args)


def test_pixel_product_is_the_conv():
    p = sc.pixel_product(3, 4, 2, 5, 5, row=1, col=2)
    assert p.in_pixel == (2, 4) and p.out_hw == (3, 3) and p.weight.shape == (4, 3)
    np.testing.assert_allclose(p.y_by_hand, p.y_conv, atol=1e-5)
    # by hand, with a loop: y_o = sum_i W[o, i] x_i
    manual = [sum(p.weight[o, i] * p.x_vec[i] for i in range(3)) for o in range(4)]
    np.testing.assert_allclose(manual, p.y_conv, atol=1e-5)
    x = sc.lab_input(3, 5, 5)
    np.testing.assert_allclose(p.x_vec, x[0, :, 2, 4].double().numpy())
    assert p.params == 12 and p.macs == 9 * 4 * 3
    both = sc.lab_modules(3, 4, 2)  # the page's table and its product use the same option-B weights
    torch.testing.assert_close(both["conv1x1"].weight[:, :, 0, 0].double(), torch.from_numpy(p.weight))
    with pytest.raises(ConfigError, match="inside the 3x3 output"):
        sc.pixel_product(3, 4, 2, 5, 5, row=3, col=0)


def test_kept_pixels_by_hand():
    kept = sc.kept_pixels(2, 5, 5)
    assert kept.sum() == 9 and kept[0, 0] and kept[4, 4] and not kept[1, 0] and not kept[0, 3]
    assert sc.kept_pixels(3, 4, 4).nonzero()[0].tolist() == [0, 0, 3, 3]
    assert sc.kept_pixels(1, 2, 3).all()


def test_dot_text():
    assert sc.dot_text(np.array([0.5, -0.25]), np.array([2.0, 4.0])) == "0.5×2 + (-0.25)×4 = 0.0000"
    assert "(3 more)" in sc.dot_text(np.ones(7), np.ones(7), max_terms=4)
    assert sc.dot_text(np.array([-0.00001]), np.array([1.0])).startswith("0×1 ")  # no "-0"


def test_bottleneck_costs_by_hand():
    _, bottleneck, basic, fig5 = sc.bottleneck_costs(256, 1, 56)
    assert bottleneck.params == 256 * 64 + 64 * 64 * 9 + 64 * 256 == 69_632
    assert bottleneck.macs == 56 * 56 * 69_632
    assert basic.params == 2 * 256 * 256 * 9 == 1_179_648
    assert fig5.params == 2 * 64 * 64 * 9  # the paper's Fig. 5 comparison
    paper, v15, *_ = sc.bottleneck_costs(256, 2, 56)
    assert [r.stride for r in paper.rows] == [2, 1, 1] and [r.stride for r in v15.rows] == [1, 2, 1]
    assert [r.layer for r in paper.rows] == ["conv1", "conv2", "conv3"]  # the projection shortcut is left out
    assert paper.params == v15.params
    assert paper.macs == 28 * 28 * (256 * 64 + 64 * 64 * 9 + 64 * 256)
    assert v15.macs == 56 * 56 * 256 * 64 + 28 * 28 * (64 * 64 * 9 + 64 * 256)
    assert sc.layer_table(v15.rows)[1] == {"layer": "conv2", "kernel": "3x3", "stride": 2, "input": "64×56×56",
                                              "output": "64×28×28", "parameters": 36_864, "MACs": 28 * 28 * 64 * 576}
    with pytest.raises(ConfigError, match="divisible by 4"):
        sc.bottleneck_costs(6)


def test_block_picker_reads_the_trace():
    blocks = trace_shapes(models.get_config("resnet20")).blocks
    assert len(blocks) == 9 and sc.block_inputs(blocks[3]) == (16, 32, 2, 32, 32)  # layer2.0
    assert sc.block_label(blocks[3]) == ("layer2.0 · 16→32 channels · stride 2 · 32×32 input · "
                                         "shortcut zero-pad, stride 2")
    assert sc.block_label(blocks[4]).endswith("shortcut identity") and sc.block_inputs(blocks[6])[3] == 16
    r50 = trace_shapes(models.get_config("resnet50")).blocks
    assert sc.block_inputs(r50[0]) == (64, 256, 1, 56, 56) and "1x1 projection, stride 1" in sc.block_label(r50[0])
    assert (r50[13].name, sc.block_inputs(r50[13])) == ("layer4.0", (1024, 2048, 2, 14, 14))
    plain = trace_shapes(models.plain_config(models.get_config("resnet20"))).blocks
    assert sc.block_label(plain[3]).endswith("shortcut none (plain twin)")
    lab = sc.compare_fixes(*sc.block_inputs(blocks[3]))  # the block's own shapes: option A fixes it
    assert lab.fx_shape == blocks[3].out_shape and lab.fix(FixKind.ZERO_PAD).result_shape == blocks[3].out_shape


def test_costs_are_counted_with_hooks_that_are_removed():
    conv = torch.nn.Conv2d(2, 3, 1)
    sc.run_costed(conv, torch.zeros(1, 2, 4, 4))
    assert not conv._forward_hooks


def test_plots():
    p = sc.pixel_product(3, 4, 2, 5, 5, row=1, col=2)
    fig = plots.plot_pixel_product(p)
    assert len(fig.data) == 3 and fig.data[1].z.shape == (3, 1) and fig.data[2].z.shape == (4, 1)
    assert fig.data[0].text[0][0] == f"{round(p.weight[0, 0], 4):g}"  # small matrices show their numbers
    assert fig.data[0].zmax == np.abs(p.weight).max() and fig.data[1].zmax == fig.data[2].zmax
    kept = plots.plot_kept_pixels(p.kept, p.in_pixel, 2)
    assert "9 of 25" in kept.layout.title.text and (kept.layout.shapes[0].x0, kept.layout.shapes[0].y1) == (3.5, 2.5)
    big = sc.pixel_product(64, 32, 1, 2, 2)
    assert big.y0_text.endswith(f"(60 more) = {big.y_by_hand[0]:.4f}")  # all 64 inputs, not the shown 48
    big_fig = plots.plot_pixel_product(big)
    assert big_fig.data[0].z.shape == (32, sc.MAX_SHOWN)
    assert f"(32 out × 64 in), first 32×{sc.MAX_SHOWN} shown" in big_fig.layout.annotations[0].text
    costs = sc.bottleneck_costs(256, 1, 56)
    bars = plots.plot_bottleneck_costs(costs)
    assert list(bars.data[0].x) == [c.params for c in costs] and list(bars.data[1].x) == [c.macs for c in costs]
    assert plots._cells(np.array([[-1e-5, 0.25]]), 4).tolist() == [["0", "0.25"]]  # no "-0"


def _font_sizes(node, parent=""):
    """Every font size set anywhere in a plotly figure's JSON."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "size" and parent.endswith("font"):
                yield v
            else:
                yield from _font_sizes(v, k)
    elif isinstance(node, list):
        for v in node:
            yield from _font_sizes(v, parent)


def test_every_chart_text_is_at_least_14_px_and_dark():
    p = sc.pixel_product(3, 4, 2, 5, 5)
    for fig in (plots.plot_pixel_product(p), plots.plot_kept_pixels(p.kept, p.in_pixel, 2),
                plots.plot_bottleneck_costs(sc.bottleneck_costs())):
        sizes = list(_font_sizes(fig.to_plotly_json()))
        assert sizes and min(sizes) >= 14
        assert fig.layout.font.color == "#1a1a1a" and fig.layout.xaxis.tickfont.size >= 14
        assert all(a.font.size >= 14 and a.font.color == "#1a1a1a" for a in fig.layout.annotations)


def _width(text: str, size: float) -> float:
    """About how wide ``text`` is drawn at ``size`` px (the widest of its lines; ~0.5 em a character)."""
    return max(len(line) for line in text.split("<br>")) * 0.5 * size


@pytest.mark.parametrize("c_in, c_out, side", [(4, 8, 6), (64, 32, 31)])
def test_pixel_product_titles_leave_room_for_each_other_on_a_projector(c_in, c_out, side):
    from resviz.plots.projector import for_projector

    p = sc.pixel_product(c_in, c_out, 1, side, side, row=side - 1, col=side - 1)  # the longest pixel names
    fig = for_projector(plots.plot_pixel_product(p))
    paper_px = 940 - 240  # the chart on a 1400 px screen, less the room of the axis titles and colour bars
    titles = fig.layout.annotations[:3]
    assert [t.text for t in titles][1:] == ["x (input)", "y = W·x (output)"]
    centres = [sum(fig.layout[f"xaxis{'' if i == 0 else i + 1}"].domain) / 2 * paper_px for i in range(3)]
    for (a, ca), (b, cb) in zip(list(zip(titles, centres))[:-1], list(zip(titles, centres))[1:]):
        assert cb - ca >= (_width(a.text, a.font.size) + _width(b.text, b.font.size)) / 2, (a.text, b.text)
    title = fig.layout.title
    assert f"pixel ({side - 1}, {side - 1})" in title.text and _width(title.text, title.font.size) <= paper_px
    lines = max(t.text.count("<br>") + 1 for t in titles)
    assert fig.layout.margin.t >= 1.2 * (title.font.size + lines * titles[0].font.size)  # title over subplot titles


def test_bottleneck_bar_labels_keep_apart_on_a_projector():
    """Each design named once, left of its bars, in at most two lines that fit a third of the 780 px column a
    1280x720 projector leaves the page, each in a band of its own height."""
    from resviz.plots.projector import for_projector

    fig = for_projector(plots.plot_bottleneck_costs(sc.bottleneck_costs()))
    size = fig.layout.yaxis.tickfont.size
    names = fig.data[0].y
    assert fig.data[0].orientation == "h" and list(fig.data[1].y) == list(names)
    assert not fig.layout.yaxis2.showticklabels  # named once, on the left
    assert all(label.count("<br>") <= 1 and _width(label, size) <= 780 / 3 for label in names), names
    band = (fig.layout.height - fig.layout.margin.t - fig.layout.margin.b) / len(names)
    assert band >= 1.2 * 2 * size  # two lines of a name fit beside its bar
    assert names[0] == "bottleneck<br>stride on 1x1 (paper)"


def test_fix_table_puts_the_numbers_before_the_long_text(lab):
    assert list(sc.fix_table(lab)[0]) == ["fix", "works?", "result", "parameters", "MACs", "shortcut output",
                                          "what it does"]
