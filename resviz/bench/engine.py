"""The engine (resviz.runs): what thirty students watching one run cost the run (issue 22 §4, first bullet).

One process, as on one replica: a run of small training steps alone, then the same run with 30 watcher threads
that each poll it every second as a page does (a snapshot, then the records since the last poll folded into the
watcher's own history, as training.framed and fold do). Alone and watched alternate, so load on the machine falls
on both alike; the figure is the ratio of the medians of the run's wall time. The pollers' own CPU time per second
of run is reported beside it: unlike wall time, other load on the machine does not change it.
"""
from __future__ import annotations

import statistics
import threading
import time

import torch

from resviz import runs

WATCHERS, POLL_S, STEPS, REPEAT = 30, 1.0, 200, 3
TARGET = 1.5  # the bound for 30 watchers against the run alone


def _row(figure, value, unit, target, ok, baseline="-") -> dict:
    return {"figure": figure, "baseline": baseline, "value": float(value), "unit": unit, "target": target, "ok": ok}


def steps(n: int = STEPS):
    """Records of a small convolutional net's training steps (batch 32, 16x16 images), a race in miniature."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 10))
    opt = torch.optim.SGD(net.parameters(), 0.1)
    x, y = torch.randn(32, 3, 16, 16), torch.randint(0, 10, (32,))
    for step in range(1, n + 1):
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        yield {"step": step, "steps": n, "loss": loss.item(), "grads": [p.grad.norm().item() for p in net.parameters()]}


def watched_run(watchers: int, n: int = STEPS, registry=runs.Registry) -> tuple[float, float]:
    """Wall seconds of one run of ``n`` steps with ``watchers`` polling it, and the pollers' CPU seconds."""
    reg = registry(max_running=1, threads_per_run=1)
    stop, cpu, lock = threading.Event(), [0.0], threading.Lock()
    t0 = time.perf_counter()
    first = reg.attach(("bench", watchers, t0), lambda: steps(n), cost=n)

    def poll():
        c0, watch, seen, history = time.thread_time(), reg.attach(first.key, lambda: steps(n), cost=n), 0, []
        while not stop.is_set():
            records = watch.snapshot().records
            shown = records[:len(records)]  # the page draws a prefix of them (training.framed: whole frames)
            history.extend(shown[seen:])  # and folds in only what is new since its last poll (training.fold)
            seen = len(records)
            stop.wait(POLL_S)
        with lock:
            cpu[0] += time.thread_time() - c0

    pollers = [threading.Thread(target=poll, name=f"bench-watcher-{i}") for i in range(watchers)]
    for t in pollers:
        t.start()
    snap = first.wait(600)
    wall = time.perf_counter() - t0
    stop.set()
    for t in pollers:
        t.join()
    reg.shutdown()
    if snap.status.state is not runs.State.FINISHED and getattr(snap.status.state, "value", "") != "finished":
        raise RuntimeError(f"the benchmark run ended {snap.status.state}")
    return wall, cpu[0]


def ratio(watchers: int = WATCHERS, repeat: int = REPEAT, n: int = STEPS, registry=runs.Registry) -> dict:
    """Median wall time of the run with ``watchers`` over alone (alternated ``repeat`` times), and the pollers'
    CPU seconds per second of run."""
    watched_run(0, 10, registry)  # warm-up: torch's first calls
    alone, many, cpu = [], [], []
    for _ in range(repeat):
        alone.append(watched_run(0, n, registry)[0])
        wall, polls = watched_run(watchers, n, registry)
        many.append(wall)
        cpu.append(polls / wall)
    return {"alone_s": statistics.median(alone), "watched_s": statistics.median(many),
            "ratio": statistics.median(many) / statistics.median(alone), "poll_cpu_per_s": statistics.median(cpu)}


def run() -> list[dict]:
    r = ratio()
    return [_row(f"one run watched by {WATCHERS} threads polling every {POLL_S:g} s / the run alone (same process, "
                 f"{STEPS} conv steps, median of {REPEAT} alternated)", r["ratio"], "x", f"<= {TARGET}x",
                 r["ratio"] <= TARGET, baseline=f"alone {r['alone_s']:.1f} s, watched {r['watched_s']:.1f} s"),
            _row(f"CPU the {WATCHERS} watchers' polls take per second of run", r["poll_cpu_per_s"], "s/s", "report",
                 None)]
