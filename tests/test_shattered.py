"""Shattered gradients (Balduzzi et al. 2017): the sweep, its autocorrelation, and the fall with depth."""
import numpy as np
import pytest
import torch

from resviz.lessons import shattered


def test_autocorrelation_hand_worked():
    ac = shattered.autocorrelation(np.array([1.0, -1.0, 1.0, -1.0]))
    np.testing.assert_allclose(ac, [1.0, -0.75, 0.5, -0.25])
    assert shattered.autocorrelation(np.ones(5), 2).tolist() == [0.0, 0.0, 0.0]


def test_a_sweeps_lag_1_is_the_autocorrelation_at_lag_1_not_another_lag(monkeypatch):
    """Gradients 1, 2, 3, 4: centred -1.5, -0.5, 0.5, 1.5 (sum of squares 5); lag 1: (0.75 - 0.25 + 0.75) / 5 = 0.25,
    lag 2: (-0.75 - 0.75) / 5 = -0.3. The sweep, the depth curve and their autocorrelation must all read lag 1."""
    monkeypatch.setattr(shattered, "input_gradients", lambda net, x: np.array([1.0, 2.0, 3.0, 4.0]))
    cfg = shattered.SweepConfig(depth=2, width=4, n_points=4)
    sweep = shattered.shattered_sweep(cfg, 3)
    assert sweep.lag1 == pytest.approx(0.25) and sweep.autocorr[1] == pytest.approx(0.25)
    np.testing.assert_allclose(sweep.autocorr, [1.0, 0.25, -0.3, -0.45])  # lag 3: (-1.5 * 1.5) / 5
    curve = shattered.depth_curve(cfg, (2, 4), seeds=(0, 1))
    np.testing.assert_allclose(curve.draws(True), 0.25) and np.testing.assert_allclose(curve.plain, 0.25)


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
    two = shattered.depth_curve(cfg, (2, 6), seeds=(3, 4))
    np.testing.assert_allclose(two.draws(True)[0], curve.resnet) and np.testing.assert_allclose(
        two.resnet, two.draws(True).mean(axis=0))
    assert two.seeds == (3, 4) and shattered.curve_seeds(7) == (7, 8, 9, 10, 11)


def averaged(plain, resnet, depths=(2, 24, 50, 100)):
    """A depth curve from each initialisation's rows (initialisations x depths)."""
    plain, resnet = np.array(plain, dtype=float), np.array(resnet, dtype=float)
    return shattered.DepthCurve(depths, plain.mean(axis=0), resnet.mean(axis=0), plain, resnet,
                                tuple(range(len(plain))))


def test_depth_verdict_worked_by_hand_for_each_box():
    Tone = shattered.Tone
    plain = [[0.95, 0.05, 0.0, -0.05], [0.85, -0.05, 0.1, 0.05]]  # means 0.9, 0, 0.05, 0; highest 0.05, 0.1, 0.05
    tone, text = shattered.depth_verdict(averaged(plain, [[0.9, 0.7, 0.6, 0.5], [1.0, 0.5, 0.4, 0.3]]))
    assert tone is Tone.SUCCESS and "Averaged over 2 initialisations (seeds 0–1" in text
    assert "the plain net's lag-1 correlation falls from 0.90 at 2 layers to 0.00 at 100" in text
    assert "inside white noise's range (below 0.125 = 2/√256) from 24 layers on" in text
    assert "the ResNet's falls from 0.95 at 2 layers to 0.40 at 100 (its draws: 0.30 to 0.50)" in text
    # gaps at 24, 50, 100: 0.6, 0.45, 0.4 -> 0.48 on average
    assert "every ResNet draw is above every plain draw (by 0.48 on average)" in text and "Balduzzi" in text
    # separated, but by little: ResNet means 0.2, 0.2, 0.2 at 24, 50, 100 (gap 0.18 < 0.25)
    tone, text = shattered.depth_verdict(averaged(plain, [[0.9, 0.2, 0.2, 0.2], [1.0, 0.2, 0.2, 0.2]]))
    assert tone is Tone.INFO and "by only 0.18 on average" in text and "Balduzzi" not in text
    # inside the noise: one ResNet draw at 50 layers (0.05) below the highest plain draw there (0.1)
    tone, text = shattered.depth_verdict(averaged(plain, [[0.9, 0.7, 0.05, 0.5], [1.0, 0.5, 0.8, 0.3]]))
    assert tone is Tone.WARNING and "At 50 layers the draws overlap (ResNet 0.05 to 0.80, plain 0.00 to 0.10)" in text
    assert "cannot tell the two nets apart" in text and "Balduzzi" not in text
    # a ResNet curve that rises says so, and one draw is no trend
    tone, text = shattered.depth_verdict(averaged(plain, [[0.5, 0.7, 0.6, 0.8], [0.5, 0.5, 0.6, 0.8]]))
    assert "the ResNet's rises from 0.50 at 2 layers to 0.80 at 100" in text
    tone, text = shattered.depth_verdict(shattered.DepthCurve((2, 100), np.array([0.9, 0.0]), np.array([0.9, 0.6])))
    assert tone is Tone.WARNING and "a single draw jumps" in text and "falls" not in text


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
    banded = plot_depth_curve(averaged([[0.9, 0.1], [0.8, 0.0]], [[0.9, 0.6], [0.95, 0.4]], (2, 4)), 4)
    assert_readable(banded)
    band = next(t for t in banded.data if t.name == "ResNet: lowest to highest draw")
    assert list(band.y) == [0.95, 0.6, 0.4, 0.9] and band.fill == "toself"  # highest out, lowest back
    assert {"ResNet, mean of 2", "plain net, mean of 2"} <= {t.name for t in banded.data}
