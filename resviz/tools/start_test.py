"""The whole class presses Start: N sessions start the Training race within a window, on the same settings and on
different settings (seed i); per session, the time from the click to the first chart and to the finished race.

    python -m resviz.tools.start_test --sessions 5 --steps 30             # alone, same, different (own server)
    python -m resviz.tools.start_test --modes same --sessions 30 --window 10
    python -m resviz.tools.start_test --url http://127.0.0.1:8501 --pid 1234
    python -m resviz.tools.start_test --app-dir /tmp/before     # the app of another checkout (git archive)

Each session is a websocket client (``resviz.tools.session``): it opens the page, sets the race's widgets by key,
waits for its moment in the window (sessions spread evenly over ``--window`` s) and presses Start; then it reads
what the server streams. First chart: the first plotly element drawn after the click. Finished: the page draws
the download button ``tr_save`` (the page shows it once the race is over). It works whether the page trains
inside the click's script run (the race loop in the page) or draws a shared run from a fragment with
``run_every`` (the client sends the fragment's reruns as the browser's timer does). Texts that mention the queue
are kept, to show what queued students saw. "alone" is one session by itself: the baseline the targets of
issue 13 compare with. Loopback only; every wait is bounded by ``--timeout``. Its own server runs without the
warm-up (``--warm-up`` keeps it): measured with it, the warm-up's background pages made 100-step races 1.4x slower.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import threading
import time
from pathlib import Path

from resviz.tools.server import ROOT, cpu_s, rss_mb, server_tracebacks, start_server, stop_server
from resviz.tools.session import RunResult, Session

PAGE = "training"
START, DONE = "tr_start", "tr_save"  # the Start button; the download button a finished race draws
QUEUE_TEXT = re.compile(r"queue|place|position|waiting", re.I)
MODES = ("alone", "same", "different")


class StartSession(Session):
    """A ``Session`` that times what it sees after Start and runs the page's auto-rerun fragments."""

    def __init__(self, base_url: str, timeout: float, page: str = PAGE):
        super().__init__(base_url, timeout)
        self.page = page
        self.clicked: float | None = None  # perf_counter at the click
        self.first_chart_s: float | None = None
        self.finished_s: float | None = None
        self.fragments: dict[str, float] = {}  # fragment id -> seconds between its automatic reruns
        self.queue_texts: list[str] = []
        self.last_texts: list[str] = []  # what the last run drew (the finished page's words)

    def _since_click(self) -> float | None:
        return None if self.clicked is None else time.perf_counter() - self.clicked

    def _read(self, msg, res: RunResult, t0: float) -> bool:
        kind = msg.WhichOneof("type")
        if kind == "auto_rerun":
            self.fragments[msg.auto_rerun.fragment_id] = max(0.1, msg.auto_rerun.interval)
        elif kind == "stop_auto_rerun":
            for fid in msg.stop_auto_rerun.fragment_ids:
                self.fragments.pop(fid, None)
        return super()._read(msg, res, t0)

    def _element(self, el, res: RunResult, t0: float) -> None:
        super()._element(el, res, t0)
        since = self._since_click()
        if since is None:
            return
        kind = el.WhichOneof("type")
        if kind == "plotly_chart" and self.first_chart_s is None:
            self.first_chart_s = since
        if kind in ("download_button", "button") and getattr(el, kind).id.endswith("-" + DONE):
            self.finished_s = self.finished_s or since
        body = getattr(getattr(el, kind), "body", "") if kind in ("markdown", "alert") else ""
        if body and QUEUE_TEXT.search(body) and body not in self.queue_texts[-1:]:
            self.queue_texts.append(body[:200])

    def press_start(self, widgets: dict) -> RunResult:
        """Set ``widgets``, click Start; returns when that script run ends."""
        self.run(self.page, widgets=widgets)  # the values first, as a student sets them before clicking
        self.clicked = time.perf_counter()
        res = self.run(self.page, click=START)
        self.last_texts = res.texts
        return res

    def run_fragment(self, fragment_id: str) -> RunResult:
        """One automatic rerun of a fragment, as the frontend's ``run_every`` timer sends it."""
        res = RunResult(page=self.page)
        states = list(self._states.values())

        def build(m):
            m.rerun_script.page_name = self.page
            m.rerun_script.page_script_hash = self.page_hashes.get(self.page, "")
            m.rerun_script.fragment_id = fragment_id
            m.rerun_script.is_auto_rerun = True
            m.rerun_script.widget_states.widgets.extend(states)

        t = time.perf_counter()
        try:
            self.drain()
            self._send(build)
            while not self._read(self._recv(self.timeout), res, t):
                pass
        except TimeoutError:
            res.status = "timeout"
        except Exception:  # noqa: BLE001 - a closed connection is a result
            res.status = "disconnected"
        res.seconds = time.perf_counter() - t
        return res

    def follow(self, deadline: float) -> int:
        """Run the page's fragments on their timers until the race is finished or ``deadline``; returns reruns."""
        reruns = 0
        while self.finished_s is None and self.fragments and time.monotonic() < deadline:
            interval = min(self.fragments.values())
            time.sleep(min(interval, max(0.0, deadline - time.monotonic())))  # the frontend's timer
            for fid in list(self.fragments):
                r = self.run_fragment(fid)
                self.last_texts = r.texts or self.last_texts
                reruns += 1
                if r.status != "ok" or r.exceptions:
                    return reruns
        return reruns


