"""The app-level measurement tools: the websocket session client, server memory, and the load script's maths."""
import importlib.util
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from resviz.bench._server import ROOT, Session, cpu_s, rss_mb, server_tracebacks, start_server, stop_server


def _load_script():
    spec = importlib.util.spec_from_file_location("load_test", ROOT / "scripts" / "load_test.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_session_client_renders_home_of_the_real_app(app_server):
    with Session(app_server, timeout=120) as s:
        r = s.run("")
        assert r.status == "ok" and r.exceptions == [] and not r.page_not_found, r
        assert r.ok and r.elements > 3 and 0 < r.first_element_s <= r.seconds
        assert "" in s.page_hashes and "architecture" in s.page_hashes  # from the navigation message
        assert s.heartbeat() > 0  # the same session stays open and answers
        missing = s.run("no_such_page")
        assert missing.page_not_found and not missing.ok


def test_session_client_reports_exceptions_and_error_boxes(tmp_path):
    (tmp_path / "app.py").write_text('import streamlit as st\nst.title("t")\nst.error("friendly")\n'
                                     'raise ValueError("boom")\n')
    proc, url = start_server(script="app.py", cwd=tmp_path, log_path=tmp_path / "log.txt")
    try:
        with Session(url, timeout=60) as s:
            r = s.run("")
    finally:
        stop_server(proc)
    assert r.status == "ok" and len(r.exceptions) == 1 and r.errors == ["friendly"] and not r.ok
    assert "ValueError: boom" in server_tracebacks(tmp_path / "log.txt")


def _own_rss_mb() -> float:
    line = next(ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def test_rss_and_cpu_count_children():
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\ntime.sleep(30)"
    child = subprocess.Popen([sys.executable, "-c", burn])
    try:
        for _ in range(100):  # until the child has burned its 0.3 s of CPU
            if cpu_s(child.pid) >= 0.3:
                break
            time.sleep(0.1)
        child_cpu, child_rss = cpu_s(child.pid), rss_mb(child.pid)
        assert child_cpu >= 0.3 and child_rss > 2  # a python interpreter: several MB
        assert cpu_s(os.getpid()) >= time.process_time() + child_cpu - 0.05  # ours alone + the child's
        assert rss_mb(os.getpid()) - _own_rss_mb() > child_rss / 2  # the child's memory is counted too
    finally:
        child.kill()
        child.wait()


def test_server_tracebacks_takes_the_last_line_of_each(tmp_path):
    log = tmp_path / "log"
    log.write_text("info\nTraceback (most recent call last):\n  File \"x\", line 1\n    f()\nKeyError: 'a'\n"
                   "more info\nTraceback (most recent call last):\n  File \"y\"\nValueError: b\n")
    assert server_tracebacks(log) == ["KeyError: 'a'", "ValueError: b"]


def test_load_script_arguments():
    lt = _load_script()
    args = lt.parse_args(["--sessions", "3", "--minutes", "0.5", "--pages", "a,b"])
    assert (args.sessions, args.minutes, args.pages, args.url) == (3, 0.5, "a,b", None)
    gc_off = "--runner.postScriptGC=false"
    assert lt.parse_args([f"--streamlit-arg={gc_off}"]).streamlit_arg == [gc_off]
    for bad in (["--sessions", "0"], ["--minutes", "-1"], ["--url", "http://example.com:80"]):
        with pytest.raises(SystemExit):
            lt.parse_args(bad)
    assert lt.assign_pages(5, ["", "a"]) == ["", "a", "", "a", ""]


def test_load_script_summary_on_fake_timings():
    lt = _load_script()
    assert lt.percentile([4, 1, 3, 2], 50) == 2.5  # sorted 1 2 3 4: halfway between 2 and 3
    assert lt.percentile([1, 2, 3, 4], 95) == pytest.approx(3.85)  # position 2.85: 3 + 0.85 * (4 - 3)
    assert math.isnan(lt.percentile([], 50))
    recs = [lt.new_record(p) for p in ("", "a", "", "a")]
    for rec, first, reruns in zip(recs, (1.0, 2.0, 4.0, None), ([0.1, 0.3], [0.2], [], [])):
        rec["first_render_s"], rec["reruns_s"] = first, reruns
    recs[1]["exceptions"] = ["ValueError: x", "ValueError: x"]
    recs[2]["disconnects"] = 1
    recs[3]["connect_error"] = "ConnectionRefusedError()"
    s = lt.summarize(recs, {"start": 500.0, "peak": 700.0, "after": 650.0}, ["KeyError: 'k'"], server_cpu_s=3.0)
    assert (s["sessions"], s["rendered"], s["connect_errors"], s["disconnects"]) == (4, 3, 1, 1)
    assert s["first_render_s"] == {"median": 2.0, "p95": pytest.approx(3.8), "max": 4.0}  # 2 + 0.9 * (4 - 2)
    assert (s["rerun_s"]["n"], s["rerun_s"]["median"], s["rerun_s"]["max"]) == (3, 0.2, 0.3)
    assert s["exceptions"] == {"a: ValueError: x": 2}
    assert s["per_page"]["home"]["first_render_median_s"] == 2.5 and s["per_page"]["a"]["sessions"] == 2
    table = lt.format_table(s)
    assert "| sessions rendered | 3 / 4 |" in table and "500 / 700 / 650 MB" in table
    assert "| server CPU seconds per run (all pages) | 0.50 s |" in table  # 3 s over 3 first runs + 3 reruns
    assert "2x a: ValueError: x" in table and "1x KeyError: 'k'" in table
