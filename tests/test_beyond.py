"""Beyond the paper: lesion study, paths, shattered gradients, loss landscapes, disk cache (tiny models)."""
import copy
import math

import numpy as np
import pytest
import torch

from resviz import diskcache, landscape, lesion, paths, shattered
from resviz.models import ResNetConfig, build_model, plain_twin


def tiny(shortcut="A", layers=(2, 2), block="basic"):
    cfg = ResNetConfig(block=block, layers=layers, widths=(4, 8), stem="cifar", stem_width=4, input_size=8,
                       num_classes=3, shortcut=shortcut, name="tiny")
    return build_model(cfg, seed=0).eval()


def batch(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g)


def randomise_bn(model, seed=1):
    """Non-trivial BN statistics so a wrong lesion shows up in the outputs."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model


# --- lesion ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("shortcut,index", [("A", 1), ("A", 2), ("B", 2), ("B", 3)])
def test_lesion_equals_zeroing_the_residual_branch(shortcut, index):
    """Deleting a block = the block with F(x) = 0 (last BN's weight and bias zeroed): same outputs."""
    model = randomise_bn(tiny(shortcut))
    x, _ = batch()
    zeroed = copy.deepcopy(model)
    last_bn = zeroed.blocks()[index].bn2
    last_bn.weight.data.zero_()
    last_bn.bias.data.zero_()
    with torch.no_grad():
        torch.testing.assert_close(lesion.lesion(model, index)(x), zeroed(x))
        assert not torch.allclose(model(x), zeroed(x))  # the block did matter


def test_lesion_really_removes_the_block_and_leaves_the_original():
    model = randomise_bn(tiny())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cut = lesion.lesion(model, 1)
    assert isinstance(cut.layer1[1], lesion.SkipOnly)
    assert not any(k.startswith("layer1.1.conv") or k.startswith("layer1.1.bn") for k in cut.state_dict())
    assert isinstance(model.layer1[1], type(model.layer1[0]))  # original untouched
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k])
    # identity block deleted: output of block 0 flows straight into block 2
    x, _ = batch()
    with torch.no_grad():
        h = model.relu(model.bn1(model.conv1(x)))
        h = model.layer1[0](h)
        h = model.layer2(h)
        torch.testing.assert_close(cut(x), model.fc(torch.flatten(model.avgpool(h), 1)))


def test_plain_lesion_identity_or_impossible():
    plain = plain_twin(tiny())
    cut = lesion.lesion(plain, 1)
    assert isinstance(cut.layer1[1], torch.nn.Identity)
    with pytest.raises(lesion.LesionImpossible, match="layer2.0"):
        lesion.lesion(plain, 2)  # first block of stage 2 halves the size and doubles the channels


def test_lesion_study_marks_downsampling_and_impossible():
    model = tiny()
    x, y = batch(12)
    res = lesion.lesion_study(model, x, y)
    assert res["names"] == ["layer1.0", "layer1.1", "layer2.0", "layer2.1"]
    assert res["downsampling"].tolist() == [False, False, True, False]
    assert res["possible"].all()
    assert res["accuracy"][1] == lesion.accuracy(lesion.lesion(model, 1), x, y)
    plain = lesion.lesion_study(plain_twin(model), x, y)
    assert plain["possible"].tolist() == [True, True, False, True]
    assert math.isnan(plain["accuracy"][2])


# --- paths ----------------------------------------------------------------------------------------
def test_path_counts_are_binomial():
    assert paths.path_counts(3) == [1, 3, 3, 1]
    assert paths.path_counts(4) == [1, 4, 6, 4, 1]
    dist = paths.path_length_distribution(54)  # ResNet-110: 54 blocks, the paper's Fig. 6
    assert sum(paths.path_counts(54)) == 2**54
    assert dist.sum() == pytest.approx(1.0)
    assert int(np.argmax(dist)) == 27


