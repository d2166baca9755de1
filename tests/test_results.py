"""Background results are runs of the one engine (resviz.runs), shown by ui.background_result: a place in the
queue and an estimate while waiting, computed once for two students, said once when they fail, let go when nobody
looks. Each test has a fresh engine of its own with a clock it moves by hand; every wait is for a condition."""
import threading

import pytest
from streamlit.testing.v1 import AppTest

from helpers import no_exceptions
from resviz import runs, ui
from test_runs import Clock, until

BOUND = 60  # seconds any wait may take before the test fails

PAGE = """
import streamlit as st
from resviz import ui
with ui.friendly_errors("Working it out"):
    result = ui.background_result(("test result", st.session_state["which"]), st.session_state["compute"], "Working:")
    st.markdown(f"Result: {result}" if result is not None else "no result yet")
"""


class Compute:
    """A background computation that passes progress call i only when the test lets it; fails when told to."""

    def __init__(self, steps: int = 2, fail: bool = False):
        self.steps, self.fail = steps, fail
        self.permits, self.started = threading.Semaphore(0), threading.Event()
        self.calls, self.passed = 0, 0  # computations begun; progress calls that returned in the latest

    def __call__(self, progress):
        self.calls, self.passed = self.calls + 1, 0
        self.started.set()
        for i in range(1, self.steps + 1):
            assert self.permits.acquire(timeout=BOUND), "the test never let the computation go on"
            if self.fail:
                raise RuntimeError("the disk is full")
            progress(i / self.steps)
            self.passed += 1
        return f"computed in {self.steps} steps"

    def step(self, n: int = 1) -> None:
        for _ in range(n):
            self.permits.release()


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def engine(monkeypatch, clock):
    """A fresh engine with one slot, and pages that compute in the background as on a server."""
    reg = runs.Registry(max_running=1, threads_per_run=None, lease_s=30, clock=clock)
    monkeypatch.setattr(runs, "_REGISTRY", reg)
    monkeypatch.setattr(ui, "waits_for_results", lambda: False)
    computes = []
    yield reg, computes
    reg.shutdown(0)
    for c in computes:
        c.step(c.steps)  # let every computation reach a progress call, where a cancelled one stops
    reg.shutdown(BOUND)


def student(which: str, compute: Compute) -> AppTest:
    at = AppTest.from_string(PAGE, default_timeout=BOUND)
    at.session_state["which"], at.session_state["compute"] = which, compute
    return at.run()


def progress_texts(at) -> str:
    return "\n".join(p.proto.text for p in at.get("progress"))


def shown(at) -> str:
    return "\n".join(m.value for m in at.markdown)


def test_a_result_waiting_behind_others_shows_its_place_and_when_it_starts(engine, clock):
    reg, computes = engine
    before, first, second = Compute(), Compute(), Compute()
    computes += [before, first, second]
    ahead = reg.attach_compute(("test result", "ahead"), before)  # the one slot is taken
    assert before.started.wait(BOUND)
    clock.t = 20.0
    before.step()
    until(lambda: ahead.status.progress == 0.5, "half of the run ahead")  # half in 20 s: 20 s to go, 40 s a run
    a, b = student("a", first), student("b", second)
    for at in (a, b):
        no_exceptions(at)
        assert "no result yet" in shown(at)
    assert "Working: waiting: 1st in line, starts in about 20 s" in progress_texts(a)
    assert "Working: waiting: 2nd in line, starts in about 60 s" in progress_texts(b)
    before.step()
    assert ahead.wait(BOUND).status.state is runs.State.FINISHED
    assert first.started.wait(BOUND)
    assert "Working: 0%" in progress_texts(a.run()) and "1st in line" in progress_texts(b.run())
    first.step(2)
    second.step(2)
    assert reg.idle(BOUND)
    assert "Result: computed in 2 steps" in shown(a.run()) and "Result: computed in 2 steps" in shown(b.run())


def test_two_students_asking_the_same_settings_compute_once(engine):
    reg, computes = engine
    computes.append(compute := Compute())
    a = student("same", compute)
    assert compute.started.wait(BOUND)
    compute.step()
    b = student("same", compute)
    assert "Working: 50%" in progress_texts(b) and "Working: 50%" in progress_texts(a.run())
    assert reg.peek(("test result", "same")).students == 2
    compute.step()
    assert reg.idle(BOUND)
    for at in (a, b):
        at.run()
        no_exceptions(at)
        assert "Result: computed in 2 steps" in shown(at) and not at.get("progress")
    assert compute.calls == 1


def test_a_failed_result_is_said_once_to_each_student_and_tried_again(engine):
    reg, computes = engine
    computes.append(compute := Compute(fail=True))
    a = student("broken", compute)
    b = student("broken", compute)
    compute.step()
    assert reg.idle(BOUND)
    for at in (a, b):
        at.run()
        no_exceptions(at)
        assert [e.value for e in at.error] == ["Working it out failed: RuntimeError: the disk is full"]
    compute.fail = False
    a.run()  # asked again (any rerun): a new computation, no old error
    no_exceptions(a)
    assert not a.error and "no result yet" in shown(a) and compute.calls == 2
    compute.step(2)
    assert reg.idle(BOUND)
    assert "Result: computed in 2 steps" in shown(a.run()) and not a.error


def test_a_result_nobody_looks_at_is_let_go_and_stops_at_its_next_progress_call(engine, clock):
    reg, computes = engine
    left, wanted = Compute(steps=100), Compute(steps=1)
    computes += [left, wanted]
    at = student("left", left)
    left.step()
    until(lambda: left.passed == 1, "the first progress call")
    at.session_state["which"], at.session_state["compute"] = "wanted", wanted
    at.run()  # the student moved on: nobody looks at "left" any more
    assert "1st in line" in progress_texts(at)
    clock.t = 31.0  # past the lease
    at.run()  # still looking at "wanted" (and so keeping it)
    left.step()
    assert wanted.started.wait(BOUND)  # "left" stopped at its progress call and gave its slot to "wanted"
    assert left.passed == 1 and reg.peek(("test result", "left")) is None
    wanted.step()
    assert reg.idle(BOUND)
    assert "Result: computed in 1 steps" in shown(at.run())


def test_under_apptest_a_page_waits_for_its_result(monkeypatch):
    reg = runs.Registry(max_running=1, threads_per_run=None)
    monkeypatch.setattr(runs, "_REGISTRY", reg)
    compute = Compute(steps=1)
    compute.step()
    at = student("waited for", compute)  # waits_for_results() is True under AppTest: no second run needed
    no_exceptions(at)
    assert "Result: computed in 1 steps" in shown(at) and compute.calls == 1


@pytest.mark.parametrize("n, words", [(1, "1st"), (2, "2nd"), (3, "3rd"), (4, "4th"), (11, "11th"), (12, "12th"),
                                      (13, "13th"), (21, "21st"), (102, "102nd"), (111, "111th")])
def test_ordinals(n, words):
    assert ui.ordinal(n) == words
