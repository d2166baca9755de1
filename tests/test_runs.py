"""The shared run registry: one run per key watched by many, a fair FIFO queue, leases, failures, memory.

No test sleeps or times anything: each run is a gated generator that yields a record only when the test lets
it, the registry's clock is a fake the test moves, and every wait is for a condition, bounded.
"""
import gc
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor

import pytest

from resviz import runs
from resviz.runs import Registry, State

BOUND = 30  # seconds any wait may take before the test fails (the machine is shared: generous)


class Clock:
    """The registry's clock, moved by hand."""

    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class Gated:
    """A run that yields record i only after the test's ``step()``; notes what happened to it."""

    made_here: list = []  # every Gated of the running test, so its teardown can let them all end

    def __init__(self, steps: int = 5, fail_at: int | None = None, name: str = "run"):
        Gated.made_here.append(self)
        self.steps, self.fail_at, self.name = steps, fail_at, name
        self.permits = threading.Semaphore(0)
        self.made = 0  # how many times make() was called
        self.started, self.closed = threading.Event(), threading.Event()
        self.payload = None  # something big the run holds, to see it freed

    def make(self):
        self.made += 1
        return self._records()

    def _records(self):
        self.started.set()
        self.payload = payload = Payload()
        try:
            for i in range(1, self.steps + 1):
                assert self.permits.acquire(timeout=BOUND), f"{self.name}: the test never let step {i} through"
                if i == self.fail_at:
                    raise RuntimeError(f"{self.name} blew up at step {i}\nsecond line")
                yield {"step": i, "steps": self.steps, "run": self.name}
            return f"{self.name} result"
        finally:
            del payload
            self.payload = None
            self.closed.set()

    def step(self, n: int = 1) -> None:
        for _ in range(n):
            self.permits.release()


class Payload:
    """Stands for a run's models: weakly referenceable, so a test can see it freed."""


def until(condition, what: str) -> None:
    """Wait (bounded) for ``condition()`` to hold, on the registry's own notifications where it can."""
    done = threading.Event()
    for _ in range(BOUND * 100):
        if condition():
            return
        done.wait(0.01)  # polling a condition, bounded; never used as a synchronisation delay
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def make_registry(clock):
    made = []

    def make(**kw):
        kw.setdefault("max_running", 4)
        kw.setdefault("threads_per_run", None)
        reg = Registry(clock=clock, **kw)
        made.append(reg)
        return reg

    yield make
    for reg in made:
        reg.shutdown(timeout=0)  # cancel everything
    for gate in Gated.made_here:
        gate.step(gate.steps)  # let blocked workers reach the check that stops them
    Gated.made_here.clear()
    for reg in made:
        reg.shutdown(timeout=BOUND)


def steps(snap) -> list[int]:
    return [r["step"] for r in snap.records]


def test_same_key_shares_one_run_across_threads(make_registry):
    reg, run = make_registry(), Gated(steps=3)
    barrier = threading.Barrier(8)

    def student(_):
        barrier.wait(timeout=BOUND)
        return reg.attach(("race", 0), run.make)

    with ThreadPoolExecutor(8) as pool:
        watches = list(pool.map(student, range(8)))
    run.step(3)
    snaps = [w.wait(BOUND) for w in watches]
    assert run.made == 1
    assert {s.status.state for s in snaps} == {State.FINISHED}
    assert all(steps(s) == [1, 2, 3] for s in snaps)
    assert all(s.result == "run result" for s in snaps)
    assert watches[0].status.watchers == 8


def test_a_late_watcher_sees_the_history_from_step_one_then_live(make_registry):
    reg, run = make_registry(), Gated(steps=4)
    first = reg.attach("k", run.make)
    run.step(2)
    assert steps(first.wait(BOUND, records=2)) == [1, 2]
    late = reg.attach("k", run.make)
    assert steps(late.snapshot()) == [1, 2]
    assert late.snapshot().status.state is State.RUNNING
    run.step(2)
    assert steps(late.wait(BOUND)) == [1, 2, 3, 4]
    assert run.made == 1


def test_a_snapshot_never_changes_under_its_reader(make_registry):
    reg, run = make_registry(), Gated(steps=3)
    w = reg.attach("k", run.make)
    run.step()
    snap = w.wait(BOUND, records=1)
    run.step(2)
    w.wait(BOUND)
    assert len(snap.records) == 1 and steps(snap) == [1] and snap.records[-1]["step"] == 1
    assert snap.records[0:5] == [snap.records[0]]
    with pytest.raises(IndexError):
        snap.records[1]


