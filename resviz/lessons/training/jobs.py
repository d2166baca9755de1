"""The race as a shared run (resviz.runs): one per settings, watched by every student who started it."""
from __future__ import annotations

import logging
import math
import threading
import uuid
from dataclasses import dataclass, field, replace
from typing import Callable, Generator, Hashable

import cachetools
from torch.utils.data import Dataset

from resviz import models as M
from resviz import pair, runs
from resviz.cluster import worker_device
from resviz.inputs import budget
from resviz.lessons.training import replay
from resviz.lessons.training.history import RaceHistory, new_history_like
from resviz.lessons.training.loop import RaceConfig
from resviz.lessons.training.runner import new_race
from resviz.lessons.training.sources import DataRequest, DataSource, fit_config
from resviz.lessons.training.verdicts import RaceContext

log = logging.getLogger("resviz")


WEIGHTS_RECORDS = 3  # a race's step records carry the weights this many times (one is ~1.2 MB for the ResNet-20
#                     pair, ~3.6 MB for the ResNet-56 pair in half precision, where a step record is 0.6-1.5 KB)
WEIGHTS_MIN_EVERY = 50  # ... and never more often than every this many steps


def weights_every(steps: int) -> int:
    """Steps between two records that carry the weights (``K``): the first step's, then every ``K`` steps before
    the last, whose weights are the result; 300 steps: at steps 1, 100 and 200."""
    return max(WEIGHTS_MIN_EVERY, math.ceil(steps / WEIGHTS_RECORDS))


def carries_weights(step: int, steps: int, every: int) -> bool:
    """Whether the record of ``step`` carries the weights: the first step (a student who stops at once gets what
    was learned so far) and every ``every`` steps, never the last (the run's result has them)."""
    return bool(every) and step < steps and (step == 1 or step % every == 0)


@dataclass(frozen=True)
class RaceHeader:
    """A shared race's first record: what every watcher needs before the steps (its own empty history to fold into).
    Plain data: it travels from a cluster's worker to every replica."""
    empty: RaceHistory  # never changed: ``fold`` copies it
    notes: tuple[str, ...]
    accuracy_note: str
    chance: float
    context: RaceContext | None
    file_name: str  # the trained ResNet's download name
    final: list = field(default_factory=list, compare=False, repr=False)  # the trained pair once over (this process)
    key: Hashable = field(default_factory=lambda: uuid.uuid4().hex)  # the shared run's key: says what the records are

    def weights_now(self) -> pair.TrainedPair | None:
        """The trained pair once the race that yielded this header is over, in its own process (else None)."""
        return self.final[0] if self.final else None


def race_run(cfg: M.ResNetConfig, train: Dataset, test: Dataset, class_names: list[str], race_cfg: RaceConfig,
             include_shallow_plain: bool = False, notes: list[str] | None = None, data_name: str = "",
             source: DataSource | None = None, key: Hashable | None = None, keep: bool = False,
             every: int | None = None) -> Generator[RaceHeader | dict, None, pair.TrainedPair]:
    """The race as a shared run: builds it (in the run's worker), yields a ``RaceHeader``, then one ``race`` record
    per step, some (``carries_weights``) with the weights learned so far (``weights_of``); returns
    the trained pair. Every record is plain data. ``header.key`` is ``key`` (the run's key), else one of its own.
    With ``keep``, a race that finishes (not one stopped) is kept in the disk cache under ``key`` for the next
    students to replay (``replay``)."""
    r = new_race(cfg, train, test, class_names, race_cfg, include_shallow_plain, notes, data_name, source)
    every = weights_every(race_cfg.steps) if every is None else every
    header = RaceHeader(r.history, tuple(r.notes), r.accuracy_note(), r.chance, r.context,
                        f"{next(iter(r.models)).lower()}_trained.pt",
                        **({} if key is None else {"key": key}))
    yield header
    r.history = new_history_like(r.history)  # the header's stays empty
    try:
        for rec in r.gen:
            r.history.add(rec)
            if carries_weights(rec["step"], race_cfg.steps, every):
                r.trained = None
                rec = {**rec, "weights": _half(r.trained_pair())}
            yield rec
        if keep and key is not None:
            r.trained = None
            header.final.append(r.trained_pair())  # the finished pair, kept with the replay (weights_now)
            _keep(key, header, r.history)
    finally:  # finished or stopped: nothing kept holds the models
        if not header.final:
            r.trained = None
            header.final.append(r.trained_pair())
        r.models.clear()
        r.gen = iter(())
    return header.final[0]


def _half(trained: pair.TrainedPair) -> dict:
    """A trained pair as a record carries it: its fields, the state dicts' floats in half precision."""
    def half(sd: dict) -> dict:
        return {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}
    return {"cfg": trained.cfg, "state_dict": half(trained.state_dict),
            "plain_state_dict": half(trained.plain_state_dict), "label": trained.label,
            "class_names": trained.class_names, "data_name": trained.data_name, "steps": trained.steps}


