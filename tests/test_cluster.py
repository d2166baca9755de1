"""resviz.cluster: shared runs on a real Dask scheduler and real worker processes, on loopback.

Compute once across two processes, every record seen by each from the first; a worker killed mid-run (the run is
retried elsewhere, each record seen once); nobody watching stops the run on its worker; the scheduler unreachable
at start and lost later (new runs on the embedded engine, ``health()`` says so, the replica reconnects); a GPU run
goes to the GPU worker; records that cannot leave the worker run here; the training race runs once on a worker for
two replicas, with its weights, and the teacher's overview lists every replica's runs; the device is picked on the
worker; a lesson's default run sends settings and names, not networks. Every wait is bounded; tiny runs.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("distributed", reason="Dask distributed is not installed (pip install -r requirements.txt)")
import cloudpickle  # noqa: E402 - after the skip

from deploy import start  # noqa: E402
from resviz import cluster, runs  # noqa: E402

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module
WAIT = 120  # s: the most any condition below may take (a cold worker imports torch; a loaded 2-core machine)


def counting(folder: str, n: int, pause: float = 0.05, gate: str | None = None):
    """A run: notes its start (worker pid) in ``folder``, ``n`` records {"step", "steps"}; waits for ``gate`` (a
    file) after its first record; notes how it ended."""
    Path(folder, f"start-{os.getpid()}-{time.time_ns()}").touch()
    try:
        for i in range(n):
            yield {"step": i + 1, "steps": n}
            if gate and i == 0:
                deadline = time.monotonic() + WAIT
                while not Path(gate).exists() and time.monotonic() < deadline:
                    time.sleep(0.05)  # a worker-side poll for the test's signal
            time.sleep(pause)
        Path(folder, "finished").touch()
        return sum(range(n))
    finally:
        Path(folder, f"ended-{os.getpid()}").touch()


def starts(folder: Path) -> list[str]:
    """The runs' starts in ``folder``, oldest first: start-<worker pid>-<ns>."""
    return sorted((p.name for p in folder.glob("start-*")), key=lambda name: int(name.rsplit("-", 1)[1]))


def until(condition, timeout: float = WAIT, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.05)  # polling interval, not a wait for a condition
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """A scheduler and two one-thread workers, on a free loopback port."""
    with start.start_engine(2, tmp_path_factory.mktemp("engine"), port=0) as e:
        yield e


@pytest.fixture
def registry(engine):
    reg = cluster.ClusterRegistry(engine.address, lambda: runs.Registry(max_running=1), lease_s=WAIT)
    yield reg
    reg.shutdown(10)


def test_a_run_streams_its_records_and_result(registry, tmp_path):
    watch = registry.attach(("count", str(tmp_path)), lambda: counting(str(tmp_path), 5))
    snap = watch.wait(WAIT)
    assert snap.status.state is runs.State.FINISHED, snap.status
    assert [r["step"] for r in snap.records] == [1, 2, 3, 4, 5] and snap.result == 10
    assert isinstance(watch, runs.Watch) and len(starts(tmp_path)) == 1
    late = registry.attach(("count", str(tmp_path)), lambda: counting(str(tmp_path), 5))
    assert late.snapshot().result == 10 and len(starts(tmp_path)) == 1  # finished: kept, not run again


TWO_CLIENTS = """
import json, sys, time
from pathlib import Path
from resviz import cluster, runs
address, folder, gate = sys.argv[1:4]

def run():
    Path(folder, "start-" + str(time.time_ns())).touch()
    for i in range(8):
        yield {"step": i + 1, "steps": 8}
        if i == 0:
            deadline = time.monotonic() + 60
            while not Path(gate).exists() and time.monotonic() < deadline:
                time.sleep(0.05)
    return "done"

reg = cluster.ClusterRegistry(address, runs.Registry)
watch = reg.attach(("two clients", folder), run, cost=8)
print("attached", flush=True)
snap = watch.wait(120)
print(json.dumps({"state": snap.status.state.value, "steps": [r["step"] for r in snap.records],
                  "result": snap.result}), flush=True)
reg.shutdown(10)
"""


