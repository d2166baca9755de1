"""Signal-flow statistics: hand-worked norms on a tiny net, hooks removed, torchvision's in-place blocks, the plain
twin without additions, initialisations, the shared model left untouched, and the words computed from numbers."""
import copy
import io
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

from resviz.inputs import images
from resviz import models
from resviz.lessons import signal_flow as stats
from resviz.plots import signal_flow as plots

TINY = replace(models.get_config("resnet20"), layers=(1, 1, 1), input_size=16, name="resnet8")  # 8 layers


def no_hooks_left(model: nn.Module) -> bool:
    return all(not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks)
               for m in model.modules())


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


def test_norms_match_hand_worked_values():
    x = torch.tensor([[[[1.0, 0.0]]], [[[0.0, 1.0]]]])  # (2, 1, 1, 2): two examples of two pixels
    y = torch.tensor([0, 0])
    s = stats.collect_stats(Tiny(), x, y)
    # conv output = logits: example 1 is [2, 0], example 2 is [0, 2].
    assert s["layer_info"]["names"] == ["conv1", "fc"] and s["layer_info"]["kinds"] == ["conv 1x1", "fc"]
    np.testing.assert_allclose(s["act_norm"], [2.0, 2.0], rtol=1e-6)  # each example's L2 norm is 2
    np.testing.assert_allclose(s["act_mean"], [1.0, 1.0], rtol=1e-6)  # (2 + 0 + 0 + 2) / 4
    np.testing.assert_allclose(s["act_std"], [1.0, 1.0], rtol=1e-6)
    p = 1 / (1 + math.exp(-2))  # softmax of [2, 0] at class 0
    assert s["loss"] == pytest.approx((-math.log(p) - math.log(1 - p)) / 2, rel=1e-6)
    # d loss / d logits = (softmax - onehot) / B: example 1 [p-1, 1-p] / 2, example 2 [-p, p] / 2.
    g = math.sqrt(2 * ((1 - p) / 2) ** 2 + 2 * (p / 2) ** 2)
    np.testing.assert_allclose(s["grad_norm"], [g, g], rtol=1e-5)  # fc is the identity: same at the conv
    # d loss / d w (conv, 1 weight) = sum over pixels of grad * input = (p-1)/2 * 1 + p/2 * 1 = (2p - 1) / 2.
    # d loss / d W (fc) = G^T A with A = 2 I: norm 2 g.
    np.testing.assert_allclose(s["weight_grad_norm"], [abs(2 * p - 1) / 2, 2 * g], rtol=1e-5)
    assert np.isnan(s["resp_std"]).all()  # no 3x3 layers


def test_response_std_is_read_after_bn_and_before_the_addition():
    model = models.build_model(TINY, seed=0).train()
    x, y = stats.sample_batch(TINY, 4)
    seen = {}
    model.layer1[0].bn2.register_forward_hook(lambda m, i, o: seen.setdefault("bn2", o.detach().clone()))
    s = stats.collect_stats(model, x, y)
    i = s["layer_info"]["names"].index("layer1.0.conv2")
    assert s["resp_std"][i] == pytest.approx(seen["bn2"].std(unbiased=False).item(), rel=1e-5)
    assert s["resp_std"][i] == pytest.approx(1.0, abs=1e-3)  # BN in train mode, weight 1: std 1 by construction


def test_hooks_are_removed_even_when_the_forward_pass_fails():
    model = models.build_model(TINY, seed=0).train()
    x, y = stats.sample_batch(TINY, 2)
    stats.collect_stats(model, x, y)
    assert no_hooks_left(model)
    with pytest.raises(RuntimeError):
        stats.collect_stats(model, torch.randn(2, 5, 16, 16), y)  # wrong channel count fails mid-forward
    assert no_hooks_left(model)
    assert all(p.grad is None for p in model.parameters())  # autograd.grad: nothing written to .grad


