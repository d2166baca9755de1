"""Loss landscapes (Li et al. 2018): filter-normalised directions, grids, roughness, the background finer grid."""
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


def grid_of(z):
    a = np.linspace(-1, 1, z.shape[0])
    return landscape.Grid(a, a, 10 ** z, np.zeros_like(z), 2)


def test_roughness_is_zero_for_a_bowl_and_grows_with_bumps():
    a = np.linspace(-1, 1, 7)
    aa, bb = np.meshgrid(a, a)
    bowl = 0.2 + aa**2 + 0.5 * bb**2 + 0.3 * aa * bb  # log10 loss: any quadratic is a bowl
    assert grid_of(bowl).roughness() == pytest.approx(0, abs=1e-9)
    checker = 0.1 * (-1.0) ** (np.arange(7)[:, None] + np.arange(7)[None, :])
    assert grid_of(bowl + checker).roughness() == pytest.approx(0.1, rel=0.05)  # a checkerboard barely fits a bowl
    assert grid_of(bowl + 2 * checker).roughness() > grid_of(bowl + checker).roughness()


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


def test_rougher_twin_is_expected_only_for_deep_nets():
    from resviz.models import get_config

    assert not landscape.rougher_twin_expected(get_config("resnet20"))
    assert landscape.rougher_twin_expected(get_config("resnet56"))
    assert landscape.claims((0,), full=False) == []  # checked on a deep pair, at full size only


def test_landscape_charts_readable_and_on_one_scale():
    from resviz.plots.landscape import plot_landscape_1d, plot_landscape_contours, plot_landscape_surfaces
    from test_lesion import assert_readable

    a = np.linspace(-1, 1, 3)
    low, high = np.full((3, 3), 0.5), np.full((3, 3), 8.0)
    g = landscape.PairGrids(landscape.Grid(a, a, low, low, 2), landscape.Grid(a, a, high, high, 2))
    line = landscape.PairGrids(landscape.Grid(a, a[:1], low[0], low[0], 1), landscape.Grid(a, a[:1], high[0],
                                                                                           high[0], 1))
    for fig in (plot_landscape_1d(line), plot_landscape_contours(g), plot_landscape_surfaces(g)):
        assert_readable(fig)
    surf = plot_landscape_surfaces(g)
    assert surf.layout.scene.zaxis.range == surf.layout.scene2.zaxis.range  # equal heights mean equal losses
    assert surf.layout.scene.zaxis.range[0] <= np.log10(0.5) and surf.layout.scene.zaxis.range[1] >= np.log10(8)