def test_one_detach_leaves_the_others_watching(make_registry):
    reg, run = make_registry(), Gated(steps=3)
    a, b = reg.attach("k", run.make), reg.attach("k", run.make)
    run.step()
    a.wait(BOUND, records=1)
    a.detach()
    run.step(2)
    snap = b.wait(BOUND)
    assert snap.status.state is State.FINISHED and steps(snap) == [1, 2, 3]
    assert steps(a.snapshot()) == [1, 2, 3]  # a detached watch still reads; it just no longer keeps the run alive


def test_the_last_detach_stops_the_run_and_frees_it(make_registry):
    reg, run = make_registry(), Gated(steps=100)
    a, b = reg.attach("k", run.make), reg.attach("k", run.make)
    run.step()
    a.wait(BOUND, records=1)
    payload = weakref.ref(run.payload)
    a.detach()
    b.detach()
    assert b.snapshot().status.state is State.CANCELLED
    run.step()  # let the generator out of its current step: it stops before the next record
    assert run.closed.wait(BOUND)
    until(lambda: not reg.overview(), "the registry to drop the run")
    del a, b
    gc.collect()
    assert payload() is None
    fresh = reg.attach("k", run.make)  # the same settings again: a new run from step 1
    assert run.made == 2 and len(fresh.snapshot().records) == 0


def test_a_watch_nobody_holds_stops_watching(make_registry):
    reg, run = make_registry(), Gated(steps=100)
    reg.attach("k", run.make)  # not kept: the session that held it is gone
    gc.collect()
    run.step()  # in case the worker was already waiting for its first record
    until(lambda: not reg.overview(), "the registry to drop the run")
    assert run.made == 1


def test_a_watcher_that_stops_polling_expires_after_the_lease(make_registry, clock):
    reg, run = make_registry(lease_s=10), Gated(steps=100)
    quiet, polling = reg.attach("k", run.make), reg.attach("k", run.make)
    run.step()
    polling.wait(BOUND, records=1)
    clock.t = 9  # within the lease: a reload re-attaches in time
    polling.touch()
    assert polling.status.watchers == 2
    clock.t = 15  # the quiet one (a closed tab) has expired; the polling one touched at 9 is alive
    assert polling.status.watchers == 1
    run.step()
    assert steps(polling.wait(BOUND, records=2)) == [1, 2]
    clock.t = 30  # now nobody has polled for 15 s
    run.step()
    assert run.closed.wait(BOUND)
    assert quiet.snapshot().status.state is State.CANCELLED


def test_queue_is_fifo_with_positions_and_leaving(make_registry):
    reg = make_registry(max_running=1)
    a, b, c, d = (Gated(steps=2, name=n) for n in "abcd")
    wa, wb, wc, wd = (reg.attach(r.name, r.make) for r in (a, b, c, d))
    assert a.started.wait(BOUND)
    assert [w.status.state for w in (wa, wb, wc, wd)] == [State.RUNNING, State.QUEUED, State.QUEUED, State.QUEUED]
    assert [w.status.position for w in (wb, wc, wd)] == [1, 2, 3]
    wc.detach()  # c leaves the queue: nobody else waits for it, so it is dropped
    assert wc.status.state is State.CANCELLED
    assert [wb.status.position, wd.status.position] == [1, 2]
    a.step(2)
    assert wa.wait(BOUND).status.state is State.FINISHED
    assert b.started.wait(BOUND)
    assert wb.status.state is State.RUNNING and wd.status.position == 1
    b.step(2)
    d.step(2)
    assert wd.wait(BOUND).status.state is State.FINISHED
    assert (a.made, b.made, c.made, d.made) == (1, 1, 0, 1)


def test_a_queued_run_stays_while_another_student_waits_for_it(make_registry):
    reg = make_registry(max_running=1)
    a, b = Gated(steps=1, name="a"), Gated(steps=1, name="b")
    wa = reg.attach("a", a.make)
    w1, w2 = reg.attach("b", b.make), reg.attach("b", b.make)
    w1.detach()
    assert w2.status.state is State.QUEUED and w2.status.position == 1
    a.step()
    b.step()
    assert w2.wait(BOUND).status.state is State.FINISHED and wa.snapshot().status.state is State.FINISHED


