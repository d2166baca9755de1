"""scripts/device_check.sh and its helper: the script parses, names benchmarks that exist, and its one table says
what each test, timing and benchmark gave (built here from sample reports: no GPU needed)."""
from __future__ import annotations

import importlib.util
import json
import re
import subprocess

import pytest

from helpers import ROOT

SCRIPT = ROOT / "scripts" / "device_check.sh"


@pytest.fixture(scope="module")
def report():
    spec = importlib.util.spec_from_file_location("device_report", ROOT / "scripts" / "device_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_script_parses():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_default_benchmarks_exist():
    default = re.search(r"BENCH=\$\{BENCH:-([^}]+)\}", SCRIPT.read_text()).group(1).split()
    assert default and all((ROOT / "resviz" / "bench" / f"{name}.py").exists() for name in default), default


def test_stage_caps_keep_the_check_under_eight_minutes():
    caps = [int(c) for c in re.findall(r"^stage .*? (\d+) \"\$OUT_DIR", SCRIPT.read_text(), re.M)]
    assert len(caps) == 4 and sum(caps) <= 470, caps


JUNIT = """<?xml version="1.0"?><testsuites><testsuite name="pytest">
<testcase classname="tests.test_gpu" name="test_race_matches_cpu">
  <properties><property name="max_abs_diff resnet20 loss per step" value="3.1e-06"/></properties></testcase>
<testcase classname="tests.test_gpu" name="test_statistics_match_cpu"><failure message="AssertionError: act_rms">x
</failure></testcase>
<testcase classname="tests.test_gpu" name="test_out_of_memory"><skipped message="needs a CUDA GPU"/></testcase>
</testsuite></testsuites>"""


def test_table_reports_every_part(report, tmp_path):
    (tmp_path / "gpu_tests.xml").write_text(JUNIT)
    (tmp_path / "stages.txt").write_text("setup 0 12 100\nGPU tests 1 80 180\nbenchmark 124 120 120\n")
    (tmp_path / "timing.json").write_text(json.dumps({"machine": "NVIDIA H200", "rows": {
        "ResNet-50 forward + backward": {"unit": "s", "cuda": 0.01, "cpu": 0.5}}}))
    table = report.table(tmp_path, 300)
    rows = {line.split(" | ")[1]: line for line in table.splitlines() if line.startswith("| ")}
    assert "largest CPU-to-GPU difference: resnet20 loss per step 3.1e-06" in rows["test_race_matches_cpu"]
    assert "FAILED" in rows["test_statistics_match_cpu"] and "skipped" in rows["test_out_of_memory"]
    assert "10.0 ms on cuda" in rows["ResNet-50 forward + backward"] and "50.0x faster" in rows[
        "ResNet-50 forward + backward"]
    assert "TIMED OUT at its 120 s cap" in rows["benchmark"] and "FAILED (exit 1)" in rows["GPU tests"]
    assert "NOT RUN" in table  # no bench.json
    assert table.startswith("Machine: NVIDIA H200; the whole check took 300 s")
    assert table.rstrip().endswith("4 failed or not run.")  # the failed test, the failed and timed-out stages, bench
