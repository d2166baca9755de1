"""Benchmark of the shattered-gradients sweeps (absolute: the page computes them live)."""
from __future__ import annotations

from resviz.bench import best_of
from resviz.lessons import shattered


def run() -> list[dict]:
    t = best_of(lambda: [shattered.shattered_sweep(shattered.SweepConfig(depth=100, residual=r)) for r in (0, 1)],
                repeat=1, warmup=0)
    curve = best_of(lambda: shattered.depth_curve(shattered.SweepConfig()), repeat=1, warmup=0)
    return [{"figure": "shattered gradients, depth 100, plain + ResNet, 256 points", "baseline": "absolute",
             "value": t, "unit": "s", "target": "report", "ok": None},
            {"figure": f"shattered gradients, depth curve ({len(shattered.DEPTHS)} depths, both nets)",
             "baseline": "absolute", "value": curve, "unit": "s", "target": "report", "ok": None}]
