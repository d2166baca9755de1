"""Benchmark of the loss grids, as a ratio to the forwards they need (same model, same process)."""
from __future__ import annotations

import torch

from resviz import pair
from resviz.bench import best_of
from resviz.lessons import landscape
from resviz.models import build_model


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
    return [{"figure": "coarse 7x7 loss grid, ResNet-20, 64 images (49 evaluations)",
             "baseline": "49 ResNet-20 forwards on 64 images", "value": t / base, "unit": "x",
             "target": "<= 1.5x (functional_call overhead)", "ok": t / base <= 1.5},
            {"figure": f"fine {landscape.FINE}x{landscape.FINE} grid, ResNet-20 + plain, {landscape.FINE_BATCH} images "
                       "(background), estimated", "baseline": "measured coarse grid, scaled", "value": fine,
             "unit": "s", "target": "report", "ok": None}]
