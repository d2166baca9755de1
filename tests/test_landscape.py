"""Loss landscapes (Li et al. 2018): filter-normalised directions, grids, roughness, the background finer grid."""
import threading
import time

import numpy as np
import pytest
import torch

from resviz import disk_cache
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
    assert landscape.loss_grid(model, x, y, steps=3, should_stop=lambda: True) is None


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


def fake_grids():
    z = np.zeros((2, 2))
    a = np.array([-1.0, 1.0])
    return landscape.PairGrids(landscape.Grid(a, a, z, z, 2), landscape.Grid(a, a, z + 1, z, 2))


def test_background_grid_lands_in_the_disk_cache_and_says_how_far():
    go = threading.Event()

    def compute(job):
        job.progress = 0.5
        go.wait(10)
        return fake_grids()

    first = landscape._keep_going("grid-a", compute)
    assert first.state is landscape.FineState.RUNNING
    go.set()
    landscape.wait_for_jobs(10)
    assert disk_cache.load("grid-a")["plain_loss"].tolist() == [[1.0, 1.0], [1.0, 1.0]]


def test_background_grid_stops_when_nobody_asks(monkeypatch):
    monkeypatch.setattr(landscape, "IDLE_S", 0.05)
    stopped = threading.Event()

    def compute(job):
        while time.monotonic() - job.wanted <= landscape.IDLE_S:  # what fine_grid's should_stop checks
            time.sleep(0.01)
        stopped.set()
        return None  # stopped: nothing stored

    landscape._keep_going("grid-b", compute)
    assert stopped.wait(10)
    landscape.wait_for_jobs(10)
    assert not disk_cache.exists("grid-b")


def test_at_most_max_background_grids_at_once(monkeypatch):
    monkeypatch.setattr(landscape, "MAX_BACKGROUND", 1)
    release = threading.Event()
    assert landscape._keep_going("grid-c", lambda job: release.wait(10) and None).state is landscape.FineState.RUNNING
    assert landscape._keep_going("grid-d", lambda job: None).state is landscape.FineState.BUSY
    release.set()
    landscape.wait_for_jobs(10)


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
