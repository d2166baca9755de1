"""The cluster's figures (deploy/README.md): a run's overhead against the embedded engine, what a watcher's poll
costs, and 10 different runs on 2 workers against one run alone, with the place and estimate each watcher saw.

    python -m deploy.bench_cluster [--seconds 2] [--cpu]

Starts its own scheduler and 2 workers on loopback. A run is ``--seconds`` of sleep in 10 records (what the
engine adds, without the machine's other load in it), or with ``--cpu`` that long of pure-Python work measured
alone first. Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

from deploy import start


def sleeper(seconds: float, records: int = 10):
    for i in range(records):
        time.sleep(seconds / records)
        yield {"step": i + 1, "steps": records}
    return seconds


def spinner(loops: int, records: int = 10):
    total = 0
    for i in range(records):
        for j in range(loops // records):
            total += j * j
        yield {"step": i + 1, "steps": records}
    return total


def timed_run(registry, key, make, timeout: float = 600) -> float:
    t = time.perf_counter()
    snap = registry.attach(key, make).wait(timeout)
    assert snap.status.state.value == "finished", snap.status
    return time.perf_counter() - t


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--cpu", action="store_true")
    args = ap.parse_args(argv)
    from resviz import cluster, runs

    out = {}
    with start.start_engine(2, port=0) as engine:
        reg = cluster.ClusterRegistry(engine.address, runs.Registry)
        local = runs.Registry(max_running=2)
        timed_run(reg, ("warm", 0), lambda: sleeper(0.0))  # the workers' first run imports resviz (torch)
        for name, r in (("embedded", local), ("cluster", reg)):
            out[f"trivial_run_{name}_s"] = statistics.median(
                timed_run(r, (name, "trivial", i), lambda: sleeper(0.0)) for i in range(15))
        if args.cpu:
            t = time.perf_counter()
            loops = 200_000
            for _ in spinner(loops):
                pass
            loops = int(loops * args.seconds / (time.perf_counter() - t))
            make = lambda i: lambda: spinner(loops + i)  # noqa: E731 - a different setting each
        else:
            make = lambda i: lambda: sleeper(args.seconds + i * 1e-6)  # noqa: E731
        out["one_run_alone_s"] = timed_run(reg, ("alone",), make(0))
        t = time.perf_counter()
        watches = [reg.attach(("ten", i), make(i)) for i in range(10)]
        time.sleep(2.5)  # the keeper reads the scheduler's queue once a second
        seen = [w.snapshot().status for w in watches]
        out["places_seen"] = [s.position for s in seen]
        out["estimates_seen_s"] = [None if s.wait_s is None else round(s.wait_s, 1) for s in seen]
        ends = {}
        while len(ends) < len(watches):  # each student's page polls its run (that keeps it watched)
            for i, w in enumerate(watches):
                state = w.snapshot().status.state.value
                assert state in ("queued", "running", "finished"), state
                if state == "finished" and i not in ends:
                    ends[i] = time.perf_counter() - t
            time.sleep(0.2)  # the pages' poll interval
        out["ten_on_two_workers_last_s"] = max(ends.values())
        out["bound_10_over_2_x_alone_x_1.2_s"] = 10 / 2 * out["one_run_alone_s"] * 1.2
        watch = reg.attach(("polled",), lambda: sleeper(0.0, 1000))
        watch.wait(120)
        watchers = [reg.attach(("polled",), lambda: sleeper(0.0, 1000)) for _ in range(30)]
        t = time.perf_counter()
        for _ in range(10):
            for w in watchers:
                w.snapshot()
        out["poll_cluster_us"] = (time.perf_counter() - t) / 300 * 1e6
        lw = local.attach(("polled",), lambda: sleeper(0.0, 1000))
        lw.wait(120)
        t = time.perf_counter()
        for _ in range(300):
            lw.snapshot()
        out["poll_embedded_us"] = (time.perf_counter() - t) / 300 * 1e6
        reg.shutdown(10)
        local.shutdown(10)
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}))


if __name__ == "__main__":
    main()
