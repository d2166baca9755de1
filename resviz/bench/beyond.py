"""Benchmarks of the slow 'beyond the paper' computations, as ratios to a plain forward/backward pass of the
same model in the same process (so a busy or fast machine moves both sides)."""
from __future__ import annotations

import torch

from resviz import landscape, lesion, pair, paths, shattered
from resviz.bench import best_of
from resviz.models import build_model, plain_twin


def _row(figure, baseline, value, unit, target, limit):
    return {"figure": figure, "baseline": baseline, "value": value, "unit": unit, "target": target,
            "ok": None if limit is None else value <= limit}


def _once(fn) -> float:
    return best_of(fn, repeat=1, warmup=0)


def run() -> list[dict]:
    model = build_model("resnet20", seed=0).eval()
    plain = plain_twin(model).eval()
    for p in model.parameters():
        p.requires_grad_(False)  # as in the app: only input gradients are needed
    x, y = pair.eval_data(model.cfg, 250)
    rows = []

    def forwards(k, n):
        with torch.no_grad():
            for _ in range(k):
                model(x[:n])

    def fwd_bwd(k):
        for _ in range(k):
            xx = x[:8].clone().requires_grad_(True)
            torch.nn.functional.cross_entropy(model(xx), y[:8]).backward()

    forwards(1, 64)  # warm-up
    base = _once(lambda: forwards(20, 250))
    t = _once(lambda: (lesion.lesion_study(model, x, y), lesion.lesion_study(plain, x, y)))
    rows.append(_row("lesion study, ResNet-20 + plain-20, 250 images (18 lesioned nets + 2 intact)",
                     "20 ResNet-20 forwards on 250 images", t / base, "x", "<= 1.5x (deep copies cost little)", 1.5))
    base = _once(lambda: fwd_bwd(18))
    t = _once(lambda: paths.gradient_by_path_length(model, x[:8], y[:8], samples=2))
    rows.append(_row("gradient per path length, ResNet-20, 2 paths per length, 8 images (18 backward passes)",
                     "18 forward+backward passes on 8 images", t / base, "x", "<= 1.5x", 1.5))
    base = _once(lambda: forwards(49, 64))
    t = _once(lambda: landscape.loss_grid(model, x[:64], y[:64], steps=7, dims=2))
    rows.append(_row("coarse 7x7 loss grid, ResNet-20, 64 images (49 evaluations)",
                     "49 ResNet-20 forwards on 64 images", t / base, "x", "<= 1.5x (functional_call overhead)", 1.5))
    rows.append(_row("fine 21x21 grid, ResNet-20 + plain, 256 images (background), estimated",
                     "measured coarse grid, scaled", t / 49 * 441 * 2 * 4, "s", "report", None))
    t = _once(lambda: [shattered.shattered_sweep(shattered.SweepConfig(depth=100, residual=r)) for r in (0, 1)])
    rows.append(_row("shattered gradients, depth 100, plain + ResNet, 256 points", "absolute", t, "s",
                     "report", None))
    return rows
