"""Measure one distributed engine (Dask distributed or Ray) the way resviz would use it; prints one JSON line.

    python -m deploy.engines dask      # in the app's virtual environment
    /tmp/rayvenv/bin/python deploy/engines.py ray   # Ray, installed in a throw-away environment

What it measures (deploy/README.md has the table): the import time of the client library; the start-up of a local
scheduler with one worker process until a first task has returned; a run's overhead (a task that streams 10
records to the caller and returns, one after another, median); what one watcher's poll costs while 30 watchers
read the same run's records; and whether two runs asking for half a GPU each share one (a declared, fake GPU).
Imports nothing of resviz.
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time

RECORDS = 10
RUNS = 15
WATCHERS = 30


def _median_s(fn, n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def import_s(module: str) -> float:
    """Wall time of ``python -c 'import module'`` less that of ``python -c pass``, median of 3."""
    def run(code):
        return _median_s(lambda: subprocess.run([sys.executable, "-c", code], check=True), 3)
    return run(f"import {module}") - run("pass")


def records_task(topic: str, n: int):
    """A run on a Dask worker: ``n`` records as events on ``topic``, then its result."""
    from distributed import get_worker

    for i in range(n):
        get_worker().log_event(topic, {"i": i})
    return n


def half_gpu(seconds: float) -> float:
    t = time.time()
    time.sleep(seconds)
    return t


def measure_dask() -> dict:
    import threading

    from distributed import Client, LocalCluster

    out = {"import_s": import_s("distributed")}
    t = time.perf_counter()
    cluster = LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None,
                           resources={"GPU": 1})
    client = Client(cluster)
    client.submit(int, 1).result()
    out["startup_s"] = time.perf_counter() - t

    def one_run():
        topic = f"t{time.perf_counter_ns()}"
        got, done = [], threading.Event()

        def on_event(event):
            got.append(event)
            if len(got) == RECORDS:
                done.set()
        client.subscribe_topic(topic, on_event)
        fut = client.submit(records_task, topic, RECORDS, pure=False)
        fut.result()
        done.wait(30)
        client.unsubscribe_topic(topic)
    one_run()
    out["run_overhead_s"] = _median_s(one_run, RUNS)
    topic = "polled"
    client.submit(records_task, topic, 1000, pure=False).result()
    out["poll_get_events_1000_records_s"] = _median_s(lambda: client.get_events(topic), 30)
    out["poll_local_copy_s"] = _median_s(lambda: list(range(1000))[:], 30)  # a subscribed replica's own list
    t = time.time()
    starts = client.gather([client.submit(half_gpu, 1.0, pure=False, resources={"GPU": 0.5}) for _ in range(4)])
    out["four_half_gpu_runs_of_1s_s"] = time.time() - t
    out["concurrent_on_one_gpu"] = sum(s - min(starts) < 0.5 for s in starts)
    client.close()
    cluster.close()
    return out


def measure_ray() -> dict:
    import ray

    out = {"import_s": import_s("ray")}
    t = time.perf_counter()
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)

    @ray.remote
    class Run:
        def __init__(self):
            self.records = []

        def add(self, rec):
            self.records.append(rec)

        def since(self, i):
            return self.records[i:]

    @ray.remote
    def run_task(actor, n):
        for i in range(n):
            ray.get(actor.add.remote({"i": i}))
        return n

    ray.get(ray.remote(half_gpu).remote(0.0))
    out["startup_s"] = time.perf_counter() - t

    def one_run():
        actor = Run.remote()
        ray.get(run_task.remote(actor, RECORDS))
        assert len(ray.get(actor.since.remote(0))) == RECORDS
        ray.kill(actor)
    one_run()
    out["run_overhead_s"] = _median_s(one_run, RUNS)
    actor = Run.remote()
    ray.get(run_task.remote(actor, 1000))
    out["poll_actor_1000_records_s"] = _median_s(lambda: ray.get(actor.since.remote(0)), 30)
    out["poll_actor_new_records_s"] = _median_s(lambda: ray.get(actor.since.remote(1000)), 30)
    remote_half = ray.remote(num_gpus=0.5)(half_gpu)
    t = time.time()
    starts = ray.get([remote_half.remote(1.0) for _ in range(4)])
    out["four_half_gpu_runs_of_1s_s"] = time.time() - t
    out["concurrent_on_one_gpu"] = sum(s - min(starts) < 0.5 for s in starts)
    ray.shutdown()
    return out


if __name__ == "__main__":
    engine = sys.argv[1] if len(sys.argv) > 1 else "dask"
    result = measure_dask() if engine == "dask" else measure_ray()
    print(json.dumps({"engine": engine, **{k: round(v, 4) if isinstance(v, float) else v
                                           for k, v in result.items()}}))
