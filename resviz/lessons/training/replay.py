"""The class never waits: a finished race with a page's default settings is kept in the shared disk cache
(``resviz.disk_cache``) and replayed at once to every student who opens the page, a live run one press away.

Only default races are kept (``is_default``: a swept preset with its recommended recipe on the built-in images,
seed 0), so there are at most four (ResNet-20 and ResNet-56, with or without the shallower plain net) per device;
each is its history (the ResNet-56 trio's 300 steps: about 0.2 MB, the per-layer gradient norms as float32 arrays)
and, beside it, the trained ResNet and plain twin in half precision (``replayed_pair``: what Lesion, Paths, Loss
landscape and Feature maps study as "the pair the race trained", read by the uploads' safe loader). An entry that
cannot be read back whole is ignored: the page offers Start as if it were absent.
"""
from __future__ import annotations

import dataclasses
import datetime
import io
import logging
import threading

import cachetools
import numpy as np
import torch

from resviz import disk_cache, pair
from resviz import models as M
from resviz.inputs import weights as W
from resviz.lessons.training.history import RaceHistory, Role, RunHistory
from resviz.lessons.training.loop import RaceConfig, cpu_state_dict
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
    pair_key: str = ""  # the kept weights' fingerprint ("": kept without weights)

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


@dataclasses.dataclass(frozen=True)
class DefaultRace:
    """A race as the Training race page opens it: the pair of the sidebar's default model (ResNet-20), or the
    deeper pair (ResNet-56), which the page races with the shallower plain net."""
    preset: str
    shallow: bool  # the page's default for the shallower plain net (on for the deeper pair only)

    @property
    def cfg(self) -> M.ResNetConfig:
        return M.get_config(self.preset)

    @property
    def label(self) -> str:
        return f"{self.preset.replace('resnet', 'ResNet-')} {'trio' if self.shallow else 'pair'}"

    def settings(self, device: str) -> tuple[M.ResNetConfig, DataRequest, RaceConfig]:
        """The page's default settings on ``device``: the model, the built-in images, the recommended recipe."""
        return (self.cfg, DataRequest.for_race(self.cfg, DataSource.BUILTIN),
                dataclasses.replace(recipe_for(self.cfg).config, device=device))

    def key(self, device: str) -> tuple:
        """The shared run's key (``race_key``), under which its replay is kept."""
        cfg, req, used = self.settings(device)
        return race_key(cfg, req, used, self.shallow)


PAGE_RACES = (DefaultRace("resnet20", False), DefaultRace("resnet56", True))  # ui.DEFAULT_PRESET; RacePair.DEEP


def disk_key(key: tuple) -> str:
    return f"race-replay-v{VERSION}:{pair.fingerprint(key)}"


def weights_key(key: tuple) -> str:
    """Where a replay's trained weights are kept (apart: the page polls the history every second)."""
    return _weights_of(disk_key(key))


def _weights_of(dkey: str) -> str:
    return dkey.replace("race-replay-", "race-replay-weights-", 1)


def save(key: tuple, history: RaceHistory, notes: tuple[str, ...], accuracy_note: str, chance: float,
         context: RaceContext | None, file_name: str, weights: pair.TrainedPair | None = None) -> None:
    """Keep a finished race's history under its run's key (per-layer gradient norms as float32 arrays) and, with
    ``weights``, its trained ResNet and plain twin (half precision) beside it."""
    if weights is not None:  # first: a history that names weights finds them
        disk_cache.save(weights_key(key), _weights_blob(weights))
    blob = {"version": VERSION, "pair_key": "" if weights is None else weights.key,
            "trained_on": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
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


def replayed_pair(kept: Replay) -> pair.TrainedPair | None:
    """The ResNet and plain twin a kept race trained (float32, from half precision), read by the uploads' safe
    loader; None when it was kept without them or they cannot be read back."""
    if not kept.pair_key:
        return None
    return _read_pair(disk_cache.cache().directory, _weights_of(kept.key), kept.pair_key, kept.trained_on)


def page_replays(device: str) -> dict[str, Replay]:
    """The Training race page's default races kept with their weights on ``device``, by preset (histories only are
    read: ``replayed_pair`` loads the weights of the one a student picks)."""
    kept = {r.preset: load(r.key(device)) for r in PAGE_RACES}
    return {preset: k for preset, k in kept.items() if k is not None and k.pair_key}


def forget_reads() -> None:
    """Read the disk again on the next ``load`` (a test or a benchmark that changes the cache's folder)."""
    _read.cache_clear()
    _read_pair.cache_clear()


def _half_file(sd: dict[str, torch.Tensor]) -> torch.Tensor:
    """``torch.save`` of ``sd`` with floating tensors in half precision (as the shipped pairs are), as a file's bytes
    in a uint8 tensor (the disk cache keeps tensors byte for byte; a ``bytes`` value would grow by half)."""
    buf = io.BytesIO()
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in sd.items()}, buf)
    return torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)


def _weights_blob(trained: pair.TrainedPair) -> dict:
    return {"version": VERSION, "cfg": dataclasses.asdict(trained.cfg), "label": trained.label,
            "class_names": list(trained.class_names), "data_name": trained.data_name, "steps": trained.steps,
            "resnet": _half_file(trained.state_dict), "plain": _half_file(trained.plain_state_dict)}


@cachetools.cached(cachetools.LRUCache(maxsize=4), lock=threading.Lock())
def _read_pair(folder: str, wkey: str, pair_key: str, trained_on: str) -> pair.TrainedPair | None:
    blob = disk_cache.load(wkey)
    if blob is None:
        return None
    try:
        cfg = M.ResNetConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in blob["cfg"].items()})
        full = M.with_shortcuts(cfg)
        resnet, plain = (cpu_state_dict(W.load_state_dict_safely(blob[name].numpy().tobytes(), M.build_model(c)).model)
                         for name, c in (("resnet", full), ("plain", M.plain_config(full))))
        return pair.TrainedPair(cfg, resnet, plain, f"{blob['label']}, replayed race of {trained_on}",
                                class_names=tuple(str(n) for n in blob["class_names"]),
                                data_name=str(blob["data_name"]), steps=int(blob["steps"]))
    except (KeyError, TypeError, ValueError, AttributeError) as e:  # WeightsError is a ValueError
        log.warning("ignoring a race replay's weights that cannot be read back (%s): %s", wkey, e)
        return None


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
                  context, str(blob["file_name"]), str(blob["trained_on"]), dkey, str(blob.get("pair_key", "")))


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
