"""The one compute engine: every heavy result is a run, computed once and watched by many; one fair queue.

    watch = runs.attach(key, make)             # key: every setting that decides the run; make() -> records
    watch = runs.attach_compute(key, compute)  # or compute(progress) -> the result; progress(fraction 0..1)
    snap = watch.snapshot()                    # every record so far (a view), the state, the result; never changes
    watch.detach()                             # this watcher leaves (Stop); the run stops once nobody watches it
    value = runs.registry().call(key, compute) # a page that waits: the kept result, the run under way, or here

A run is a generator of records (a training race, a finer landscape grid) or a ``compute(progress)`` callable (signal
flow after N steps, lesion, paths, shattered gradients, a landscape slice, the built-in pair); its result is the
generator's return value (else its last record), or what ``compute`` returns. ``make()`` and ``compute`` are called
in the run's own worker thread, so the expensive set-up (building models) is off the page's script thread and
inside the run's thread budget.

- The first ``attach`` of a key launches the run, or queues it behind the ``max_running`` runs that execute
  (FIFO, one queue for every kind of run); later attaches with the same key share it and see its whole history,
  then the live records. A waiting watcher sees its place and an estimate (``Status.position``, ``wait_s``), from
  the pace of the latest run of the same kind (a key's first element: "race", "lesion", ...).
- A watcher counts while it is held (watches are weakly referenced), not detached, and touched within
  ``lease_s`` (``snapshot()`` touches it: a page that polls every second keeps it alive; a closed tab, a reload
  or a page switch stops touching it). A run that nobody watches any more is stopped between two records, or at
  its next ``progress`` call (which raises a private exception that the worker catches), and dropped (its memory
  freed once its last watch is gone); a queued one leaves the queue. ``attach(..., teacher=True)`` marks the
  teacher's watch: ``Status.watchers`` counts everyone, ``Status.students`` the others.
- Finished runs stay in a bounded LRU (by count and by approximate memory): a late Start gets them at once.
  A failed run tells every watcher its error and is not kept: the next attach tries again.
- A poll is cheap: a snapshot holds a view of the records (no copy); ``records[i:]`` is only what is new since
  ``i``, ``records[:n]`` is another view.
- Each worker thread runs with ``threads_per_run`` torch threads (``budget_torch_threads``). Measured with torch
  2.14 on 2 cores (process CPU time over the calling thread's CPU time, conv forward+backward; a ratio, so other
  load does not distort it): ``torch.set_num_threads`` holds for the thread that calls it (ratio 1.00 at 1, 1.8-2.0
  at 2), threads that already used torch keep their own count (2.0 in the main thread after a worker set 1), and
  threads that first use torch later take the last value set (1.00): it is per thread, with a process-wide
  default. The worker therefore puts the default back, so the page's script threads keep torch's default.

Settings from the environment (the teacher's): ``RESVIZ_MAX_RUNS`` (default cores // threads per run, at least
1; on a GPU each run still needs one core to drive it), ``RESVIZ_RUN_THREADS`` (default 1),
``RESVIZ_RUN_LEASE_S`` (default 30), ``RESVIZ_FINISHED_RUNS`` (default 64) and ``RESVIZ_FINISHED_MB``
(default 512).
"""
from __future__ import annotations

import copy
import dataclasses
import enum
import heapq
import itertools
import logging
import os
import sys
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Iterable

log = logging.getLogger("resviz")


class State(enum.Enum):
    """Where a run is."""
    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"  # nobody watched it any more

    @property
    def done(self) -> bool:
        return self in (State.FINISHED, State.FAILED, State.CANCELLED)


@dataclass(frozen=True)
class Status:
    """A run's state as one watcher sees it now, with estimates for the page to show."""
    state: State
    position: int | None = None  # place in the queue while queued: 1 = the next to start
    wait_s: float | None = None  # estimated seconds until it starts (queued); None while nothing is known
    remaining_s: float | None = None  # estimated seconds until it finishes (queued or running)
    progress: float | None = None  # fraction done, read from the last record or the last progress call
    watchers: int = 0  # live watchers, this one included, the teacher's too
    error: str | None = None  # why it failed (the exception's first line)
    students: int = 0  # live watchers attached with teacher=False


