"""The race as a shared run (resviz.runs): one per settings, watched by every student who started it."""
from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass, field
from typing import Callable, Generator, Hashable

from torch.utils.data import Dataset

from resviz import models as M
from resviz import pair, runs
from resviz.inputs import budget
from resviz.lessons.training import replay
from resviz.lessons.training.history import RaceHistory, new_history_like
from resviz.lessons.training.loop import RaceConfig
from resviz.lessons.training.runner import new_race
from resviz.lessons.training.sources import DataRequest, DataSource, fit_config
from resviz.lessons.training.verdicts import RaceContext

log = logging.getLogger("resviz")


@dataclass(frozen=True)
class RaceHeader:
    """A shared race's first record: what every watcher needs before the steps (its own empty history to fold into)."""
    empty: RaceHistory  # never changed: ``fold`` copies it
    notes: tuple[str, ...]
    accuracy_note: str
    chance: float
    context: RaceContext | None
    file_name: str  # the trained ResNet's download name
    weights_now: object = field(compare=False, repr=False)  # () -> TrainedPair: the weights at the latest step
    key: Hashable = field(default_factory=lambda: uuid.uuid4().hex)  # the shared run's key: says what the records are


def race_run(cfg: M.ResNetConfig, train: Dataset, test: Dataset, class_names: list[str], race_cfg: RaceConfig,
             include_shallow_plain: bool = False, notes: list[str] | None = None, data_name: str = "",
             source: DataSource | None = None, key: Hashable | None = None, keep: bool = False
             ) -> Generator[RaceHeader | dict, None, pair.TrainedPair]:
    """The race as a shared run: builds it (in the run's worker thread), yields a ``RaceHeader``, then one ``race``
    record per step; returns the trained pair. ``header.weights_now()`` reads the weights between two steps;
    ``header.key`` is ``key`` (the run's key), else one of its own. With ``keep``, a race that finishes (not one
    stopped) is kept in the disk cache under ``key`` for the next students to replay (``replay``)."""
    r = new_race(cfg, train, test, class_names, race_cfg, include_shallow_plain, notes, data_name, source)
    lock = threading.Lock()
    final: list[pair.TrainedPair] = []  # once over: the models are freed, their weights stay

    def weights_now() -> pair.TrainedPair:
        with lock:  # never half-way through an optimizer step
            if not final:
                r.trained = None
                return r.trained_pair()
            return final[0]

    header = RaceHeader(r.history, tuple(r.notes), r.accuracy_note(), r.chance, r.context,
                        f"{next(iter(r.models)).lower()}_trained.pt", weights_now,
                        **({} if key is None else {"key": key}))
    yield header
    r.history = new_history_like(r.history)  # the header's stays empty
    try:
        while True:
            with lock:
                rec = next(r.gen, None)
                if rec is None:
                    break
                r.history.add(rec)
            yield rec
        if keep and key is not None:
            _keep(key, header, r.history)
    finally:  # finished or stopped: the header (kept by finished runs and stopped students) must not hold models
        pair_now = weights_now()
        with lock:
            final.append(pair_now)
            r.models.clear()
            r.gen = iter(())
    return final[0]


def _keep(key: Hashable, header: RaceHeader, history: RaceHistory) -> None:
    """Keep a finished race for replay; a disk that refuses it costs the class its replay, never the race."""
    try:
        replay.save(key, history, header.notes, header.accuracy_note, header.chance, header.context, header.file_name)
    except Exception:  # noqa: BLE001 - SQLite busy, disk full, a read-only cache folder: the run itself is done
        log.exception("could not keep the finished race %s for replay", key)


@dataclass(frozen=True)
class RaceJob:
    """One race as ``resviz.runs`` launches it: its key (every setting that decides its records), how to make it,
    and its cost (steps x networks: the queue's estimates scale with it)."""
    key: Hashable
    make: Callable[[], Generator]
    cost: float


def race_job(cfg: M.ResNetConfig, req: DataRequest, loaded: tuple[Dataset, Dataset, list[str]], used: RaceConfig,
             include_shallow_plain: bool = False, notes: list[str] | None = None) -> RaceJob:
    """The race of ``cfg`` with ``used`` on the images ``req`` loaded; BudgetError when it would not fit the server."""
    train, test, names = loaded
    nets = 3 if include_shallow_plain else 2
    budget.check_model(fit_config(cfg, train, len(names))[0], used.batch_size, "The training race", nets)
    key, keep = replay.race_key(cfg, req, used, include_shallow_plain), replay.is_default(cfg, req, used)
    return RaceJob(key, lambda: race_run(cfg, train, test, names, used, include_shallow_plain, notes,
                                         req.source.value, req.source, key, keep), cost=used.steps * nets)


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
    the snapshot their curves end with (None before the first step) and the pair they hold now: the weights
    learned so far if the race had not finished (a step or two further on than the curves), else ``trained``."""
    snap = watch.snapshot()
    if len(snap.records) <= 1:
        snap = None
    elif snap.status.state is not runs.State.FINISHED:
        trained = snap.records[0].weights_now()
    watch.detach()
    return snap, trained
