"""The training race in real Chromium on a projector's first screen (1280x720, Projector on): the class's default
race, replayed from the disk cache, shows its loss chart and its verdict without scrolling."""
from __future__ import annotations

import math

import pytest

from helpers import chart_collisions, served
from layout import CHART, assert_on_first_screen, first_screen
from resviz.lessons import training
from test_page_training import keep_default_race


def curve(start: float, end: float, scale: float, steps: int = 300) -> list[float]:
    """A loss falling from ``start`` towards ``end`` (time constant ``scale`` steps), with a fixed batch-to-batch
    wobble: the look of a real race, made by hand."""
    return [end + (start - end) * math.exp(-s / scale) + 0.08 * math.sin(1.7 * s) for s in range(1, steps + 1)]


@pytest.fixture(scope="module")
def replaying_server(tmp_path_factory):
    """A server whose disk cache holds the finished default race (as the first class run leaves it)."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RESVIZ_CACHE", str(cache))
        keep_default_race(curve(2.3, 0.55, 60), curve(2.3, 0.95, 110))
        training.replay.forget_reads()
    with served(log_path=tmp_path_factory.mktemp("server") / "streamlit.log",
                env={"RESVIZ_CACHE": str(cache), "RESVIZ_WARM_UP": "0"}) as (_, url):
        yield url


@pytest.mark.browser
def test_the_replayed_race_and_its_verdict_start_on_the_projectors_first_screen(replaying_server, page):
    verdict = "[data-testid='stAlert']:has-text('trains faster than')"
    tops = first_screen(page, replaying_server, "training", CHART, verdict, "text=Replayed")
    assert_on_first_screen(tops)


def _race_figures() -> dict:
    """The race's charts for the ResNet-56 trio at 300 steps with every ordering marked (hand-made curves, the
    trio's real layers), and the width in px the page gives each at 1280x720 with Projector on."""
    from resviz.models import get_config
    from resviz.plots.training import plot_race_charts

    models = training.make_race_models(get_config("resnet56"), include_shallow_plain=True)
    h = training.new_history(models, 300, classes=10, held_out=1000)
    curves = [curve(2.3, 0.6, 50), curve(2.3, 1.3, 120), curve(2.3, 0.9, 70)]
    for step, losses in enumerate(zip(*curves), start=1):
        h.add({"step": step, "steps": 300, "elapsed_s": step / 3, "steps_per_s": 3.0, "runs": {
            name: {"loss": v, "acc": 1 - v / 2.6, "test_acc": 1 - v / 2.6 if step % 25 == 0 else None,
                   "grad_norms": [0.1 + 0.01 * i for i in range(len(r.layers))], "diverged": False, "message": None}
            for (name, r), v in zip(h.runs.items(), losses)}})
    assert len(training.ordering_marks(h)) == 3  # every ordering marked: the busiest loss chart
    loss, acc, *heatmaps = plot_race_charts(h, 0.1)
    main = 780 * 3 / 5  # the loss and accuracy charts: 3 of 5 parts of the main column, the verdicts beside them
    return {"loss": (loss, main), "accuracy": (acc, main), **{f"heatmap {i}": (fig, 780 / 3)
                                                            for i, fig in enumerate(heatmaps)}}


@pytest.mark.browser
def test_race_charts_at_x1_4_have_no_text_over_text(page):
    """Drawn by plotly.js in Chromium at the width the page gives them, Projector on: no title over a legend, no
    tick label cut, no legend or axis title over a plot, the ordering marks included."""
    found = chart_collisions(page, _race_figures())
    assert not any(found.values()), {k: v for k, v in found.items() if v}
