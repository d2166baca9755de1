"""Sweep the training race's recipe: which settings show the paper's ordering on every seed, soonest.

    python scripts/sweep_race.py --pairs resnet20 resnet56 --seeds 0 1 2 3 4 --out sweep_race.jsonl
    python scripts/sweep_race.py --summary --out sweep_race.jsonl          # one table, worst seed per candidate

Each run is the page's race (``resviz.lessons.training.race``, built-in images, the same recipe for every network,
the twin copied from the ResNet) on one torch thread, so several runs can share a machine; one JSON line per run
holds the recipe, the seed, steps per second and every network's smoothed training loss (as charted) per step.
Runs already in ``--out`` are skipped, so an interrupted sweep resumes. ``--summary`` reads the file and prints,
per candidate and pair, the worst seed's margins (see ``resviz.lessons.training.race_margins``).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from resviz.lessons import training as T  # noqa: E402
from resviz.models import get_config  # noqa: E402

# Candidates: RaceConfig fields (+ the built-in images' size). The paper: lr 0.1 at batch 128, momentum 0.9,
# weight decay 1e-4, warm-up at 0.1x for ResNet-110, lr / 10 at 50% and 75% of the run.
BASE = dict(momentum=0.9, weight_decay=1e-4, warmup_factor=0.1, eval_every=0)
GRID = {
    "b128-lr0.1": dict(batch_size=128, lr=0.1),  # the paper's rate: ResNet-56 blows up in the first steps here
    "b128-lr0.1-wu50": dict(batch_size=128, lr=0.1, warmup_steps=50),
    "b128-lr0.05": dict(batch_size=128, lr=0.05),
    "b128-lr0.03": dict(batch_size=128, lr=0.03),
    "b128-lr0.02": dict(batch_size=128, lr=0.02),
    "b128-lr0.01": dict(batch_size=128, lr=0.01),  # the paper's warm-up rate (0.1x)
    "b128-lr0.005": dict(batch_size=128, lr=0.005),
    "b64-lr0.005": dict(batch_size=64, lr=0.005),
    "b64-lr0.01": dict(batch_size=64, lr=0.01),
}
PAIRS = {"resnet20": False, "resnet56": True}  # pair -> with the shallower plain net (the trio)


def run_one(pair: str, name: str, seed: int, steps: int, size: int) -> dict:
    """One race at this recipe and seed; returns the JSON-able record."""
    cfg = get_config(pair, input_size=size)
    rcfg = T.RaceConfig(**{**BASE, **GRID[name]}, steps=steps, seed=seed)
    train, test, names = T.DataRequest(T.DataSource.BUILTIN, size=size, channels=3).load()
    race = T.new_race(cfg, train, test, names, rcfg, include_shallow_plain=PAIRS[pair])
    t0 = time.perf_counter()
    for _ in race.advance():
        pass
    wall = time.perf_counter() - t0
    h = race.history
    return {"pair": pair, "candidate": name, "seed": seed, "steps": steps, "size": size,
            "recipe": {k: v for k, v in asdict(rcfg).items() if k not in ("seed", "steps", "device")},
            "steps_per_s": h.step / wall, "threads": torch.get_num_threads(),
            "runs": {r.name: {"role": r.role.name, "smoothed": [round(v, 4) if v is not None else None
                                                                 for v in r.smoothed_loss],
                              "message": r.message} for r in h.runs.values()}}


def done_keys(out: Path) -> set:
    if not out.exists():
        return set()
    return {(r["pair"], r["candidate"], r["seed"], r["steps"], r["size"])
            for r in map(json.loads, out.read_text().splitlines())}


def summary(out: Path, margin: float) -> str:
    """Per pair and candidate: each ordering's margin at the end on every seed (> 0: the paper's ordering holds),
    the worst of them, and the step from which the ordering holds on every seed (to the end of the run)."""
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["pair"], r["candidate"], r["steps"], r["size"]), []).append(r)
    lines = [f"Orderings of the smoothed training loss (higher minus lower network, at the last step; > 0 holds). "
             f"'clear from': the step from which the difference stays >= {margin} (>= 0 for NO_DEGRADATION) to the "
             "end, on every seed. steps/s: one torch thread, on a shared machine (not a speed figure).", ""]
    for (pair, name, steps, size), runs in sorted(groups.items()):
        runs.sort(key=lambda r: r["seed"])
        ms = [T.curve_margins({T.Role[run["role"]]: run["smoothed"] for run in r["runs"].values()}, margin)
              for r in runs]
        sps = sum(r["steps_per_s"] for r in runs) / len(runs)
        lines.append(f"{pair} {name}: {steps} steps, {size}x{size} px, seeds {[r['seed'] for r in runs]}, "
                     f"{sps:.1f} steps/s")
        for ordering in ms[0]:
            ends = [m[ordering].end for m in ms]
            since = [m[ordering].since for m in ms]
            lines.append(f"  {ordering.name:15} ends {' '.join(f'{e:+.2f}' for e in ends)}  worst {min(ends):+.2f}"
                         f"  clear from step {'never (some seed)' if None in since else max(since)}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", nargs="*", default=list(PAIRS), choices=list(PAIRS))
    ap.add_argument("--candidates", nargs="*", default=list(GRID), choices=list(GRID))
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2, 3, 4])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--size", type=int, default=16, help="built-in image size (pixels)")
    ap.add_argument("--out", default=str(ROOT / "sweep_race.jsonl"))
    ap.add_argument("--summary", action="store_true", help="print the table from --out and exit")
    ap.add_argument("--margin", type=float, default=T.GAP_MARGIN)
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.summary:
        print(summary(out, args.margin))
        return 0
    torch.set_num_threads(1)
    done = done_keys(out)
    for pair in args.pairs:
        for name in args.candidates:
            for seed in args.seeds:
                if (pair, name, seed, args.steps, args.size) in done:
                    continue
                rec = run_one(pair, name, seed, args.steps, args.size)
                with out.open("a") as f:
                    f.write(json.dumps(rec) + "\n")
                print(f"{pair} {name} seed {seed}: {rec['steps_per_s']:.1f} steps/s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