def new_record(mode: str, index: int, seed: int) -> dict:
    return {"mode": mode, "session": index, "seed": seed, "page_open_s": None, "click_at_s": None,
            "first_chart_s": None, "finished_s": None, "click_run_s": None, "fragment_reruns": 0,
            "queue_texts": [], "final_texts": [], "exceptions": [], "errors": [], "status": "not started",
            "client_error": None}


def student(url: str, rec: dict, widgets: dict, barrier: threading.Barrier, t0: list, at: float,
            timeout: float, page: str = PAGE) -> None:
    """One student (see ``_student``); anything unexpected is recorded, never lost in a thread."""
    try:
        _student(url, rec, widgets, barrier, t0, at, timeout, page)
    except Exception as e:  # noqa: BLE001
        rec["client_error"] = repr(e)
        if not barrier.broken:
            barrier.abort()


def _student(url: str, rec: dict, widgets: dict, barrier: threading.Barrier, t0: list, at: float,
             timeout: float, page: str) -> None:
    """Open the page, wait for everyone, press Start ``at`` s into the window, read until finished."""
    deadline = time.monotonic() + timeout
    with StartSession(url, timeout, page) as s:
        t = time.perf_counter()
        r = s.run(page)
        rec["page_open_s"] = time.perf_counter() - t
        if not r.ok:
            rec["status"], rec["exceptions"] = f"page did not open: {r.status}", r.exceptions
            barrier.abort()
            return
        barrier.wait(timeout)  # every session has the page open: the window starts now
        time.sleep(max(0.0, t0[0] + at - time.monotonic()))
        rec["click_at_s"] = time.monotonic() - t0[0]
        r = s.press_start(widgets)
        rec["click_run_s"] = r.seconds
        rec["fragment_reruns"] = s.follow(deadline) if r.ok else 0
        rec.update(first_chart_s=s.first_chart_s, finished_s=s.finished_s, queue_texts=s.queue_texts,
                   final_texts=[t[:200] for t in s.last_texts[-6:]],
                   exceptions=r.exceptions, errors=r.errors,
                   status="finished" if s.finished_s is not None else f"not finished ({r.status})")


def seed_for(mode: str, index: int) -> int:
    """Each mode races its own seeds: a server keeps finished runs, so "same" must not find "alone"'s race done."""
    return {"alone": 0, "same": 1}.get(mode, 2 + index)


def measure(url: str, mode: str, sessions: int, steps: int, window: float, timeout: float,
            page: str = PAGE) -> list[dict]:
    """``sessions`` students press Start within ``window`` s; ``mode`` 'different' gives student i seed 2 + i.

    The page must have the race's widgets ``tr_steps``, ``tr_seed``, ``tr_start`` and, once finished, ``tr_save``.
    """
    n = 1 if mode == "alone" else sessions
    records = [new_record(mode, i, seed_for(mode, i)) for i in range(n)]
    t0: list[float] = []
    barrier = threading.Barrier(n, action=lambda: t0.append(time.monotonic()))
    threads = [threading.Thread(target=student, daemon=True, args=(
        url, rec, {"tr_steps": steps, "tr_seed": rec["seed"]}, barrier, t0, window * i / n, timeout, page))
        for i, rec in enumerate(records)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + window + 30)
    for t, rec in zip(threads, records):
        if t.is_alive():
            rec["status"] = "stuck (client still running at the deadline)"
    return records


def summarize(records: list[dict]) -> dict:
    """Per mode: sessions finished, time to first chart and to finished race (median / max, from each click)."""
    out = {}
    for mode in dict.fromkeys(r["mode"] for r in records):
        mine = [r for r in records if r["mode"] == mode]
        first = [r["first_chart_s"] for r in mine if r["first_chart_s"] is not None]
        done = [r["finished_s"] for r in mine if r["finished_s"] is not None]
        out[mode] = {"sessions": len(mine), "finished": len(done), "charted": len(first),
                     "first_chart_s": _spread(first), "finished_s": _spread(done),
                     "saw_queue_texts": sum(bool(r["queue_texts"]) for r in mine),
                     "exceptions": sum(len(r["exceptions"]) for r in mine),
                     "errors": sum(len(r["errors"]) for r in mine)}
    return out


