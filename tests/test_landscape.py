"""Loss landscapes (Li et al. 2018): filter-normalised directions, grids, non-convexity of a slice, the verdict
across several slices, the background finer grid."""
import numpy as np
import pytest
import torch

from resviz import disk_cache, runs
from resviz.lessons import landscape
from test_lesion import batch, tiny


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RESVIZ_CACHE", str(tmp_path / "cache"))


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
    assert grid.loss.shape == (3, 3)
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(model(x), y).item()
    assert grid.centre_loss == pytest.approx(expected, rel=1e-5)
    assert grid.loss[0, 0] != pytest.approx(expected)
    one = landscape.loss_grid(model, x, y, steps=3, span=0.5, dims=1)
    assert one.loss.shape == (3,) and one.centre_loss == pytest.approx(expected, rel=1e-5)


def grid_of(z, span=1.0):
    a = np.linspace(-span, span, z.shape[0])
    return landscape.Grid(a, a, z, np.zeros_like(z), 2)


def surface(f, n=7):
    a = np.linspace(-1, 1, n)
    aa, bb = np.meshgrid(a, a)  # aa varies along a row (alpha), bb down a column (beta): loss[j, i] at beta_j, alpha_i
    return grid_of(f(aa, bb))


def test_slice_curvature_is_the_hessian_of_a_quadratic():
    g = surface(lambda a, b: 1 + 3 * a**2 + b**2 + a * b)  # Hessian [[6, 1], [1, 2]]: eigenvalues 4 -+ sqrt(5)
    low, high = g.curvatures()
    assert low.shape == (5, 5)
    np.testing.assert_allclose(low, 4 - np.sqrt(5), rtol=1e-9)
    np.testing.assert_allclose(high, 4 + np.sqrt(5), rtol=1e-9)
    skew = surface(lambda a, b: a**2 + 4 * b**2)  # which axis is which must not matter to the eigenvalues
    np.testing.assert_allclose(skew.curvatures()[1], 8, rtol=1e-9)


def test_nonconvexity_bowl_plane_saddle_and_egg_crate():
    assert surface(lambda a, b: 0.2 + a**2 + 0.5 * b**2 + 0.3 * a * b).nonconvexity() == 0  # a bowl is convex
    assert surface(lambda a, b: 5 + 40 * a**2 + b**2).nonconvexity() == 0  # a steep narrow valley too
    noise = np.random.default_rng(0).standard_normal((7, 7))
    plateau = surface(lambda a, b: np.log(10) + 0.01 * a + 1e-3 * noise)  # a net at chance: flat, not rough
    assert plateau.nonconvexity() == 0
    assert surface(lambda a, b: 1 + a**2 - b**2).nonconvexity() == pytest.approx(1)  # a saddle: down as much as up
    assert surface(lambda a, b: 1 + a**2 - 0.25 * b**2).nonconvexity() == pytest.approx(0.25)
    assert surface(lambda a, b: 3 - a**2 - b**2).nonconvexity() == pytest.approx(1)  # a dome: no upward bend at all
    egg = surface(lambda a, b: 2 + np.cos(4 * a) + np.cos(4 * b))  # an egg crate: saddles and domes between bowls
    assert 0.4 < egg.nonconvexity() < 0.9
    ratio = egg.negative_curvature()
    assert ratio.min() == 0 and ratio.max() == pytest.approx(1)  # bowls at some points, domes at others


def test_a_plateau_only_just_curved_enough_counts():
    wave = lambda amp: surface(lambda a, b: 2 + amp * np.cos(3 * a) * np.cos(3 * b))  # noqa: E731
    assert wave(0.001).nonconvexity() == 0  # curvature at most 0.009: below FLAT
    assert wave(1.0).nonconvexity() > 0.3  # the same shape, tall enough to bend: rough


def study(res, plain):
    return landscape.DirectionStudy(tuple(range(0, 2 * len(res), 2)), tuple(res), tuple(plain))


def test_findings_need_every_slice_to_agree_beyond_the_margin():
    m, F = landscape.MARGIN, landscape.Finding
    assert study([0.1] * 5, [0.1 + 2 * m] * 5).finding() is F.PLAIN_ROUGHER
    assert study([0.5] * 5, [0.5 - 2 * m] * 5).finding() is F.RESNET_ROUGHER
    assert study([0.3] * 5, [0.3 + 2 * m] * 4 + [0.3 + m / 2]).finding() is F.INSIDE_MARGIN  # one slice too close
    assert study([0.3] * 5, [0.3 + 2 * m] * 4 + [0.3 - 2 * m]).finding() is F.DISAGREE  # one slice reverses it
    smooth = landscape.SMOOTH
    assert study([smooth / 2] * 5, [smooth] * 2 + [smooth / 4] * 3).finding() is F.BOTH_SMOOTH
    assert study([smooth / 2] * 5, [smooth + 0.01] + [smooth / 4] * 4).finding() is F.DISAGREE