class Records(Sequence):
    """The first ``n`` records of a run: a view that never changes (a run only appends). The records themselves
    are shared by every watcher: read them, never change them (fold them into a session's own history).

    Cheap to poll: ``records[i:]`` copies only the records after ``i``, ``records[:n]`` is a view."""
    __slots__ = ("_items", "_n")

    def __init__(self, items: list, n: int):
        self._items, self._n = items, n

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i):
        if isinstance(i, slice):
            start, stop, stride = i.indices(self._n)
            if start == 0 and stride == 1:
                return Records(self._items, max(0, stop))  # a prefix: another view, nothing copied
            return self._items[start:stop:stride] if stride > 0 else [self._items[j] for j in range(self._n)[i]]
        return self._items[range(self._n)[i]]

    def __eq__(self, other) -> bool:
        return isinstance(other, Sequence) and not isinstance(other, str) and list(self) == list(other)

    __hash__ = None


@dataclass(frozen=True)
class Snapshot:
    """What a watcher sees at one moment; later records never change it."""
    status: Status
    records: Records
    result: Any = None  # the generator's return value (else its last record) or compute's, once finished
    exception: BaseException | None = None  # why it failed: read it, do not raise it again (every watcher shares it)

    @property
    def last(self) -> Any:
        return self.records[-1] if self.records else None


def step_progress(record: Any) -> float | None:
    """Fraction done from a record's ``step`` and ``steps`` (the race's records), else None."""
    try:
        return min(1.0, record["step"] / record["steps"])
    except (TypeError, KeyError, ZeroDivisionError):
        return None


class _Cancelled(BaseException):
    """Raised by a cancelled compute run's ``progress`` call; the worker catches it. A BaseException, so that a
    computation's own ``except Exception`` does not swallow it."""


def kind_of(key: Hashable) -> Hashable:
    """What kind of run a key names, for the queue's estimates: the first element of a tuple key when it is a
    string ("race", "lesion"), else None (one kind for every other key)."""
    return key[0] if isinstance(key, tuple) and key and isinstance(key[0], str) else None


@dataclass(eq=False)
class _Run:
    """One shared run; every field is guarded by its registry's lock."""
    key: Hashable
    make: Callable[[], Iterable] | None  # a generator run
    cost: float  # in any unit the caller keeps consistent (steps x models): the estimates scale with it
    progress_of: Callable[[Any], float | None]
    compute: Callable[[Callable[[float], None]], Any] | None = None  # a compute run
    state: State = State.QUEUED
    records: list = field(default_factory=list)
    result: Any = None
    exception: BaseException | None = None
    progress: float | None = None
    started: float | None = None  # registry clock
    nbytes: int = 0  # approximate, once finished
    watchers: weakref.WeakSet = field(default_factory=weakref.WeakSet)


class Watch:
    """One student's view of a shared run. Hold it (in the session) while watching; ``detach`` to leave."""

    def __init__(self, registry: Registry, run: _Run, teacher: bool = False):
        self._registry, self._run = registry, run
        self.key, self.teacher = run.key, teacher
        self.detached = False
        self.waiting = 0  # threads blocked in wait(): they count as watching
        self.seen = registry.clock()

    def touch(self) -> None:
        """Say this watcher is still here (``snapshot`` does it)."""
        self.seen = self._registry.clock()

    def snapshot(self) -> Snapshot:
        """The run now: every record so far (a view), its status and result. Cheap; touches the watch."""
        return self._registry._snapshot(self)

    @property
    def status(self) -> Status:
        return self.snapshot().status

    def wait(self, timeout: float, records: int | None = None) -> Snapshot:
        """Block until the run is over (or has ``records`` records), at most ``timeout`` s; the snapshot then."""
        return self._registry._wait(self, timeout, records)

    def detach(self) -> None:
        """Leave the run (Stop). The run goes on for the others; with nobody left it stops now."""
        self._registry._detach(self)