def test_queue_estimates_come_from_the_pace_of_the_runs(make_registry, clock):
    reg = make_registry(max_running=1)
    a, b, c = (Gated(steps=10, name=n) for n in "abc")
    wa = reg.attach("a", a.make, cost=10)
    wb, wc = reg.attach("b", b.make, cost=10), reg.attach("c", c.make, cost=20)
    assert wb.status.wait_s is None  # nothing has run yet: no pace to go by
    clock.t = 5.0
    a.step(5)
    wa.wait(BOUND, records=5)  # half of a in 5 s: 1 s per unit of cost
    assert wa.status.remaining_s == pytest.approx(5.0)
    assert (wb.status.position, wb.status.wait_s, wb.status.remaining_s) == (1, pytest.approx(5), pytest.approx(15))
    assert (wc.status.position, wc.status.wait_s, wc.status.remaining_s) == (2, pytest.approx(15), pytest.approx(35))


def test_two_slots_run_two_at_once_and_queue_the_third(make_registry):
    reg = make_registry(max_running=2)
    a, b, c = (Gated(steps=1, name=n) for n in "abc")
    wa, wb, wc = (reg.attach(r.name, r.make) for r in (a, b, c))
    assert a.started.wait(BOUND) and b.started.wait(BOUND)
    assert wc.status.state is State.QUEUED and wc.status.position == 1
    b.step()
    assert c.started.wait(BOUND)
    a.step()
    c.step()
    assert all(w.wait(BOUND).status.state is State.FINISHED for w in (wa, wb, wc))


def test_a_failing_run_tells_every_watcher_and_is_tried_again_on_the_next_attach(make_registry):
    reg, run = make_registry(), Gated(steps=5, fail_at=3)
    watches = [reg.attach("k", run.make) for _ in range(3)]
    run.step(3)
    snaps = [w.wait(BOUND) for w in watches]
    for s in snaps:
        assert s.status.state is State.FAILED
        assert s.status.error == "run blew up at step 3"
        assert isinstance(s.exception, RuntimeError) and steps(s) == [1, 2]
    again = reg.attach("k", run.make)
    assert run.made == 2 and again.snapshot().status.state is not State.FAILED


def test_a_failing_make_is_reported_too(make_registry):
    def make():
        raise ValueError("no such data")

    w = make_registry().attach("k", make)
    snap = w.wait(BOUND)
    assert snap.status.state is State.FAILED and snap.status.error == "no such data" and not snap.records


def test_different_keys_never_mix(make_registry):
    reg = make_registry()
    a, b = Gated(steps=3, name="a"), Gated(steps=2, name="b")
    wa, wb = reg.attach(("seed", 0), a.make), reg.attach(("seed", 1), b.make)
    a.step(3)
    b.step(2)
    sa, sb = wa.wait(BOUND), wb.wait(BOUND)
    assert [r["run"] for r in sa.records] == ["a"] * 3 and [r["run"] for r in sb.records] == ["b"] * 2
    assert (sa.result, sb.result) == ("a result", "b result")


def test_a_late_start_gets_the_finished_run_at_once(make_registry):
    reg, run = make_registry(), Gated(steps=2)
    w = reg.attach("k", run.make)
    run.step(2)
    w.wait(BOUND)
    w.detach()
    late = reg.attach("k", run.make).snapshot()
    assert run.made == 1 and late.status.state is State.FINISHED and steps(late) == [1, 2]
    assert late.result == "run result"


def test_finished_runs_are_kept_in_a_bounded_lru(make_registry):
    reg = make_registry(max_finished=2)
    gates = {n: Gated(steps=1, name=n) for n in "abc"}
    for name in "abc":
        gates[name].step()
        reg.attach(name, gates[name].make).wait(BOUND)
        if name == "b":
            reg.attach("a", gates["a"].make)  # a used again: b is now the oldest
    assert sorted(k for k, _ in reg.overview()) == ["a", "c"]
    gates["b"].step()
    reg.attach("b", gates["b"].make).wait(BOUND)
    assert gates["b"].made == 2 and gates["a"].made == 1


def test_finished_runs_are_bounded_by_memory(make_registry):
    reg = make_registry(max_finished=10, max_finished_mb=1.5)

    def big(i):
        yield {"step": 1, "steps": 1}
        return bytearray(2**20)  # 1 MB of result (bytearray has no nbytes: counted by getsizeof)

    for i in range(3):
        reg.attach(i, lambda i=i: big(i)).wait(BOUND)
    assert [k for k, _ in reg.overview()] == [2]


