"""Prepare a machine before class, while it is online: ImageNet weights and torchvision datasets into their standard
caches (hash-checked, nothing partial left behind), the built-in trained pairs into the disk cache, the Training race
page's default races (kept for replay with their trained weights, ``training.replay``), then the results a lesson plan
opens with (each page's default settings, on the shipped pairs) into the disk cache, where every server process reads
them (``resviz.prepared``): a student's first visit to the Training race, Signal flow, Lesion, Paths, Shattered
gradients or Loss landscape finds its figure there.

    python -m resviz.prepare                          # everything; says what is ready and how long it took
    python -m resviz.prepare --weights resnet50       # one checkpoint
    RESVIZ_MIRROR=https://mirror.example.edu/resviz/ python -m resviz.prepare   # an institution's own copies

A mirror serves the same files by their own names (``resnet50-11ad3fa6.pth``, ``cifar-10-python.tar.gz``) under one
base URL; the hashes are torchvision's, so a mirror cannot hand over other files.
"""
from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import sys
import tarfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

WEIGHTS = ("resnet18", "resnet50")  # the ImageNet presets a lesson plan needs at least (Feature maps)
DATASETS = ("CIFAR10",)
TIMEOUT_S = 30.0  # a server silent this long (connecting, or between two chunks) has stopped answering
CHUNK = 1 << 20
COMMAND = "python -m resviz.prepare"  # what a page tells the teacher to run, online, before class


class PrepareError(RuntimeError):
    """A download or check that failed; the message says what, in plain words (never a server path)."""


@dataclass(frozen=True)
class Download:
    """One file to fetch: where from, its name in the cache, and the digest it must have."""
    url: str
    name: str
    algorithm: str  # "sha256" (torch hub: a prefix of it is in the file name) or "md5" (torchvision datasets)
    digest: str  # the expected hex digest, or its prefix


def mirrored(url: str, mirror: str | None = None) -> str:
    """``url``, or the same file name under the mirror's base URL (``RESVIZ_MIRROR``) when one is set."""
    mirror = os.environ.get("RESVIZ_MIRROR") if mirror is None else mirror
    return f"{mirror.rstrip('/')}/{Path(urlparse(url).path).name}" if mirror else url


def fetch(item: Download, dest: Path, timeout: float = TIMEOUT_S,
          progress: Callable[[int, int], None] = lambda got, total: None) -> Path:
    """Download ``item`` to ``dest`` (a file), checking its length and digest; on any failure nothing is left there.

    The bytes go to a temporary file beside ``dest`` that is renamed into place only once checked.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    try:
        digest, got, total = hashlib.new(item.algorithm), 0, 0
        with urllib.request.urlopen(item.url, timeout=timeout) as response, open(part, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            while chunk := response.read(CHUNK):
                out.write(chunk)
                digest.update(chunk)
                got += len(chunk)
                progress(got, total)
        if total and got != total:
            raise PrepareError(f"{item.name}: the download stopped after {got:,} of {total:,} bytes; try again.")
        if not digest.hexdigest().startswith(item.digest):
            raise PrepareError(f"{item.name}: the file's {item.algorithm} is {digest.hexdigest()[:12]}…, expected "
                               f"{item.digest[:12]}…: not the published file, so it was not kept.")
        os.replace(part, dest)
        return dest
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:  # offline, cut, full
        reason = getattr(e, "reason", None) or e
        raise PrepareError(f"{item.name}: could not download it ({type(e).__name__}: "
                           f"{str(reason).splitlines()[0] if str(reason) else 'no details'}).") from None
    finally:
        part.unlink(missing_ok=True)


def weights_download(preset: str, mirror: str | None = None) -> tuple[Download, Path]:
    """torchvision's ImageNet checkpoint for ``preset``: what to fetch and where torch hub looks for it."""
    import torch

    from resviz import models
    from resviz.inputs import weights

    enum = weights.pretrained_weights(models.get_config(preset))
    if enum is None:
        raise PrepareError(f"torchvision has no ImageNet weights for {preset}.")
    path = weights.checkpoint_path(enum)
    match = torch.hub.HASH_REGEX.search(path.name)
    return Download(mirrored(enum.url, mirror), path.name, "sha256", match.group(1) if match else ""), path


