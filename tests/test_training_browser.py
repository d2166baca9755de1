"""The training race in real Chromium on a projector's first screen (1280x720, Projector on): the class's default
race, replayed from the disk cache, shows its loss chart and its verdict without scrolling."""
from __future__ import annotations

import math

import pytest

from layout import CHART, assert_on_first_screen, first_screen
from resviz.lessons import training
from resviz.tools.server import start_server, stop_server
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
    proc, url = start_server(log_path=tmp_path_factory.mktemp("server") / "streamlit.log",
                             env={"RESVIZ_CACHE": str(cache), "RESVIZ_WARM_UP": "0"})
    try:
        yield url
    finally:
        stop_server(proc)


@pytest.mark.browser
def test_the_replayed_race_and_its_verdict_start_on_the_projectors_first_screen(replaying_server, page):
    verdict = "[data-testid='stAlert']:has-text('trains faster than')"
    tops = first_screen(page, replaying_server, "training", CHART, verdict, "text=Replayed")
    assert_on_first_screen(tops)