def thread_count_in_a_new_thread(torch) -> int:
    out = []
    t = threading.Thread(target=lambda: out.append(torch.get_num_threads()))
    t.start()
    t.join(BOUND)
    return out[0]


@pytest.mark.parametrize("budget", [1, 2])
@pytest.mark.parametrize("kind", ["records", "compute"])
def test_each_worker_runs_with_its_thread_budget_and_leaves_the_default_alone(budget, kind):
    torch = pytest.importorskip("torch")
    default = thread_count_in_a_new_thread(torch)
    reg = Registry(max_running=1, threads_per_run=budget)
    try:
        def probe():
            yield {"threads": torch.get_num_threads()}

        snap = reg.attach("probe", probe).wait(BOUND) if kind == "records" else reg.attach_compute(
            "probe", lambda progress: {"threads": torch.get_num_threads()}).wait(BOUND)
        assert snap.result == {"threads": budget}
    finally:
        reg.shutdown(BOUND)
    assert thread_count_in_a_new_thread(torch) == default


def test_settings_from_the_environment():
    reg = Registry.from_env({"RESVIZ_MAX_RUNS": "3", "RESVIZ_RUN_THREADS": "2", "RESVIZ_RUN_LEASE_S": "5"})
    assert (reg.max_running, reg.threads_per_run, reg.lease_s) == (3, 2, 5.0)
    machine = Registry.from_env({"RESVIZ_RUN_THREADS": "1", "RESVIZ_MAX_RUNS": "zero"})
    assert machine.max_running == runs.cpu_cores()
    assert Registry.from_env({"RESVIZ_RUN_THREADS": str(10**6)}).max_running == 1


def test_the_module_level_registry_is_one_per_process():
    assert runs.registry() is runs.registry()


# --- the page loop over the websocket ------------------------------------------------------------------------

CLASSROOM_APP = '''
"""The training page's loop in miniature: Start attaches to the shared run, a fragment draws its snapshot."""
import threading

import streamlit as st

from resviz import runs


def records(steps):
    pace = threading.Event()
    if steps == 30:  # the different-seeds class: the first run waits until all three are there, so two queue
        for _ in range(3000):
            if sum(key[2] == steps for key, _ in runs.registry().overview()) >= 3:
                break
            pace.wait(0.01)
    for step in range(1, steps + 1):
        pace.wait(0.02)  # stands for a training step's work
        yield {"step": step, "steps": steps}
    return "trained"


seed = st.number_input("Seed", 0, 100, 0, key="tr_seed")
steps = st.number_input("Steps", 1, 1000, 10, key="tr_steps")
if st.button("Start", key="tr_start"):
    st.session_state["watch"] = runs.attach(("tiny", seed, steps), lambda: records(steps), cost=steps)


@st.fragment(run_every=0.2)
def race():
    watch = st.session_state.get("watch")
    if watch is None:
        return
    snap = watch.snapshot()
    if snap.status.state is runs.State.QUEUED:
        st.info(f"Place in the queue: {snap.status.position}")
    st.plotly_chart({"data": [{"y": [r["step"] for r in snap.records]}]}, key="tr_loss")
    if snap.status.state.done:
        st.markdown(f"{snap.status.state.value}: {len(snap.records)} records, {snap.status.watchers} watching")
        st.download_button("Download", b"x", key="tr_save")


race()
'''


def test_the_page_loop_shares_and_queues_runs_over_the_websocket(tmp_path, monkeypatch):
    """Start attaches, a run_every fragment draws the snapshot (the training page's planned loop), as
    resviz.tools.start_test drives it: three students on one setting share one run; three on three seeds with
    one slot queue, see their place, and all finish."""
    from resviz.tools import start_test
    from resviz.tools.server import ROOT, server_tracebacks, start_server, stop_server

    for name, value in (("PYTHONPATH", str(ROOT)), ("RESVIZ_MAX_RUNS", "1"), ("RESVIZ_RUN_LEASE_S", "600")):
        monkeypatch.setenv(name, value)
    (tmp_path / "app.py").write_text(CLASSROOM_APP)
    proc, url = start_server(script="app.py", cwd=tmp_path, log_path=tmp_path / "log.txt")
    try:
        same = start_test.measure(url, "same", 3, steps=10, window=0.5, timeout=4 * BOUND, page="")
        different = start_test.measure(url, "different", 3, steps=30, window=0, timeout=4 * BOUND, page="")
    finally:
        stop_server(proc)
    assert not server_tracebacks(tmp_path / "log.txt")
    for rec in same + different:
        assert rec["status"] == "finished" and rec["first_chart_s"] is not None, rec
        assert not rec["exceptions"] and not rec["errors"], rec
    finals = [t for rec in same for t in rec["final_texts"] if "records" in t]
    assert all(t.startswith("finished: 10 records") for t in finals) and len(finals) == 3
    assert "finished: 10 records, 3 watching" in finals  # the last to attach sees all three on one run
    queued = [rec["queue_texts"] for rec in different if rec["queue_texts"]]
    assert len(queued) == 2 and {"Place in the queue: 1", "Place in the queue: 2"} <= {t for q in queued for t in q}
    assert all(rec["fragment_reruns"] > 0 for rec in different if rec["queue_texts"])  # they finished live