def dataset_download(name: str, root: str | os.PathLike, mirror: str | None = None) -> tuple[Download, Path]:
    """A torchvision dataset's archive (CIFAR-10): what to fetch and where it goes under ``root``."""
    from torchvision import datasets

    if name != "CIFAR10":
        raise PrepareError(f"{name}: only CIFAR10 is prepared here; torchvision downloads the others itself.")
    cls = datasets.CIFAR10
    return Download(mirrored(cls.url, mirror), cls.filename, "md5", cls.tgz_md5), Path(root) / cls.filename


def prepare_weights(preset: str, mirror: str | None = None, timeout: float = TIMEOUT_S, progress=None) -> str:
    """Fetch ``preset``'s ImageNet checkpoint into torch hub's cache unless it is there; says what happened."""
    item, path = weights_download(preset, mirror)
    if path.is_file():
        return f"{preset}: already here"
    fetch(item, path, timeout, progress or _printer(item.name))
    return f"{preset}: downloaded and checked ({path.stat().st_size / 2**20:.0f} MB)"


def prepare_dataset(name: str, root: str | os.PathLike | None = None, mirror: str | None = None,
                    timeout: float = TIMEOUT_S, progress=None) -> str:
    """Fetch and unpack a torchvision dataset into resviz's data folder (where the Training race looks)."""
    from torchvision import datasets

    from resviz.inputs import data

    root = Path(data.DEFAULT_ROOT if root is None else root)
    if (root / datasets.CIFAR10.base_folder).is_dir():
        try:
            datasets.CIFAR10(str(root), train=True, download=False)  # checks every batch file's md5
            return f"{name}: already here"
        except RuntimeError:  # incomplete or corrupt: fetch it again
            pass
    item, archive = dataset_download(name, root, mirror)
    fetch(item, archive, timeout, progress or _printer(item.name))
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(root, filter="data")  # the archive is checked by its md5; the filter refuses odd paths
    finally:
        archive.unlink(missing_ok=True)
    return f"{name}: downloaded, checked and unpacked"


def prepare_pairs(presets=("resnet20", "resnet56")) -> list[str]:
    """The built-in trained pairs of the pages' default recipes, trained into the disk cache unless they are there."""
    from resviz import builtin_pair

    said = []
    for preset in presets:
        recipe = builtin_pair.recipe(preset, builtin_pair.BuiltinRecipe.steps)
        if builtin_pair.load(recipe) is None:
            builtin_pair.train(recipe, "cpu")
            said.append(f"{recipe.label}: trained")
        else:
            said.append(f"{recipe.label}: already here")
    return said


def prepare_race(race, device: str) -> str:
    """One of the Training race page's default races (``replay.PAGE_RACES``), run as the page runs it and kept for
    replay with its weights, unless it is kept already."""
    from resviz.lessons.training import jobs, replay

    key = race.key(device)
    kept = replay.load(key)
    if kept is not None and replay.replayed_pair(kept) is not None:
        return f"{race.label}: already here (trained on {kept.trained_on}, {kept.history.step} steps)"
    cfg, req, used = race.settings(device)
    for _ in jobs.race_job(cfg, req, req.load(), used, race.shallow).make():  # keeps it when it finishes
        pass
    replay.forget_reads()
    kept = replay.load(key)
    if kept is None or replay.replayed_pair(kept) is None:
        raise PrepareError(f"{race.label}: trained, but the disk cache did not keep it (full, or read-only?).")
    held_out = ", ".join(f"{name} {r.test_acc[-1]:.0%}" for name, r in kept.history.runs.items() if r.test_acc)
    return (f"{race.label}: trained {kept.history.step} steps and kept for replay with its weights"
            + (f" (held-out accuracy: {held_out})" if held_out else ""))


