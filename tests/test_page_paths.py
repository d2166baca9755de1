"""Paths page (AppTest + browser)."""
import numpy as np
import pytest

from helpers import new_app, no_exceptions, texts, visit
from resviz import runs, ui
from resviz.lessons import paths
from test_page_lesion import private_cache, with_pair  # noqa: F401 - the fixture is used by name


def boxes(at) -> dict:
    """The page's verdict boxes, by kind."""
    return {kind: [e.value for e in getattr(at, kind)] for kind in ("success", "info", "warning", "error")}


def shown_kinds(at) -> list[str]:
    """Which kinds of box the page shows."""
    return [k for k, v in boxes(at).items() if v]


@pytest.fixture
def fresh_results():
    """No result or figure measured before stands in for the one a test puts in place (nor stays after it)."""
    def clear():
        runs.registry().forget()
        for shelf in ui.FIGURE_SHELVES:
            ui._figure_store(shelf)[0].clear()

    clear()
    yield
    clear()


def test_paths_on_the_sidebar_model_at_initialisation():
    at = new_app("paths")
    no_exceptions(at)
    assert at.radio(key="pa_source").value == "init"  # the page shows its lesson at once, on random weights
    assert "Veit" in texts(at) and "Section 5.2" in texts(at) and "section 6" not in texts(at).lower()
    assert "random weights" in texts(at)
    assert at.toggle(key="pa_exact").value and not at.slider  # ResNet-20: every one of its 512 paths
    n, mode, mean, k90 = (m.value for m in at.metric)
    assert (int(n), mode) == (9, "4 and 5")  # resnet20: 9 blocks, Binomial(9, 1/2) has modes 4 and 5
    assert 0 <= float(mean) <= 9 and 0 <= int(k90) <= 9
    shown = boxes(at)
    assert not shown["warning"] and not shown["error"] and len(shown["success"] + shown["info"]) == 1
    said = (shown["success"] + shown["info"])[0]
    assert "all 512 paths measured, exact for these images" in said and f"**{mean} blocks**" in said
    assert bool(shown["info"]) == (float(mean) >= 4.5) == ("no shorter than a typical path (4.5 blocks)" in said)


def test_random_paths_say_they_are_an_estimate():
    at = new_app("paths")
    at.toggle(key="pa_exact").set_value(False).run()
    at.slider(key="pa_samples").set_value(3).run()
    no_exceptions(at)
    assert at.metric[2].value.endswith(" (estimate)") and at.metric[3].value.endswith(" (estimate)")
    said = " ".join(sum(boxes(at).values(), []))
    assert "estimated from 3 random paths per length" in said and "each random path per length alone gives" in said


@pytest.mark.parametrize("draws,kind,words", [
    ([[4, 4], [1, 1], [1, 1]], "success", "as in the paper."),  # well below n/2 in every draw
    ([[1, 1], [1, 1], [1.1, 1.1]], "info", "not the paper's picture"),  # just above n/2 = 1
    ([[4, 1], [1, 1], [1, 4]], "warning", "cannot say"),  # the draws fall on both sides of n/2: inside the noise
])
def test_each_verdict_appears_in_its_own_box(monkeypatch, fresh_results, draws, kind, words):
    """A measured result stands in for the computation: the page must show the lesson's verdict in its box."""
    draws = np.array(draws, dtype=float)
    monkeypatch.setattr(paths, "gradient_by_path_length",
                        lambda *a, **k: paths.from_per_path(draws.mean(axis=1), 2, draws))
    at = new_app("paths")
    at.toggle(key="pa_exact").set_value(False).run()
    no_exceptions(at)
    assert shown_kinds(at) == [kind] and len(boxes(at)[kind]) == 1 and words in boxes(at)[kind][0]


def test_paths_on_the_trained_pair():
    at = with_pair("paths")
    at.radio(key="pa_source").set_value("trained").run()
    at.toggle(key="pa_exact").set_value(False).run()
    at.slider(key="pa_samples").set_value(1).run()
    no_exceptions(at)
    assert int(at.metric[0].value) == 2 and "tiny test pair" in texts(at)
    assert "one random path per length gives no spread" in " ".join(sum(boxes(at).values(), []))


@pytest.mark.browser
def test_paths_in_browser(app_server, page):
    visit(page, app_server, "paths", "Veit")
