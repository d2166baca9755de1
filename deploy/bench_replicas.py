"""30 students press Start on the same race settings: across 3 replicas with a Dask cluster, and on one replica alone
(issue 22 §4). Per layout: how many races were trained, and each student's finish time against one race alone.

    python -m deploy.bench_replicas                                  # 3 replicas + 2 workers, then 1 replica
    python -m deploy.bench_replicas --sessions 30 --steps 100 --workers 1 --layouts cluster

Each student is a websocket client (``resviz.tools.start_test``: it opens the Training race, sets the steps and seed,
presses Start within ``--window`` s and runs the page's timed fragments until the race is finished); through the
proxy, HAProxy spreads new students over the replicas (least connections). "alone" is one student first, on the
same deploy, with another seed (a server keeps finished runs). Races trained are counted two ways, since a race may
run on a worker or on a replica's own engine: the Dask tasks the workers executed (the scheduler's task stream),
and the CPU seconds every replica and worker spent on the "same" phase over what one race alone cost them (about
1: one race, the rest what 30 watchers cost; about 3: each replica trained its own). Ratios: each student's
click-to-finished time over alone's (a student who joins a running race finishes sooner than its first student),
and the race's wall time, first Start to last finish, over alone's. On a loaded machine the wall ratios follow
the load (alone and "same" run minutes apart); the CPU ratio does not. Replicas
run without their warm-up (it would compete with the races); the page is opened once on each replica first.
Prints a table with the load average, writes JSON. Loopback only; everything it starts is stopped.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from deploy import start
from resviz.tools import start_test
from resviz.tools.server import ROOT, cpu_s, start_server, stop_server
from resviz.tools.session import Session

LAYOUTS = ("cluster", "one")


def open_page(url: str, timeout: float) -> None:
    """Open the race page once (its imports and the data set are then loaded in that process)."""
    with Session(url, timeout) as s:
        s.run(start_test.PAGE)


def dask_tasks(address: str):
    """A context whose value, a list, holds the keys of the tasks the workers ran meanwhile (Dask's task stream)."""
    from distributed import Client, get_task_stream

    @contextlib.contextmanager
    def stream():
        keys: list[str] = []
        with Client(address, set_as_default=False, timeout=60) as client, get_task_stream(client) as ts:
            yield keys
        keys += sorted({str(t["key"]) for t in ts.data})
    return stream()


def phase(url: str, mode: str, args, pids: list[int]) -> tuple[list[dict], float]:
    """Run one mode of start_test against ``url``; returns its records and the CPU seconds ``pids`` spent."""
    cpu0 = sum(cpu_s(p) for p in pids)
    records = start_test.measure(url, mode, args.sessions, args.steps, args.window, args.timeout)
    return records, sum(cpu_s(p) for p in pids) - cpu0


def figures(alone: list[dict], same: list[dict], cpu_alone: float, cpu_same: float) -> dict:
    """Finish ratios against alone and the races the CPU says were trained."""
    base = alone[0]["finished_s"] if alone and alone[0]["finished_s"] else float("nan")
    done = [r["finished_s"] for r in same if r["finished_s"] is not None]
    ratios = sorted(t / base for t in done)
    ends = [r["click_at_s"] + r["finished_s"] for r in same if r["finished_s"] is not None]
    wall = max(ends) - min(r["click_at_s"] for r in same) if ends else float("nan")
    return {"alone_s": base, "finished": len(done), "sessions": len(same),
            "finished_median_s": statistics.median(done) if done else float("nan"),
            "ratio_median": statistics.median(ratios) if ratios else float("nan"),
            "ratio_max": max(ratios, default=float("nan")), "ratios": [round(x, 3) for x in ratios],
            "race_wall_s": wall, "race_wall_ratio": wall / base,
            "cpu_alone_s": cpu_alone, "cpu_same_s": cpu_same,
            "races_by_cpu": cpu_same / cpu_alone if cpu_alone else float("nan"),
            "exceptions": sum(len(r["exceptions"]) for r in same),
            "errors": sum(len(r["errors"]) for r in same)}


def run_cluster(args) -> dict:
    """3 replicas behind HAProxy, with a scheduler and ``--workers`` workers."""
    run_dir = Path(tempfile.mkdtemp(prefix="resviz-bench-replicas-"))
    with start.start_engine(args.workers, run_dir / "engine", port=0) as engine, \
            start.start_cluster(args.replicas, port=0, first_port=0, cache_dir=run_dir / "cache", run_dir=run_dir,
                                scheduler=engine.address) as cluster:
        pids = [r.proc.pid for r in cluster.replicas] + [p.pid for p in engine.workers]
        for r in cluster.replicas:
            open_page(r.url, args.timeout)
        alone, cpu_alone = phase(cluster.url, "alone", args, pids)
        with dask_tasks(engine.address) as tasks:
            same, cpu_same = phase(cluster.url, "same", args, pids)
        out = figures(alone, same, cpu_alone, cpu_same)
        out.update(dask_tasks_same=tasks, sessions_per_replica=cluster.sessions_per_replica(),
                   replicas=args.replicas, workers=args.workers, logs=str(run_dir))
    return {"summary": out, "alone": alone, "same": same}


def run_one(args) -> dict:
    """One replica (``streamlit run``), no cluster: every race on its own engine."""
    proc, url = start_server(cwd=args.app_dir,
                             env={"RESVIZ_WARM_UP": "0", "RESVIZ_CACHE": tempfile.mkdtemp(prefix="resviz-bench-")})
    try:
        open_page(url, args.timeout)
        alone, cpu_alone = phase(url, "alone", args, [proc.pid])
        same, cpu_same = phase(url, "same", args, [proc.pid])
    finally:
        stop_server(proc)
    out = figures(alone, same, cpu_alone, cpu_same)
    out.update(replicas=1, workers=0, pid=proc.pid, log=str(proc.log_path))
    return {"summary": out, "alone": alone, "same": same}


def format_table(results: dict) -> str:
    lines = ["| layout | finished | alone | finished median | ratio median / max | first Start to last finish / alone "
             "| CPU / alone's | Dask tasks |", "|---|---|---|---|---|---|---|---|"]
    for name, res in results.items():
        s = res["summary"]
        tasks = len(s["dask_tasks_same"]) if "dask_tasks_same" in s else "-"
        lines.append(f"| {s['replicas']} replica(s), {s['workers']} workers | {s['finished']} / {s['sessions']} | "
                     f"{s['alone_s']:.1f} s | {s['finished_median_s']:.1f} s | {s['ratio_median']:.2f} / "
                     f"{s['ratio_max']:.2f} | {s['race_wall_ratio']:.2f} | {s['races_by_cpu']:.2f} | {tasks} |")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=30, help="students pressing Start (default 30)")
    ap.add_argument("--steps", type=int, default=100, help="race steps (default 100)")
    ap.add_argument("--window", type=float, default=10.0, help="seconds over which the Starts are spread")
    ap.add_argument("--replicas", type=int, default=3, help="replicas of the cluster layout (default 3)")
    ap.add_argument("--workers", type=int, default=2, help="Dask workers of the cluster layout (default 2)")
    ap.add_argument("--layouts", default=",".join(LAYOUTS), help=f"comma-separated, of {', '.join(LAYOUTS)}")
    ap.add_argument("--app-dir", default=str(ROOT), help="the one-replica layout runs the app of this checkout (a "
                    "'before' figure: git archive <commit> | tar -x -C DIR); default: this one")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds a student may take, click to finish")
    ap.add_argument("--json", default=str(ROOT / "out" / "bench_replicas.json"), help="where to write the results")
    args = ap.parse_args(argv)
    args.layouts = args.layouts.split(",")
    if args.sessions < 1 or args.steps < 1 or args.replicas < 1 or args.workers < 1 or \
            not set(args.layouts) <= set(LAYOUTS):
        ap.error(f"--sessions, --steps, --replicas, --workers >= 1; --layouts of {LAYOUTS}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ["RESVIZ_WARM_UP"] = "0"  # the replicas' warm-up would train nothing but compete with the races
    runners = {"cluster": run_cluster, "one": run_one}
    results, load = {}, {"before": os.getloadavg()}
    for name in args.layouts:
        print(f"{name}: {args.sessions} students, {args.steps} steps, Starts within {args.window:g} s…",
              file=sys.stderr, flush=True)
        results[name] = runners[name](args)
        print(format_table({name: results[name]}), file=sys.stderr, flush=True)
    load["after"] = os.getloadavg()
    print(format_table(results))
    print(f"load average before / after: {load['before']} / {load['after']}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"results": results, "load": load, "args": vars(args)}, indent=2,
                                          default=str))
    print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
