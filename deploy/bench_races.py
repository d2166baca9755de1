"""Ten students start ten different races (seeds 1-10) on a Dask cluster of 2 workers: the last must finish within
(10 / 2) x one race alone x 1.2 (issue 22 §4), each waiting student seeing its place and an estimate.

    python -m deploy.bench_races [--steps 40]

Real races: the Training race's ResNet-20 pair with its recommended recipe on the built-in images (as the page runs
them, ``training.race_job``), cut to ``--steps``. Starts its own scheduler and 2 one-thread workers on loopback; each
worker first runs a one-step race (it draws the built-in images once, as a worker does for its first race). Prints
one JSON object.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

from deploy import start


def job(seed: int, steps: int):
    from resviz import models as M
    from resviz.lessons import training

    cfg = M.get_config("resnet20")
    used = replace(training.recipe_for(cfg).config, seed=seed, steps=steps, device="cpu")
    req = training.DataRequest(training.DataSource.BUILTIN, training.RACE_IMAGE_SIZE, 3)
    return training.race_job(cfg, req, req.load(), used)


def finish(watches, t0: float, timeout: float = 1800) -> list[float]:
    """Each watch's finish time after ``t0``, polling as the pages do (a poll keeps a run watched)."""
    ends: dict[int, float] = {}
    while len(ends) < len(watches):
        for i, w in enumerate(watches):
            state = w.snapshot().status.state.value
            assert state in ("queued", "running", "finished"), state
            if state == "finished" and i not in ends:
                ends[i] = time.perf_counter() - t0
        assert time.perf_counter() - t0 < timeout, "the races did not finish"
        time.sleep(0.2)
    return [ends[i] for i in range(len(watches))]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=40)
    args = ap.parse_args(argv)
    from resviz import cluster, runs

    out = {"steps": args.steps}
    with start.start_engine(2, port=0) as engine:
        reg = cluster.ClusterRegistry(engine.address, runs.Registry)
        warm = [job(100 + i, 1) for i in range(2)]
        finish([reg.attach(j.key, j.make, cost=j.cost) for j in warm], time.perf_counter())
        alone = job(0, args.steps)
        t0 = time.perf_counter()
        out["one_race_alone_s"] = finish([reg.attach(alone.key, alone.make, cost=alone.cost)], t0)[0]
        jobs = [job(seed, args.steps) for seed in range(1, 11)]
        t0 = time.perf_counter()
        watches = [reg.attach(j.key, j.make, cost=j.cost) for j in jobs]
        time.sleep(2.5)  # the keeper reads the scheduler's queue once a second
        seen = [w.snapshot().status for w in watches]
        out["places_seen"] = [s.position for s in seen]
        out["estimates_seen_s"] = [None if s.wait_s is None else round(s.wait_s, 1) for s in seen]
        ends = finish(watches, t0)
        out["ten_on_two_workers_each_s"] = [round(e, 1) for e in ends]
        out["ten_on_two_workers_last_s"] = max(ends)
        out["bound_10_over_2_x_alone_x_1.2_s"] = 10 / 2 * out["one_race_alone_s"] * 1.2
        out["met"] = out["ten_on_two_workers_last_s"] <= out["bound_10_over_2_x_alone_x_1.2_s"]
        reg.shutdown(10)
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in out.items()}))


if __name__ == "__main__":
    main()