def _spread(xs: list[float]) -> dict:
    return {"median": statistics.median(xs) if xs else float("nan"), "max": max(xs, default=float("nan"))}


def format_table(summary: dict, records: list[dict]) -> str:
    lines = ["| mode | finished | first chart median / max | finished race median / max | saw queue texts |",
             "|---|---|---|---|---|"]
    for mode, s in summary.items():
        f, d = s["first_chart_s"], s["finished_s"]
        lines.append(f"| {mode} | {s['finished']} / {s['sessions']} | {f['median']:.1f} / {f['max']:.1f} s | "
                     f"{d['median']:.1f} / {d['max']:.1f} s | {s['saw_queue_texts']} |")
    lines += ["", "| mode | session | seed | clicked at | first chart | finished | status |",
              "|---|---|---|---|---|---|---|"]
    for r in records:
        lines.append(f"| {r['mode']} | {r['session']} | {r['seed']} | {_s(r['click_at_s'])} | "
                     f"{_s(r['first_chart_s'])} | {_s(r['finished_s'])} | {r['status']} |")
    problems = [f"  {r['mode']} #{r['session']}: {p}" for r in records
                for p in [*r["exceptions"], *r["errors"], *([r["client_error"]] if r["client_error"] else [])]]
    return "\n".join(lines + (["", "Problems:", *problems] if problems else []))


def _s(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f} s"


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=5, help="students pressing Start (default 5)")
    ap.add_argument("--steps", type=int, default=30, help="race steps (default 30: short, the machine is shared)")
    ap.add_argument("--window", type=float, default=10.0, help="seconds over which the Starts are spread")
    ap.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds a session may take, click to finish")
    ap.add_argument("--warm-up", action="store_true", help="leave the server's warm-up on (it opens every page once "
                    "and computes their results, competing with the races it measures; a class presses Start minutes "
                    "after the teacher started the server, when it is over)")
    ap.add_argument("--url", help="use this running server (loopback) instead of starting one")
    ap.add_argument("--pid", type=int, help="the --url server's process id, for its memory and CPU")
    ap.add_argument("--app-dir", default=str(ROOT), help="start the app of this checkout (a 'before' figure: "
                    "git archive <commit> | tar -x -C DIR); default: this one")
    ap.add_argument("--streamlit-arg", action="append", default=[], metavar="OPT",
                    help="extra option for the server this script starts")
    ap.add_argument("--json", default=str(ROOT / "out" / "start_test.json"), help="where to write the results")
    args = ap.parse_args(argv)
    modes = args.modes.split(",")
    if args.sessions < 1 or args.steps < 1 or args.window < 0 or args.timeout <= 0 or not set(modes) <= set(MODES):
        ap.error(f"--sessions and --steps >= 1, --window >= 0, --timeout > 0, --modes of {MODES}")
    if args.url and not args.url.startswith(("http://127.0.0.1", "http://localhost")):
        ap.error("--url must be a loopback address (http://127.0.0.1:PORT)")
    args.modes = modes
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    proc, url, pid = None, args.url, args.pid
    if not url:
        print("starting streamlit…", file=sys.stderr, flush=True)
        proc, url = start_server(cwd=args.app_dir, extra_args=tuple(args.streamlit_arg),
                                 env=None if args.warm_up else {"RESVIZ_WARM_UP": "0"})
        pid = proc.pid
    records, server = [], {}
    try:
        cpu0 = cpu_s(pid) if pid else None
        for mode in args.modes:
            print(f"{mode}: {1 if mode == 'alone' else args.sessions} session(s), {args.steps} steps, Starts "
                  f"within {args.window:g} s on {url}…", file=sys.stderr, flush=True)
            records += measure(url, mode, args.sessions, args.steps, args.window, args.timeout)
        if pid:
            server = {"cpu_s": cpu_s(pid) - cpu0, "rss_mb": rss_mb(pid)}
    finally:
        if proc:
            stop_server(proc)
    summary = summarize(records)
    tracebacks = server_tracebacks(proc.log_path) if proc else []
    print(format_table(summary, records))
    if tracebacks:
        print("\nServer tracebacks:\n" + "\n".join(f"  {t}" for t in tracebacks))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"summary": summary, "sessions": records, "server": server,
                                           "tracebacks": tracebacks, "args": vars(args), "url": url},
                                          indent=2, default=str))
    print(f"\nwrote {args.json}", file=sys.stderr)
    return 0 if all(r["status"] == "finished" for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
