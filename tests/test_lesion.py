"""Lesion study (Veit et al. 2016): deleting a block, on tiny models; averages over comparable blocks."""
import copy
import math

import numpy as np
import pytest
import torch

from helpers import tiny_model
from resviz.lessons import lesion
from resviz.lessons.training import Tone
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


def result(acc, intact, down=(False, False, True, False), possible=(True, True, True, True), images=1000,
           names=("a", "b", "c", "d")):
    """A hand-made lesion study: accuracies with each block deleted, measured on ``images`` test images."""
    return lesion.LesionResult(tuple(names), np.array(acc, dtype=float), np.array(possible), np.array(down), intact,
                               images)


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


# --- the verdict: no verdict from noise ----------------------------------------------------------------------
def test_share_and_its_noise_worked_by_hand():
    # Intact 60%, 35% without the block, guessing 10%, 100 images: learned L = 0.5, lost 0.25 of it. Standard error
    # by propagation: sqrt((dI (M - c) / L^2)^2 + (dM / L)^2), dI = sqrt(.6 * .4 / 100), dM = sqrt(.35 * .65 / 100).
    s = lesion.share_of(0.6, 0.35, (0.35 * 0.65 / 100) ** 0.5, 0.1, 100)
    assert s.raw == pytest.approx(0.5)
    assert s.noise == pytest.approx(1.96 * math.hypot(0.04899 * 0.25 / 0.25, 0.04770 / 0.5), abs=1e-4)
    assert s.words() == "50% ± 21"
    # Lesioned to exactly guessing: only the lesioned accuracy's error counts (0.03 / 0.4).
    assert lesion.share_of(0.5, 0.1, 0.03, 0.1, 100).noise == pytest.approx(1.96 * 0.075)
    # Shares outside [0, 1] are clipped (a deletion that raised accuracy loses nothing), and say so.
    up = lesion.share_of(0.5, 0.6, 0.05, 0.1, 100)
    assert up.raw == pytest.approx(-0.25) and up.value == 0.0 and up.clipped and up.words().startswith("0% ±")
    assert lesion.share_of(0.5, 0.05, 0.02, 0.1, 100).value == 1.0
    nothing = lesion.share_of(0.1, 0.1, 0.03, 0.1, 100)
    assert math.isnan(nothing.value) and not nothing.clipped and nothing.words() == "—"


def test_accuracy_interval_worked_by_hand():
    from resviz import pair

    # 12% on 250 images: 1.96 * sqrt(.12 * .88 / 250) = 4.0 points: 8-16%, which reaches guessing's 10%.
    lo, hi = pair.accuracy_interval(0.12, 250)
    assert (lo, hi) == (pytest.approx(0.0797, abs=1e-4), pytest.approx(0.1603, abs=1e-4))
    assert pair.is_guessing(0.12, 250, 0.1) and not pair.is_guessing(0.20, 250, 0.1)
    assert pair.interval_words(0.12, 250) == "12% (95% interval 8-16% on 250 images)"
    assert not pair.is_guessing(0.12, 10_000, 0.1)  # the same 12% on many images is clearly above guessing


def resnet56_builtin():
    """The issue's built-in ResNet-56 pair: ResNet 20%, twin 12% on 250 images, guessing 10%."""
    res = result([0.19, 0.17, 0.12, 0.18], intact=0.20, images=250)
    plain = result([0.11, 0.12, np.nan, 0.12], intact=0.12, possible=(True, True, False, True), images=250)
    return lesion.LesionComparison(res, plain, chance=0.1)


def test_a_twin_within_noise_of_guessing_gets_no_verdict_and_its_interval():
    v = lesion.verdict(resnet56_builtin())
    assert v.finding is lesion.Finding.GUESSING and v.tone is Tone.INFO
    assert v.text.startswith("**No verdict:** the plain twin gets 12% (95% interval 8-16% on 250 images): within "
                             "the measurement's noise of guessing (10%).")
    assert "ResNet gets" not in v.text  # 20% on 250 images is above guessing: only the twin is named
    assert "Train the pair longer or study another pair" in v.text and "As in the paper" not in v.text


def test_a_tiny_random_pair_with_negative_shares_gets_no_verdict():
    """The issue's '-82%' and '-133%': both nets guess, and deletions that raise accuracy are not robustness."""
    res = result([0.33, 0.30, 0.26, 0.31], intact=0.26, images=250)
    plain = result([0.31, 0.33, np.nan, 0.30], intact=0.27, possible=(True, True, False, True), images=250)
    c = lesion.LesionComparison(res, plain, chance=0.25)
    assert c.share(res).raw < 0 and c.share_lost(res) == 0.0 and c.share_lost(plain) == 0.0
    assert c.margin == 0.0 and not c.resnet_much_more_robust  # the raw shares' margin was positive
    v = lesion.verdict(c)
    assert v.finding is lesion.Finding.GUESSING and "the ResNet gets 26%" in v.text and "the plain twin gets" in v.text


def test_the_pairs_own_check_also_stops_the_verdict():
    v = lesion.verdict(well_trained(), pair_guessing=("plain twin",))
    assert v.finding is lesion.Finding.GUESSING and v.tone is Tone.INFO
    assert "the plain twin is within noise of guessing on the pair's own check above" in v.text