def race_steps(device: str | None = None) -> list[tuple[str, Callable[[], object]]]:
    """The Training race page's default races, one step each (the ResNet-20 pair; the ResNet-56 trio)."""
    from resviz import models
    from resviz.lessons.training import replay

    device = device or str(models.pick_device("auto"))  # the sidebar's "auto": the device a race runs on
    return [(f"race {r.label}", lambda r=r: prepare_race(r, device)) for r in replay.PAGE_RACES]


# The pages' default settings, as a first visit opens them (tests/test_prepare.py opens the pages to check them)
SHATTERED_DEPTH, SHATTERED_SEED = 24, 0  # Shattered gradients: depth and initialisation seed
LANDSCAPE_SPAN, LANDSCAPE_SEED = 1.0, 0  # Loss landscape: span and direction seed
SIGNAL_FLOW_DEPTH = 20  # Signal flow: the CIFAR ResNet's depth (batch norm on, Kaiming, at initialisation)
PROBE_IMAGES = 8  # Paths: the images the page sends gradients from


def _kept(fn: Callable, *args, **kwargs) -> str:
    """``fn(*args, **kwargs)`` (a lesson function kept on disk) computed and stored unless it is there."""
    from resviz import disk_cache, prepared

    if disk_cache.exists(fn.disk_key(*args, **kwargs)):
        return "already here"
    with prepared.writing():
        fn(*args, **kwargs)
    return "computed"


def _shipped_pairs(device: str) -> list:
    """The shipped pairs, loaded as the pair picker loads them (its first choice is the pages' default)."""
    from resviz import builtin_pair, pair

    return [pair.load_pair(builtin_pair.shipped(p), pair.PairSource.BUILTIN, device)
            for p in builtin_pair.shipped_presets()]


def prepare_signal_flow(device: str) -> str:
    from resviz.lessons import signal_flow as sf

    return _kept(sf.measure, sf.Settings(sf.chosen_config(SIGNAL_FLOW_DEPTH, True)), None, device)


def prepare_lesion(device: str) -> list[str]:
    from resviz import pair
    from resviz.lessons import lesion

    return [f"{p.cfg.label} pair: {_kept(lesion.study_pair, p, pair.EVAL_IMAGES)}" for p in _shipped_pairs(device)]


def prepare_paths(device: str) -> list[str]:
    """The page's first view (the sidebar's ResNet with random weights, every path) and each shipped ResNet."""
    from resviz import models, pair
    from resviz.lessons import paths
    from resviz.ui import DEFAULT_PRESET

    cfg = models.get_config(DEFAULT_PRESET)
    random = models.build_model(cfg, seed=0).to(device).eval()  # as ui.load_model builds the sidebar's model
    nets = [(f"{cfg.label}, random weights", random), *((f"{p.cfg.label} pair", p.resnet)
                                                        for p in _shipped_pairs(device))]
    said = []
    for what, model in nets:
        x, y = pair.probe_batch(model.cfg, PROBE_IMAGES)
        exact = paths.can_be_exact(len(model.blocks()))
        samples = 0 if exact else 2  # the page's default: every path where it can, else 2 random paths per length
        done = _kept(paths.gradient_by_path_length, model, x.to(device), y.to(device), samples, exact=exact)
        said.append(f"{what}: {done}")
    return said


def prepare_shattered() -> str:
    from resviz.lessons import shattered as sh

    said = [_kept(sh.shattered_sweep, sh.SweepConfig(depth=SHATTERED_DEPTH, residual=r, seed=SHATTERED_SEED))
            for r in (False, True)]
    said.append(_kept(sh.depth_curve, sh.SweepConfig(), seeds=sh.curve_seeds(SHATTERED_SEED)))
    return "computed" if "computed" in said else "already here"


def prepare_landscape(device: str) -> list[str]:
    from resviz.lessons import landscape as ls

    said = []
    for p in _shipped_pairs(device):
        args = (p, LANDSCAPE_SPAN, LANDSCAPE_SEED)
        done = [_kept(ls.line, *args), _kept(ls.coarse_grids, *args),
                "computed" if ls.prepare_fine_grid(*args) else "already here"]
        if not ls.guessing(p):  # a pair that guesses gets no verdict, so no slices are compared for it
            done.append(_kept(ls.study_directions, *args))
        said.append(f"{p.cfg.label} pair: {'computed' if 'computed' in done else 'already here'}")
    return said


