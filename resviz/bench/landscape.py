"""Benchmark of the loss grids, as a ratio to the forwards they need (same model, same process), and the cost of the
page's verdict (its ``DIRECTIONS`` coarse slices of a ResNet-20 pair, and the non-convexity measure on them)."""
from __future__ import annotations

import numpy as np
import torch

from resviz import pair
from resviz.bench import best_of
from resviz.lessons import landscape
from resviz.models import build_model, plain_twin


def run() -> list[dict]:
    model = build_model("resnet20", seed=0).eval()
    x, y = pair.eval_data(model.cfg, 64)

    def forwards(k):
        with torch.no_grad():
            for _ in range(k):
                model(x)

    forwards(1)  # warm-up
    base = best_of(lambda: forwards(49), repeat=1, warmup=0)
    t = best_of(lambda: landscape.loss_grid(model, x, y, steps=landscape.COARSE, dims=2), repeat=1, warmup=0)
    fine = t / landscape.COARSE**2 * landscape.FINE**2 * 2 * landscape.FINE_BATCH / len(x)
    plain = plain_twin(model).eval()
    trained = pair.TrainedPair(model.cfg, model.state_dict(), plain.state_dict(), "bench: random weights")
    p = pair.LoadedPair(trained, pair.PairSource.SESSION, model, plain, 0.5, 0.5)  # the cost ignores the weights
    verdict = best_of(lambda: landscape.study_directions(p, 1.0, 0), repeat=1, warmup=0)
    a, z = np.linspace(-1, 1, landscape.FINE), np.random.default_rng(0).random((landscape.FINE, landscape.FINE))
    measure = best_of(landscape.Grid(a, a, z, z, 2).nonconvexity, repeat=5)  # its cost does not depend on the values
    return [{"figure": "coarse 7x7 loss grid, ResNet-20, 64 images (49 evaluations)",
             "baseline": "49 ResNet-20 forwards on 64 images", "value": t / base, "unit": "x",
             "target": "<= 1.5x (functional_call overhead)", "ok": t / base <= 1.5},
            {"figure": f"fine {landscape.FINE}x{landscape.FINE} grid, ResNet-20 + plain, {landscape.FINE_BATCH} images "
                       "(background), estimated", "baseline": "measured coarse grid, scaled", "value": fine,
             "unit": "s", "target": "report", "ok": None},
            {"figure": f"verdict: {landscape.DIRECTIONS} coarse {landscape.COARSE}x{landscape.COARSE} slices, "
                       f"ResNet-20 + plain, {landscape.BATCH} images (background)", "baseline": "wall time",
             "value": verdict, "unit": "s", "target": "report", "ok": None},
            {"figure": f"non-convexity of a {landscape.FINE}x{landscape.FINE} slice (its 2-D Hessian by finite "
                       "differences)", "baseline": "wall time",
             "value": measure * 1e3, "unit": "ms", "target": "<= 5 ms (no evaluation beyond the grid)",
             "ok": measure <= 5e-3}]
