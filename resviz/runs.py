"""Runs shared by the whole class: compute once, watch many; a fair queue for different runs.

    watch = runs.attach(key, make)   # key: every setting that decides the run; make() -> a generator of records
    snap = watch.snapshot()          # every record so far (from the first), the state, the result; never changes
    watch.detach()                   # this watcher leaves (Stop); the run stops once nobody watches it

A run is any generator of records (a training race, signal flow after N steps, a landscape); its result is the
generator's return value, else its last record. ``make()`` is called in the run's own worker thread, so the
expensive set-up (building models) is off the page's script thread and inside the run's thread budget.

- The first ``attach`` of a key launches the run, or queues it behind the ``max_running`` runs that execute
  (FIFO); later attaches with the same key share it and see its whole history, then the live records.
- A watcher counts while it is held (watches are weakly referenced), not detached, and touched within
  ``lease_s`` (``snapshot()`` touches it: a page that polls every second keeps it alive; a closed tab, a reload
  or a page switch stops touching it). A run that nobody watches any more is stopped between two records and
  dropped (its generator closed, its memory freed once its last watch is gone); a queued one leaves the queue.
- Finished runs stay in a bounded LRU (by count and by approximate memory): a late Start gets them at once.
  A failed run tells every watcher its error and is not kept: the next attach tries again.
- Each worker thread runs with ``threads_per_run`` torch threads (``budget_torch_threads``). Measured with torch
  2.14 on 2 cores (process CPU time over the calling thread's CPU time, conv forward+backward; a ratio, so other
  load does not distort it): ``torch.set_num_threads`` holds for the thread that calls it (ratio 1.00 at 1, 1.8-2.0
  at 2), threads that already used torch keep their own count (2.0 in the main thread after a worker set 1), and
  threads that first use torch later take the last value set (1.00): it is per thread, with a process-wide
  default. The worker therefore puts the default back, so the page's script threads keep torch's default.

Settings from the environment (the teacher's): ``RESVIZ_MAX_RUNS`` (default cores // threads per run, at least
1; on a GPU each run still needs one core to drive it), ``RESVIZ_RUN_THREADS`` (default 1),
``RESVIZ_RUN_LEASE_S`` (default 30), ``RESVIZ_FINISHED_RUNS`` (default 16) and ``RESVIZ_FINISHED_MB``
(default 512).
"""
from __future__ import annotations

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
    progress: float | None = None  # fraction done, read from the last record
    watchers: int = 0  # live watchers, this one included
    error: str | None = None  # why it failed (the exception's first line)


class Records(Sequence):
    """The first ``n`` records of a run: a view that never changes (a run only appends). The records themselves
    are shared by every watcher: read them, never change them (fold them into a session's own history)."""
    __slots__ = ("_items", "_n")

    def __init__(self, items: list, n: int):
        self._items, self._n = items, n

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self._items[j] for j in range(self._n)[i]]
        return self._items[range(self._n)[i]]


@dataclass(frozen=True)
class Snapshot:
    """What a watcher sees at one moment; later records never change it."""
    status: Status
    records: Records
    result: Any = None  # the generator's return value (else its last record), once finished
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