# --- compute runs: one call, compute(progress) -> the result ---------------------------------------------------

class GatedCompute:
    """A compute run that makes progress call i only after the test's ``step()``; notes how far it got."""

    def __init__(self, steps: int = 4, fail_at: int | None = None):
        Gated.made_here.append(self)
        self.steps, self.fail_at = steps, fail_at
        self.permits = threading.Semaphore(0)
        self.calls, self.passed = 0, 0  # computations begun; progress calls that returned in the latest
        self.started, self.ended = threading.Event(), threading.Event()
        self.thread = None

    def __call__(self, progress):
        self.calls, self.passed = self.calls + 1, 0
        self.thread = threading.current_thread()
        self.started.set()
        try:
            for i in range(1, self.steps + 1):
                assert self.permits.acquire(timeout=BOUND), f"the test never let progress call {i} through"
                if i == self.fail_at:
                    raise ValueError(f"failed at {i}")
                progress(i / self.steps)
                self.passed += 1
            return f"result after {self.passed}"
        finally:
            self.ended.set()

    def step(self, n: int = 1) -> None:
        for _ in range(n):
            self.permits.release()


def test_a_compute_run_shows_its_progress_then_its_result(make_registry):
    reg, compute = make_registry(), GatedCompute(steps=4)
    w = reg.attach_compute(("lesion", 1), compute)
    compute.step()
    until(lambda: w.status.progress == 0.25, "the first progress call")
    assert w.status.state is State.RUNNING and compute.thread is not threading.current_thread()
    compute.step(3)
    snap = w.wait(BOUND)
    assert (snap.status.state, snap.result, snap.status.progress, len(snap.records)) == (
        State.FINISHED, "result after 4", 1.0, 0)
    assert reg.attach_compute(("lesion", 1), compute).snapshot().result == "result after 4" and compute.calls == 1


def test_an_abandoned_compute_run_stops_at_its_next_progress_call(make_registry, clock):
    reg, compute = make_registry(lease_s=10), GatedCompute(steps=100)
    w = reg.attach_compute(("paths", 1), compute)
    compute.step()
    until(lambda: compute.passed == 1, "the first progress call")
    clock.t = 11  # nobody has looked for longer than the lease: a closed tab, other settings
    compute.step()
    assert compute.ended.wait(BOUND)
    assert compute.passed == 1  # it stopped in the progress call: nothing after it ran
    until(lambda: not reg.overview(), "the registry to drop the run")
    assert w.snapshot().status.state is State.CANCELLED
    fresh = reg.attach_compute(("paths", 1), compute)  # asked again: a new run
    assert compute.started.wait(BOUND) and fresh.status.state is State.RUNNING


def test_a_failing_compute_run_is_said_to_every_watcher_and_tried_again(make_registry):
    reg, compute = make_registry(), GatedCompute(steps=3, fail_at=2)
    watches = [reg.attach_compute("k", compute) for _ in range(2)]
    compute.step(2)
    for snap in (w.wait(BOUND) for w in watches):
        assert snap.status.state is State.FAILED and snap.status.error == "failed at 2"
    raised = runs.raisable(watches[0].snapshot().exception)
    assert type(raised) is ValueError and raised is not watches[0].snapshot().exception
    compute.fail_at = None
    again = reg.attach_compute("k", compute)
    compute.step(3)
    assert again.wait(BOUND).result == "result after 3" and compute.calls == 2


def test_results_and_races_share_one_queue(make_registry):
    reg = make_registry(max_running=1)
    race, compute = Gated(steps=1), GatedCompute(steps=1)
    wr = reg.attach(("race", 0), race.make)
    wc = reg.attach_compute(("lesion", 0), compute)
    assert race.started.wait(BOUND)
    assert (wc.status.state, wc.status.position) == (State.QUEUED, 1) and not compute.started.is_set()
    race.step()
    compute.step()
    assert wc.wait(BOUND).status.state is State.FINISHED and wr.snapshot().status.state is State.FINISHED