def test_two_processes_share_one_computation_and_a_replica_can_die(engine, registry, tmp_path):
    """Three replicas attach the same key: one run on the cluster. Replica 1 (a process) is killed mid-run; its
    students reconnect to replica 3 (this process), which re-attaches: the history from the first record, then
    live; replica 2 (a process) goes on seeing every record. Nothing is computed twice."""
    gate = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", TWO_CLIENTS, engine.address, str(tmp_path), str(gate)],
                              cwd=start.ROOT, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        assert p.stdout.readline().strip() == "attached"
    until(lambda: starts(tmp_path), what="the run to start")
    procs[0].kill()  # a replica dies, its students' sessions with it
    procs[0].wait()
    rejoined = registry.attach(("two clients", str(tmp_path)), lambda: iter(()))  # joins: never runs this make
    assert [r["step"] for r in rejoined.wait(WAIT, records=1).records] == [1]  # the history, from the first
    gate.touch()  # now let it finish
    out, _ = procs[1].communicate(timeout=WAIT)
    assert json.loads(out) == {"state": "finished", "steps": list(range(1, 9)), "result": "done"}
    snap = rejoined.wait(WAIT)
    assert snap.status.state is runs.State.FINISHED and [r["step"] for r in snap.records] == list(range(1, 9))
    assert snap.result == "done" and len(starts(tmp_path)) == 1


def test_a_worker_killed_mid_run_is_retried_elsewhere(engine, registry, tmp_path):
    gate = tmp_path / "go"
    watch = registry.attach(("killed", str(tmp_path)), lambda: counting(str(tmp_path), 6, gate=str(gate)))
    (first,) = until(lambda: starts(tmp_path), what="the run to start")
    pid = int(first.split("-")[1])
    os.kill(pid, signal.SIGKILL)  # the worker dies after the run's first record
    engine.add_worker("replacement")  # the module's other tests keep two workers
    until(lambda: len(starts(tmp_path)) == 2, what="the retry")
    gate.touch()
    snap = watch.wait(WAIT)
    assert snap.status.state is runs.State.FINISHED, snap.status
    assert [r["step"] for r in snap.records] == [1, 2, 3, 4, 5, 6]  # the repeat's first record is not seen twice
    assert int(starts(tmp_path)[1].split("-")[1]) != pid


def test_a_run_nobody_watches_stops_on_its_worker(registry, tmp_path):
    watch = registry.attach(("left", str(tmp_path)), lambda: counting(str(tmp_path), 400, pause=0.05))
    watch.wait(WAIT, records=2)
    watch.detach()
    until(lambda: list(tmp_path.glob("ended-*")), what="the worker to stop the run")
    assert not (tmp_path / "finished").exists()
    assert watch.snapshot().status.state is runs.State.CANCELLED


def test_records_that_cannot_leave_the_worker_run_here(registry):
    """A record holding a lock cannot be pickled: the run goes on the embedded engine, and the watcher sees it
    finish there."""
    def locked():
        import threading
        yield {"step": 1, "steps": 2, "lock": threading.Lock()}
        yield {"step": 2, "steps": 2}

    watch = registry.attach(("not plain", time.time_ns()), locked)
    snap = until(lambda: (s := watch.wait(1)).status.state.done and s, what="the run here")
    assert snap.status.state is runs.State.FINISHED and [r["step"] for r in snap.records] == [1, 2]
    assert registry.fallback.overview()  # it ran on the embedded engine
    again = registry.attach(("not plain", time.time_ns()), locked)  # the same kind: here at once, not tried again
    assert again._registry is registry.fallback and again.wait(WAIT).status.state is runs.State.FINISHED


def test_compute_runs_report_progress_and_their_result(registry):
    def compute(progress):
        for i in range(4):
            progress((i + 1) / 4)
        return {"answer": 42}

    assert registry.call(("compute", time.time_ns()), compute, None, 4) == {"answer": 42}  # as ui.shared_result calls it

    def broken(progress):
        raise ValueError("no such layer")

    with pytest.raises(ValueError, match="no such layer"):
        registry.call(("broken", time.time_ns()), broken)


def test_a_gpu_run_goes_to_a_worker_with_a_gpu(engine, tmp_path):
    gpu_worker = engine.add_worker("gpu", resources="GPU=1")
    reg = cluster.ClusterRegistry(engine.address, runs.Registry, gpu=0.5)
    try:
        watch = reg.attach(("gpu", str(tmp_path)), lambda: counting(str(tmp_path), 2))
        assert watch.wait(WAIT).status.state is runs.State.FINISHED
        assert [int(s.split("-")[1]) for s in starts(tmp_path)] == [gpu_worker.pid]
    finally:
        reg.shutdown(10)


