"""Loss landscape page (AppTest + browser): live slices, the finer grid from the background, one height scale."""
import threading

import pytest

from helpers import figure, no_exceptions, texts, visit
from resviz import runs
from resviz.lessons import landscape
from test_page_lesion import private_cache, with_pair  # noqa: F401 - the fixture is used by name


@pytest.fixture(autouse=True)
def small_fine_grid(monkeypatch):
    """A 5x5 'finer' grid (21x21 takes minutes on a busy CPU); every shared run ends with its test."""
    monkeypatch.setattr(landscape, "FINE", 5)
    yield
    runs.registry().shutdown(60)


def test_landscape_coarse_live_then_fine_from_a_shared_run(monkeypatch):
    release, real = threading.Event(), landscape.pair_grid_records

    def held_back(resnet, plain, x, y, steps, *rest, **kw):  # the finer grid waits until the test lets it go
        if steps == landscape.FINE:
            release.wait(60)
        return (yield from real(resnet, plain, x, y, steps, *rest, **kw))

    monkeypatch.setattr(landscape, "pair_grid_records", held_back)
    at = with_pair("landscape")
    no_exceptions(at)
    assert not at.error, [e.value for e in at.error]
    assert "Li, Xu" in texts(at) and "Section 6" in texts(at)
    assert any("coarse 7×7" in s.value for s in at.subheader)
    assert any("replaces this one here by itself" in i.value for i in at.info)
    assert len(at.get("plotly_chart")) == 3
    [(key, status)] = [(k, st) for k, st in runs.registry().overview() if not st.state.done]
    assert key[0] == "landscape" and status.watchers == 1  # the page's fragment watches it
    release.set()
    watch = runs.registry().attach(key, lambda: iter(()))
    assert watch.wait(120).status.state is runs.State.FINISHED
    at.run()  # what the page's fragment triggers when it sees the run finished
    no_exceptions(at)
    assert any("5×5 grid on 256 images" in s.value for s in at.subheader)
    assert not any("replaces this one" in i.value for i in at.info)


def test_both_surfaces_share_one_height_scale():
    at = with_pair("landscape")
    fig = figure(at, "ls_surface")
    layout = fig["layout"]
    assert layout["scene"]["zaxis"]["range"] == layout["scene2"]["zaxis"]["range"]
    traces = fig["data"]
    assert traces[0]["cmin"] == traces[1]["cmin"] and traces[0]["cmax"] == traces[1]["cmax"]


@pytest.mark.browser
def test_landscape_in_browser(app_server, page):
    visit(page, app_server, "landscape", "Li, Xu")


def test_the_verdict_follows_the_roughness_shown():
    at = with_pair("landscape")
    no_exceptions(at)
    res, plain = (float(m.value) for m in at.metric)
    shown = texts(at)
    assert ("the plain twin's slice is **rougher**" in shown) == (plain > res)
    if plain <= res:  # a 4-layer pair: Li et al. found shallow twins alike, and the page says so
        assert "at 20 layers Li et al. also found the two alike" in shown
