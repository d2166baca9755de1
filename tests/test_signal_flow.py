"""Signal-flow statistics: hand-worked RMS on a tiny net, hooks removed, torchvision's in-place blocks, the plain
twin without additions, initialisations, the shared model left untouched, and every word and number of the page's
text recomputed from the measured per-layer arrays, for several configurations and seeds."""
import copy
import io
import math
import re
from dataclasses import replace

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

from resviz import models
from resviz.hooks import Hooks
from resviz.inputs import images
from resviz.lessons import signal_flow as sf
from resviz.plots import signal_flow as plots

TINY = replace(models.get_config("resnet20"), layers=(1, 1, 1), input_size=16, name="resnet8")  # 8 layers
RESNET, PLAIN = sf.Net.RESNET, sf.Net.PLAIN


def no_hooks_left(model: nn.Module) -> bool:
    return all(not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks)
               for m in model.modules())


def small(depth: int, norm: bool = True, **kw) -> sf.Settings:
    """The page's CIFAR net of ``depth`` on 16-pixel inputs, batch 4: the same flow, a fraction of the work."""
    return sf.Settings(replace(sf.cifar_config(depth, norm), input_size=16), **{"batch": 4, **kw})


class Tiny(nn.Module):
    """conv 1x1 (weight 2) -> flatten -> fc (identity weights, no bias): every number can be worked by hand."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 1, 1, bias=False)
        self.fc = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.conv1.weight.fill_(2.0)
            self.fc.weight.copy_(torch.eye(2))

    def forward(self, x):
        return self.fc(self.conv1(x).flatten(1))


def test_rms_match_hand_worked_values():
    x = torch.tensor([[[[1.0, 0.0]]], [[[0.0, 1.0]]]])  # (2, 1, 1, 2): two examples of two pixels
    y = torch.tensor([0, 0])
    s = sf.collect_stats(Tiny(), x, y)
    # conv output = logits: example 1 is [2, 0], example 2 is [0, 2]: four elements 2, 0, 0, 2.
    assert s.layers.names == ("conv1", "fc") and s.layers.kernels == (1, None) and s.shapes == ((1, 1, 2), (2,))
    np.testing.assert_allclose(s.act_rms, [math.sqrt(2), math.sqrt(2)], rtol=1e-6)  # sqrt((4 + 0 + 0 + 4) / 4)
    np.testing.assert_allclose(s.act_mean, [1.0, 1.0], rtol=1e-6)  # (2 + 0 + 0 + 2) / 4
    np.testing.assert_allclose(s.act_std, [1.0, 1.0], rtol=1e-6)
    p = 1 / (1 + math.exp(-2))  # softmax of [2, 0] at class 0
    assert s.loss == pytest.approx((-math.log(p) - math.log(1 - p)) / 2, rel=1e-6)
    # d loss / d logits = (softmax - onehot) / B: example 1 [p-1, 1-p] / 2, example 2 [-p, p] / 2.
    g = math.sqrt((2 * ((1 - p) / 2) ** 2 + 2 * (p / 2) ** 2) / 4)  # RMS over the four elements
    np.testing.assert_allclose(s.grad_rms, [g, g], rtol=1e-5)  # fc is the identity: same at the conv
    # d loss / d w (conv, 1 weight) = sum over pixels of grad * input = (p-1)/2 * 1 + p/2 * 1 = (2p - 1) / 2.
    # d loss / d W (fc) = G^T A with A = 2 I: its L2 norm is 2 * 2g (G has 4 elements of RMS g), over 4 weights.
    np.testing.assert_allclose(s.weight_grad_rms, [abs(2 * p - 1) / 2, 2 * 2 * g / 2], rtol=1e-5)
    assert np.isnan(s.resp_std).all()  # no 3x3 layers


def test_rms_compares_layers_of_different_sizes_like_with_like():
    """Two layers whose elements have the same size get the same RMS, however many elements they have."""
    model = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False), nn.Conv2d(1, 4, 1, bias=False), nn.Flatten(),
                          nn.Linear(64, 2))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[1].weight.fill_(1.0)  # 4 channels, each a copy of the input: 4x the elements, same size each
    s = sf.collect_stats(model, torch.randn(2, 1, 4, 4), torch.tensor([0, 1]))
    assert s.act_rms[1] == pytest.approx(s.act_rms[0], rel=1e-6)


def test_response_std_is_read_after_bn_and_before_the_addition():
    model = models.build_model(TINY, seed=0).train()
    x, y = sf.sample_batch(TINY, 4)
    seen = {}
    with Hooks() as hooks:
        hooks.forward(model.layer1[0].bn2, lambda m, i, o: seen.setdefault("bn2", o.detach().clone()))
        s = sf.collect_stats(model, x, y)
    i = s.layers.names.index("layer1.0.conv2")
    assert s.resp_std[i] == pytest.approx(seen["bn2"].std(unbiased=False).item(), rel=1e-5)
    assert s.resp_std[i] == pytest.approx(1.0, abs=1e-3)  # BN in train mode, weight 1: std 1 by construction


def test_hooks_are_removed_even_when_the_forward_pass_fails():
    model = models.build_model(TINY, seed=0).train()
    x, y = sf.sample_batch(TINY, 2)
    sf.collect_stats(model, x, y)
    assert no_hooks_left(model)
    with pytest.raises(RuntimeError):
        sf.collect_stats(model, torch.randn(2, 5, 16, 16), y)  # wrong channel count fails mid-forward
    assert no_hooks_left(model)
    assert all(p.grad is None for p in model.parameters())  # autograd.grad: nothing written to .grad


def test_torchvision_in_place_blocks_give_the_same_statistics_as_ours():
    torch.manual_seed(0)
    tv = torchvision.models.resnet18().train()  # in-place ReLU and `out += identity`
    ours = models.build_model("resnet18")
    ours.load_state_dict(tv.state_dict())
    ours.train()
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([3, 7])
    a, b = sf.collect_stats(tv, x, y), sf.collect_stats(ours, x, y)
    assert no_hooks_left(tv)
    assert a.layers == b.layers and len(a.layers.names) == 18 and len(a.layers.convs) == 17  # 17 convs + fc
    for key in ("act_rms", "act_mean", "act_std", "grad_rms", "weight_grad_rms", "resp_std"):
        np.testing.assert_allclose(getattr(a, key), getattr(b, key), rtol=2e-4, atol=1e-7, err_msg=key)
    assert np.isfinite(a.resp_std[1:17]).all() and np.isnan(a.resp_std[0])  # the 7x7 stem is not 3x3


def test_plain_twin_really_has_no_additions():
    model = models.build_model(TINY, seed=0)
    twin = models.plain_twin(model)
    calls = {"resnet": 0, "plain": 0}
    with Hooks() as hooks:
        for key, net in (("resnet", model), ("plain", twin)):
            for block in net.blocks():
                hooks.forward(block.add, lambda *a, key=key: calls.__setitem__(key, calls[key] + 1))
            net(torch.randn(1, 3, 16, 16))
    assert calls == {"resnet": 3, "plain": 0}
    assert all(b.downsample is None for b in twin.blocks())
    assert [n for n, _ in sf.signal_layers(model)] == [n for n, _ in sf.signal_layers(twin)]


def test_compare_never_changes_the_model_it_is_given():
    shared = models.build_model(TINY, seed=0).eval().requires_grad_(False)  # like ui.load_model's
    before = copy.deepcopy(shared.state_dict())
    x, y = sf.sample_batch(TINY, 4)
    r = sf.compare_signal_flow(shared, x, y, steps=2, lr=0.1)
    for k, v in shared.state_dict().items():
        torch.testing.assert_close(v, before[k], msg=k)
    assert not shared.training and not any(p.requires_grad for p in shared.parameters())
    assert no_hooks_left(shared) and len(r[RESNET].losses) == 2
    with pytest.raises(models.ConfigError):
        sf.compare_signal_flow(models.plain_twin(shared), x, y)


def test_both_nets_start_from_the_same_weights_and_see_the_same_batch():
    x, y = sf.sample_batch(TINY, 4)
    r = sf.compare_signal_flow(TINY, x, y)
    # The stem and the first block's convs come before any addition: identical forward values in both nets.
    np.testing.assert_allclose(r[RESNET].stats.act_rms[:3], r[PLAIN].stats.act_rms[:3], rtol=1e-5)
    assert r[RESNET].stats.act_rms[3] != pytest.approx(r[PLAIN].stats.act_rms[3], rel=1e-3)  # after an addition


def test_initialisations():
    def conv_std(scheme, norm=True):
        m = sf.apply_init(models.build_model(replace(TINY, norm=norm)), scheme, seed=1)
        return m, m.layer2[0].conv2.weight  # 32 -> 32 channels, 3x3: fan_in = fan_out = 288

    fan = 32 * 9
    assert conv_std(sf.Init.KAIMING)[1].std().item() == pytest.approx(math.sqrt(2 / fan), rel=0.05)
    assert conv_std(sf.Init.XAVIER)[1].std().item() == pytest.approx(math.sqrt(2 / (2 * fan)), rel=0.05)
    w = conv_std(sf.Init.DEFAULT)[1]
    assert w.abs().max().item() <= 1 / math.sqrt(fan)  # kaiming_uniform(a=sqrt(5)): U(-1/sqrt(fan), 1/sqrt(fan))
    assert w.std().item() == pytest.approx(1 / math.sqrt(3 * fan), rel=0.05)
    m, _ = conv_std(sf.Init.ZERO_LAST)
    assert all((b.bn2.weight == 0).all() and (b.bn1.weight == 1).all() for b in m.blocks())
    m, _ = conv_std("zero_last_bn", norm=False)  # the value works too (notebooks)
    assert all((b.conv2.weight == 0).all() and (b.conv1.weight != 0).any() for b in m.blocks())
    torch.testing.assert_close(conv_std(sf.Init.XAVIER)[1], conv_std(sf.Init.XAVIER)[1])  # seeded
    with pytest.raises(models.ConfigError):
        sf.apply_init(nn.Linear(1, 1), "lsuv")


# --- the words, recomputed from the numbers ----------------------------------------------------------------

NET_LINE = re.compile(r"\*\*(ResNet|Plain twin)\*\*: forward, the RMS of the conv outputs goes from (\S+) at the "
                      r"first conv to (\S+) at the last conv \((.+?)\); backward, the RMS of the gradient goes from "
                      r"(\S+) at the last conv to (\S+) at the first conv \((.+?)\)\.$")


def expected_words(start: float, end: float) -> str:
    """The verdict for a size going from ``start`` to ``end``, worked out here independently of the lesson."""
    if end == 0:
        return "exactly zero at both" if start == 0 else "exactly zero at"
    if start == 0:
        return "exactly zero at"  # no ratio to judge
    r = end / start
    factor = f"{r:.3g}x larger" if r >= 1 else f"{1 / r:.3g}x smaller"
    word = ("vanishes" if r < 0.01 else "shrinks" if r < 0.1 else "stays within 10x" if r <= 10 else "grows"
            if r <= 100 else "explodes")
    return f"{factor}: it {word}"


def ends(stats: sf.LayerStats) -> tuple[float, float, float, float]:
    """(first conv RMS, last conv RMS, gradient at the last conv, gradient at the first conv), straight from the
    per-layer arrays: convolutions are the layers with a kernel (the classifier is left out)."""
    convs = [i for i, k in enumerate(stats.layers.kernels) if k is not None]
    return stats.act_rms[convs[0]], stats.act_rms[convs[-1]], stats.grad_rms[convs[-1]], stats.grad_rms[convs[0]]


def numbers(text: str) -> list[str]:
    return re.findall(r"(?<![\w.])\d[\d.]*(?:e[+-]\d+)?(?=x|\b)", text)


CONFIGS = {  # name -> settings: every branch of the text, cheap sizes
    "bn kaiming init": small(20),
    "bn kaiming deep": small(56),
    "bn trained": small(20, steps=8, lr=0.1),
    "no bn default": small(20, False, init=sf.Init.DEFAULT),
    "no bn kaiming": small(20, False),
    "no bn xavier": small(14, False, init=sf.Init.XAVIER),
    "zero bn": small(14, init=sf.Init.ZERO_LAST),
    "zero bn trained": small(14, init=sf.Init.ZERO_LAST, steps=3),
    "zero conv": small(14, False, init=sf.Init.ZERO_LAST),
    "zero conv trained": small(14, False, init=sf.Init.ZERO_LAST, steps=3),
}


@pytest.fixture(scope="module")
def measured():
    return {(name, seed): sf.measure(replace(s, seed=seed)) for name, s in CONFIGS.items() for seed in (0, 3)}


@pytest.mark.parametrize("name", CONFIGS)
def test_each_net_line_says_what_the_arrays_show(measured, name):
    for seed in (0, 3):
        r = measured[name, seed]
        lines = [m for line in sf.explain_signal_flow(r) if (m := NET_LINE.match(line))]
        assert [m.group(1) for m in lines] == ["ResNet", "Plain twin"]
        for m, net in zip(lines, (RESNET, PLAIN)):
            a0, a1, g1, g0 = ends(r[net].stats)
            assert m.group(2, 3, 5, 6) == tuple(f"{v:.3g}" for v in (a0, a1, g1, g0))
            for said, (start, end), zeroed in ((m.group(4), (a0, a1), not r.settings.cfg.norm),
                                               (m.group(7), (g1, g0), r.settings.cfg.norm)):
                words = expected_words(start, end)
                if r.settings.init is sf.Init.ZERO_LAST and zeroed and end and start:
                    words = words.split(": it ")[0] + ": the last conv's"  # the init, not the flow, decides it
                assert said.startswith(words), (name, seed, net, said, words)


@pytest.mark.parametrize("name", CONFIGS)
def test_every_number_in_the_text_is_a_measured_one(measured, name):
    """Each number the explanations print is a measured value (or one of the settings, or a citation)."""
    for seed in (0, 3):
        r = measured[name, seed]
        s = r.settings
        values = [s.cfg.depth, s.steps, s.lr, s.seed]
        for run in r.runs.values():
            for stats in (run.stats, run.init_stats):
                a0, a1, g1, g0 = ends(stats)
                live = [v for v in stats.act_rms[list(stats.layers.convs)] if v > 0]
                values += [a0, a1, g1, g0, stats.loss, np.nanmean(stats.resp_std), live[-1]]
                values += [u / v for u, v in ((a1, a0), (a0, a1), (g0, g1), (g1, g0)) if v]  # factors both ways
                blocks = [i for i, n in enumerate(stats.layers.names) if n.startswith("layer") and "conv" in n]
                first = [n.endswith("conv1") for n in np.array(stats.layers.names)[blocks]]
                rms, first = stats.act_rms[blocks], np.array(first)
                values += [rms[first].mean(), rms[~first].mean()]  # a block's first convs, and the others
        (res, pl) = (ends(r[net].stats) for net in (RESNET, PLAIN))
        values += [res[3] / pl[3] if pl[3] else 0, (pl[3] / pl[2]) / (res[3] / res[2]) if pl[2] and res[3] else 0]
        allowed = {f"{v:.3g}" for v in values} | {"2016", "4.1", "4.2", "2019", "10", "7", "64", "3", "1", "0"}
        text = "\n".join(sf.explain_signal_flow(r) + [sf.explain_responses(r)])
        text = re.sub(r"layer\d+\.\d+\.conv\d", "", text)  # layer names are names, not numbers
        unexplained = [n for n in numbers(text) if n not in allowed]
        assert not unexplained, (name, seed, unexplained, text)


def test_the_text_never_contradicts_itself_or_the_paper(measured):
    for (name, seed), r in measured.items():
        text = "\n".join(sf.explain_signal_flow(r))
        res, pl = ends(r[RESNET].stats), ends(r[PLAIN].stats)
        assert "in line with the paper" not in text and "dead" not in text and " dies" not in text
        if "The shortcuts carry the gradient back" in text:  # only where the ResNet's really is >= 10x larger
            assert res[3] > 10 * pl[3], (name, seed)
        if "exploding gradients" in text or "Yang et al." in text and "show that" in text:
            assert r.settings.cfg.norm and pl[3] / pl[2] > 10 and not r.settings.steps, (name, seed)
        if "That matches He et al." in text:  # healthy (within 10x) after training, as the paper reports
            assert r.settings.steps and 0.1 <= pl[3] / pl[2] <= 10, (name, seed)
        if r.settings.init is sf.Init.ZERO_LAST and not r.settings.cfg.norm:
            assert "zeroes the last conv of every block" in text
        verdict = sf.loss_verdict(r)
        assert (verdict is None) == (not r.settings.steps), (name, seed)
        if verdict:
            res_loss, pl_loss = r[RESNET].stats.loss, r[PLAIN].stats.loss
            memorised = res_loss < sf.MEMORISED and pl_loss < sf.MEMORISED
            assert ("the ResNet fit this batch faster" in verdict[1]) == (res_loss < 0.9 * pl_loss and not memorised)
            assert "conjecture" not in verdict[1] and "random label" in verdict[1]


def loss_result(steps, res_loss, plain_loss, batch=8, lr=0.1):
    """A measurement with these losses after ``steps`` steps (nothing else is read by the loss verdict)."""
    from types import SimpleNamespace

    return sf.FlowResult(small(20, steps=steps, lr=lr), {
        net: SimpleNamespace(stats=SimpleNamespace(loss=loss, batch=batch))
        for net, loss in ((RESNET, res_loss), (PLAIN, plain_loss))})


@pytest.mark.parametrize("res_loss,plain_loss,tone,words", [
    (0.0103, 0.0523, "info", "both have memorised it"),  # resnet20, 50 steps at lr 0.1: both fit 8 random labels
    (1.05, 1.65, "success", "the ResNet fit this batch faster"),
    (1.65, 1.05, "warning", "the plain twin fit this batch faster"),
    (1.00, 1.05, "info", "within 10% of each other, so no ordering"),  # inside the 10% margin: no verdict
    (float("nan"), 1.0, "warning", "diverged"),
])
def test_the_loss_verdict_says_what_was_measured_and_no_more(monkeypatch, res_loss, plain_loss, tone, words):
    result = loss_result(50, res_loss, plain_loss)
    monkeypatch.setattr(sf, "flows", lambda r, at_init=False: {n: run.stats for n, run in r.runs.items()})
    got, text = sf.loss_verdict(result)
    assert got.value == tone and words in text
    assert "After 50 SGD steps (lr 0.1) on one batch of 8 images with random labels (fitting it means memorising it)" \
        in text and "conjecture" not in text
    assert ("Fig. 4 on ImageNet, Fig. 6 on CIFAR-10" in text) == ("diverged" not in words)
    assert sf.loss_verdict(loss_result(0, res_loss, plain_loss)) is None  # at initialisation: nothing trained
    one = sf.loss_verdict(loss_result(50, res_loss, plain_loss, batch=1))[1]
    assert "on one image with a random label" in one


def test_at_initialisation_a_deep_plain_bn_net_explodes_and_the_text_cites_yang(measured):
    for seed in (0, 3):
        r = measured["bn kaiming deep", seed]
        res, pl = ends(r[RESNET].stats), ends(r[PLAIN].stats)
        assert pl[3] / pl[2] > 100 and res[3] / res[2] < pl[3] / pl[2] / 10  # plain-56 explodes, the ResNet far less
        text = "\n".join(sf.explain_signal_flow(r))
        assert "the plain net's gradient explodes" in text and "Yang et al. (ICLR 2019" in text
        assert "Set training steps above 0" in text and "He et al. (2016, §4.1)" in text


def test_the_zigzag_is_explained_only_where_the_resnet_has_one(measured):
    for seed in (0, 3):
        r = measured["bn kaiming init", seed]
        text = "\n".join(sf.explain_signal_flow(r))
        convs = r[RESNET].stats.layers.convs[1:]  # block convs
        names = [r[RESNET].stats.layers.names[i] for i in convs]
        for net in (RESNET, PLAIN):
            rms = r[net].stats.act_rms[convs]
            first = np.array([n.endswith("conv1") for n in names])
            ratio = rms[first].mean() / rms[~first].mean()
            assert (ratio > 1.5) == (net is RESNET)  # with BN only the ResNet's block inputs grow
        assert "That is the zigzag of the forward chart" in text


def test_without_bn_the_plain_gradient_vanishes_and_the_shortcuts_carry_it(measured):
    for seed in (0, 3):
        r = measured["no bn default", seed]
        res, pl = ends(r[RESNET].stats), ends(r[PLAIN].stats)
        assert pl[3] / pl[2] < 0.01 and res[3] / res[2] > 0.1 and res[3] > 1000 * pl[3]
        text = "\n".join(sf.explain_signal_flow(r))
        assert "the plain net's gradient vanishes" in text and "The shortcuts carry the gradient back" in text


def test_zero_init_switches_plain_blocks_off_and_the_resnet_starts_as_the_identity(measured):
    r = measured["zero bn", 0]
    assert r[PLAIN].stats.act_rms[3] == 0 and r[RESNET].stats.act_rms[3] > 0  # layer2.0.conv1 reads block 1's output
    assert r[RESNET].stats.grad_rms[-2] == 0 and r[RESNET].stats.grad_rms[0] > 0  # branch convs: no gradient yet
    text = "\n".join(sf.explain_signal_flow(r))
    assert "every block therefore starts as the identity" in text and "nothing goes around the zero" in text
    r = measured["zero conv", 0]
    assert r[RESNET].stats.act_rms[r[RESNET].stats.layers.convs[-1]] == 0  # the zeroed conv's output, by design
    text = "\n".join(sf.explain_signal_flow(r))
    assert "shortcuts carry the signal past every block (the last conv that is not zero outputs" in text


def test_training_steps_lower_the_loss_and_divergence_is_reported():
    x, y = sf.sample_batch(TINY, 4)
    seen = []
    r = sf.compare_signal_flow(TINY, x, y, steps=5, lr=0.05, progress=seen.append)
    assert r[RESNET].losses[-1] < r[RESNET].losses[0] and not sf.warnings(r)
    assert seen[-1] == 1.0 and len(seen) == 12 and seen == sorted(seen)
    assert r[RESNET].init_stats is not r[RESNET].stats
    assert r[RESNET].init_stats.loss == pytest.approx(r[RESNET].losses[0])
    assert "After 5 SGD steps (lr 0.05) on one batch of 4 images" in sf.loss_verdict(r)[1]
    r = sf.compare_signal_flow(replace(TINY, norm=False), x, y, steps=6, lr=1e4)
    assert r[RESNET].diverged_at is not None and len(r[RESNET].losses) == r[RESNET].diverged_at
    assert f"diverged at step {r[RESNET].diverged_at}" in sf.warnings(r)[0]


def test_inputs():
    x, y = sf.sample_batch(TINY, 3, seed=5)
    assert x.shape == (3, 3, 16, 16) and y.shape == (3,) and int(y.max()) < 10
    torch.testing.assert_close(x, sf.sample_batch(TINY, 3, seed=5)[0])
    buf = io.BytesIO()
    Image.new("RGB", (50, 40), (10, 200, 30)).save(buf, format="PNG")
    x, y = sf.image_batch(buf.getvalue(), TINY)
    assert x.shape == (1, 3, 16, 16) and y.shape == (1,)
    assert sf.image_batch(buf.getvalue(), replace(TINY, in_channels=1))[0].shape == (1, 1, 16, 16)
    with pytest.raises(images.ImageError):
        sf.image_batch(b"not an image", TINY)
    with pytest.raises(models.ConfigError):
        sf.image_batch(buf.getvalue(), replace(TINY, in_channels=4))
    r = sf.measure(sf.Settings(TINY, batch=2), buf.getvalue())
    assert r.settings.batch == 1 and "your image (a batch of 1)" in sf.describe(r, uploaded=True)


def test_configs_the_page_offers():
    assert sf.cifar_config(56).layers == (9, 9, 9) and sf.cifar_config(56, norm=False).depth == 56
    with pytest.raises(models.ConfigError):
        sf.cifar_config(21)
    side = models.with_shortcuts(models.get_config("resnet18"), residual=False)
    cfg = sf.chosen_config(20, False, side)
    assert cfg.residual and not cfg.norm and cfg.layers == (2, 2, 2, 2)
    assert sf.max_batch(cfg) == 8 and sf.max_batch(TINY) == 32


def test_charts_have_both_nets_log_scale_stage_marks_and_readable_text():
    x, y = sf.sample_batch(TINY, 2)
    r = sf.compare_signal_flow(TINY, x, y)
    fig = plots.plot_layer_stat(r, "grad_rms")
    assert [t.name for t in fig.data] == ["ResNet", "plain twin"] and fig.layout.yaxis.type == "log"
    assert [t.line.color for t in fig.data] == ["#1f77b4", "#d62728"]  # the app's ResNet blue, plain-twin red
    assert len(fig.data[0].y) == 7 and len(fig.layout.shapes) == 3  # 7 convs (no fc): stem | stage 1 | 2 | 3
    assert [a.text for a in fig.layout.annotations] == ["stem", "stage 1", "stage 2", "stage 3"]
    assert "RMS" in fig.layout.yaxis.title.text and "batch" in fig.data[0].hovertemplate  # which RMS: on hover
    assert fig.layout.font.size >= 14 and all(a.font.size >= 14 for a in fig.layout.annotations)
    np.testing.assert_allclose(fig.data[1].y, r[PLAIN].stats.grad_rms[:7])
    fig = plots.plot_responses(r)
    assert len(fig.data[0].y) == 7  # stem conv + 6 block convs are 3x3
    r = sf.compare_signal_flow(TINY, x, y, steps=2)
    fig = plots.plot_layer_stat(r, "act_rms")
    assert [t.name for t in fig.data] == ["ResNet at initialisation", "ResNet after 2 steps",
                                          "plain twin at initialisation", "plain twin after 2 steps"]
    np.testing.assert_allclose(fig.data[0].y, r[RESNET].init_stats.act_rms[:7])
    assert len(plots.plot_losses(r).data[0].y) == 2


def test_table_says_which_norm_and_holds_every_number():
    x, y = sf.sample_batch(TINY, 2)
    r = sf.compare_signal_flow(TINY, x, y)
    table = sf.stats_table(r)
    assert len(table["layer"]) == 8 and table["kind"][-1] == "fc"
    assert table["output shape (one example)"][0] == "16×16×16"
    assert table["ResNet: ∂loss/∂output RMS"] == list(r[RESNET].stats.grad_rms)
    assert table["plain twin: output RMS"] == list(r[PLAIN].stats.act_rms)


@pytest.mark.claims
def test_claims_hold_at_ci_size():
    claims = sf.claims((0,), full=False)
    assert claims and all(c.lesson == "signal_flow" and c.seed == 0 for c in claims)
    assert all(c.holds for c in claims), [(c.text, c.margin, c.detail) for c in claims if not c.holds]


def test_log_axes_label_every_tick_at_full_size_with_a_few_decades(measured):
    """Plotly's own log labels are tiny digits (2, 5) or SI prefixes (1µ): ours are 1-2-5 or powers of ten."""
    narrow = plots.plot_layer_stat(measured["bn kaiming init", 0], "grad_rms").layout.yaxis
    assert set(narrow.ticktext) >= {"10<sup>−4</sup>", "2×10<sup>−4</sup>", "5×10<sup>−4</sup>"}
    wide = plots.plot_layer_stat(measured["no bn default", 0], "act_rms")
    shown = np.concatenate([np.asarray(d.y, dtype=float) for d in wide.data])
    lo, hi = np.nanmin(shown), np.nanmax(shown)
    inside = [v for v in wide.layout.yaxis.tickvals if lo / 10 <= v <= hi * 10]
    assert 3 <= len(inside) <= 8
    assert all(re.fullmatch(r"(\d×)?10<sup>−?\d+</sup>|[\d.]+", t) for t in wide.layout.yaxis.ticktext)
    fig7 = plots.plot_responses(measured["no bn default", 0])
    assert fig7.layout.yaxis.type == "log" and fig7.layout.yaxis.ticktext
