"""Shattered gradients (Balduzzi et al. 2017): the sweep, its autocorrelation, and the fall with depth."""
import numpy as np
import pytest
import torch

from resviz.lessons import shattered


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


def test_deep_plain_gradients_shatter_resnet_decorrelates_slowly():
    plain = shattered.shattered_sweep(shattered.SweepConfig(depth=24, width=64, n_points=128, residual=False))
    res = shattered.shattered_sweep(shattered.SweepConfig(depth=24, width=64, n_points=128, residual=True))
    shallow = shattered.shattered_sweep(shattered.SweepConfig(depth=2, width=64, n_points=128, residual=False))
    assert shallow.lag1 > 0.8
    assert res.lag1 > plain.lag1 + 0.2
    assert plain.grad.shape == (128,) and plain.autocorr[0] == pytest.approx(1.0)


def test_depth_curve_is_the_sweeps_and_mean_gap_worked_by_hand():
    cfg = shattered.SweepConfig(width=16, n_points=32, seed=3)
    curve = shattered.depth_curve(cfg, (2, 6))
    assert curve.depths == (2, 6)
    assert curve.resnet[1] == shattered.shattered_sweep(shattered.SweepConfig(
        depth=6, width=16, n_points=32, seed=3, residual=True), 1).lag1
    by_hand = shattered.DepthCurve((2, 24, 50, 100), np.array([0.9, 0.1, 0.0, -0.1]), np.array([0.9, 0.5, 0.4, 0.3]))
    assert by_hand.mean_gap() == pytest.approx((0.4 + 0.4 + 0.4) / 3)


def test_shattered_charts_readable_in_the_house_colours():
    from resviz.plots.shattered import plot_depth_curve, plot_shattered
    from test_lesion import assert_readable

    cfg = shattered.SweepConfig(depth=4, width=8, n_points=16)
    plain, res = shattered.shattered_sweep(cfg, 5), shattered.shattered_sweep(shattered.SweepConfig(
        depth=4, width=8, n_points=16, residual=True), 5)
    assert_readable(plot_shattered(plain, res, 4))
    fig = plot_depth_curve(shattered.DepthCurve((2, 4), np.array([0.9, 0.5]), np.array([0.9, 0.8])), 4)
    assert_readable(fig)
    assert {t.name: t.line.color for t in fig.data} == {"ResNet": "#1f77b4", "plain net": "#d62728"}
