"""The tools that drive the app from outside (resviz.tools): the websocket session client, server memory and CPU,
the load test's maths, and the benchmark's list of widgets."""
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from resviz.bench import app as app_bench
from resviz.lessons import LESSONS
from resviz.tools import load_test as lt
from resviz.tools.server import ROOT, cpu_s, rss_mb, server_tracebacks, start_server, stop_server
from resviz.tools.session import Session, widget_key


def test_session_client_renders_home_of_the_real_app(app_server):
    with Session(app_server, timeout=120) as s:
        r = s.run("")
        assert r.status == "ok" and r.exceptions == [] and not r.page_not_found, r
        assert r.ok and r.elements > 3 and 0 < r.first_element_s <= r.seconds
        assert "" in s.page_hashes and "architecture" in s.page_hashes  # from the navigation message
        assert s.heartbeat() > 0  # the same session stays open and answers
        assert "sel_family" in s.run("architecture").keys  # the sidebar's widgets are drawn on every page
        missing = s.run("no_such_page")
        assert missing.page_not_found and not missing.ok


TINY_APP = """
import streamlit as st
st.title("t")
values = [st.checkbox("c", key="c"), st.number_input("n", 0, 10, 1, key="n"), st.selectbox("s", ["a", "b"], key="s"),
          st.radio("r", ["x", "y"], key="r"), st.slider("sl", 0, 10, 2, key="sl"),
          st.select_slider("ss", [8, 16, 32], value=8, key="ss"), st.text_input("t", "hi", key="t"),
          st.button("go", key="go")]
st.markdown("values " + " ".join(map(str, values)))
if st.toggle("fail", key="fail"):
    st.error("friendly")
    raise ValueError("boom")
"""


@pytest.fixture(scope="module")
def tiny_server(tmp_path_factory):
    """A one-page app with one widget of each kind the client can set, on its own server."""
    folder = tmp_path_factory.mktemp("tiny_app")
    (folder / "app.py").write_text(TINY_APP)
    proc, url = start_server(script="app.py", cwd=folder, log_path=folder / "log.txt")
    try:
        yield url, folder / "log.txt"
    finally:
        stop_server(proc)


def test_session_client_sets_widgets_by_key_and_clicks_once(tiny_server):
    with Session(tiny_server[0], timeout=60) as s:
        first = s.run()
        assert first.ok and "values False 1 a x 2 8 hi False" in first.texts, first
        assert first.keys == {"c": "checkbox", "n": "number_input", "s": "selectbox", "r": "radio", "sl": "slider",
                              "ss": "select_slider", "t": "text_input", "go": "button", "fail": "toggle"}
        changed = s.run(widgets={"c": True, "n": 7, "s": "b", "r": "y", "sl": 9, "ss": 32, "t": "yo"}, click="go")
        assert "values True 7 b y 9 32 yo True" in changed.texts, changed
        again = s.run()  # values stay as the student left them; the click does not repeat
        assert "values True 7 b y 9 32 yo False" in again.texts, again
        with pytest.raises(KeyError, match="no_such_key"):
            s.run(widgets={"no_such_key": 1})
        with pytest.raises(ValueError, match="not one of the options"):
            s.run(widgets={"s": "c"})


def test_session_client_reports_exceptions_and_error_boxes(tiny_server):
    url, log = tiny_server
    with Session(url, timeout=60) as s:
        s.run()
        r = s.run(widgets={"fail": True})
    assert r.status == "ok" and len(r.exceptions) == 1 and r.errors == ["friendly"] and not r.ok
    assert "ValueError: boom" in server_tracebacks(log)


def test_widget_key_is_read_back_from_the_element_id():
    assert widget_key("$$ID-0123abcd-tr_steps") == "tr_steps"
    assert widget_key("$$ID-0123abcd-my-key-with-dashes") == "my-key-with-dashes"
    assert widget_key("$$ID-0123abcd-None") is None and widget_key("") is None


def test_bench_changes_one_named_widget_on_every_lesson():
    assert set(app_bench.PAGE_WIDGETS) == {lesson.name for lesson in LESSONS}
    for lesson in LESSONS:
        key, _ = app_bench.PAGE_WIDGETS[lesson.name]
        assert f'key="{key}"' in (ROOT / lesson.page).read_text(), (lesson.name, key)


def _own_rss_mb() -> float:
    line = next(ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def test_rss_and_cpu_count_children():
    burn = ("import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"
            "print(time.process_time(), flush=True)\ntime.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", burn], stdout=subprocess.PIPE, text=True)
    try:
        burned = float(child.stdout.readline())  # the child's own CPU seconds, once it has burned 0.3 s
        child_cpu, child_rss = cpu_s(child.pid), rss_mb(child.pid)
        assert burned >= 0.3 and child_cpu >= burned - 0.02 and child_rss > 2  # /proc counts in 0.01 s ticks
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
    args = lt.parse_args(["--sessions", "3", "--minutes", "0.5", "--pages", "a,b"])
    assert (args.sessions, args.minutes, args.pages, args.url) == (3, 0.5, "a,b", None)
    gc_off = "--runner.postScriptGC=false"
    assert lt.parse_args([f"--streamlit-arg={gc_off}"]).streamlit_arg == [gc_off]
    for bad in (["--sessions", "0"], ["--minutes", "-1"], ["--url", "http://example.com:80"]):
        with pytest.raises(SystemExit):
            lt.parse_args(bad)
    assert lt.assign_pages(5, ["", "a"]) == ["", "a", "", "a", ""]


def test_load_script_summary_on_fake_timings():
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