def test_estimates_come_from_runs_of_the_same_kind(make_registry, clock):
    reg = make_registry(max_running=1)
    first = GatedCompute(steps=2)
    w = reg.attach_compute(("lesion", 0), first)
    clock.t = 8.0
    first.step(2)
    w.wait(BOUND)  # a lesion study took 8 s
    blocker, waiting = Gated(steps=4), GatedCompute(steps=1)
    wr = reg.attach(("race", 0), blocker.make, cost=4)
    wl = reg.attach_compute(("lesion", 1), waiting)
    assert wl.status.wait_s is None and wl.status.position == 1  # no race has run: its time is unknown
    clock.t = 12.0
    blocker.step()
    wr.wait(BOUND, records=1)  # a quarter of the race in 4 s: 12 s to go
    assert wl.status.wait_s == pytest.approx(12) and wl.status.remaining_s == pytest.approx(20)


def test_call_computes_here_once_and_waits_for_a_run_under_way(make_registry):
    reg = make_registry()
    calls, seen = [], []

    def here(progress):
        calls.append(threading.current_thread())
        progress(0.5)
        return "here"

    assert reg.call(("trace", 1), here, seen.append) == "here" and calls == [threading.current_thread()]
    assert seen == [0.0, 0.5]
    assert reg.call(("trace", 1), here) == "here" and len(calls) == 1  # kept: computed once
    assert reg.attach(("trace", 1), lambda: iter(())).snapshot().result == "here"  # one key space for both kinds
    compute = GatedCompute(steps=2)
    w = reg.attach_compute(("trace", 2), compute)
    answer = []
    waiter = threading.Thread(target=lambda: answer.append(reg.call(("trace", 2), here)))
    waiter.start()
    compute.step(2)
    waiter.join(BOUND)
    assert answer == ["result after 2"] and compute.calls == 1 and len(calls) == 1
    assert w.snapshot().status.state is State.FINISHED

    def broken(progress):
        raise ValueError("no such layer")

    for _ in range(2):  # a failure is raised, not kept: asked again, it is computed again
        with pytest.raises(ValueError, match="no such layer"):
            reg.call(("trace", 3), broken)
    assert reg.peek(("trace", 3)) is None

    class Rerun(BaseException):  # as Streamlit interrupts a script for a rerun
        pass

    def interrupted(progress):
        raise Rerun

    with pytest.raises(Rerun):
        reg.call(("trace", 4), interrupted)
    assert reg.peek(("trace", 4)) is None and reg.call(("trace", 4), here) == "here"  # nobody waits for it


def test_students_count_the_live_watchers_but_the_teacher(make_registry, clock):
    reg, run = make_registry(lease_s=10), Gated(steps=2)
    teacher = reg.attach("k", run.make, teacher=True)
    students = [reg.attach("k", run.make) for _ in range(3)]
    assert (teacher.status.watchers, teacher.status.students) == (4, 3)
    students[0].detach()
    clock.t = 11  # only those who look now count
    assert (students[1].status.watchers, students[1].status.students) == (1, 1)
    assert (teacher.status.watchers, teacher.status.students) == (2, 1)


def test_a_poll_reads_only_what_is_new(make_registry):
    reg, run = make_registry(), Gated(steps=4)
    w = reg.attach("k", run.make)
    run.step(3)
    snap = w.wait(BOUND, records=3)
    prefix = snap.records[:2]
    assert isinstance(prefix, runs.Records) and prefix._items is snap.records._items  # a view: nothing copied
    assert [r["step"] for r in prefix] == [1, 2] and prefix == snap.records[0:2] and len(prefix[:10]) == 2
    assert [r["step"] for r in snap.records[2:]] == [3]  # since index 2: only the new record
    assert [r["step"] for r in snap.records[::-2]] == [3, 1] and snap.records[-1]["step"] == 3
    run.step()
    w.wait(BOUND)
    assert len(snap.records) == 3 and len(prefix) == 2  # neither changes under its reader


def test_the_engine_benchmark_runs_watched_and_alone():
    from resviz.bench import engine

    for watchers in (0, 3):
        wall, poll_cpu = engine.watched_run(watchers, n=3)
        assert wall > 0 and poll_cpu >= 0 and (poll_cpu > 0) == (watchers > 0)