@dataclass(eq=False)
class _Run:
    """One shared run; every field is guarded by its registry's lock."""
    key: Hashable
    make: Callable[[], Iterable]
    cost: float  # in any unit the caller keeps consistent (steps x models): the estimates scale with it
    progress_of: Callable[[Any], float | None]
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

    def __init__(self, registry: Registry, run: _Run):
        self._registry, self._run = registry, run
        self.key = run.key
        self.detached = False
        self.waiting = 0  # threads blocked in wait(): they count as watching
        self.seen = registry.clock()

    def touch(self) -> None:
        """Say this watcher is still here (``snapshot`` does it)."""
        self.seen = self._registry.clock()

    def snapshot(self) -> Snapshot:
        """The run now: every record so far, its status and result. Cheap; touches the watch."""
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
                 max_finished: int = 16, max_finished_mb: float = 512, clock: Callable[[], float] = time.monotonic):
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
        self._rate: float | None = None  # seconds per unit of cost, from the latest run that made progress
        self._names = itertools.count(1)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Registry:
        """A registry with the teacher's settings (``RESVIZ_*``, see the module docstring) or the machine's."""
        threads = env_int(env, "RESVIZ_RUN_THREADS", 1)
        return cls(max_running=env_int(env, "RESVIZ_MAX_RUNS", max(1, cpu_cores() // threads)),
                   threads_per_run=threads, lease_s=_env_float(env, "RESVIZ_RUN_LEASE_S", 30.0),
                   max_finished=env_int(env, "RESVIZ_FINISHED_RUNS", 16),
                   max_finished_mb=_env_float(env, "RESVIZ_FINISHED_MB", 512.0))

    def attach(self, key: Hashable, make: Callable[[], Iterable], cost: float = 1.0,
               progress: Callable[[Any], float | None] = step_progress) -> Watch:
        """Watch the run of ``key``: the running or finished one if there is one, else ``make``'s, launched or queued.

        ``key`` must hold every setting that decides the records (two runs with one key must be identical).
        ``cost`` (steps x models, say) scales the wait estimates; ``progress(record)`` reads the fraction done.
        """
        with self._lock:
            run = self._active.get(key)
            if run is None and key in self._finished:
                run = self._finished[key]
                self._finished.move_to_end(key)
            if run is None:
                run = self._active[key] = _Run(key, make, max(cost, 1e-9), progress)
                self._queue.append(run)
            watch = Watch(self, run)
            run.watchers.add(watch)
            self._dispatch()
            return watch

    def overview(self) -> list[tuple[Hashable, Status]]:
        """Every queued, running and kept finished run with its status (for the teacher), queue order first."""
        with self._lock:
            now = self.clock()
            self._reap_queue(now)
            runs = [*self._running, *self._queue, *self._finished.values()]
            return [(r.key, self._status(r, now)) for r in dict.fromkeys(runs)]

    def shutdown(self, timeout: float = 30) -> None:
        """Cancel every queued and running run and wait for the workers to end (tests, server exit)."""
        with self._lock:
            for run in list(self._active.values()):
                self._cancel(run)
            threads = list(self._running.values())
        for t in threads:
            t.join(timeout)

    # --- watchers ---------------------------------------------------------------------------------------------

    def _live(self, run: _Run, now: float) -> int:
        return sum(not w.detached and (w.waiting or now - w.seen <= self.lease_s) for w in list(run.watchers))

    def _snapshot(self, watch: Watch) -> Snapshot:
        watch.touch()
        with self._lock:
            now = self.clock()
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
        """Stop ``run``: out of the queue now; a running one ends before its next record. Lock held."""
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
        live = self._live(run, now)
        if run.state is State.QUEUED:
            wait = self._wait_s(run, now)
            own = self._left_s(run, now)
            return Status(State.QUEUED, self._queue.index(run) + 1, wait,
                          wait + own if wait is not None and own is not None else None, 0.0, live)
        error = None if run.exception is None else (str(run.exception).splitlines() or [""])[0] or type(
            run.exception).__name__
        left = self._left_s(run, now) if run.state is State.RUNNING else None
        return Status(run.state, None, None, left, run.progress, live, error)

    def _left_s(self, run: _Run, now: float) -> float | None:
        """Seconds ``run`` still needs: from its own pace once it has progressed, else cost x the latest rate."""
        if run.state is State.RUNNING and run.progress:
            return (now - run.started) * (1 - run.progress) / run.progress
        return run.cost * self._rate if self._rate is not None else None

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

    # --- the worker -------------------------------------------------------------------------------------------

    def _work(self, run: _Run) -> None:
        """Run ``run`` to its end in this thread, unless it fails or nobody watches it any more."""
        if self.threads_per_run:
            budget_torch_threads(self.threads_per_run)
        records = None
        try:
            records = iter(run.make())
            while self._keep_going(run):
                try:
                    record = next(records)
                except StopIteration as stop:
                    self._finish(run, stop.value)
                    break
                self._add(run, record)
        except Exception as e:  # noqa: BLE001 - every watcher is told; the server goes on
            self._fail(run, e)
        finally:
            if hasattr(records, "close"):
                try:
                    records.close()  # a stopped generator's finally blocks run here, in its own thread
                except Exception:  # noqa: BLE001
                    log.exception("closing run %r", run.key)
            with self._lock:
                del self._running[run]
                self._dispatch()

    def _keep_going(self, run: _Run) -> bool:
        with self._lock:
            if run.state is State.RUNNING and not self._live(run, self.clock()):
                self._cancel(run)
            return run.state is State.RUNNING

    def _add(self, run: _Run, record: Any) -> None:
        progress = run.progress_of(record)
        with self._lock:
            if run.state is not State.RUNNING:
                return  # stopped while it made this record: nobody reads it
            run.records.append(record)
            if progress:
                run.progress = progress
                self._rate = (self.clock() - run.started) / (progress * run.cost)
            self._changed.notify_all()

    def _finish(self, run: _Run, value: Any) -> None:
        with self._lock:
            if run.state is not State.RUNNING:
                return
            run.state, run.progress = State.FINISHED, 1.0
            run.result = value if value is not None else (run.records[-1] if run.records else None)
            self._rate = (self.clock() - run.started) / run.cost
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
        if _REGISTRY is None:
            _REGISTRY = Registry.from_env()
        return _REGISTRY


def attach(key: Hashable, make: Callable[[], Iterable], cost: float = 1.0,
           progress: Callable[[Any], float | None] = step_progress) -> Watch:
    """``registry().attach(...)``: watch the shared run of ``key`` (see ``Registry.attach``)."""
    return registry().attach(key, make, cost, progress)
