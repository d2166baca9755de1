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
    assert len(at.get("plotly_chart")) == 4
    [(key, status)] = [(k, st) for k, st in runs.registry().overview()  # this page's run (another test's may
                       if not st.state.done and k[0] == "landscape" and st.watchers]  # still be winding down)
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
    visit(page, app_server, "landscape", "Li et al. studied fully trained")  # the last caption (the paper: folded)


def learned_pair(monkeypatch, label, study=None, deep=None, accuracy=(0.9, 0.8)):
    """A tiny pair the page takes as trained (ResNet 90%, twin 80%: 4 classes, guessing 25%), with the slices'
    non-convexity given."""
    import dataclasses

    from resviz import pair
    from test_page_lesion import tiny_trained

    real = pair.load_pair
    monkeypatch.setattr(pair, "load_pair", lambda *a, **kw: dataclasses.replace(
        real(*a, **kw), resnet_accuracy=accuracy[0], plain_accuracy=accuracy[1]))
    if study is not None:
        res, plain = study
        monkeypatch.setattr(landscape, "study_directions", lambda p, span, seed, cb=None: landscape.DirectionStudy(
            landscape.direction_seeds(seed)[:len(res)], tuple(res), tuple(plain)))
    if deep is not None:
        monkeypatch.setattr(landscape, "DEEP", deep)
    return with_pair("landscape", tiny_trained(label))  # its own label: its own shared results


def boxes(at) -> dict[str, list[str]]:
    return {kind: [e.value for e in getattr(at, kind)] for kind in ("success", "info", "warning", "error")}


@pytest.mark.parametrize("accuracy, who", [((0.25, 0.27), "the ResNet and the plain twin of this pair are"),
                                          ((0.9, 0.25), "the plain twin of this pair is")])
def test_a_pair_at_chance_gets_no_verdict_and_no_slices(monkeypatch, accuracy, who):
    called = []
    at = learned_pair(monkeypatch, f"guessing {accuracy}", accuracy=accuracy)
    monkeypatch.setattr(landscape, "study_directions", lambda *a, **kw: called.append(a))
    at.run()
    no_exceptions(at)
    shown = boxes(at)
    assert [t for t in shown["info"] if t.startswith("**No verdict:**")] == [
        f"**No verdict:** {who} no better than guessing on fresh images, so "
        "there is no trained minimum to look around. Li et al. compare the landscapes around minima that training "
        "found (Section 6); around weights that learned nothing the loss says nothing about that. Pick more training "
        "steps above."]
    assert not shown["success"] and not called and not at.dataframe


@pytest.mark.parametrize("res, plain, box, sentence", [
    ([0.3] * 5, [0.33] * 5, "info", "**No clear difference:** the plain twin's slice is less convex on all 5 random "
                                    "slices, but on 5 of them by no more than the margin"),
    ([0.3] * 5, [0.5, 0.5, 0.1, 0.5, 0.1], "info", "**No clear difference:** the random slices disagree: the plain "
                                                   "twin's is less convex on 3 of 5, the ResNet's on 2."),
    ([0.1] * 5, [0.4] * 5, "warning", "**Not what Li et al. found at this depth"),
    ([0.02] * 5, [0.05] * 5, "success", "**As in Li et al. at 20 layers (Section 6, Fig. 5):** both nets' slices"),
], ids=["inside the margin", "directions disagree", "clear difference, shallow", "both smooth, shallow"])
def test_which_box_and_sentence_the_verdict_shows(monkeypatch, res, plain, box, sentence):
    at = learned_pair(monkeypatch, f"pair {res} {plain}", (res, plain))
    no_exceptions(at)
    shown = boxes(at)
    verdicts = [(kind, t) for kind, ts in shown.items() for t in ts if t.startswith("**")]
    assert len(verdicts) == 1 and verdicts[0][0] == box and sentence in verdicts[0][1], verdicts
    table = at.dataframe[0].value
    assert list(table["plain twin"]) == plain and list(table["direction seeds"])[0] == "0, 1"


def test_a_clear_difference_at_depth_is_the_papers_picture(monkeypatch):
    at = learned_pair(monkeypatch, "deep enough", ([0.1] * 5, [0.4] * 5), deep=2)  # the tiny pair counts as deep
    no_exceptions(at)
    assert [t[:40] for t in boxes(at)["success"]] == ["**As in Li et al. (Section 6, Fig. 5):** "[:40]]
    assert "plain twin minus ResNet +0.30 to +0.30" in boxes(at)["success"][0]


def test_the_verdict_is_measured_on_the_pairs_own_slices(monkeypatch):
    at = learned_pair(monkeypatch, "measured for real")
    no_exceptions(at)
    table = at.dataframe[0].value
    assert len(table) == landscape.DIRECTIONS
    assert all(0 <= v <= 1 for v in list(table["ResNet"]) + list(table["plain twin"]))
    assert landscape.MEASURED in texts(at) and f"below {landscape.FLAT:g} loss" in landscape.MEASURED