def test_an_unreachable_scheduler_leaves_the_embedded_engine(tmp_path):
    reg = cluster.ClusterRegistry(f"tcp://127.0.0.1:{start.free_port()}", lambda: runs.Registry(max_running=1),
                                  connect_timeout=1)
    try:
        assert not reg.connected and "has not answered" in reg.health()
        watch = reg.attach(("here", str(tmp_path)), lambda: counting(str(tmp_path), 3))
        assert watch.wait(WAIT).result == 3 and watch._registry is reg.fallback
    finally:
        reg.shutdown(10)


def test_the_scheduler_lost_mid_run_then_back(tmp_path):
    """The scheduler dies: watchers of its run are told (no one hangs), new runs go to the embedded engine,
    health() says so; a scheduler on the same address again: the replica reconnects and health() is None."""
    with start.start_engine(1, tmp_path / "engine", port=0) as engine:
        reg = cluster.ClusterRegistry(engine.address, lambda: runs.Registry(max_running=1), connect_timeout=2)
        reg_reconnect, cluster.RECONNECT_S = cluster.RECONNECT_S, 1.0
        try:
            watch = reg.attach(("lost", str(tmp_path)), lambda: counting(str(tmp_path), 400))
            watch.wait(WAIT, records=1)
            engine.scheduler.kill()
            engine.scheduler.wait()
            snap = until(lambda: (s := watch.wait(1)).status.state.done and s, what="the watcher to be told")
            assert snap.status.state is runs.State.FAILED and "press Start again" in snap.status.error
            until(lambda: reg.health(), what="health() to say so")
            (tmp_path / "here").mkdir()
            here = reg.attach(("here", str(tmp_path)), lambda: counting(str(tmp_path / "here"), 2, pause=0))
            assert here.wait(WAIT).status.state is runs.State.FINISHED and here._registry is reg.fallback
            port = engine.address.rsplit(":", 1)[1]
            engine.scheduler = subprocess.Popen(
                [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", port,
                 "--no-dashboard"], cwd=start.ROOT, env=engine.env, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL)
            until(lambda: reg.health() is None, what="the replica to reconnect")
        finally:
            cluster.RECONNECT_S = reg_reconnect
            reg.shutdown(10)


def test_the_default_imports_no_dask_and_the_setting_selects_the_cluster():
    """One process: without RESVIZ_SCHEDULER the registry is the embedded one and Dask is not imported; with it
    (unreachable here), the cluster's registry, which says so."""
    code = ("import os, sys; from resviz import runs, cluster; a = type(runs.registry()).__name__; "
            "b = 'distributed' in sys.modules; runs._REGISTRY = None; "
            "os.environ.update(RESVIZ_SCHEDULER=sys.argv[1], RESVIZ_SCHEDULER_TIMEOUT='1'); "
            "print(a, b, type(runs.registry()).__name__, 'distributed' in sys.modules, cluster.health() is not None)")
    env = {k: v for k, v in os.environ.items() if k != "RESVIZ_SCHEDULER"}
    out = subprocess.run([sys.executable, "-c", code, f"tcp://127.0.0.1:{start.free_port()}"], env=env,
                         cwd=start.ROOT, check=True, capture_output=True, text=True).stdout.split()
    assert out == ["Registry", "False", "ClusterRegistry", "True", "True"]


def test_task_keys_are_the_same_in_every_process():
    """From the settings' repr, not Python's salted hash(): the same key in every replica, run after run."""
    key = ("race", "abc", 3, 0.5)
    assert cluster.task_key(key) == "resviz-run-3884d68aa92f9eb5fde7f85c118967796b6de4a8"
    assert cluster.task_key(key) != cluster.task_key(("race", "abc", 3, 0.25))


