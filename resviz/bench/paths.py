"""Benchmark of the gradient per path length, as a ratio to the backward passes it needs (same process)."""
from __future__ import annotations

import torch

from resviz import pair
from resviz.bench import best_of
from resviz.lessons import paths
from resviz.models import build_model


def run() -> list[dict]:
    model = build_model("resnet20", seed=0).eval()
    for p in model.parameters():
        p.requires_grad_(False)  # as in the app: only input gradients are needed
    x, y = pair.eval_data(model.cfg, 8)

    def fwd_bwd(k):
        for _ in range(k):
            xx = x.clone().requires_grad_(True)
            torch.nn.functional.cross_entropy(model(xx), y).backward()

    fwd_bwd(1)  # warm-up
    base = best_of(lambda: fwd_bwd(18), repeat=1, warmup=0)
    t = best_of(lambda: paths.gradient_by_path_length(model, x, y, samples=2), repeat=1, warmup=0)
    return [{"figure": "gradient per path length, ResNet-20, 2 paths per length, 8 images (18 backward passes)",
             "baseline": "18 forward+backward passes on 8 images", "value": t / base, "unit": "x",
             "target": "<= 1.5x", "ok": t / base <= 1.5}]
