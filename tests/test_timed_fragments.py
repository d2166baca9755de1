"""Timed fragments redraw inside a block the browser has, in whatever order Streamlit sends their reruns.

Streamlit 1.67 drops the unsent messages of the fragments a fragment run is about to run. On a loaded server a full
run and the timed reruns waiting behind it reach the browser in one batch: the full run without its fragments'
messages, then each fragment's, in the rerun's order. The browser blanked a follower's page ("Bad delta path index
12 (should be between [0, 11])") when the vote panel came before the follow panel. These tests replay one real full
run of the app through Streamlit's own queue, and the fragments' messages after it in reverse order, into a model of
the browser's page that refuses what the browser refuses.
"""
from __future__ import annotations

import re

import diskcache
import pytest

from helpers import ROOT

BARE = re.compile(r"@st\.fragment\(run_every")


def test_every_timed_fragment_draws_in_a_container_of_its_own():
    files = [*ROOT.glob("pages/*.py"), *ROOT.glob("resviz/**/*.py"), ROOT / "app.py"]
    bare = [f"{p.relative_to(ROOT)}:{i}" for p in files for i, line in enumerate(p.read_text().splitlines(), 1)
            if BARE.search(line)]
    assert bare == [], "use @ui.timed_fragment(run_every=...)"


class Page:
    """The browser's blocks, by delta path: a message may set a child at an index up to the block's length (the
    frontend's rule, "Bad delta path index i (should be between [0, n])")."""

    def __init__(self):
        self.blocks: dict[tuple, list] = {(root,): [] for root in range(4)}  # main, sidebar, event, bottom
        self.refused: list[str] = []

    def apply(self, msg) -> None:
        path = tuple(msg.metadata.delta_path)
        children = self.blocks.get(path[:-1])
        if children is None or path[-1] > len(children):
            self.refused.append(f"{list(path)} into a block of {None if children is None else len(children)}")
            return
        if path[-1] == len(children):
            children.append(path)
        if msg.delta.WhichOneof("type") == "add_block":
            self.blocks.setdefault(path, [])


def _full_run(monkeypatch) -> list:
    """The messages of one full run of the app's home page, as a follower sees it with a question open."""
    from streamlit.testing.v1.local_script_runner import LocalScriptRunner

    from helpers import new_app

    runs = []
    real = LocalScriptRunner.run

    def run(self, *args, **kwargs):
        tree = real(self, *args, **kwargs)
        runs.append(list(self.forward_msg_queue._queue))
        return tree

    monkeypatch.setattr(LocalScriptRunner, "run", run)
    new_app()
    return runs[-1]


@pytest.fixture
def followed(monkeypatch, tmp_path, quiet_bell):
    from resviz import classroom, ui_classroom

    store = diskcache.Cache(str(tmp_path))
    room = classroom.Classroom(store=store)
    monkeypatch.setattr(ui_classroom, "room", lambda: room)
    monkeypatch.setenv(classroom.KEY_ENV, "k")
    room.present("", {})
    room.ask("Which ends lower after 300 steps?", ["plain-20", "plain-56"])
    yield
    store.close()


def test_a_full_run_then_its_timed_fragments_in_reverse_order_never_address_a_missing_block(followed, monkeypatch):
    from streamlit.runtime.forward_msg_queue import ForwardMsgQueue

    messages = _full_run(monkeypatch)
    timed = [m.auto_rerun.fragment_id for m in messages if m.WhichOneof("type") == "auto_rerun"]
    assert len(timed) >= 2  # the follow panel and the vote panel, at least
    queue = ForwardMsgQueue()
    for m in messages:
        queue.enqueue(m)
    queue.clear(retain_lifecycle_msgs=True, fragment_ids_this_run=timed[::-1])  # their reruns start before a flush
    page = Page()
    for m in queue._queue:
        if m.WhichOneof("type") == "delta":
            page.apply(m)
    assert page.refused == []
    for fragment in reversed(timed):  # each fragment's rerun draws what the full run drew for it
        for m in messages:
            if m.WhichOneof("type") == "delta" and m.delta.fragment_id == fragment:
                page.apply(m)
    assert page.refused == []
