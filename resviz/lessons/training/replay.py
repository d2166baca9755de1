"""The class never waits: a finished race with a page's default settings is kept in the shared disk cache
(``resviz.disk_cache``) and replayed at once to every student who opens the page, a live run one press away.

Only default races are kept (``is_default``: a swept preset with its recommended recipe on the built-in images,
seed 0), so there are at most four (ResNet-20 and ResNet-56, with or without the shallower plain net) per device;
each is its history, not its weights (the ResNet-56 trio's 300 steps: about 0.2 MB, the per-layer gradient norms
as float32 arrays). An entry that cannot be read back whole is ignored: the page offers Start as if it were absent.
"""
from __future__ import annotations

import dataclasses
import datetime
import logging
import threading

import cachetools
import numpy as np

from resviz import disk_cache, pair
from resviz import models as M
from resviz.lessons.training.history import RaceHistory, Role, RunHistory
from resviz.lessons.training.loop import RaceConfig
from resviz.lessons.training.recipes import recipe_for
from resviz.lessons.training.sources import DataRequest, DataSource
from resviz.lessons.training.verdicts import RaceContext

log = logging.getLogger("resviz")
VERSION = 1  # the stored layout; a new one ignores the old entries
READ_TTL_S = 10.0  # a page polls every second: the disk is read at most this often per entry and process


@dataclasses.dataclass(frozen=True)
class Replay:
    """A finished race read back from the disk cache: what the page draws, and when it was trained."""
    history: RaceHistory
    notes: tuple[str, ...]
    accuracy_note: str
    chance: float
    context: RaceContext | None
    file_name: str
    trained_on: str  # "2026-12-06", UTC
    key: str  # its disk-cache key

    @property
    def caption(self) -> str:
        """What the page says above the replayed charts."""
        return f"**Replayed**: trained on {self.trained_on}, {self.history.step} steps. **Start** trains it live."


def race_key(cfg: M.ResNetConfig, req: DataRequest, used: RaceConfig, include_shallow_plain: bool) -> tuple:
    """The shared run's key: every setting that decides a race's records."""
    return ("race", pair.fingerprint(cfg, req.key, used, include_shallow_plain, req.upload or b""))


def is_default(cfg: M.ResNetConfig, req: DataRequest, used: RaceConfig) -> bool:
    """Whether a race has a page's default settings: a swept preset exactly, its recommended recipe and seed 0, on
    the built-in images (the shallower plain net either way)."""
    recipe = recipe_for(cfg)
    return (req.source is DataSource.BUILTIN and req.upload is None and cfg == M.get_config(recipe.swept)
            and used == dataclasses.replace(recipe.config, device=used.device))


def disk_key(key: tuple) -> str:
    return f"race-replay-v{VERSION}:{pair.fingerprint(key)}"


def save(key: tuple, history: RaceHistory, notes: tuple[str, ...], accuracy_note: str, chance: float,
         context: RaceContext | None, file_name: str) -> None:
    """Keep a finished race's history under its run's key (per-layer gradient norms as float32 arrays)."""
    blob = {"version": VERSION, "trained_on": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
            "steps": history.steps, "step": history.step, "elapsed": list(history.elapsed),
            "steps_per_s": history.steps_per_s, "classes": history.classes, "held_out": history.held_out,
            "notes": tuple(notes), "accuracy_note": accuracy_note, "chance": float(chance), "file_name": file_name,
            "context": None if context is None else _context_dict(context), "runs": {}}
    for i, (name, r) in enumerate(history.runs.items()):
        blob["runs"][name] = {"role": r.role.value, "layers": list(r.layers), "step": list(r.step),
                              "loss": list(r.loss), "acc": list(r.acc), "test_step": list(r.test_step),
                              "test_acc": list(r.test_acc), "message": r.message or ""}
        blob[f"grad_norms_{i}"] = np.asarray(r.grad_norms, dtype=np.float32).reshape(len(r.step), len(r.layers))
    disk_cache.save(disk_key(key), blob)
    forget_reads()


def load(key: tuple) -> Replay | None:
    """The kept race of ``key``, or None when there is none or it cannot be read back whole."""
    return _read(disk_cache.cache().directory, disk_key(key))


def forget_reads() -> None:
    """Read the disk again on the next ``load`` (a test or a benchmark that changes the cache's folder)."""
    _read.cache_clear()


@cachetools.cached(cachetools.TTLCache(maxsize=16, ttl=READ_TTL_S), lock=threading.Lock())
def _read(folder: str, dkey: str) -> Replay | None:
    blob = disk_cache.load(dkey)
    if blob is None:
        return None
    try:
        return _replay(blob, dkey)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        log.warning("ignoring a race replay that cannot be read back (%s): %s", dkey, e)
        return None


def _replay(blob: dict, dkey: str) -> Replay:
    if blob["version"] != VERSION:
        raise ValueError(f"version {blob['version']}")
    runs = {}
    for i, (name, r) in enumerate(blob["runs"].items()):
        norms = np.asarray(blob[f"grad_norms_{i}"], dtype=float)
        if norms.shape != (len(r["step"]), len(r["layers"])) or not (
                len(r["step"]) == len(r["loss"]) == len(r["acc"]) and len(r["test_step"]) == len(r["test_acc"])):
            raise ValueError(f"{name}'s curves have different lengths")
        runs[str(name)] = RunHistory(str(name), Role(r["role"]), [str(n) for n in r["layers"]],
                                     [int(s) for s in r["step"]], [float(v) for v in r["loss"]],
                                     [float(v) for v in r["acc"]], norms.tolist(), [int(s) for s in r["test_step"]],
                                     [float(v) for v in r["test_acc"]], str(r["message"]) or None)
    history = RaceHistory(runs, int(blob["steps"]), int(blob["step"]), [float(t) for t in blob["elapsed"]],
                          float(blob["steps_per_s"]), int(blob["classes"]), int(blob["held_out"]))
    if not runs or not 0 < history.step <= history.steps or len(history.elapsed) != history.step:
        raise ValueError("no finished race")
    ctx = blob["context"]
    context = None if ctx is None else RaceContext(RaceConfig(**ctx["recommended"]), RaceConfig(**ctx["used"]),
                                                   bool(ctx["builtin_data"]), bool(ctx["swept_model"]))
    return Replay(history, tuple(str(n) for n in blob["notes"]), str(blob["accuracy_note"]), float(blob["chance"]),
                  context, str(blob["file_name"]), str(blob["trained_on"]), dkey)


def _context_dict(ctx: RaceContext) -> dict:
    return {"recommended": dataclasses.asdict(ctx.recommended), "used": dataclasses.asdict(ctx.used),
            "builtin_data": ctx.builtin_data, "swept_model": ctx.swept_model}


def replay_for(cfg: M.ResNetConfig, source: DataSource, used: RaceConfig, include_shallow_plain: bool
               ) -> Replay | None:
    """The kept race a page shows before Start: for its default settings only, else None."""
    if source is not DataSource.BUILTIN:
        return None
    req = DataRequest.for_race(cfg, source)
    return load(race_key(cfg, req, used, include_shallow_plain)) if is_default(cfg, req, used) else None
