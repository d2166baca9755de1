"""The GPU check's helper (scripts/device_check.sh): times the same work on the CPU and on cuda, then prints the
check's one table from the GPU tests (JUnit XML), the benchmark (bench.json) and those timings.

    PYTHONPATH=. python scripts/device_report.py time --json out/device/timing.json
    PYTHONPATH=. python scripts/device_report.py table --dir out/device --seconds 312

Timings are wall clock around work that ends in a host copy (so the GPU has finished), after one warm-up run;
the CPU uses every core torch sees. The fastest of ``--repeat`` runs is reported (resviz.bench.best_of).
"""
from __future__ import annotations

import argparse
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from resviz.bench import best_of


def workloads(device: str) -> dict:
    """What a class does most, on ``device``: name -> (function, unit of one run)."""
    import torch

    import resviz
    from resviz.inputs import data
    from resviz.lessons import feature_maps, training

    r50 = resviz.get_config("resnet50")
    model = resviz.build_model(r50, seed=0, device=device).train()
    x8, y8 = (t.to(device) for t in resviz.sample_batch(r50, batch=8))
    r20 = resviz.get_config("resnet20")
    train, test, _ = data.builtin_dataset(num_classes=r20.num_classes, n_train=640, n_test=32, size=32, seed=0)

    def fwd_bwd():
        torch.nn.functional.cross_entropy(model(x8), y8).backward()
        float(model.fc.weight.grad.sum())  # waits for the GPU

    def race(steps: int = 20):
        cfg = training.RaceConfig(steps=steps, eval_every=0, device=device)
        list(training.race(training.make_race_models(r20, seed=0), train, test, cfg))

    return {
        "ResNet-50 forward + backward, batch 8, 224x224": (fwd_bwd, "s"),
        "signal-flow statistics, ResNet-50, batch 8, 224x224": (lambda: resviz.collect_stats(model, x8, y8), "s"),
        "feature maps + Grad-CAM, ResNet-50, one 224x224 picture": (
            lambda: feature_maps.capture(model.eval(), x8[:1]), "s"),
        "training race, ResNet-20 + plain twin, 20 steps of batch 32": (race, "s"),
    }


def time_devices(repeat: int, json_path: Path) -> dict:
    """Each workload on cuda (first: the figures that matter) and on the CPU; the JSON is rewritten after each
    figure, so a check stopped at its time cap still reports what it measured."""
    import torch

    result = {"machine": machine(), "rows": {}}
    for device in (["cuda"] if torch.cuda.is_available() else []) + ["cpu"]:
        for what, (fn, unit) in workloads(device).items():
            # best_of warms up once first: cuDNN picks its kernels on the first run
            result["rows"].setdefault(what, {"unit": unit})[device] = best_of(fn, repeat)
            json_path.write_text(json.dumps(result, indent=2))
            print(f"{what} on {device}: {result['rows'][what][device]:.4f} s", flush=True)
    return result


def machine() -> str:
    import os

    import streamlit
    import torch

    gpu = (f"{torch.cuda.get_device_name(0)} ({torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB), "
           f"CUDA {torch.version.cuda}") if torch.cuda.is_available() else "no GPU"
    return (f"{gpu}; {os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads; torch {torch.__version__}, "
            f"streamlit {streamlit.__version__}, Python {sys.version.split()[0]}")


def test_rows(xml_path: Path) -> list[tuple[str, str, str, str]]:
    """(part, test, result, detail) per test case of a JUnit XML report."""
    if not xml_path.exists():
        return [("GPU tests", "(no report)", "NOT RUN", "see gpu_tests.log")]
    rows = []
    for case in ET.parse(xml_path).getroot().iter("testcase"):
        result, detail = "passed", ""
        for tag, word in (("failure", "FAILED"), ("error", "ERROR"), ("skipped", "skipped")):
            node = case.find(tag)
            if node is not None:
                result, detail = word, (node.get("message") or "").splitlines()[0][:150] if node.get("message") else ""
        gaps = [f"{p.get('name').removeprefix('max_abs_diff ')} {p.get('value')}" for p in case.iter("property")
                if p.get("name", "").startswith("max_abs_diff")]
        if gaps and result == "passed":
            detail = "largest CPU-to-GPU difference: " + ", ".join(gaps)
        rows.append(("GPU test", case.get("name"), result, detail))
    return rows


def bench_rows(path: Path) -> list[tuple[str, str, str, str]]:
    if not path.exists():
        return [("benchmark", "(no bench.json)", "NOT RUN", "see bench.log")]
    rows = []
    for r in json.loads(path.read_text())["rows"]:
        ok = {True: "met", False: "NOT MET", None: "report"}[r["ok"]]
        rows.append(("benchmark", r["figure"], f"{r['value']:.3g} {r['unit']}".strip(),
                     f"target {r['target']}: {ok}; baseline {r['baseline']}"))
    return rows


def timing_rows(path: Path) -> list[tuple[str, str, str, str]]:
    if not path.exists():
        return [("CPU vs GPU", "(no timing.json)", "NOT RUN", "see timing.log")]
    rows = []
    for what, r in json.loads(path.read_text())["rows"].items():
        cuda, cpu = r.get("cuda"), r.get("cpu")
        result = f"{cuda * 1000:.1f} ms on cuda" if cuda else f"{cpu * 1000:.0f} ms on the CPU (no GPU)"
        if cuda and cpu:
            detail = f"{cpu * 1000:.0f} ms on the CPU: {cpu / cuda:.1f}x faster on the GPU"
        else:
            detail = "the CPU run did not finish within the cap" if cuda else ""
        rows.append(("CPU vs GPU", what, result, detail))
    return rows


def stage_rows(path: Path) -> list[tuple[str, str, str, str]]:
    """One row per stage of the check: its exit status and time (stages.txt: name, rc, seconds, cap)."""
    rows = []
    for line in path.read_text().splitlines() if path.exists() else []:
        *name, rc, took, cap = line.split()
        result = {"0": "ok", "124": f"TIMED OUT at its {cap} s cap"}.get(rc, f"FAILED (exit {rc})")
        rows.append(("stage", " ".join(name), result, f"{took} s"))
    return rows


def table(out_dir: Path, total_s: float | None) -> str:
    timing = out_dir / "timing.json"
    head = json.loads(timing.read_text())["machine"] if timing.exists() else "machine: see timing.log"
    rows = (stage_rows(out_dir / "stages.txt") + test_rows(out_dir / "gpu_tests.xml") + timing_rows(timing)
            + bench_rows(out_dir / "bench.json"))
    cell = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    lines = [f"Machine: {head}" + (f"; the whole check took {total_s:.0f} s" if total_s else ""), "",
             "| part | what | result | detail |", "|---|---|---|---|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    failed = sum(r[2].startswith(("FAILED", "ERROR", "NOT RUN", "TIMED OUT")) for r in rows)
    lines += ["", f"{len(rows)} rows, {failed} failed or not run."]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("time", help="time the workloads on the CPU and on cuda")
    t.add_argument("--json", required=True)
    t.add_argument("--repeat", type=int, default=3)
    tb = sub.add_parser("table", help="print the one table")
    tb.add_argument("--dir", required=True, help="the folder with gpu_tests.xml, bench.json and timing.json")
    tb.add_argument("--seconds", type=float)
    args = ap.parse_args(argv)
    if args.cmd == "time":
        time_devices(args.repeat, Path(args.json))
    else:
        print(table(Path(args.dir), args.seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
