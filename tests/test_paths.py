"""Paths through a ResNet (Veit et al. 2016, Section 5): path counts, the gradient along one path, by length."""
import copy
import itertools

import numpy as np
import pytest
import torch

from helpers import tiny_model
from resviz.lessons import paths
from resviz.models import plain_twin
from test_lesion import batch, randomise_bn, tiny


def test_path_counts_are_binomial():
    assert paths.path_counts(3) == [1, 3, 3, 1]
    assert paths.path_counts(4) == [1, 4, 6, 4, 1]
    dist = paths.path_length_distribution(54)  # ResNet-110: 54 blocks, the paper's Fig. 6
    assert sum(paths.path_counts(54)) == 2**54
    assert dist.sum() == pytest.approx(1.0)
    assert int(np.argmax(dist)) == 27


def test_path_gradients_sum_to_the_full_gradient():
    """The backward pass is linear: the 2**n path gradients add up to the ordinary input gradient."""
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


@pytest.mark.parametrize("shortcut,chunk", [("A", 6), ("B", 12), ("B", 10_000)])
def test_every_path_measured_exactly_equals_one_backward_pass_per_path(shortcut, chunk, monkeypatch):
    """The tree of paths (one block pass per branch, in chunks) gives each length's mean over all its paths."""
    monkeypatch.setattr(paths, "CHUNK_IMAGES", chunk)  # 6 images: one path at a time; 10,000: all at once
    model = randomise_bn(tiny(shortcut=shortcut))
    x, y = batch()
    res = paths.gradient_by_path_length(model, x, y, exact=True)
    assert res.exact and res.spread() is None and res.per_draw() == []
    net = copy.deepcopy(model)
    h0 = paths._stem(net, x)
    by_length = [[paths.path_gradient(net, h0, y, set(c)).flatten(1).norm(dim=1).mean().item()
                  for c in itertools.combinations(range(4), k)] for k in range(5)]
    np.testing.assert_allclose(res.per_path, [np.mean(v) for v in by_length], rtol=1e-4)
    assert len(set(np.round(by_length[2], 6))) == 6  # the six length-2 paths differ: a mean over all is needed
    assert not any(h for b in model.blocks() for h in b.add._forward_pre_hooks.values())


def test_exact_measurement_refuses_too_many_paths(monkeypatch):
    monkeypatch.setattr(paths, "EXACT_PATHS", 8)  # the tiny net has 2**4 = 16 paths
    assert paths.can_be_exact(3) and not paths.can_be_exact(4)
    with pytest.raises(ValueError, match="16 paths are too many"):
        paths.gradient_by_path_length(tiny(), *batch(), exact=True)


def test_sampled_measurement_keeps_each_draw_and_its_spread():
    model = randomise_bn(tiny(shortcut="B"))
    res = paths.gradient_by_path_length(model, *batch(), samples=3, seed=0)
    assert not res.exact and res.samples == 3 and res.draws.shape == (5, 3)
    np.testing.assert_allclose(res.per_path, res.draws.mean(axis=1))
    assert (res.draws[0] == res.draws[0, 0]).all() and (res.draws[4] == res.draws[4, 0]).all()  # one path each
    means = [d.mean_length for d in res.per_draw()]
    assert res.spread()[0] == (min(means), max(means)) and len(set(means)) == 3


def _measured(per_path, n, draws=None):
    return paths.from_per_path(np.asarray(per_path, dtype=float), n, None if draws is None else np.asarray(draws))


