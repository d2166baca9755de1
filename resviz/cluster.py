"""Shared runs on a Dask cluster: the interface of ``resviz.runs``, one computation per key for every replica.

The teacher sets ``RESVIZ_SCHEDULER=tcp://host:8786`` (``python -m deploy.start --workers M`` does) and
``runs.registry()`` returns a ``ClusterRegistry``; without it nothing here is imported (no Dask, no extra process).

    watch = runs.attach(key, make)   # the same call, the same Watch, Snapshot and Status as the embedded engine

- One computation per key across replicas: a run is a Dask task whose key is derived from the run's key
  (``task_key``); a second client submitting the same key gets the same task, running or finished.
- Records reach every watcher on every replica, from the first: the worker logs each record as an event on the
  run's topic (pickled bytes, numbered); each replica subscribes to the topic (the scheduler pushes new events)
  and reads the events so far once, so a watcher's poll reads only the replica's own list, as in the embedded
  engine. ``make`` must be picklable (a module-level function and its arguments; Dask's cloudpickle also takes a
  closure over plain data), and so must every record and the result: one that is not fails the run with a message.
  What travels is settings and names (``dumps``): a shipped pair, or a random-weights model, a run holds is sent as
  its name and loaded again on the worker, on the device it was on; a race trains on the worker's own device
  (``worker_device``).
- A replica holds its task's future while someone on it watches (the same lease as the embedded engine); with no
  replica holding it, the scheduler releases the task and the worker stops it before its next record.
- A worker that dies mid-run: the scheduler runs the task again elsewhere (Dask's ``allowed-failures``); records
  are numbered and a key decides its records, so the repeat's first records are dropped and watchers see the
  rest once. Past the allowed failures every watcher gets the error.
- The scheduler unreachable (at start or later): new runs use the embedded engine of this process, ``health()``
  says so (for the teacher's panel), the replica reconnects in the background; watchers of a run that was on the
  cluster are told it was lost.
- ``RESVIZ_RUN_GPU`` (say 0.5): each run asks for that much of the resource ``GPU``, so only workers started with
  ``--resources GPU=1`` take runs, two at a time per GPU at 0.5.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import os
import pickle
import threading
import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Hashable, Iterable

from resviz import runs
from resviz.runs import Records, Snapshot, State, Status, Watch, step_progress

log = logging.getLogger("resviz")

SCHEDULER_ENV = "RESVIZ_SCHEDULER"
PREFIX = "resviz-run-"
RECONNECT_S = 10.0  # how often a replica without its scheduler tries again
LOST = "The cluster's scheduler stopped answering; press Start again to run it on this server."
SHARED = "resviz-runs"  # the scheduler's metadata: each replica's runs with their watchers, for every teacher's panel
STALE_S = 15.0  # a replica whose list of runs is older than this is gone (killed): its runs are left out


def task_key(key: Hashable) -> str:
    """The Dask key of the run of ``key``: the same in every process (``repr`` of plain settings, hashed)."""
    return PREFIX + hashlib.sha256(repr(key).encode()).hexdigest()[:40]


class NotPlainData(TypeError):
    """A record or result that cannot leave the worker (it holds a function, a lock, an open file...)."""


# --- on the worker ------------------------------------------------------------------------------------------------

def execute(payload: bytes, topic: str, threads: int | None = 1, compute: bool = False) -> dict:
    """The task: ``make()``'s generator (or ``compute(progress)``), each record (or progress) an event on ``topic``.

    ``payload`` is ``make`` (or ``compute``) pickled by the replica, which so learns at once when it cannot travel.
    Returns the record count and the result; stops before its next record (or at its next progress call) once the
    scheduler has released the task (no replica watches it any more).
    """
    import cloudpickle
    from distributed import get_worker

    worker = get_worker()
    key = worker.get_current_task()
    if threads:
        runs.budget_torch_threads(threads)
    worker.log_event(topic, {"start": worker.address})
    fn = cloudpickle.loads(payload)
    if compute:
        def progress(fraction: float) -> None:
            if _released(worker, key):
                raise _Released
            worker.log_event(topic, {"p": float(fraction)})
        try:
            return {"n": 0, "result": _plain(fn(progress), "the result")}
        except _Released:
            return {"n": 0, "released": True}
    records, n, last = None, 0, None
    try:
        records = iter(fn())
        while not _released(worker, key):
            try:
                record = next(records)
            except StopIteration as stop:
                result = stop.value if stop.value is not None else last
                return {"n": n, "result": _plain(result, "the result")}
            worker.log_event(topic, {"i": n, "r": _plain(record, f"record {n}")})
            n, last = n + 1, record
        return {"n": n, "released": True}
    finally:
        if hasattr(records, "close"):
            records.close()


def worker_device(default: str = "cpu", cuda_available: Callable[[], bool] | None = None) -> str:
    """Where a run trains: on a Dask worker, the worker's own device (``device_for`` its resources); elsewhere (the
    embedded engine) ``default``, the replica's choice. Never imports Dask: a process without it is no worker."""
    import sys

    if "distributed" not in sys.modules:
        return default
    from distributed import get_worker

    try:
        worker = get_worker()
    except ValueError:  # not in a worker's task
        return default
    return device_for(worker.state.total_resources, cuda_available)


