"""Benchmarks: each module here has ``run() -> list[dict]``; ``python -m resviz.bench`` runs them all.

A row is ``{"figure", "baseline", "value", "unit", "target", "ok"}``; ratios are measured against a baseline run
in the same process, never as timed assertions in tests.
"""
import time


def best_of(fn, repeat: int = 5, warmup: int = 1) -> float:
    """Fastest wall time of ``fn()`` in seconds over ``repeat`` runs, after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)