class Registry:
    """Shared runs keyed by their settings, at most ``max_running`` executing at once, the rest in a FIFO queue."""

    def __init__(self, max_running: int = 1, threads_per_run: int | None = 1, lease_s: float = 30.0,
                 max_finished: int = 64, max_finished_mb: float = 512, clock: Callable[[], float] = time.monotonic):
        if max_running < 1:
            raise ValueError("max_running must be at least 1")
        self.max_running, self.threads_per_run, self.lease_s = max_running, threads_per_run, lease_s
        self.max_finished, self.max_finished_bytes, self.clock = max_finished, max_finished_mb * 2**20, clock
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._active: dict[Hashable, _Run] = {}  # queued or running, by key
        self._queue: list[_Run] = []  # FIFO
        self._running: dict[_Run, threading.Thread] = {}  # worker threads alive, a cancelled one until it ends
        self._finished: OrderedDict[Hashable, _Run] = OrderedDict()  # LRU, oldest first
        self._rates: dict[Hashable, float] = {}  # seconds per unit of cost, by kind, from the latest run of the kind
        self._names = itertools.count(1)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Registry:
        """A registry with the teacher's settings (``RESVIZ_*``, see the module docstring) or the machine's."""
        threads = env_int(env, "RESVIZ_RUN_THREADS", 1)
        return cls(max_running=env_int(env, "RESVIZ_MAX_RUNS", max(1, cpu_cores() // threads)),
                   threads_per_run=threads, lease_s=_env_float(env, "RESVIZ_RUN_LEASE_S", 30.0),
                   max_finished=env_int(env, "RESVIZ_FINISHED_RUNS", 64),
                   max_finished_mb=_env_float(env, "RESVIZ_FINISHED_MB", 512.0))

    def attach(self, key: Hashable, make: Callable[[], Iterable], cost: float = 1.0,
               progress: Callable[[Any], float | None] = step_progress, teacher: bool = False) -> Watch:
        """Watch the run of ``key``: the running or finished one if there is one, else ``make``'s, launched or queued.

        ``key`` must hold every setting that decides the records (two runs with one key must be identical).
        ``cost`` (steps x models, say) scales the wait estimates; ``progress(record)`` reads the fraction done;
        ``teacher``: the teacher's watch (not counted in ``Status.students``).
        """
        return self._attach(key, lambda: _Run(key, make, max(cost, 1e-9), progress), teacher)

    def attach_compute(self, key: Hashable, compute: Callable[[Callable[[float], None]], Any], cost: float = 1.0,
                       teacher: bool = False) -> Watch:
        """``attach`` for a run that is one call, ``compute(progress)`` -> the result, with no records:
        ``progress(fraction)`` (0..1) is what watchers see, and where a run nobody watches any more stops."""
        return self._attach(key, lambda: _Run(key, None, max(cost, 1e-9), step_progress, compute), teacher)

    def call(self, key: Hashable, compute: Callable[[Callable[[float], None]], Any],
             on_progress: Callable[[float], None] | None = None, cost: float = 1.0) -> Any:
        """``compute(progress)``'s result for a caller that waits (a page that draws it at once): the kept result
        of ``key``, else the queued or running run of ``key`` waited for, else computed here, in the calling thread
        and outside the queue's slots, and kept like any run's. ``on_progress(fraction)`` is called in this thread
        (0 first, when there is anything to wait for). A failure is raised (a copy if it was a shared run's)."""
        report = on_progress or (lambda _: None)
        with self._lock:
            run = self._finished.get(key)
            if run is not None:
                self._finished.move_to_end(key)
                return run.result
            run = self._active.get(key)
            fresh = run is None
            if fresh:
                run = self._active[key] = _Run(key, None, max(cost, 1e-9), step_progress, compute,
                                               state=State.RUNNING, started=self.clock())
            watch = Watch(self, run)
            run.watchers.add(watch)
            watch.waiting += 1  # counts as watching while this thread computes or waits
        try:
            report(0.0)
            if fresh:
                return self._compute_inline(run, report)
            while True:
                snap = watch.wait(0.25)
                if snap.status.state.done:
                    break
                report(snap.status.progress or 0.0)
        finally:
            with self._lock:
                watch.waiting -= 1
        if snap.status.state is State.FINISHED:
            return snap.result
        raise raisable(snap.exception) if snap.exception else RuntimeError(f"the run of {key!r} was stopped")

    def peek(self, key: Hashable) -> Status | None:
        """The status of ``key``'s queued, running or kept run, else None; attaches nothing, starts nothing."""
        with self._lock:
            run = self._active.get(key) or self._finished.get(key)
            return None if run is None else self._status(run, self.clock())

    def overview(self) -> list[tuple[Hashable, Status]]:
        """Every queued, running and kept finished run with its status (for the teacher), queue order first."""
        with self._lock:
            now = self.clock()
            self._reap_queue(now)
            runs = [*self._running, *self._queue, *self._active.values(), *self._finished.values()]
            return [(r.key, self._status(r, now)) for r in dict.fromkeys(runs)]

    def idle(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` s) until no run is queued or running; whether that happened (tests)."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._active and not self._running, timeout)

    def forget(self) -> None:
        """Drop every kept finished run: the next attach of any key computes afresh (tests)."""
        with self._lock:
            self._finished.clear()

    def shutdown(self, timeout: float = 30) -> None:
        """Cancel every queued and running run and wait for the workers to end (tests, server exit)."""
        with self._lock:
            for run in list(self._active.values()):
                self._cancel(run)
            threads = list(self._running.values())
        for t in threads:
            t.join(timeout)

    def _attach(self, key: Hashable, new: Callable[[], _Run], teacher: bool) -> Watch:
        with self._lock:
            run = self._active.get(key)
            if run is None and key in self._finished:
                run = self._finished[key]
                self._finished.move_to_end(key)
            if run is None:
                run = self._active[key] = new()
                self._queue.append(run)
            watch = Watch(self, run, teacher)
            run.watchers.add(watch)
            self._dispatch()
            return watch

    # --- watchers ---------------------------------------------------------------------------------------------

    def _counts(self, run: _Run, now: float) -> tuple[int, int]:
        """Live watchers of ``run``: all, and students only. Lock held."""
        live = [w for w in list(run.watchers)
                if not w.detached and (w.waiting or now - w.seen <= self.lease_s)]
        return len(live), sum(not w.teacher for w in live)

    def _live(self, run: _Run, now: float) -> int:
        return self._counts(run, now)[0]

    def _snapshot(self, watch: Watch) -> Snapshot:
        watch.touch()
        with self._lock:
            now = self.clock()
            if self._queue:
                self._reap_queue(now)
            run = watch._run
            return Snapshot(self._status(run, now), Records(run.records, len(run.records)), run.result,
                            run.exception)

    def _wait(self, watch: Watch, timeout: float, records: int | None) -> Snapshot:
        run = watch._run
        with self._changed:
            watch.waiting += 1
            try:
                self._changed.wait_for(lambda: run.state.done or (records is not None and len(run.records) >= records),
                                       timeout)
            finally:
                watch.waiting -= 1
        return watch.snapshot()

    def _detach(self, watch: Watch) -> None:
        with self._lock:
            watch.detached = True
            run = watch._run
            if not run.state.done and not self._live(run, self.clock()):
                self._cancel(run)
            self._dispatch()

    # --- the queue --------------------------------------------------------------------------------------------

    def _cancel(self, run: _Run) -> None:
        """Stop ``run``: out of the queue now; a running one ends before its next record or progress. Lock held."""
        run.state = State.CANCELLED
        if self._active.get(run.key) is run:
            del self._active[run.key]
        if run in self._queue:
            self._queue.remove(run)
        self._changed.notify_all()

    def _reap_queue(self, now: float) -> None:
        """Drop queued runs that nobody watches any more. Lock held."""
        for run in [r for r in self._queue if not self._live(r, now)]:
            self._cancel(run)

    def _dispatch(self) -> None:
        """Start queued runs, oldest first, while fewer than ``max_running`` execute. Lock held."""
        self._reap_queue(self.clock())
        while self._queue and len(self._running) < self.max_running:
            run = self._queue.pop(0)
            run.state, run.started = State.RUNNING, self.clock()
            thread = threading.Thread(target=self._work, args=(run,), daemon=True,
                                      name=f"resviz-run-{next(self._names)}")
            self._running[run] = thread
            thread.start()
        self._changed.notify_all()

    def _status(self, run: _Run, now: float) -> Status:
        live, students = self._counts(run, now)
        if run.state is State.QUEUED:
            wait = self._wait_s(run, now)
            own = self._left_s(run, now)
            return Status(State.QUEUED, self._queue.index(run) + 1, wait,
                          wait + own if wait is not None and own is not None else None, 0.0, live, None, students)
        error = None if run.exception is None else (str(run.exception).splitlines() or [""])[0] or type(
            run.exception).__name__
        left = self._left_s(run, now) if run.state is State.RUNNING else None
        return Status(run.state, None, None, left, run.progress, live, error, students)

    def _left_s(self, run: _Run, now: float) -> float | None:
        """Seconds ``run`` still needs: from its own pace once it has progressed, else cost x its kind's rate."""
        if run.state is State.RUNNING and run.progress:
            return (now - run.started) * (1 - run.progress) / run.progress
        rate = self._rates.get(kind_of(run.key))
        if rate is None:
            return None
        return max(0.0, run.cost * rate - (now - run.started if run.state is State.RUNNING else 0.0))

    def _wait_s(self, run: _Run, now: float) -> float | None:
        """When a queued run should start: the queue ahead of it played out on ``max_running`` slots."""
        slots = [0.0 if r.state is State.CANCELLED else self._left_s(r, now) for r in self._running]
        slots += [0.0] * (self.max_running - len(slots))
        if None in slots:
            return None
        heapq.heapify(slots)
        for ahead in self._queue:
            if ahead is run:
                return slots[0]
            need = self._left_s(ahead, now)
            if need is None:
                return None
            heapq.heapreplace(slots, slots[0] + need)
        return None

    def _learn_pace(self, run: _Run, fraction: float) -> None:
        """The pace of ``run``'s kind, from ``run`` having done ``fraction`` of its cost. Lock held."""
        self._rates[kind_of(run.key)] = (self.clock() - run.started) / (fraction * run.cost)

    # --- the worker -------------------------------------------------------------------------------------------

    def _work(self, run: _Run) -> None:
        """Run ``run`` to its end in this thread, unless it fails or nobody watches it any more."""
        if self.threads_per_run:
            budget_torch_threads(self.threads_per_run)
        records = None
        try:
            if run.compute is not None:
                self._finish(run, run.compute(lambda fraction: self._progress(run, fraction)))
                return
            records = iter(run.make())
            while self._keep_going(run):
                try:
                    record = next(records)
                except StopIteration as stop:
                    self._finish(run, stop.value)
                    break
                self._add(run, record)
        except _Cancelled:
            pass  # nobody watches it any more: it stopped at its progress call
        except Exception as e:  # noqa: BLE001 - every watcher is told; the server goes on
            self._fail(run, e)
        finally:
            if hasattr(records, "close"):
                try:
                    records.close()  # a stopped generator's finally blocks run here, in its own thread
                except Exception:  # noqa: BLE001
                    log.exception("closing run %r", run.key)
            self._drop_unfinished(run)
            with self._lock:
                del self._running[run]
                self._dispatch()

    def _compute_inline(self, run: _Run, report: Callable[[float], None]) -> Any:
        """``call``'s own computation, in the calling thread: kept once it returns, said to the others if it fails."""
        def progress(fraction: float) -> None:
            with self._lock:
                if run.state is State.RUNNING and fraction > 0:
                    run.progress = min(1.0, fraction)
                    self._learn_pace(run, run.progress)
            report(fraction)

        try:
            value = run.compute(progress)
        except Exception as e:
            self._fail(run, e)
            raise
        except BaseException:
            self._drop_unfinished(run)
            raise
        self._finish(run, value)
        return value

    def _drop_unfinished(self, run: _Run) -> None:
        """Cancel ``run`` if it is still running though its thread is done with it (interrupted by a
        BaseException: a page's rerun, the server's exit), so that nobody waits for it."""
        with self._lock:
            if run.state is State.RUNNING:
                self._cancel(run)

    def _keep_going(self, run: _Run) -> bool:
        with self._lock:
            if run.state is State.RUNNING and not self._live(run, self.clock()):
                self._cancel(run)
            return run.state is State.RUNNING

    def _progress(self, run: _Run, fraction: float) -> None:
        """A compute run's progress call: noted for its watchers, or _Cancelled when nobody watches any more."""
        if not self._keep_going(run):
            raise _Cancelled
        with self._lock:
            if fraction > 0:
                run.progress = min(1.0, fraction)
                self._learn_pace(run, run.progress)

    def _add(self, run: _Run, record: Any) -> None:
        progress = run.progress_of(record)
        with self._lock:
            if run.state is not State.RUNNING:
                return  # stopped while it made this record: nobody reads it
            run.records.append(record)
            if progress:
                run.progress = progress
                self._learn_pace(run, progress)
            self._changed.notify_all()

    def _finish(self, run: _Run, value: Any) -> None:
        with self._lock:
            if run.state is not State.RUNNING:
                return
            run.state, run.progress = State.FINISHED, 1.0
            run.result = value if value is not None or run.compute else (run.records[-1] if run.records else None)
            self._learn_pace(run, 1.0)
            run.nbytes = len(run.records) * approx_bytes(run.records[-1] if run.records else None) + approx_bytes(
                run.result)
            self._active.pop(run.key, None)
            self._finished[run.key] = run
            self._evict()
            self._changed.notify_all()

    def _fail(self, run: _Run, e: Exception) -> None:
        log.error("run %r failed", run.key, exc_info=e)
        with self._lock:
            run.state, run.exception = State.FAILED, e
            if self._active.get(run.key) is run:
                del self._active[run.key]
            self._changed.notify_all()

    def _evict(self) -> None:
        """Forget the oldest finished runs beyond the count and memory bounds (the newest always stays)."""
        while len(self._finished) > 1 and (len(self._finished) > self.max_finished or sum(
                r.nbytes for r in self._finished.values()) > self.max_finished_bytes):
            self._finished.popitem(last=False)


def raisable(e: BaseException) -> BaseException:
    """A copy of a run's exception to raise in one session's thread (the run's own is shared by every watcher, and
    raising it there would grow its traceback under the others); the original when it cannot be copied."""
    try:
        fresh = copy.copy(e)
    except Exception:  # noqa: BLE001 - an exception whose constructor wants other arguments
        return e
    return fresh.with_traceback(None) if type(fresh) is type(e) else e


def approx_bytes(obj: Any, _depth: int = 0) -> int:
    """Rough memory of plain data: tensors and arrays by their buffers, containers and dataclasses summed."""
    nbytes = getattr(obj, "nbytes", None)  # numpy arrays, torch tensors
    if isinstance(nbytes, int):
        return nbytes
    if _depth > 8:
        return sys.getsizeof(obj)
    if isinstance(obj, Mapping):
        return sys.getsizeof(obj) + sum(approx_bytes(k, _depth + 1) + approx_bytes(v, _depth + 1)
                                        for k, v in obj.items())
    if isinstance(obj, (list, tuple, set, frozenset)):
        return sys.getsizeof(obj) + sum(approx_bytes(v, _depth + 1) for v in obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return sum(approx_bytes(getattr(obj, f.name), _depth + 1) for f in dataclasses.fields(obj))
    return sys.getsizeof(obj)


_TORCH_THREADS = threading.Lock()


def budget_torch_threads(n: int) -> None:
    """Give the calling thread ``n`` torch threads; threads that start later keep the process's default.

    torch keeps one thread count per thread, read from a process-wide default when the thread first uses torch;
    ``torch.set_num_threads`` sets both. So: touch torch here first (this thread reads the default), set ``n``
    (this thread's count), then put the default back from a helper thread.
    """
    import torch

    with _TORCH_THREADS:
        default = torch.get_num_threads()  # also this thread's first use of torch
        torch.set_num_threads(n)
        restore = threading.Thread(target=torch.set_num_threads, args=(default,))
        restore.start()
        restore.join()


def cpu_cores() -> int:
    """Cores this process may use (its affinity, which containers and taskset narrow), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def env_int(env: Mapping[str, str], name: str, default: int) -> int:
    """A teacher's positive whole-number setting from ``env``, else ``default`` (with a warning when it is not one)."""
    try:
        value = int(env.get(name, default))
    except ValueError:
        value = 0
    if value < 1:
        log.warning("%s=%r is not a positive whole number; using %d", name, env.get(name), default)
        return default
    return value


def _env_float(env: Mapping[str, str], name: str, default: float) -> float:
    try:
        value = float(env.get(name, default))
    except ValueError:
        value = -1.0
    if not value > 0:
        log.warning("%s=%r is not a positive number; using %g", name, env.get(name), default)
        return default
    return value


_REGISTRY: Registry | None = None
_REGISTRY_LOCK = threading.Lock()


def registry() -> Registry:
    """The process-wide registry, made from the environment on first use (every session of a server shares it)."""
    global _REGISTRY
    with _REGISTRY_LOCK:
        if _REGISTRY is None and os.environ.get("RESVIZ_SCHEDULER"):  # the teacher's Dask cluster (resviz.cluster)
            from resviz import cluster  # imported only then: the embedded default needs no Dask
            _REGISTRY = cluster.registry_from_env(os.environ, Registry.from_env)
        if _REGISTRY is None:
            _REGISTRY = Registry.from_env()
        return _REGISTRY


def attach(key: Hashable, make: Callable[[], Iterable], cost: float = 1.0,
           progress: Callable[[Any], float | None] = step_progress, teacher: bool = False) -> Watch:
    """``registry().attach(...)``: watch the shared run of ``key`` (see ``Registry.attach``)."""
    return registry().attach(key, make, cost, progress, teacher)


def attach_compute(key: Hashable, compute: Callable[[Callable[[float], None]], Any], cost: float = 1.0,
                   teacher: bool = False) -> Watch:
    """``registry().attach_compute(...)``: watch the shared compute run of ``key``."""
    return registry().attach_compute(key, compute, cost, teacher)