def device_for(resources: Mapping[str, float], cuda_available: Callable[[], bool] | None = None) -> str:
    """The device of a worker with ``resources``: cuda when started with ``--resources GPU=1`` and it sees a GPU,
    else cpu (a GPU worker without CUDA trains on its CPU rather than fail)."""
    if resources.get("GPU", 0) > 0:
        import torch

        if (cuda_available or torch.cuda.is_available)():
            return "cuda"
    return "cpu"


class _Released(BaseException):
    """Raised at a compute run's progress call once nobody watches it (a BaseException: ``except Exception`` in
    the computation does not swallow it)."""


def _released(worker, key) -> bool:
    """Whether the scheduler has let go of the running task ``key`` (its worker state says cancelled)."""
    ts = worker.state.tasks.get(key)
    return ts is None or ts.state in ("cancelled", "released", "forgotten")


def _plain(obj: Any, what: str) -> bytes:
    try:
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as e:  # noqa: BLE001 - any pickling error says the same to the student
        raise NotPlainData(f"{what} ({type(obj).__name__}) cannot leave the worker: {e}") from None


def _queue_reader() -> Callable:
    """``queue(dask_scheduler)`` -> every resviz run not yet done, (key, state, cost), running first, then in queue
    order. Made here, so that it travels by value: the scheduler need not import resviz (and torch)."""
    prefix = PREFIX

    def queue(dask_scheduler=None) -> list[tuple[str, str, float]]:
        out = []
        for ts in dask_scheduler.tasks.values():
            if isinstance(ts.key, str) and ts.key.startswith(prefix) and ts.state not in ("memory", "erred",
                                                                                          "released"):
                out.append((ts.state != "processing", ts.priority or (), ts.key, ts.state,
                            float((ts.annotations or {}).get("resviz_cost", 1.0))))
        return [(k, s, c) for _, _, k, s, c in sorted(out, key=lambda t: (t[0], t[1]))]
    return queue


# --- what a run sends to a worker: plain settings, and the class's shared networks by name --------------------------

