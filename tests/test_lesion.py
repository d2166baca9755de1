"""Lesion study (Veit et al. 2016): deleting a block, on tiny models; averages over comparable blocks."""
import copy
import math

import numpy as np
import pytest
import torch

from helpers import tiny_model
from resviz.lessons import lesion
from resviz.models import plain_twin


def tiny(shortcut="A"):
    """Two stages of two blocks: identity blocks, a downsampling block, and their plain counterparts."""
    return tiny_model(shortcut=shortcut, layers=(2, 2))


def batch(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 4, (n,), generator=g)


def randomise_bn(model, seed=1):
    """Non-trivial BN statistics so a wrong lesion shows up in the outputs."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model


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
    assert res.names == ("layer1.0", "layer1.1", "layer2.0", "layer2.1")
    assert res.downsampling.tolist() == [False, False, True, False]
    assert res.possible.all()
    with torch.no_grad():
        assert res.accuracy[1] == (lesion.lesion(model, 1)(x).argmax(1) == y).sum().item() / len(y)
        assert res.intact == (model(x).argmax(1) == y).sum().item() / len(y)
    plain = lesion.lesion_study(plain_twin(model), x, y)
    assert plain.possible.tolist() == [True, True, False, True]
    assert math.isnan(plain.accuracy[2])


def result(acc, intact, down=(False, False, True, False), possible=(True, True, True, True)):
    return lesion.LesionResult(("a", "b", "c", "d"), np.array(acc, dtype=float), np.array(possible),
                               np.array(down), intact)


def test_comparison_averages_the_same_blocks_for_both_nets():
    """Worked by hand: block c downsamples (the plain net cannot lose it), so both means are over a, b, d."""
    res = result([0.8, 0.7, 0.2, 0.9], intact=0.9)
    plain = result([0.3, 0.5, np.nan, 0.4], intact=0.7, possible=(True, True, False, True))
    c = lesion.LesionComparison(res, plain, chance=0.1)
    assert c.comparable.tolist() == [True, True, False, True]
    assert c.mean_drop(res) == pytest.approx((0.1 + 0.2 + 0.0) / 3)  # c's 0.7 drop is not averaged in
    assert c.mean_drop(plain) == pytest.approx((0.4 + 0.2 + 0.3) / 3)
    assert c.resnet_downsampling_drop == pytest.approx(0.7)
    assert c.share_lost(res) == pytest.approx(0.1 / 0.8)  # learned 0.8 above guessing
    assert c.share_lost(plain) == pytest.approx(0.3 / 0.6)
    assert c.margin == pytest.approx(0.5 - 2 * 0.125) and c.resnet_much_more_robust


def test_comparison_with_a_net_that_learned_nothing_is_no_verdict():
    res = result([0.8, 0.8, 0.8, 0.8], intact=0.9)
    plain = result([0.1, 0.1, np.nan, 0.1], intact=0.1, possible=(True, True, False, True))
    c = lesion.LesionComparison(res, plain, chance=0.1)
    assert math.isnan(c.share_lost(plain)) and not c.resnet_much_more_robust


def assert_readable(fig):
    """Every text of the figure at least 14 px and dark: what a class reads from the back of the room."""
    from PIL import ImageColor

    def fonts(node, parent=""):
        if isinstance(node, dict):
            if parent.endswith("font") and "size" in node:
                yield node["size"], node.get("color")
            for k, v in node.items():
                yield from fonts(v, k)
        elif isinstance(node, list):
            for v in node:
                yield from fonts(v, parent)

    found = list(fonts(fig.to_plotly_json()))
    assert found and min(size for size, _ in found) >= 14, found
    for _, colour in found:
        if colour and colour not in ("white", "#ffffff"):  # white only on the dark contour fill
            assert sum(ImageColor.getrgb(colour)[:3]) < 3 * 80, colour


def test_lesion_chart_readable_in_the_house_colours():
    from resviz.plots.lesion import plot_lesion

    res = result([0.8, 0.7, 0.2, 0.9], intact=0.9)
    plain = result([0.3, 0.5, np.nan, 0.4], intact=0.7, possible=(True, True, False, True))
    fig = plot_lesion(lesion.LesionComparison(res, plain, chance=0.1))
    assert_readable(fig)
    colours = {t.name.split(":")[0].split(",")[0]: t.line.color for t in fig.data if t.mode and "lines" in t.mode}
    assert colours["ResNet"] == "#1f77b4" and colours["plain twin"] == "#d62728"