def well_trained(images=1000):
    """Paper-like: the ResNet barely notices a deletion, the plain twin loses most of what it learned."""
    res = result([0.88, 0.87, 0.5, 0.89], intact=0.9, images=images)
    plain = result([0.3, 0.4, np.nan, 0.35], intact=0.8, possible=(True, True, False, True), images=images)
    return lesion.LesionComparison(res, plain, chance=0.1)


def test_a_well_trained_pair_as_in_the_paper_is_green_with_its_noise():
    c = well_trained()
    assert c.share_lost(c.resnet) == pytest.approx(0.02 / 0.8) and c.share_lost(c.plain) == pytest.approx(0.45 / 0.7)
    assert c.margin == pytest.approx(0.45 / 0.7 - 2 * 0.025) and c.margin - c.margin_noise > 0
    v = lesion.verdict(c)
    assert v.finding is lesion.Finding.AS_IN_PAPER and v.tone is Tone.SUCCESS
    assert v.text.startswith("**As in the paper:** one deletion costs the ResNet **3% ± 3**")
    assert "the plain twin **64% ± " in v.text and "95% interval on 1000 images" in v.text
    assert "by more than the measurement's noise" in v.text


def test_the_same_pair_measured_on_few_images_is_inside_the_noise():
    # A pair barely above guessing on 100 images: shares of a few points learned carry huge intervals.
    res = result([0.2, 0.22, 0.1, 0.21], intact=0.24, images=100)
    plain = result([0.15, 0.17, np.nan, 0.16], intact=0.23, possible=(True, True, False, True), images=100)
    c = lesion.LesionComparison(res, plain, chance=0.1)
    assert not c.guessing()  # both 95% intervals clear 10%, just
    assert c.margin > 0 and abs(c.margin) < c.margin_noise
    v = lesion.verdict(c)
    assert v.finding is lesion.Finding.INSIDE_NOISE and v.tone is Tone.INFO
    assert v.text.startswith("**No verdict:** one deletion costs the ResNet") and "inside the measurement's noise" in v.text


def test_a_first_block_that_matters_is_said_plainly_not_green():
    """The trained ResNet-20 pair: deleting layer1.0 drops 75% to 44%, the other blocks cost little."""
    names = ("layer1.0", "layer1.1", "layer2.0", "layer2.1")
    res = result([0.44, 0.72, 0.5, 0.73], intact=0.75, images=1000, names=names)
    plain = result([0.11, 0.12, np.nan, 0.12], intact=0.6, possible=(True, True, False, True), images=1000, names=names)
    c = lesion.LesionComparison(res, plain, chance=0.1)
    assert [name for name, _, _ in c.blocks_that_matter()] == ["layer1.0"]
    v = lesion.verdict(c)
    assert v.finding is lesion.Finding.BLOCKS_MATTER and v.tone is Tone.WARNING
    assert v.text.startswith("**Partly as in the paper.**") and "As in the paper:" not in v.text
    assert "deleting layer1.0 drops the ResNet from 75% to 44% (48% ± " in v.text
    assert "here the first block matters far more than in the paper" in v.text
    assert "Section 4.1, Fig. 3a" in v.text and "110-layer ResNet (54 blocks)" in v.text


def test_a_resnet_that_is_not_more_robust_beyond_the_noise_is_a_warning():
    res = result([0.5, 0.55, 0.4, 0.52], intact=0.9, images=1000)
    plain = result([0.5, 0.55, np.nan, 0.52], intact=0.9, possible=(True, True, False, True), images=1000)
    c = lesion.LesionComparison(res, plain, chance=0.1)
    assert c.margin + c.margin_noise < 0
    v = lesion.verdict(c)
    assert v.finding is lesion.Finding.NOT_THE_PAPER and v.tone is Tone.WARNING
    assert v.text.startswith("**Not the paper's picture:**") and "this pair has 4 blocks" in v.text


def test_a_clipped_share_is_explained():
    res = result([0.92, 0.91, 0.5, 0.93], intact=0.9, images=1000)  # the deletions raised accuracy on average
    plain = result([0.3, 0.4, np.nan, 0.35], intact=0.8, possible=(True, True, False, True), images=1000)
    v = lesion.verdict(lesion.LesionComparison(res, plain, chance=0.1))
    assert "For the ResNet the deletions raised accuracy on average (2.0%), counted as losing nothing (0%)." in v.text


def test_bottleneck_pair_first_block_changes_channels_and_cannot_be_deleted_from_the_twin():
    """A bottleneck's layer1.0 keeps the size and quadruples the channels: shape-changing for both nets."""
    model = randomise_bn(tiny_model(block="bottleneck", layers=(2, 2)))
    plain = plain_twin(model)
    assert model.blocks()[0].stride == 1 and plain.blocks()[0].downsample is None
    assert [lesion.changes_shape(b) for b in plain.blocks()] == [True, False, True, False]
    x, y = batch(12)
    res, twin = lesion.lesion_study(model, x, y), lesion.lesion_study(plain, x, y)  # no RuntimeError
    assert res.downsampling.tolist() == [True, False, True, False] and res.possible.all()
    assert twin.possible.tolist() == [False, True, False, True]
    with pytest.raises(lesion.LesionImpossible, match="layer1.0"):
        lesion.lesion(plain, 0)
    c = lesion.LesionComparison(res, twin, chance=0.25)
    assert c.comparable.tolist() == [False, True, False, True]