def dumps(fn: Callable) -> bytes:
    """``fn`` pickled for a worker (cloudpickle), the shared read-only networks it holds sent as a name the worker
    loads them by: a shipped pair (``LoadedPair``, or one of its networks) as its preset, a random-weights model as
    its config and seed 0. A lesson's default result so sends about a kilobyte, not the 1-5 MB of its networks."""
    import io

    buf = io.BytesIO()
    _pickler()(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(fn)
    return buf.getvalue()


@functools.lru_cache(maxsize=1)
def _pickler() -> type:
    import cloudpickle

    class Pickler(cloudpickle.Pickler):
        def reducer_override(self, obj):
            named = _by_name(obj)
            return named if named is not None else super().reducer_override(obj)
    return Pickler


def _by_name(obj: Any) -> tuple | None:
    """How a worker makes ``obj`` again from a name (a pickle reduction), or None to pickle it as it is."""
    from resviz import models, pair

    if isinstance(obj, pair.LoadedPair):
        preset = _shipped().get(("pair", obj.trained.key))
        device = next(obj.resnet.parameters()).device.type
        return None if preset is None else (shipped_pair, (preset, obj.source, device))
    if not isinstance(obj, models.ResNet) or obj.training or any(p.requires_grad for p in obj.parameters()):
        return None  # only shared read-only networks: one being trained is the run's own
    device, fp = next(obj.parameters()).device.type, pair.fingerprint(obj.state_dict())
    for role in ("resnet", "plain"):
        if (preset := _shipped().get((role, fp))) is not None:
            return shipped_network, (preset, role, device)
    if fp == _init_fingerprint(obj.cfg):
        return init_network, (obj.cfg, device)
    return None


@functools.lru_cache(maxsize=1)
def _shipped() -> dict:
    """The shipped pairs' fingerprints: ("pair", key) and ("resnet" or "plain", state dict's) -> preset."""
    from resviz import builtin_pair, pair

    out = {}
    for preset in builtin_pair.shipped_presets():
        t = builtin_pair.shipped(preset)
        out.update({("pair", t.key): preset, ("resnet", pair.fingerprint(t.state_dict)): preset,
                    ("plain", pair.fingerprint(t.plain_state_dict)): preset})
    return out


@functools.lru_cache(maxsize=8)
def _init_fingerprint(cfg) -> str:
    from resviz import models, pair

    return pair.fingerprint(models.build_model(cfg, seed=0).state_dict())


@functools.lru_cache(maxsize=4)
def shipped_pair(preset: str, source, device: str):
    """On a worker: the shipped pair of ``preset``, loaded as the pair picker loads it, on the device it was on."""
    from resviz import builtin_pair, pair

    device = _here(device)
    if device == "cpu" and source is pair.PairSource.BUILTIN:
        return builtin_pair.shipped_pair(preset)  # the one the lesson claims load too
    return pair.load_pair(builtin_pair.shipped(preset), source, device)


def shipped_network(preset: str, role: str, device: str):
    """On a worker: one network of the shipped pair of ``preset`` ("resnet" or "plain")."""
    from resviz import pair

    return getattr(shipped_pair(preset, pair.PairSource.BUILTIN, device), role)


@functools.lru_cache(maxsize=4)
def init_network(cfg, device: str):
    """On a worker: the shared random-weights model of ``cfg`` (seed 0, eval mode, read-only), as pages load it."""
    from resviz import models

    model = models.build_model(cfg, seed=0).to(_here(device)).eval()
    model.requires_grad_(False)
    return model


def _here(device: str) -> str:
    """``device`` where it exists in this process, else cpu: a network keeps the device of the tensors it was sent
    with (a page moves its probe images to the network's device), so it is not moved to the worker's choice."""
    import torch

    try:
        torch.empty(0, device=device)
        return device
    except (RuntimeError, AssertionError):
        return "cpu"


# --- on a replica -------------------------------------------------------------------------------------------------

@dataclass(eq=False)
class _Remote:
    """This replica's view of one run on the cluster; every field is guarded by its registry's lock."""
    key: Hashable
    topic: str
    cost: float
    progress_of: Callable[[Any], float | None]
    make: Callable | None = None  # kept only to run it here if its records cannot leave the worker
    compute: bool = False
    future: Any = None
    state: State = State.QUEUED
    records: list = field(default_factory=list)
    pending: dict = field(default_factory=dict)  # records that arrived before an earlier one
    expected: int | None = None  # the record count, once the task has returned
    result: Any = None
    exception: BaseException | None = None
    progress: float | None = None
    started: float | None = None
    worker: str | None = None  # where it runs (the latest start)
    local: Watch | None = None  # its stand-in on the embedded engine (records that cannot travel)
    watchers: weakref.WeakSet = field(default_factory=weakref.WeakSet)


class ClusterRegistry:
    """``runs.Registry``'s interface over a Dask scheduler, with an embedded registry while it cannot be reached."""

    def __init__(self, address: str, fallback: Callable[[], runs.Registry] = runs.Registry.from_env,
                 lease_s: float = 30.0, max_finished: int = 16, threads_per_run: int | None = 1,
                 gpu: float = 0.0, connect_timeout: float = 5.0, clock: Callable[[], float] = time.monotonic):
        self.address, self.lease_s, self.max_finished = address, lease_s, max_finished
        self.threads_per_run, self.gpu, self.connect_timeout, self.clock = threads_per_run, gpu, connect_timeout, clock
        self._make_fallback, self._fallback = fallback, None
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._runs: dict[Hashable, _Remote] = {}  # queued or running, by key
        self._finished: OrderedDict[Hashable, _Remote] = OrderedDict()  # LRU: their futures keep the results
        self._queue: list[tuple[str, str, float]] = []  # the scheduler's, refreshed by the keeper
        self._slots = 1
        self._rate: float | None = None  # seconds per unit of cost, from runs this replica saw
        self.client = None
        self.down_since: float | None = None  # wall clock, while the scheduler cannot be reached
        self._closed = threading.Event()
        self._queue_of = _queue_reader()
        self._kinds_here: set = set()  # kinds of run whose records could not leave a worker: run here at once
        self.replica = uuid.uuid4().hex  # this replica's name in the cluster's list of runs (``overview``)
        self._others: dict[str, tuple[Hashable, Status]] = {}  # the other replicas' runs, by task key (the keeper's)
        self._shared = False  # whether this replica's list on the scheduler has runs in it
        self._connect()
        self._keeper = threading.Thread(target=self._keep, daemon=True, name="resviz-cluster")
        self._keeper.start()

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ,
                 fallback: Callable[[], runs.Registry] = runs.Registry.from_env) -> ClusterRegistry:
        return cls(env[SCHEDULER_ENV], fallback, lease_s=runs._env_float(env, "RESVIZ_RUN_LEASE_S", 30.0),
                   max_finished=runs.env_int(env, "RESVIZ_FINISHED_RUNS", 16),
                   threads_per_run=runs.env_int(env, "RESVIZ_RUN_THREADS", 1),
                   gpu=float(env.get("RESVIZ_RUN_GPU") or 0),
                   connect_timeout=float(env.get("RESVIZ_SCHEDULER_TIMEOUT") or 5))

    # --- the interface of runs.Registry ---------------------------------------------------------------------------

    @property
    def max_running(self) -> int:
        """Runs the cluster executes at once (its workers' threads), or the embedded engine's while it is down."""
        return self._slots if self.connected else self.fallback.max_running

    @property
    def connected(self) -> bool:
        return self.client is not None and self.client.status == "running"

    @property
    def fallback(self) -> runs.Registry:
        """The embedded engine of this process: runs while the scheduler is down, and runs that cannot travel."""
        with self._lock:
            if self._fallback is None:
                self._fallback = self._make_fallback()
            return self._fallback

    def attach(self, key: Hashable, make: Callable[[], Iterable], cost: float = 1.0,
               progress: Callable[[Any], float | None] = step_progress, teacher: bool = False) -> Watch:
        """Watch the run of ``key`` on the cluster (joined, or submitted); on the embedded engine while it is down,
        or when ``make`` cannot be pickled."""
        return self._attach(key, make, cost, progress, teacher, compute=False)

    def attach_compute(self, key: Hashable, compute: Callable[[Callable[[float], None]], Any], cost: float = 1.0,
                       teacher: bool = False) -> Watch:
        """``attach`` for ``compute(progress)`` -> the result (no records; progress calls are what watchers see)."""
        return self._attach(key, compute, cost, step_progress, teacher, compute=True)

    def call(self, key: Hashable, compute: Callable[[Callable[[float], None]], Any],
             on_progress: Callable[[float], None] | None = None, cost: float = 1.0) -> Any:
        """``compute(progress)``'s result for a caller that waits: the run of ``key`` on the cluster, waited for
        (on this process's engine, as ``runs.Registry.call`` does it, while the scheduler cannot be reached)."""
        if not self.connected:
            return self.fallback.call(key, compute, on_progress, cost)
        watch = self.attach_compute(key, compute, cost)
        try:
            while not (snap := watch.wait(0.25)).status.state.done:
                if on_progress is not None:
                    on_progress(snap.status.progress or 0.0)
        finally:
            watch.detach()
        if snap.status.state is State.FINISHED:
            return snap.result
        raise runs.raisable(snap.exception) if snap.exception else RuntimeError(f"the run of {key!r} was stopped")

    def peek(self, key: Hashable) -> Status | None:
        """The status of this replica's run of ``key`` (or the embedded engine's), else None; starts nothing."""
        with self._lock:
            run = self._runs.get(key) or self._finished.get(key)
            if run is not None:
                return self._status(run, self.clock())
        return self._fallback.peek(key) if self._fallback is not None else None

    def overview(self) -> list[tuple[Hashable, Status]]:
        """The cluster's runs, every replica's (running, queued, kept finished), each once with its watchers counted
        over the replicas (from the keeper's last look, a second old at most); then the embedded engine's."""
        with self._lock:
            now = self.clock()
            runs_ = {r.topic: (r.key, self._status(r, now)) for r in [*self._runs.values(), *self._finished.values()]}
            others = dict(self._others)
        for topic, (key, status) in others.items():
            runs_[topic] = (runs_[topic][0], _together(runs_[topic][1], status)) if topic in runs_ else (key, status)
        return list(runs_.values()) + (self._fallback.overview() if self._fallback else [])

    def idle(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` s) until this replica watches no unfinished run; whether it did (tests)."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._runs, timeout)

    def forget(self) -> None:
        """Let go of every kept finished run (tests)."""
        with self._lock:
            for run in self._finished.values():
                self._cancel(run)
            self._finished.clear()

    def shutdown(self, timeout: float = 30) -> None:
        """Let go of every run (the cluster stops those nobody else watches) and close the connection."""
        self._closed.set()
        if self._shared and self.connected:
            try:
                self.client.set_metadata([SHARED, self.replica], {"at": 0, "runs": {}})  # off the teacher's list
            except Exception:  # noqa: BLE001 - the scheduler is gone: the list goes stale by itself
                pass
        with self._lock:
            for run in [*self._runs.values(), *self._finished.values()]:
                self._cancel(run)
            self._finished.clear()
            client, self.client = self.client, None
        if client is not None:
            client.close(timeout=timeout)
        if self._fallback is not None:
            self._fallback.shutdown(timeout)
        self._keeper.join(timeout)

    def health(self) -> str | None:
        """A sentence for the teacher while the scheduler cannot be reached; None while all is well."""
        if self.connected:
            return None
        since = time.strftime("%H:%M", time.localtime(self.down_since or time.time()))
        return (f"The cluster's scheduler ({self.address}) has not answered since {since}: this server runs new "
                "runs itself until it is back.")

    # --- what Watch calls -------------------------------------------------------------------------------------------

    def _snapshot(self, watch: Watch) -> Snapshot:
        watch.touch()
        with self._lock:
            run = watch._run
            if run.local is not None:
                return run.local.snapshot()
            return Snapshot(self._status(run, self.clock()), Records(run.records, len(run.records)), run.result,
                            run.exception)

    def _wait(self, watch: Watch, timeout: float, records: int | None) -> Snapshot:
        run = watch._run
        with self._changed:
            watch.waiting += 1
            try:
                self._changed.wait_for(lambda: run.local is not None or run.state.done or (
                    records is not None and len(run.records) >= records), timeout)
            finally:
                watch.waiting -= 1
        if run.local is not None:
            return run.local.wait(timeout, records)  # the stand-in's own wait (at most twice ``timeout`` in all)
        return watch.snapshot()

    def _detach(self, watch: Watch) -> None:
        with self._lock:
            watch.detached = True
            run = watch._run
            if not self._live(run, self.clock()):
                if run.local is not None:
                    run.local.detach()
                if not run.state.done:
                    self._cancel(run)

    # --- runs -------------------------------------------------------------------------------------------------------

    def _attach(self, key: Hashable, make: Callable, cost: float, progress: Callable, teacher: bool,
                compute: bool) -> Watch:
        if not self.connected or runs.kind_of(key) in self._kinds_here:
            return self._attach_here(key, make, cost, progress, teacher, compute)
        with self._lock:
            run = self._runs.get(key)
            if run is None and key in self._finished:
                run = self._finished[key]
                self._finished.move_to_end(key)
            new = run is None
            if new:
                run = self._runs[key] = _Remote(key, task_key(key), max(cost, 1e-9), progress, make, compute)
            watch = Watch(self, run, teacher)
            run.watchers.add(watch)
        if new:
            try:
                payload = dumps(make)
            except Exception as e:  # noqa: BLE001 - a closure over a lock, a model on a device...: run it here
                log.warning("resviz: the run %r cannot travel to the cluster (%s); it runs on this server", key, e)
                self._run_here(run)
            else:
                self._submit(run, payload)
        return watch

    def _attach_here(self, key: Hashable, make: Callable, cost: float, progress: Callable, teacher: bool = False,
                     compute: bool = False) -> Watch:
        """A watch on the embedded engine of this process."""
        if compute:
            return self.fallback.attach_compute(key, make, cost, teacher)
        return self.fallback.attach(key, make, cost, progress, teacher)

    def _run_here(self, run: _Remote) -> None:
        """Run ``run`` on the embedded engine instead; its watchers read that run from now on."""
        local = self._attach_here(run.key, run.make, run.cost, run.progress_of, compute=run.compute)
        with self._lock:
            run.local = local
            if self._runs.get(run.key) is run:
                del self._runs[run.key]
            run.state = State.CANCELLED  # as far as the cluster goes: the stand-in has the state now
            self._changed.notify_all()

    def _submit(self, run: _Remote, payload: bytes) -> None:
        """Subscribe to the run's records, submit (or join) its task, read the records logged so far.

        Without the lock: the client's blocking calls need its event loop, whose thread delivers events under it.
        """
        import dask

        client = self.client
        client.subscribe_topic(run.topic, lambda event, run=run: self._on_event(run, event))
        with dask.annotate(resviz_cost=run.cost):
            future = client.submit(execute, payload, run.topic, self.threads_per_run, run.compute, key=run.topic,
                                   resources={"GPU": self.gpu} if self.gpu else None)
        with self._lock:
            if run.state is State.CANCELLED:  # everyone left meanwhile
                future.release()
                return
            run.future = future
        for event in self._events(run.topic):
            self._on_event(run, event)
        future.add_done_callback(lambda future, run=run: self._on_done(run, future))

    def _on_event(self, run: _Remote, event) -> None:
        """A record, a progress or a start from the worker, pushed by the scheduler or read back: in order, once."""
        msg = event[1] if isinstance(event, tuple) else event
        with self._lock:
            if run.state.done and run.state is not State.FINISHED or not isinstance(msg, Mapping):
                return
            if "start" in msg:
                run.worker = msg["start"]
                if run.state is State.QUEUED:
                    run.state, run.started = State.RUNNING, self.clock()
            elif "p" in msg:
                self._progressed(run, min(1.0, msg["p"]))
            elif msg.get("i", -1) >= len(run.records):
                run.pending[msg["i"]] = msg["r"]
                while len(run.records) in run.pending:
                    run.records.append(pickle.loads(run.pending.pop(len(run.records))))
                    self._progressed(run, run.progress_of(run.records[-1]))
            self._complete(run)
            self._changed.notify_all()

    def _progressed(self, run: _Remote, progress: float | None) -> None:
        if run.state is State.QUEUED:
            run.state, run.started = State.RUNNING, self.clock()
        if progress and not run.state.done:
            run.progress = progress
            self._rate = (self.clock() - run.started) / (progress * run.cost)

    def _on_done(self, run: _Remote, future) -> None:
        """The task returned, failed, or was lost with the scheduler (Dask's callback thread)."""
        status, answer, error = future.status, None, None
        try:
            if status == "finished":
                answer = future.result(timeout=60)
            elif status == "error":
                error = future.exception(timeout=60)
        except Exception as e:  # noqa: BLE001 - the connection went while reading it
            status, error = "error", e
        returned = status == "finished" and not answer.get("released")
        if returned:
            with self._lock:
                run.expected, run.result = answer["n"], pickle.loads(answer["result"])
                missing = len(run.records) < run.expected
            for event in self._events(run.topic) if missing else ():  # events still on their way: read them all
                self._on_event(run, event)
        if isinstance(error, NotPlainData) and run.make is not None:
            log.warning("resviz: %s; runs of the kind %r run on this server from now on", error,
                        runs.kind_of(run.key))
            self._kinds_here.add(runs.kind_of(run.key))
            self._release(run)
            return self._run_here(run)
        with self._lock:
            if run.state.done:
                return
            if returned:
                self._complete(run, force=True)
            else:
                run.exception = error if status == "error" else RuntimeError(LOST)
                self._end(run, State.FAILED)
                log.error("cluster run %r failed: %s", run.key, run.exception)
            self._changed.notify_all()

    def _events(self, topic: str) -> list:
        """Every event of ``topic`` the scheduler holds (a blocking call: never under the lock)."""
        try:
            return self.client.get_events(topic)
        except Exception:  # noqa: BLE001 - the scheduler went meanwhile: finish with what arrived
            return []

    def _complete(self, run: _Remote, force: bool = False) -> None:
        """Finished once the task has returned and every record has arrived (or ``force``). Lock held."""
        if run.expected is None or run.state.done or not (force or len(run.records) >= run.expected):
            return
        if run.started is not None:
            self._rate = (self.clock() - run.started) / run.cost
        run.progress = 1.0
        self._end(run, State.FINISHED)
        self._finished[run.key] = run
        run.make = None  # the result is here: nothing will run it again
        while len(self._finished) > self.max_finished:
            self._cancel(self._finished.popitem(last=False)[1])

    def _end(self, run: _Remote, state: State) -> None:
        run.state = state
        if self._runs.get(run.key) is run:
            del self._runs[run.key]
        try:
            self.client.unsubscribe_topic(run.topic)
        except Exception:  # noqa: BLE001 - not subscribed yet, or the connection is gone: nothing more will come
            pass

    def _release(self, run: _Remote) -> None:
        with self._lock:
            if run.future is not None:
                run.future.release()
                run.future = None

    def _cancel(self, run: _Remote) -> None:
        """Let go of ``run``: its future released (the scheduler stops the task if no replica holds it). Lock held."""
        if not run.state.done:
            self._end(run, State.CANCELLED)
        self._release(run)
        self._changed.notify_all()

    def _live(self, run: _Remote, now: float) -> int:
        return sum(not w.detached and (w.waiting or now - w.seen <= self.lease_s) for w in list(run.watchers))

    def _status(self, run: _Remote, now: float) -> Status:
        live = [w for w in list(run.watchers) if not w.detached and (w.waiting or now - w.seen <= self.lease_s)]
        counts = {"watchers": len(live), "students": sum(not w.teacher for w in live)}
        if run.state is State.QUEUED:
            position, wait = self._place(run)
            own = run.cost * self._rate if self._rate is not None else None
            return Status(State.QUEUED, position=position, wait_s=wait,
                           remaining_s=wait + own if None not in (wait, own) else None, progress=0.0, **counts)
        error = None if run.exception is None else (str(run.exception).splitlines() or [""])[0] or type(
            run.exception).__name__
        left = None
        if run.state is State.RUNNING and run.progress:
            left = (now - run.started) * (1 - run.progress) / run.progress
        return Status(run.state, remaining_s=left, progress=run.progress, error=error, **counts)

    def _place(self, run: _Remote) -> tuple[int, float | None]:
        """Its place among the cluster's waiting runs (from the keeper's last look) and when it should start."""
        waiting = [(k, cost) for k, state, cost in self._queue if state != "processing"]
        keys = [k for k, _ in waiting]
        position = keys.index(run.topic) + 1 if run.topic in keys else len(keys) + 1
        if self._rate is None:
            return position, None
        running = sorted(cost * self._rate for _, state, cost in self._queue if state == "processing")
        slots = (running + [0.0] * self._slots)[:self._slots]
        for _, cost in waiting[:position - 1]:  # the runs ahead, each on the slot that frees first
            slots.sort()
            slots[0] += cost * self._rate
        return position, min(slots)

    # --- the keeper: leases, the queue, the connection ---------------------------------------------------------------

    def _keep(self) -> None:
        """Every second: let go of runs nobody here watches, read the cluster's queue, reconnect when down."""
        last_try = time.monotonic()
        while not self._closed.wait(1.0):
            if not self.connected:
                if self.down_since is None:
                    self.down_since = time.time()
                    log.warning("resviz: the cluster's scheduler %s stopped answering; new runs use this server",
                                self.address)
                if time.monotonic() - last_try >= RECONNECT_S:
                    last_try = time.monotonic()
                    self._connect()
                continue
            try:
                queue = self.client.run_on_scheduler(self._queue_of) if self._runs else []
                slots = sum(self.client.nthreads().values()) or 1
            except Exception:  # noqa: BLE001 - the scheduler went meanwhile: the next turn sees it
                continue
            with self._lock:
                self._queue, self._slots = queue, slots
                now = self.clock()
                for run in [r for r in self._runs.values() if not self._live(r, now)]:
                    self._cancel(run)
            try:
                self._share()
            except Exception:  # noqa: BLE001 - the scheduler went meanwhile: the next turn sees it
                pass

    def _share(self) -> None:
        """Put this replica's runs on the scheduler (each with its watchers here) and read the other replicas'."""
        with self._lock:
            now = self.clock()
            mine = {r.topic: _plain_status(r.key, self._status(r, now))
                    for r in [*self._runs.values(), *self._finished.values()]}
        if mine or self._shared:
            self.client.set_metadata([SHARED, self.replica], {"at": time.time(), "runs": mine})
            self._shared = bool(mine)
        others: dict[str, tuple[Hashable, Status]] = {}
        for replica, entry in (self.client.get_metadata([SHARED], default=None) or {}).items():
            if replica == self.replica or time.time() - entry.get("at", 0) > STALE_S:
                continue
            for topic, plain in entry.get("runs", {}).items():
                key, status = _from_plain(plain)
                others[topic] = (others[topic][0], _together(others[topic][1], status)) if topic in others else (
                    key, status)
        with self._lock:
            self._others = others

    def _connect(self) -> None:
        """Connect to the scheduler (at start, and again while it is down); the old client's runs are lost."""
        from distributed import Client

        old, self.client = self.client, None
        if old is not None:
            old.close(timeout=1)
        try:
            self.client = Client(self.address, timeout=self.connect_timeout, set_as_default=False)
            self.down_since = None
            log.info("resviz: runs go to the cluster's scheduler %s", self.address)
        except (OSError, TimeoutError) as e:
            self.down_since = self.down_since or time.time()
            log.warning("resviz: the cluster's scheduler %s cannot be reached (%s); runs use this server",
                        self.address, e)


def _plain_status(key: Hashable, s: Status) -> dict:
    """A run's key and status as the scheduler's metadata holds them (msgpack: plain values; the key pickled)."""
    return {"key": pickle.dumps(key), "state": s.state.value, "position": s.position, "wait_s": s.wait_s,
            "remaining_s": s.remaining_s, "progress": s.progress, "watchers": s.watchers, "error": s.error,
            "students": s.students}


def _from_plain(plain: Mapping) -> tuple[Hashable, Status]:
    fields = {k: v for k, v in plain.items() if k not in ("key", "state")}
    return pickle.loads(plain["key"]), Status(State(plain["state"]), **fields)


def _together(a: Status, b: Status) -> Status:
    """One run seen from two replicas: ``a``'s state, the watchers of both."""
    return replace(a, watchers=a.watchers + b.watchers, students=a.students + b.students)


_ACTIVE: ClusterRegistry | None = None


def registry_from_env(env: Mapping[str, str] = os.environ,
                      fallback: Callable[[], runs.Registry] = runs.Registry.from_env) -> ClusterRegistry:
    """The registry for ``RESVIZ_SCHEDULER`` (``runs.registry()`` calls it); it uses ``fallback()``'s engine while
    the scheduler cannot be reached, with a logged warning and ``health()``'s sentence."""
    global _ACTIVE
    _ACTIVE = ClusterRegistry.from_env(env, fallback)
    return _ACTIVE


def health() -> str | None:
    """What the teacher's panel says about the cluster: None when there is none or all is well."""
    return _ACTIVE.health() if _ACTIVE is not None else None
