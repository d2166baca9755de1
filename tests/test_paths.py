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
    assert_readable(plot_path_gradients(paths.PathGradients(np.arange(4), share + 0.1, np.array([1.0, 3, 3, 1]),
                                                            share, share, 3)))