TINY_RACE = """
import torch
from dataclasses import replace
from torch.utils.data import TensorDataset
from resviz import models as M
from resviz.lessons import training as T

def tiny_job(seed, every, device="cpu"):
    # a 6-step race of a tiny ResNet on 16 images (they travel with it); the weights in steps 1 and every ``every``
    cfg = M.ResNetConfig(block="basic", layers=(1, 1), widths=(4, 8), stem="cifar", stem_width=4, input_size=8,
                         num_classes=2, shortcut="A", name="tiny")
    g = torch.Generator().manual_seed(0)
    y = torch.arange(16) % 2
    x = (y.float() * 2 - 1).view(-1, 1, 1, 1) * 0.5 + 0.3 * torch.randn(16, 3, 8, 8, generator=g)
    data = TensorDataset(x, y)
    job = T.race_job(cfg, T.DataRequest(T.DataSource.BUILTIN, 8, 3), (data, data, ["dark", "bright"]),
                     T.RaceConfig(batch_size=8, steps=6, eval_every=0, seed=seed, device=device))
    return replace(job, make=replace(job.make, every=every))

def loads(trained):
    # Whether a trained pair's weights load into its models (strict: every name and shape)
    M.ResNet(trained.cfg).load_state_dict(trained.state_dict)
    M.ResNet(M.plain_config(trained.cfg)).load_state_dict(trained.plain_state_dict)
    return True
"""


RACE_CLIENT = TINY_RACE + """
import json, sys, time
from pathlib import Path
from resviz import cluster, runs
from resviz.lessons.training import jobs
address, folder, gate = sys.argv[1:4]

def gated():  # a run of this replica's own, until the test opens the gate
    yield {"step": 1, "steps": 2}
    deadline = time.monotonic() + 60
    while not Path(gate).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    yield {"step": 2, "steps": 2}

reg = cluster.ClusterRegistry(address, runs.Registry)
own = reg.attach(("theirs", folder), gated)
job = tiny_job(1, 2, device="cuda")  # the replica asks for a GPU: the worker (a CPU) picks its own device
watch = reg.attach(job.key, job.make, job.cost)
print("attached", flush=True)
snap = watch.wait(120)
stopped = jobs.weights_of(snap.records)
print(json.dumps({"state": snap.status.state.value, "here": reg._fallback is not None,
                  "steps": [r["step"] for r in snap.records[1:]], "elapsed": [r["elapsed_s"] for r in snap.records[1:]],
                  "stopped": [stopped.steps, loads(stopped)], "result": [snap.result.steps, loads(snap.result)]}),
      flush=True)
sys.stdin.readline()  # until the test says: leave
reg.shutdown(10)
"""


