"""Cost of collecting signal-flow statistics: (fwd+bwd with statistics) / (bare fwd+bwd), ResNet-50, batch 8,
224x224, on the CPU.

The two runs alternate in the same process and the fastest of each is kept. Both compute the same gradients
(``torch.autograd.grad`` of the cross-entropy, model in train mode). The ratio is measured twice:

- CPU time of the calling thread with one torch thread (forward and CPU backward both run on it): what the
  statistics cost in work, and steady on a machine shared with others, so this row carries the target;
- wall-clock time with the default threads: what a student waits, reported (noisy when the machine is busy).
"""
import time

import torch
import torch.nn.functional as F
import torchvision

from resviz import models
from resviz.lessons import signal_flow

BATCH, SIZE, REPEAT = 8, 224, 5
TARGET = 1.10


def _bare(model, x, y):
    loss = F.cross_entropy(model(x), y)
    torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad])


def _ratio(model, x, y, clock, repeat: int = REPEAT) -> tuple[float, float, float]:
    """(ratio, bare seconds, with-statistics seconds): fastest of ``repeat`` alternating runs after a warm-up."""
    runs = {"bare": (_bare, []), "stats": (signal_flow.collect_stats, [])}
    for fn, _ in runs.values():
        fn(model, x, y)  # warm-up: allocator, oneDNN kernels
    for _ in range(repeat):
        for fn, times in runs.values():
            t = clock()
            fn(model, x, y)
            times.append(clock() - t)
    bare, with_stats = min(runs["bare"][1]), min(runs["stats"][1])
    return with_stats / bare, bare, with_stats


def _row(label: str, how: str, ratio: float, bare: float, with_stats: float, ok) -> dict:
    return {"figure": f"signal-flow statistics overhead, {label}, batch {BATCH}, {SIZE}x{SIZE}, CPU, {how}",
            "baseline": f"bare fwd+bwd {bare:.3g} s (with statistics {with_stats:.3g} s)",
            "value": ratio, "unit": "x", "target": f"<= {TARGET:.2f}", "ok": ok}


def run(repeat: int = REPEAT) -> list[dict]:
    torch.manual_seed(0)
    x, y = torch.randn(BATCH, 3, SIZE, SIZE), torch.randint(0, 1000, (BATCH,))
    nets = {"resviz ResNet-50": models.build_model("resnet50", seed=0).train(),
            "torchvision ResNet-50": torchvision.models.resnet50().train()}  # in-place ReLU and +=
    rows = []
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        for label, model in nets.items():
            ratio, bare, with_stats = _ratio(model, x, y, time.thread_time, repeat)
            rows.append(_row(label, "thread CPU time, 1 thread", ratio, bare, with_stats, ratio <= TARGET))
    finally:
        torch.set_num_threads(threads)
    ratio, bare, with_stats = _ratio(nets["resviz ResNet-50"], x, y, time.perf_counter, repeat)
    rows.append(_row("resviz ResNet-50", f"wall clock, {threads} threads", ratio, bare, with_stats, None))
    return rows


if __name__ == "__main__":
    for r in run():
        print(r)