def test_torchvision_in_place_blocks_give_the_same_statistics_as_ours():
    torch.manual_seed(0)
    tv = torchvision.models.resnet18().train()  # in-place ReLU and `out += identity`
    ours = models.build_model("resnet18")
    ours.load_state_dict(tv.state_dict())
    ours.train()
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([3, 7])
    a, b = stats.collect_stats(tv, x, y), stats.collect_stats(ours, x, y)
    assert no_hooks_left(tv)
    assert a["layer_info"] == b["layer_info"] and len(a["layer_info"]["names"]) == 18  # 17 convs + fc
    for key in ("act_norm", "act_mean", "act_std", "grad_norm", "weight_grad_norm", "resp_std"):
        np.testing.assert_allclose(a[key], b[key], rtol=2e-4, atol=1e-7, err_msg=key)
    assert np.isfinite(a["resp_std"][1:17]).all() and np.isnan(a["resp_std"][0])  # the 7x7 stem is not 3x3


def test_plain_twin_really_has_no_additions():
    model = models.build_model(TINY, seed=0)
    twin = models.plain_twin(model)
    calls = {"resnet": 0, "plain": 0}
    for key, net in (("resnet", model), ("plain", twin)):
        for block in net.blocks():
            block.add.register_forward_hook(lambda *a, key=key: calls.__setitem__(key, calls[key] + 1))
        net(torch.randn(1, 3, 16, 16))
    assert calls == {"resnet": 3, "plain": 0}
    assert all(b.downsample is None for b in twin.blocks())
    assert [n for n, _ in stats.signal_layers(model)] == [n for n, _ in stats.signal_layers(twin)]


def test_compare_never_changes_the_model_it_is_given():
    shared = models.build_model(TINY, seed=0).eval().requires_grad_(False)  # like ui.load_model's
    before = copy.deepcopy(shared.state_dict())
    x, y = stats.sample_batch(TINY, 4)
    r = stats.compare_signal_flow(shared, x, y, steps=2, lr=0.1)
    for k, v in shared.state_dict().items():
        torch.testing.assert_close(v, before[k], msg=k)
    assert not shared.training and not any(p.requires_grad for p in shared.parameters())
    assert no_hooks_left(shared) and len(r["losses"]["resnet"]) == 2
    with pytest.raises(models.ConfigError):
        stats.compare_signal_flow(models.plain_twin(shared), x, y)


def test_both_nets_start_from_the_same_weights_and_see_the_same_batch():
    x, y = stats.sample_batch(TINY, 4)
    r = stats.compare_signal_flow(TINY, x, y)
    # The stem and the first block's convs come before any addition: identical forward values in both nets.
    np.testing.assert_allclose(r["resnet"]["act_norm"][:3], r["plain"]["act_norm"][:3], rtol=1e-5)
    assert r["resnet"]["act_norm"][3] != pytest.approx(r["plain"]["act_norm"][3], rel=1e-3)  # after an addition


def test_initialisations():
    def conv_std(scheme, norm=True):
        m = stats.apply_init(models.build_model(replace(TINY, norm=norm)), scheme, seed=1)
        return m, m.layer2[0].conv2.weight  # 32 -> 32 channels, 3x3: fan_in = fan_out = 288

    fan = 32 * 9
    assert conv_std("kaiming")[1].std().item() == pytest.approx(math.sqrt(2 / fan), rel=0.05)
    assert conv_std("xavier")[1].std().item() == pytest.approx(math.sqrt(2 / (2 * fan)), rel=0.05)
    w = conv_std("default")[1]
    assert w.abs().max().item() <= 1 / math.sqrt(fan)  # kaiming_uniform(a=sqrt(5)): U(-1/sqrt(fan), 1/sqrt(fan))
    assert w.std().item() == pytest.approx(1 / math.sqrt(3 * fan), rel=0.05)
    m, _ = conv_std("zero_last_bn")
    assert all((b.bn2.weight == 0).all() and (b.bn1.weight == 1).all() for b in m.blocks())
    m, _ = conv_std("zero_last_bn", norm=False)
    assert all((b.conv2.weight == 0).all() and (b.conv1.weight != 0).any() for b in m.blocks())
    torch.testing.assert_close(conv_std("xavier")[1], conv_std("xavier")[1])  # seeded
    with pytest.raises(models.ConfigError):
        stats.apply_init(nn.Linear(1, 1), "lsuv")