def weights_of(records) -> pair.TrainedPair | None:
    """The pair of the latest record that carries the weights (float32 again), else None."""
    for rec in reversed(records):
        if isinstance(rec, dict) and "weights" in rec:
            w = rec["weights"]

            def full(sd: dict) -> dict:
                return {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}
            return pair.TrainedPair(**{**w, "state_dict": full(w["state_dict"]),
                                       "plain_state_dict": full(w["plain_state_dict"])})
    return None


def _keep(key: Hashable, header: RaceHeader, history: RaceHistory) -> None:
    """Keep a finished race for replay; a disk that refuses it costs the class its replay, never the race."""
    try:
        replay.save(key, history, header.notes, header.accuracy_note, header.chance, header.context, header.file_name,
                    weights=header.weights_now())  # the finished weights: the other pages can study the pair
    except Exception:  # noqa: BLE001 - SQLite busy, disk full, a read-only cache folder: the run itself is done
        log.exception("could not keep the finished race %s for replay", key)


@dataclass(frozen=True)
class RaceJob:
    """One race as ``resviz.runs`` launches it: its key (every setting that decides its records), how to make it,
    and its cost (steps x networks: the queue's estimates scale with it)."""
    key: Hashable
    make: Callable[[], Generator]
    cost: float


TRAVEL_MB = 4.0  # loaded images up to this size travel with a race to a cluster's worker; larger ones (the built-in
#                  images: 31 MB pickled) are loaded again there from the request (once per worker process)


@dataclass(frozen=True)
class RaceMake:
    """A race's ``make``: plain settings, a module-level class, so that a cluster's worker can run it. Called, it
    loads the images (those it was given, else ``req``'s), picks the device where it runs and starts ``race_run``."""
    cfg: M.ResNetConfig
    req: DataRequest
    used: RaceConfig
    include_shallow_plain: bool
    notes: tuple[str, ...]
    key: Hashable
    keep: bool
    every: int
    loaded: tuple | None = field(default=None, compare=False, repr=False)  # (train, test, names) in this process

    def __call__(self) -> Generator[RaceHeader | dict, None, pair.TrainedPair]:
        train, test, names = self.loaded if self.loaded is not None else _load(self.req)
        used = replace(self.used, device=worker_device(self.used.device))
        return race_run(self.cfg, train, test, names, used, self.include_shallow_plain, list(self.notes),
                        self.req.source.value, self.req.source, self.key, self.keep, self.every)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if self.loaded is not None and _tensor_bytes(self.loaded) > TRAVEL_MB * 1e6:
            state["loaded"] = None  # loaded again where it runs
        return state


def _tensor_bytes(loaded: tuple) -> int:
    return sum(t.nbytes for ds in loaded[:2] for t in getattr(ds, "tensors", ()))


_LOADED: cachetools.LRUCache = cachetools.LRUCache(maxsize=2)  # a worker's images, by request: loaded once
_LOADING = threading.Lock()


def _load(req: DataRequest) -> tuple:
    """``req``'s images in a worker process (the last two requests kept; a student's zip never)."""
    if not req.source.shared:
        return req.load()
    with _LOADING:
        if req.key not in _LOADED:
            _LOADED[req.key] = req.load()
        return _LOADED[req.key]


def race_job(cfg: M.ResNetConfig, req: DataRequest, loaded: tuple[Dataset, Dataset, list[str]], used: RaceConfig,
             include_shallow_plain: bool = False, notes: list[str] | None = None) -> RaceJob:
    """The race of ``cfg`` with ``used`` on the images ``req`` loaded; BudgetError when it would not fit the server."""
    train, test, names = loaded
    nets = 3 if include_shallow_plain else 2
    budget.check_model(fit_config(cfg, train, len(names))[0], used.batch_size, "The training race", nets)
    key, keep = replay.race_key(cfg, req, used, include_shallow_plain), replay.is_default(cfg, req, used)
    make = RaceMake(cfg, req, used, include_shallow_plain, tuple(notes or ()), key, keep, weights_every(used.steps),
                    loaded)
    return RaceJob(key, make, cost=used.steps * nets)


def watch_race(job: RaceJob, old: runs.Watch | None = None, teacher: bool = False) -> runs.Watch:
    """A student's watch on ``job``'s shared run (started, or joined), having left ``old``: after attaching, so
    that pressing Start twice on the same settings keeps the same run. ``teacher``: the teacher's own watch, which
    the run's count of students leaves out."""
    watch = runs.attach(job.key, job.make, cost=job.cost, teacher=teacher)
    if old is not None:
        old.detach()
    return watch


def stop_watching(watch: runs.Watch, trained: pair.TrainedPair | None = None
                  ) -> tuple[runs.Snapshot | None, pair.TrainedPair | None]:
    """Stop for one student: they leave the run (it goes on for the others, or stops if nobody is left). Returns
    the snapshot their curves end with (None before the first step) and the pair they hold now: the weights of the
    latest record that carries them if the race had not finished (``carries_weights``), else ``trained``."""
    snap = watch.snapshot()
    if len(snap.records) <= 1:
        snap = None
    elif snap.status.state is not runs.State.FINISHED:
        trained = weights_of(snap.records) or trained
    watch.detach()
    return snap, trained
