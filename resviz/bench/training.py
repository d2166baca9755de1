"""Training race speed: the race loop with its per-step statistics against a bare PyTorch loop over the same
models and batches, and how many seconds the default race needs before the ResNet clearly leads its plain twin.

    python -m resviz.bench --only training
"""
from __future__ import annotations

import collections
import copy
import time

from resviz.inputs import data
from resviz.lessons import training
from resviz.models import get_config

PAIR = "resnet20"  # the app's default model and its plain twin
TIMED_STEPS = 10  # per timed run; REPEATS runs of each loop, interleaved, best kept (a shared machine is noisy)
REPEATS = 3


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def overhead_rows() -> list[dict]:
    """Steps/s of ``race`` (statistics, no evaluation; then with the default evaluation) over a bare loop."""
    train, test, _ = data.builtin_dataset(n_train=2000, n_test=500)
    cfg = training.RaceConfig(steps=TIMED_STEPS, eval_every=0)
    base = training.make_race_models(get_config(PAIR), seed=0)
    bare_models, race_models, eval_models = (copy.deepcopy(base) for _ in range(3))
    with_eval = training.RaceConfig(steps=TIMED_STEPS, eval_every=TIMED_STEPS)  # once per timed run
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
        {"figure": f"race loop with per-step loss, accuracy, per-layer grad norms ({PAIR} + plain twin, batch 32)",
         "baseline": f"bare PyTorch loop, same models and batches ({sps:.2f} steps/s)",
         "value": t_bare / t_stats, "unit": "x", "target": ">= 0.90x", "ok": t_bare / t_stats >= 0.90},
        {"figure": f"race loop with statistics and test accuracy on 500 images every {with_eval.eval_every} steps",
         "baseline": "bare PyTorch loop (no evaluation at all)", "value": t_bare / t_evals, "unit": "x",
         "target": "report (evaluation is extra work)", "ok": None},
    ]


def gap_row(max_steps: int = 400) -> dict:
    """Seconds, at default race settings, until the ResNet's smoothed loss stays 0.1 below its plain twin's."""
    cfg = training.RaceConfig(steps=max_steps, eval_every=0)  # defaults otherwise: lr, batch, seed, device
    size, channels = training.data_shape_for(get_config(PAIR))
    train, test, _ = data.builtin_dataset(size=size, channels=channels)
    race_models = training.make_race_models(get_config(PAIR), seed=cfg.seed)
    names = list(race_models)
    hist = training.new_history(race_models, cfg.steps)
    step = None
    for rec in training.race(race_models, train, test, cfg):
        step = training.pulls_ahead(hist.add(rec), *names)
        if step is not None:
            break
    secs = hist.elapsed[step - 1] if step else float("nan")
    return {"figure": f"seconds until {names[0]}'s loss is clearly below {names[1]}'s (default race, built-in data"
                      f"; step {step})",
            "baseline": "wall clock from the first step", "value": secs, "unit": "s",
            "target": "<= ~30 s on a 2-core CPU", "ok": bool(step) and secs <= 30}


def run() -> list[dict]:
    return overhead_rows() + [gap_row()]


if __name__ == "__main__":
    for row in overhead_rows():
        print(row, flush=True)
    print(gap_row(), flush=True)