def lesson_steps(device: str | None = None) -> list[tuple[str, Callable[[], object]]]:
    """What a lesson plan opens with, one step per page: (name, a callable that prepares it and says how)."""
    from resviz import models

    device = device or str(models.pick_device("auto"))  # the sidebar's "auto": the device a page computes on
    return [("signal flow", lambda: prepare_signal_flow(device)), ("lesion", lambda: prepare_lesion(device)),
            ("paths", lambda: prepare_paths(device)), ("shattered", prepare_shattered),
            ("loss landscape", lambda: prepare_landscape(device))]


def _printer(name: str) -> Callable[[int, int], None]:
    shown = [-1]

    def progress(got: int, total: int) -> None:
        tenth = got * 10 // total if total else -1
        if tenth != shown[0]:
            shown[0] = tenth
            print(f"  {name}: {got / 2**20:.0f} of {total / 2**20:.0f} MB" if total else
                  f"  {name}: {got / 2**20:.0f} MB", file=sys.stderr, flush=True)
    return progress


def named_downloads(argv: list[str]) -> bool:
    """Whether the command line names weights or datasets to fetch (``--weights resnet18``), rather than asking for
    everything (no arguments) or switching a part off (``--weights`` with nothing after it)."""
    for i, arg in enumerate(argv):
        if arg in ("--weights", "--datasets") and i + 1 < len(argv) and not argv[i + 1].startswith("-"):
            return True
        if arg.startswith(("--weights=", "--datasets=")) and arg.split("=", 1)[1]:
            return True
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", nargs="*", default=list(WEIGHTS), help="ImageNet presets (default: %(default)s)")
    parser.add_argument("--datasets", nargs="*", default=list(DATASETS), help="torchvision datasets")
    parser.add_argument("--no-pairs", action="store_true", help="skip training the built-in pairs")
    parser.add_argument("--no-races", action="store_true", help="skip the Training race page's default races")
    parser.add_argument("--no-lessons", action="store_true", help="skip the lessons' default results")
    parser.add_argument("--mirror", default=None, help="base URL serving the same files (or RESVIZ_MIRROR)")
    parser.add_argument("--timeout", type=float, default=TIMEOUT_S, help="seconds of silence before giving up")
    args = parser.parse_args(argv)
    if named_downloads(argv if argv is not None else sys.argv[1:]):  # "--weights resnet18": that download alone,
        # as Feature maps' message promises (not the other downloads, nor an hour of lessons)
        given = " ".join(argv if argv is not None else sys.argv[1:])
        args.weights = args.weights if "--weights" in given else []
        args.datasets = args.datasets if "--datasets" in given else []
        args.no_pairs = args.no_races = args.no_lessons = True
    steps: list[tuple[str, Callable[[], object]]] = [
        *((f"weights {p}", lambda p=p: prepare_weights(p, args.mirror, args.timeout)) for p in args.weights),
        *((f"dataset {d}", lambda d=d: prepare_dataset(d, None, args.mirror, args.timeout)) for d in args.datasets),
        *([] if args.no_pairs else [("built-in pairs", prepare_pairs)]),
        *([] if args.no_races else race_steps()),
        *([] if args.no_lessons else lesson_steps())]
    failed = 0
    for what, step in steps:
        start = time.perf_counter()
        try:
            said = step()
        except PrepareError as e:
            failed += 1
            said = f"NOT READY: {e}"
        except Exception as e:  # noqa: BLE001 - a lesson that cannot be prepared is said; the others still are
            failed += 1
            said = f"NOT READY: {type(e).__name__}: {e}"
        lines = said if isinstance(said, list) else [said]
        for line in lines:
            print(f"{what:<22} {time.perf_counter() - start:7.1f} s  {line}", flush=True)
    print("Everything is ready." if not failed else f"{failed} item(s) not ready: see above (offline? a mirror?).")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
