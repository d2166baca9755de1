"""On a server the pages whose work takes seconds (Paths, Shattered gradients, Lesion study, Loss landscape) draw
their controls first and compute in the background: thirty students opening one of them see the page at once, and
nothing computed for other settings stays on screen."""
import threading
import time

import pytest

from helpers import figures, new_app, no_exceptions
from resviz import ui
from resviz.lessons import landscape, lesion, paths, shattered
from test_page_lesion import private_cache, with_pair  # noqa: F401 - the fixture is used by name

# page, the lesson function that does its heavy work, the widget set to settings no other test uses
PAGES = [
    ("paths", paths, "gradient_by_path_length", ("slider", "pa_samples", 7)),
    ("shattered", shattered, "shattered_sweep", ("number_input", "sh_seed", 987)),
    ("lesion", lesion, "lesion_study", ("select_slider", "le_n", 500)),
    ("landscape", landscape, "line", ("number_input", "ls_seed", 77)),
]


def until_figures(at, tries: int = 600):
    for _ in range(tries):  # the page reruns itself when its result is ready; AppTest reruns by hand
        if figures(at.run()):
            return at
        time.sleep(0.1)
    return at


@pytest.mark.parametrize("page, module, name, widget", PAGES, ids=[p[0] for p in PAGES])
def test_controls_first_then_the_result(monkeypatch, page, module, name, widget):
    release, real = threading.Event(), getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a, **k: release.wait(120) and real(*a, **k))
    monkeypatch.setattr(ui, "waits_for_results", lambda: False)  # as on a server
    kind, key, value = widget
    try:
        at = with_pair(page) if page in ("lesion", "landscape") else new_app(
            page, timeout=180, sidebar={"pa_exact": False} if page == "paths" else None)  # random paths: a slider
        getattr(at, kind)(key=key).set_value(value).run()
        no_exceptions(at)
        assert getattr(at, kind)(key=key).value == value  # the controls are drawn
        assert not figures(at) and not at.metric  # while the work is under way: no chart, no number
        release.set()
        until_figures(at)
        no_exceptions(at)
        assert figures(at) and not at.error, [e.value for e in at.error]
    finally:
        release.set()
