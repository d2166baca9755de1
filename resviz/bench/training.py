"""Training race speed: the race loop with its per-step statistics against a bare PyTorch loop over the same
models and batches, and how many seconds the default races need before the paper's ordering shows (and stays).

    python -m resviz.bench --only training
"""
from __future__ import annotations

import collections
import copy
import time
from dataclasses import replace

import torch

from resviz import disk_cache, runs
from resviz.lessons import training
from resviz.lessons.training import Ordering
from resviz.models import get_config

PAIR = "resnet20"  # the app's default model and its plain twin
TIMED_STEPS = 10  # per timed run; REPEATS runs of each loop, interleaved, best kept (a shared machine is noisy)
REPEATS = 3
TARGETS = {"resnet20": 30.0, "resnet56": 90.0}  # seconds on a 2-core CPU (issue 12): ResNet-20 pair, ResNet-56 trio


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def overhead_rows() -> list[dict]:
    """Steps/s of ``race`` (statistics, no evaluation; then with the default evaluation) over a bare loop."""
    rec = training.recipe_for(get_config(PAIR)).config
    train, test, _ = training.DataRequest(training.DataSource.BUILTIN, training.RACE_IMAGE_SIZE).load()
    cfg = replace(rec, steps=TIMED_STEPS, eval_every=0)
    with_eval = replace(rec, steps=TIMED_STEPS, eval_every=TIMED_STEPS)  # once per timed run
    base = training.make_race_models(get_config(PAIR, input_size=training.RACE_IMAGE_SIZE), seed=0)
    bare_models, race_models, eval_models = (copy.deepcopy(base) for _ in range(3))
    bare = lambda: training.bare_loop(bare_models, train, cfg)  # noqa: E731
    stats = lambda: collections.deque(training.race(race_models, train, test, cfg), maxlen=0)  # noqa: E731
    evals = lambda: collections.deque(training.race(eval_models, train, test, with_eval), maxlen=0)  # noqa: E731
    for fn in (bare, stats, evals):
        fn()  # warm-up: allocator, oneDNN kernels
    times = {"bare": [], "stats": [], "evals": []}
    for _ in range(REPEATS):
        for name, fn in (("bare", bare), ("stats", stats), ("evals", evals)):
            times[name].append(_time(fn))
    t_bare, t_stats, t_evals = (min(times[k]) for k in ("bare", "stats", "evals"))
    sps = TIMED_STEPS / t_bare
    return [
        {"figure": f"race loop with per-step loss, accuracy, per-layer grad norms ({PAIR} + plain twin, batch "
                   f"{rec.batch_size}, {training.RACE_IMAGE_SIZE}x{training.RACE_IMAGE_SIZE})",
         "baseline": f"bare PyTorch loop, same models and batches ({sps:.2f} steps/s)",
         "value": t_bare / t_stats, "unit": "x", "target": ">= 0.90x", "ok": t_bare / t_stats >= 0.90},
        {"figure": f"race loop with statistics and held-out accuracy ({rec.eval_size} images, batch-norm "
                   f"statistics re-estimated on {rec.bn_refresh}) every {with_eval.eval_every} steps "
                   f"(the page: every {rec.eval_every})",
         "baseline": "bare PyTorch loop (no evaluation at all)", "value": t_bare / t_evals, "unit": "x",
         "target": "report (evaluation is extra work)", "ok": None},
    ]


def gap_rows(preset: str, shallow: bool) -> list[dict]:
    """Seconds into the page's default race (seed 0, its evaluations included) from which each ordering of the
    paper holds to the end, and whether it holds at the end; on the torch threads a page's race gets
    (``resviz.runs``: RESVIZ_RUN_THREADS, default 1)."""
    threads, before = runs.Registry.from_env().threads_per_run or torch.get_num_threads(), torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        race = training.default_race(preset, shallow, seed=0)
    finally:
        torch.set_num_threads(before)
    h, target = race.history, TARGETS[preset]
    who = f"{preset} {'trio' if shallow else 'pair'}, default recipe, built-in images, seed 0, " \
          f"{threads} torch thread(s) as a page's race, {h.step} steps in {h.elapsed[-1]:.0f} s"
    rows = []
    for ordering, m in training.race_margins(h).items():
        lower, higher = (h.by_role(role).name for role in ordering.value)
        secs = h.elapsed[m.since - 1] if m.shows else float("nan")
        timed = ordering is not Ordering.NO_DEGRADATION
        rows.append({
            "figure": f"seconds until {training.CLAIM_TEXTS[ordering].format(lower=lower, higher=higher, margin=ordering.required)} "
                      f"(from step {m.since}, to the end; margin at the end {m.end:+.2f}) [{who}]",
            "baseline": "wall clock from the first step", "value": secs, "unit": "s",
            "target": f"<= {target:.0f} s on a 2-core CPU" if timed else "holds at the end",
            "ok": m.shows and (secs <= target if timed else True)})
    return rows


def replay_rows() -> list[dict]:
    """Seconds until a student who opens the page sees the default ResNet-56 trio's race when a finished one is kept
    in the disk cache (read back cold, in a disk cache of its own): against the live race's seconds above."""
    import os
    import tempfile

    cfg = get_config("resnet56")
    race_models = training.make_race_models(cfg, include_shallow_plain=True)
    h = training.new_history(race_models, 300, classes=10, held_out=1000)
    g = torch.Generator().manual_seed(0)
    for step in range(1, 301):  # a history of the trio's shape (300 steps, every layer's norm): its size is what counts
        h.add({"step": step, "steps": 300, "elapsed_s": step / 3, "steps_per_s": 3.0, "runs": {
            name: {"loss": 2.3 / step ** 0.2, "acc": 0.5, "test_acc": 0.5 if step % 25 == 0 else None,
                   "grad_norms": torch.rand(len(r.layers), generator=g).tolist(), "diverged": False, "message": None}
            for name, r in h.runs.items()}})
    before = os.environ.get("RESVIZ_CACHE")
    with tempfile.TemporaryDirectory() as folder:
        os.environ["RESVIZ_CACHE"] = folder
        try:
            key = ("race", "bench replay")
            training.replay.save(key, h, (), "", 0.1, None, "resnet56_trained.pt")
            size = len(disk_cache.cache().get(training.replay.disk_key(key)))
            times = []
            for _ in range(REPEATS):
                training.replay.forget_reads()
                times.append(_time(lambda: training.replay.load(key)))
        finally:
            os.environ.pop("RESVIZ_CACHE") if before is None else os.environ.update(RESVIZ_CACHE=before)
            training.replay.forget_reads()
    return [{"figure": f"default race replayed from the disk cache (ResNet-56 trio, 300 steps, {size / 1e6:.2f} MB "
                       "kept): read back cold, before its charts", "baseline": "a live race (the seconds above)",
             "value": min(times), "unit": "s", "target": "<= 0.5 s", "ok": min(times) <= 0.5}]


def run() -> list[dict]:
    return overhead_rows() + gap_rows("resnet20", False) + gap_rows("resnet56", True) + replay_rows()


if __name__ == "__main__":
    for row in run():
        print(row, flush=True)
