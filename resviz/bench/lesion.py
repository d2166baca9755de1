"""Benchmark of the lesion study, as a ratio to the forwards it cannot avoid (same model, same process)."""
from __future__ import annotations

from resviz import pair
from resviz.bench import best_of
from resviz.lessons import lesion
from resviz.models import build_model, plain_twin


def run() -> list[dict]:
    model = build_model("resnet20", seed=0).eval()
    plain = plain_twin(model).eval()
    x, y = pair.eval_data(model.cfg, 250)
    pair.accuracy(model, x, y)  # warm-up
    base = best_of(lambda: [pair.accuracy(model, x, y) for _ in range(20)], repeat=1, warmup=0)
    t = best_of(lambda: (lesion.lesion_study(model, x, y), lesion.lesion_study(plain, x, y)), repeat=1, warmup=0)
    return [{"figure": "lesion study, ResNet-20 + plain-20, 250 images (18 lesioned nets + 2 intact)",
             "baseline": "20 ResNet-20 forwards on 250 images", "value": t / base, "unit": "x",
             "target": "<= 1.5x (deep copies cost little)", "ok": t / base <= 1.5}]