def test_verdict_says_which_box_and_only_what_the_numbers_show():
    Tone = paths.Tone
    # n = 2, counts 1, 2, 1. Shares from per-path norms (4, 1, 1): totals 4, 2, 1 -> mean (0*4 + 1*2 + 2*1)/7 = 0.571
    short = _measured([4, 1, 1], 2)
    assert short.mean_length == pytest.approx(4 / 7)
    tone, text = paths.verdict(short)
    assert tone is Tone.SUCCESS and "**0.6 blocks**" in text and "all 4 paths measured, exact" in text
    assert "shorter than a typical path (1 blocks)" in text and text.endswith("as in the paper.")
    # barely above the middle: totals 1, 2, 1.1 -> mean (0 + 2 + 2.2) / 4.1 = 1.02 >= n/2 = 1
    tone, text = paths.verdict(_measured([1, 1, 1.1], 2))
    assert tone is Tone.INFO and "no shorter than a typical path" in text and "not the paper's picture" in text
    # sampled, two draws on both sides of n/2 = 1: draw means 4/7 (short) and (0 + 2*1 + 2*4)/(1 + 2 + 4) = 10/7
    draws = [[4, 1], [1, 1], [1, 4]]
    tone, text = paths.verdict(_measured(np.mean(draws, axis=1), 2, draws))
    assert tone is Tone.WARNING and "estimated from 2 random paths per length" in text
    assert "alone gives 0.6 to 1.4 blocks" in text and "cannot say" in text and "as in the paper" not in text
    # sampled, both draws short: a verdict, with its spread
    draws = [[4, 5], [1, 1], [1, 1]]
    tone, text = paths.verdict(_measured(np.mean(draws, axis=1), 2, draws))
    assert tone is Tone.SUCCESS and "alone gives 0.5 to 0.6 blocks" in text
    tone, text = paths.verdict(_measured([4, 1, 1], 2, [[4], [1], [1]]))
    assert tone is Tone.SUCCESS and "one random path per length gives no spread" in text
    # a trained ResNet that learned nothing: the measurement, never "as in the paper" (a guessing plain twin
    # does not matter here: the paper's claim is about the ResNet)
    tone, text = paths.verdict(short, guessing=("ResNet",))
    assert tone is Tone.INFO and "**0.6 blocks**" in text and "no better than guessing" in text
    assert "as in the paper" not in text and "no verdict" in text
    assert paths.verdict(short, guessing=("plain twin",))[0] is Tone.SUCCESS


def test_gradient_by_path_length_counts_and_length_0():
    """k = 0 with identity shortcuts: the head's gradient, masked by each block's output ReLU."""
    model = randomise_bn(tiny_model(layers=(2,), widths=(4,)))
    x, y = batch()
    res = paths.gradient_by_path_length(model, x, y, samples=1)
    assert res.count.tolist() == [1, 2, 1]
    np.testing.assert_allclose(res.total, res.per_path * res.count)
    assert res.share.sum() == pytest.approx(1.0)
    with torch.no_grad():
        h0 = paths._stem(model, x)
        h1 = model.layer1[0](h0)
        h2 = model.layer1[1](h1)
    out = h2.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(torch.nn.functional.cross_entropy(paths._head(model, out), y, reduction="sum"), out)
    g = g * (h2 > 0) * (h1 > 0)  # back through relu_out of block 2, then of block 1, skips only
    assert res.per_path[0] == pytest.approx(g.flatten(1).norm(dim=1).mean().item(), rel=1e-5)


def test_mean_length_and_length_reaching_worked_by_hand():
    share = np.array([0.1, 0.5, 0.3, 0.1])
    g = paths.PathGradients(np.arange(4), np.ones(4), np.array([1.0, 3, 3, 1]), share, share, 3)
    assert g.mean_length == pytest.approx(0 * 0.1 + 1 * 0.5 + 2 * 0.3 + 3 * 0.1)  # 1.4
    assert g.length_reaching(0.5) == 1 and g.length_reaching(0.9) == 2 and g.length_reaching(1.0) == 3
    assert g.typical_lengths.tolist() == [1, 2]  # n = 3: C(3, 1) = C(3, 2) = 3


def test_paths_refuse_plain_net():
    with pytest.raises(ValueError, match="shortcuts"):
        paths.gradient_by_path_length(plain_twin(tiny()), *batch())


def test_path_chart_readable():
    from resviz.plots.paths import plot_path_gradients
    from test_lesion import assert_readable

    share = np.array([0.1, 0.5, 0.3, 0.1])
    fig = plot_path_gradients(paths.PathGradients(np.arange(4), share + 0.1, np.array([1.0, 3, 3, 1]), share, share, 3))
    assert_readable(fig)
    assert "(b) one path: mean of all" in [a.text.replace("<br>", " ") for a in fig.layout.annotations]
    sampled = paths.from_per_path(share, 3, np.stack([share, share], axis=1))
    assert "(b) one path: mean of 2 random" in [a.text.replace("<br>", " ")
                                                for a in plot_path_gradients(sampled).layout.annotations]