def test_path_gradients_sum_to_the_full_gradient():
    """The backward pass is linear: the 2**n path gradients add up to the ordinary input gradient."""
    import itertools
    model = randomise_bn(tiny(shortcut="B"))
    x, y = batch()
    h0 = paths._stem(model, x).detach().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(paths._head(model, model.layer2(model.layer1(h0))), y,
                                             reduction="sum")
    (full,) = torch.autograd.grad(loss, h0)
    net = copy.deepcopy(model)
    subsets = [set(c) for k in range(5) for c in itertools.combinations(range(4), k)]
    assert len(subsets) == 16
    total = sum(paths.path_gradient(net, h0, y, s) for s in subsets)
    torch.testing.assert_close(total, full, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(paths.path_gradient(net, h0, y, {0}), paths.path_gradient(net, h0, y, {1}))
    assert not any(h for b in net.blocks() for h in b.add._forward_pre_hooks.values())  # hooks removed


def test_gradient_by_path_length_counts_and_length_0():
    """k = 0 with identity shortcuts: the head's gradient, masked by each block's output ReLU."""
    cfg = ResNetConfig(block="basic", layers=(2,), widths=(4,), stem="cifar", stem_width=4, input_size=8,
                       num_classes=3, name="one-stage")
    model = randomise_bn(build_model(cfg, seed=0).eval())
    x, y = batch()
    res = paths.gradient_by_path_length(model, x, y, samples=1)
    assert res["count"].tolist() == [1, 2, 1]
    np.testing.assert_allclose(res["total"], res["per_path"] * res["count"])
    assert res["share"].sum() == pytest.approx(1.0)
    with torch.no_grad():
        h0 = paths._stem(model, x)
        h1 = model.layer1[0](h0)
        h2 = model.layer1[1](h1)
    out = h2.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(torch.nn.functional.cross_entropy(paths._head(model, out), y, reduction="sum"), out)
    g = g * (h2 > 0) * (h1 > 0)  # back through relu_out of block 2, then of block 1, skips only
    assert res["per_path"][0] == pytest.approx(g.flatten(1).norm(dim=1).mean().item(), rel=1e-5)


def test_paths_refuse_plain_net():
    with pytest.raises(ValueError, match="shortcuts"):
        paths.gradient_by_path_length(plain_twin(tiny()), *batch())


# --- shattered gradients ----------------------------------------------------------------------------
def test_autocorrelation_hand_worked():
    ac = shattered.autocorrelation(np.array([1.0, -1.0, 1.0, -1.0]))
    np.testing.assert_allclose(ac, [1.0, -0.75, 0.5, -0.25])
    assert shattered.autocorrelation(np.ones(5), 2).tolist() == [0.0, 0.0, 0.0]


def test_input_gradient_matches_finite_differences():
    cfg = shattered.SweepConfig(depth=4, width=16, residual=True, n_points=5)
    net = shattered.build_sweep_net(cfg).double().eval()
    x = torch.tensor([[-0.9], [-0.3], [0.2], [0.7], [1.1]], dtype=torch.float64)  # no kink at 0
    g = shattered.input_gradients(net, x)
    eps = 1e-6
    with torch.no_grad():
        fd = ((net(x + eps) - net(x - eps)) / (2 * eps))[:, 0].numpy()
    np.testing.assert_allclose(g, fd, rtol=1e-4, atol=1e-6)


def test_deep_plain_gradients_shatter_resnet_stays_correlated():
    plain = shattered.shattered_sweep(shattered.SweepConfig(depth=24, width=64, n_points=128, residual=False))
    res = shattered.shattered_sweep(shattered.SweepConfig(depth=24, width=64, n_points=128, residual=True))
    shallow = shattered.shattered_sweep(shattered.SweepConfig(depth=2, width=64, n_points=128, residual=False))
    assert shallow["lag1"] > 0.8
    assert res["lag1"] > plain["lag1"] + 0.2
    assert plain["grad"].shape == (128,) and plain["autocorr"][0] == pytest.approx(1.0)


# --- loss landscape -----------------------------------------------------------------------------------
def test_filter_normalisation_matches_filter_norms():
    model = tiny(shortcut="B")
    d = landscape.random_direction(model, seed=3)
    for name, w in model.named_parameters():
        if w.dim() <= 1:
            assert d[name].abs().sum() == 0, name
        else:
            torch.testing.assert_close(d[name].flatten(1).norm(dim=1), w.flatten(1).norm(dim=1))
    d2 = landscape.random_direction(model, seed=4)
    assert not torch.allclose(d["layer1.0.conv1.weight"], d2["layer1.0.conv1.weight"])


def test_loss_grid_centre_is_the_model_loss():
    model = tiny()
    x, y = batch(8)
    grid = landscape.loss_grid(model, x, y, steps=3, span=0.5, dims=2)
    assert grid["loss"].shape == (3, 3)
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(model(x), y).item()
    assert grid["loss"][1, 1] == pytest.approx(expected, rel=1e-5)
    assert grid["loss"][0, 0] != pytest.approx(expected)
    one = landscape.loss_grid(model, x, y, steps=3, span=0.5, dims=1)
    assert one["loss"].shape == (3,) and one["loss"][1] == pytest.approx(expected, rel=1e-5)
    assert landscape.loss_grid(model, x, y, steps=3, should_stop=lambda: True) is None


def test_background_grid_lands_in_disk_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RESVIZ_CACHE", str(tmp_path))
    assert landscape.start_background("grid-a", lambda: {"loss": np.eye(2)}) in ("running", "done")
    landscape._jobs["grid-a"].join(10)
    assert landscape.background_status("grid-a") == "done"
    np.testing.assert_array_equal(diskcache.load("grid-a")["loss"], np.eye(2))


# --- disk cache ---------------------------------------------------------------------------------------
def test_disk_cache_roundtrip_corrupt_and_cap(tmp_path, monkeypatch):
    monkeypatch.setenv("RESVIZ_CACHE", str(tmp_path))
    sd = {"w": torch.arange(3.0)}
    diskcache.save("pair/resnet20 seed=0", {"state_dict": sd, "acc": np.array([0.5]), "label": "x"})
    back = diskcache.load("pair/resnet20 seed=0")
    torch.testing.assert_close(back["state_dict"]["w"], sd["w"])
    assert back["acc"].tolist() == [0.5] and back["label"] == "x"
    diskcache.path_for("bad").write_bytes(b"not a torch file")
    assert diskcache.load("bad") is None and not diskcache.path_for("bad").exists()
    diskcache.save("big", {"x": torch.zeros(300_000)})  # ~1.2 MB
    diskcache.enforce_cap(cap_mb=0.5)
    assert not diskcache.exists("pair/resnet20 seed=0") or not diskcache.exists("big")
    assert not list(tmp_path.glob(".tmp-*"))