def test_without_bn_the_plain_gradient_vanishes_and_the_words_say_so():
    cfg = replace(TINY, layers=(2, 2, 2), norm=False)  # 14 layers, PyTorch's default init
    x, y = stats.sample_batch(cfg, 2)
    r = stats.compare_signal_flow(cfg, x, y, init="default")
    s = stats.flow_summary(r)
    assert s["plain"]["grad_verdict"][0] == "vanishes" and s["resnet"]["grad_verdict"][0] in ("fades", "stays healthy")
    assert r["resnet"]["grad_norm"][0] > 1000 * r["plain"]["grad_norm"][0]  # the shortcuts carry the gradient
    text = "\n".join(stats.explain_signal_flow(r))
    g_first = r["plain"]["grad_norm"][0]
    assert f"{g_first:.3g} at the first conv" in text  # the measured number, not a canned one
    assert "plain net's gradient vanishes, while the ResNet's shortcuts carry it through" in text
    assert "Without BN the response is the 3x3 conv's own output" in stats.explain_responses(r)


def test_zero_init_switches_plain_blocks_off():
    x, y = stats.sample_batch(TINY, 2)
    r = stats.compare_signal_flow(TINY, x, y, init="zero_last_bn")
    assert r["plain"]["act_norm"][3] == 0 and r["resnet"]["act_norm"][3] > 0  # layer2.0.conv1 reads block 1's output
    assert "switches each plain block off" in "\n".join(stats.explain_signal_flow(r))


def test_training_steps_lower_the_loss_and_divergence_is_reported():
    x, y = stats.sample_batch(TINY, 4)
    seen = []
    r = stats.compare_signal_flow(TINY, x, y, steps=5, lr=0.05, progress=lambda d, n, what: seen.append((d, n)))
    assert r["losses"]["resnet"][-1] < r["losses"]["resnet"][0] and r["diverged"] == {"resnet": None, "plain": None}
    assert seen[-1] == (12, 12) and len(seen) == 12
    assert "After 5 SGD steps" in stats.explain_signal_flow(r)[-1]
    r = stats.compare_signal_flow(replace(TINY, norm=False), x, y, steps=6, lr=1e4)
    assert r["diverged"]["resnet"] is not None and len(r["losses"]["resnet"]) == r["diverged"]["resnet"]


def test_inputs():
    x, y = stats.sample_batch(TINY, 3, seed=5)
    assert x.shape == (3, 3, 16, 16) and y.shape == (3,) and int(y.max()) < 10
    torch.testing.assert_close(x, stats.sample_batch(TINY, 3, seed=5)[0])
    buf = io.BytesIO()
    Image.new("RGB", (50, 40), (10, 200, 30)).save(buf, format="PNG")
    x, y = stats.image_batch(buf.getvalue(), TINY)
    assert x.shape == (1, 3, 16, 16) and y.shape == (1,)
    assert stats.image_batch(buf.getvalue(), replace(TINY, in_channels=1))[0].shape == (1, 1, 16, 16)
    with pytest.raises(images.ImageError):
        stats.image_batch(b"not an image", TINY)
    with pytest.raises(models.ConfigError):
        stats.image_batch(buf.getvalue(), replace(TINY, in_channels=4))


def test_charts_have_both_nets_log_scale_and_stage_marks():
    x, y = stats.sample_batch(TINY, 2)
    r = stats.compare_signal_flow(TINY, x, y, steps=1)
    fig = plots.plot_layer_stat(r, "grad_norm")
    assert [t.name for t in fig.data] == ["ResNet", "plain twin"] and fig.layout.yaxis.type == "log"
    assert len(fig.data[0].y) == 8 and len(fig.layout.shapes) == 4  # stem | stage 1 | stage 2 | stage 3 | fc
    assert [a.text for a in fig.layout.annotations] == ["stem", "stage 1", "stage 2", "stage 3", "fc"]
    fig = plots.plot_responses(r)
    assert len(fig.data[0].y) == 7  # stem conv + 6 block convs are 3x3
    assert len(plots.plot_losses(r).data[0].y) == 1
    table = stats.stats_table(r)
    assert len(table["layer"]) == 8 and table["ResNet grad_norm"] == list(r["resnet"]["grad_norm"])