def test_verdict_boxes_and_sentences():
    from resviz.lessons.training import Tone

    m = landscape.MARGIN
    tone, text = landscape.verdict(None, 56, ("plain twin",))
    assert tone is Tone.INFO and text.startswith("**No verdict:** the plain twin of this pair is no better than")
    tone, text = landscape.verdict(study([0.1] * 5, [0.4] * 5), 56)
    assert tone is Tone.SUCCESS and "As in Li et al." in text and "on all 5 random slices" in text
    assert "ResNet 0.10 to 0.10, plain twin 0.40 to 0.40" in text
    tone, text = landscape.verdict(study([0.1] * 5, [0.4] * 5), 20)
    assert tone is Tone.WARNING and "Not what Li et al. found at this depth (20 layers)" in text
    tone, text = landscape.verdict(study([0.4] * 5, [0.1] * 5), 56)
    assert tone is Tone.WARNING and "the ResNet's slice is less convex" in text
    tone, text = landscape.verdict(study([0.05] * 5, [0.1] * 5), 20)
    assert tone is Tone.SUCCESS and "As in Li et al. at 20 layers" in text
    tone, text = landscape.verdict(study([0.05] * 5, [0.1] * 5), 56)
    assert tone is Tone.WARNING and "Not what Li et al. found for nets this deep (56 layers)" in text
    tone, text = landscape.verdict(study([0.3] * 5, [0.3 + 2 * m] * 3 + [0.3 - 2 * m] * 2), 56)
    assert tone is Tone.INFO and "**No clear difference:** the random slices disagree" in text
    assert "less convex on 3 of 5, the ResNet's on 2" in text
    tone, text = landscape.verdict(study([0.3] * 5, [0.3 + m / 2] * 5), 56)
    assert tone is Tone.INFO and "less convex on all 5 random slices, but on 5 of them by no more than" in text


def test_pair_grids_roundtrip_through_the_disk_cache():
    model = tiny()
    x, y = batch(8)
    g = landscape.pair_grids(model, model, x, y, steps=3, span=0.5, dims=2)
    disk_cache.save("grids", g.as_dict())
    back = landscape.PairGrids.from_dict(disk_cache.load("grids"))
    np.testing.assert_array_equal(back.plain.loss, g.plain.loss)
    assert back.resnet.dims == 2 and back.resnet.centre_loss == g.resnet.centre_loss


def test_finer_grid_is_a_shared_run_that_lands_in_the_disk_cache(monkeypatch):
    from helpers import tiny_model
    from resviz import pair

    monkeypatch.setattr(landscape, "FINE", 3)
    model = tiny_model(frozen=True)
    trained = pair.TrainedPair(model.cfg, model.state_dict(), model.state_dict(), "same weights twice")
    p = pair.LoadedPair(trained, pair.PairSource.SESSION, model, model, 0.5, 0.5)
    assert landscape.stored_fine_grid(p, 1.0, 0) is None  # only looks: starts nothing
    key = ("landscape", landscape.fine_key(p, 1.0, 0))
    assert key not in [k for k, _ in runs.registry().overview()]
    first = landscape.finer_grid(p, 1.0, 0)
    assert first.grids is None and first.watch is not None and first.watch.key == key
    done = first.watch.wait(60)
    assert done.status.state is runs.State.FINISHED
    assert done.records[-1] == {"step": 18, "steps": 18}  # 3x3 points for each of the two nets
    again = landscape.finer_grid(p, 1.0, 0)  # from the disk cache now: no run
    assert again.watch is None
    np.testing.assert_array_equal(again.grids.plain.loss, done.result.plain.loss)
    x, y = landscape._batch(p, landscape.FINE_BATCH)
    np.testing.assert_allclose(again.grids.resnet.loss, landscape.loss_grid(model, x, y, 3, 1.0, 2, 0).loss)


def test_pair_grid_records_stop_when_closed_and_leave_the_model_as_it_was():
    model = tiny().train()
    x, y = batch(8)
    gen = landscape.grid_steps(model, x, y, 3, 1.0, 2, 0)
    next(gen)
    assert not model.training  # evaluated in eval mode
    gen.close()  # what a shared run does when nobody watches any more
    assert model.training


def test_direction_seeds_give_each_slice_its_own_two_directions():
    assert landscape.direction_seeds(3) == (3, 5, 7, 9, 11)[:landscape.DIRECTIONS]
    assert landscape.DIRECTIONS >= 3


def test_landscape_charts_readable_and_on_one_scale():
    from resviz.plots.landscape import (plot_landscape_1d, plot_landscape_contours, plot_landscape_surfaces,
                                       plot_negative_curvature)
    from test_lesion import assert_readable

    a = np.linspace(-1, 1, 3)
    low, high = np.full((3, 3), 0.5), np.full((3, 3), 8.0)
    g = landscape.PairGrids(landscape.Grid(a, a, low, low, 2), landscape.Grid(a, a, high, high, 2))
    line = landscape.PairGrids(landscape.Grid(a, a[:1], low[0], low[0], 1), landscape.Grid(a, a[:1], high[0],
                                                                                           high[0], 1))
    for fig in (plot_landscape_1d(line), plot_landscape_contours(g), plot_landscape_surfaces(g),
                plot_negative_curvature(g)):
        assert_readable(fig)
    surf = plot_landscape_surfaces(g)
    assert surf.layout.scene.zaxis.range == surf.layout.scene2.zaxis.range  # equal heights mean equal losses
    assert surf.layout.scene.zaxis.range[0] <= np.log10(0.5) and surf.layout.scene.zaxis.range[1] >= np.log10(8)


def test_the_map_of_downward_bends_shows_each_inner_point_on_one_scale():
    from resviz.plots.landscape import plot_negative_curvature

    saddle, bowl = surface(lambda a, b: 1 + a**2 - b**2), surface(lambda a, b: 1 + a**2 + b**2)
    fig = plot_negative_curvature(landscape.PairGrids(bowl, saddle))
    res, plain = fig.data
    assert np.shape(res.z) == (5, 5) and list(res.x) == list(bowl.alphas[1:-1])
    assert np.max(res.z) == 0 and np.min(plain.z) == pytest.approx(1)  # the bowl curves up, the saddle down as much
    assert (res.zmin, res.zmax) == (plain.zmin, plain.zmax) == (0, 1)