def test_two_replicas_start_the_same_race_one_computation(registry, tmp_path):
    """The race's records are plain data: another replica (a process) and this one start the same race, it runs
    once on a worker (never on a replica's engine; both see the same wall-clock times in every step's record), each
    sees every record, the weights of the steps that carry them (1, 2, 4) and the result, and they load into the
    models. The teacher's overview here lists the cluster's runs: the race once, with both replicas' watchers, and
    the other replica's own run, which leaves the list with that replica."""
    from resviz.lessons.training import jobs
    from resviz.pair import TrainedPair

    gate = tmp_path / "go"
    proc = subprocess.Popen([sys.executable, "-c", RACE_CLIENT, registry.address, str(tmp_path), str(gate)],
                            cwd=start.ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        tiny = {}
        exec(TINY_RACE, tiny)
        job = tiny["tiny_job"](1, 2, device="cuda")
        watch = registry.attach(job.key, job.make, job.cost)
        assert proc.stdout.readline().strip() == "attached"
        snap = until(lambda: (s := watch.wait(1)).status.state.done and s, what="the race")
        other = json.loads(proc.stdout.readline())
        assert snap.status.state is runs.State.FINISHED, snap.status
        assert watch._registry is registry and registry._fallback is None  # on the cluster, never here
        assert other == {"state": "finished", "here": False, "steps": [1, 2, 3, 4, 5, 6],
                         "elapsed": [r["elapsed_s"] for r in snap.records[1:]], "stopped": [4, True],
                         "result": [6, True]}  # one computation: the same records, to the microsecond
        assert [r["step"] for r in snap.records[1:] if "weights" in r] == [1, 2, 4]
        assert isinstance(snap.result, TrainedPair) and tiny["loads"](snap.result)
        assert jobs.weights_of(snap.records).steps == 4 and tiny["loads"](jobs.weights_of(snap.records))
        theirs = ("theirs", str(tmp_path))
        listed = until(lambda: (o := dict(registry.overview())).get(job.key) and o[job.key].watchers == 2 and (
            theirs in o) and o, what="both replicas' runs in the overview")
        assert len(registry.overview()) == 2 and listed[theirs].watchers == 1
        assert listed[job.key].state is runs.State.FINISHED and listed[theirs].state in (runs.State.RUNNING,
                                                                                          runs.State.QUEUED)
        gate.touch()  # their run may end; the other replica leaves
        proc.communicate("leave\n", timeout=WAIT)
        until(lambda: theirs not in dict(registry.overview()), what="the other replica's run to leave the list")
        assert dict(registry.overview())[job.key].watchers == 1 and not watch.detached  # this replica's watch
    finally:
        gate.touch()
        if proc.poll() is None:
            proc.kill()


def test_the_device_is_picked_on_the_worker(monkeypatch):
    """A worker started with --resources GPU=1 trains on cuda when torch sees a GPU; any other on cpu; outside a
    worker (the embedded engine) the replica's choice stands."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert cluster.device_for({"GPU": 1}) == "cuda" and cluster.device_for({}) == "cpu"
    assert cluster.device_for({"GPU": 0.5, "MEMORY": 4}) == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cluster.device_for({"GPU": 1}) == "cpu"
    assert cluster.worker_device("cuda") == "cuda" and cluster.worker_device("cpu") == "cpu"


def test_a_lessons_default_run_sends_settings_and_names_not_networks(monkeypatch):
    """What a run sends a worker (``cluster.dumps``) for each lesson's default result, its computation built as its
    page builds it: under 1 MB each (Lesion and Loss landscape sent the 4.5 MB shipped pair, Paths a 1.2 MB model);
    the shipped pair and the random-weights model travel by name and are made again equal where they land."""
    import pickle

    import torch
    from torch.utils.data import TensorDataset

    from resviz import builtin_pair, pair
    from resviz import models as M
    from resviz.lessons import landscape as ls
    from resviz.lessons import lesion, paths, shattered
    from resviz.lessons import signal_flow as sf
    from resviz.lessons import training as T

    p = builtin_pair.shipped_pair("resnet20")  # the pair pages' default
    cfg = M.get_config("resnet20")  # the sidebar's default, for Paths at random weights
    model = M.build_model(cfg, seed=0).eval().requires_grad_(False)  # as ui.load_model makes it
    x, y = pair.probe_batch(cfg, 8)
    finer = []
    monkeypatch.setattr(runs, "attach", lambda key, make, cost: finer.append(make) or runs.Watch.__new__(runs.Watch))
    monkeypatch.setattr(runs.Watch, "snapshot", lambda self: runs.Snapshot(runs.Status(runs.State.QUEUED), []))
    ls.finer_grid(p, 1.0, 0)
    images = TensorDataset(torch.zeros(1500, 3, 16, 16), torch.arange(1500) % 10)  # 9 MB, as large as the built-in
    race = T.race_job(cfg, T.DataRequest.for_race(cfg, T.DataSource.BUILTIN), (images, images, list("abcdefghij")),
                      T.recipe_for(cfg).config)
    sent = {
        "signal flow": lambda progress: sf.measure(sf.Settings(sf.cifar_config(20, True)), None, "cpu", progress),
        "lesion": lambda cb: lesion.study_pair(p, pair.EVAL_IMAGES, cb),
        "landscape": lambda cb: ls.coarse_grids(p, 1.0, 0, cb), "landscape, finer grid": finer[0],
        "paths": lambda cb: paths.gradient_by_path_length(model, x, y, 0, on_progress=cb, exact=True),
        "shattered": lambda cb: shattered.depth_curve(shattered.SweepConfig(), on_progress=cb, seeds=(0, 1)),
        "race": race.make}
    sizes = {kind: len(cluster.dumps(fn)) for kind, fn in sent.items()}
    assert max(sizes.values()) < 1e6, sizes
    assert len(cloudpickle.dumps(sent["lesion"])) > 4e6  # what it was
    back = pickle.loads(cluster.dumps((p, p.plain, model)))
    assert back[0] is p and back[1] is p.plain  # where it lands, the worker's own (here: this process's)
    assert all(torch.equal(a, b) for a, b in zip(back[2].state_dict().values(), model.state_dict().values()))
    model.train()  # a network being trained is the run's own: sent as it is
    assert len(cluster.dumps(model)) > 1e6

