"""A classroom on one server: N student sessions over every page, kept alive and rerunning, then closed.

    python -m resviz.tools.load_test --sessions 30 --minutes 3            # starts its own server
    python -m resviz.tools.load_test --url http://127.0.0.1:8501 --pid 1234   # an already running one

Each session is a websocket client (resviz.tools.session: no browser), pages spread round-robin over
resviz.lessons.page_texts(). Every session reruns its page every few seconds until the time is up, then
closes; the script waits ``--settle`` s and reads the server's memory again. Reports time to first render
(connect -> page drawn; median/p95/max), rerun times, disconnects/timeouts, exception boxes and server
tracebacks, and server RSS at start, at peak and after the sessions closed. Prints a table, writes JSON.
Loopback only; every loop is bounded by the deadline and stops by itself.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from resviz.lessons import page_texts
from resviz.tools.server import ROOT, cpu_s, rss_mb, server_tracebacks, start_server, stop_server
from resviz.tools.session import Session


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=30, help="student sessions (default 30)")
    ap.add_argument("--minutes", type=float, default=3.0, help="how long the sessions stay open (default 3)")
    ap.add_argument("--rerun-every", type=float, default=5.0, help="mean seconds between a session's reruns")
    ap.add_argument("--ramp", type=float, default=10.0, help="seconds over which the sessions connect")
    ap.add_argument("--settle", type=float, default=20.0, help="seconds to wait after closing, before the last RSS")
    ap.add_argument("--timeout", type=float, default=180.0, help="seconds one run may take before it counts as lost")
    ap.add_argument("--pages", help="comma-separated URL paths (default: every page in resviz.lessons)")
    ap.add_argument("--url", help="use this running server (loopback) instead of starting one")
    ap.add_argument("--pid", type=int, help="the --url server's process id, for its memory")
    ap.add_argument("--streamlit-arg", action="append", default=[], metavar="OPT",
                    help="extra option for the server this script starts, "
                         "e.g. --streamlit-arg=--runner.postScriptGC=false")
    ap.add_argument("--json", default=str(ROOT / "out" / "load_test.json"), help="where to write the results")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.sessions < 1 or args.minutes <= 0 or args.rerun_every <= 0 or args.ramp < 0 or args.settle < 0:
        ap.error("--sessions must be >= 1; --minutes and --rerun-every > 0; --ramp and --settle >= 0")
    if args.url and not args.url.startswith(("http://127.0.0.1", "http://localhost")):
        ap.error("--url must be a loopback address (http://127.0.0.1:PORT)")
    return args


def assign_pages(n: int, pages: list[str]) -> list[str]:
    """Spread ``n`` sessions round-robin over ``pages``."""
    return [pages[i % len(pages)] for i in range(n)]


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation; NaN for no values."""
    xs = sorted(v for v in values if v is not None and not math.isnan(v))
    if not xs:
        return float("nan")
    pos = (len(xs) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def new_record(page: str) -> dict:
    return {"page": page, "first_render_s": None, "reruns_s": [], "exceptions": [], "errors": [],
            "disconnects": 0, "timeouts": 0, "not_found": 0, "connect_error": None, "client_error": None}


def _note(rec: dict, r) -> None:
    rec["exceptions"] += r.exceptions
    rec["errors"] += r.errors
    rec["disconnects"] += r.status == "disconnected"
    rec["timeouts"] += r.status == "timeout"
    rec["not_found"] += r.page_not_found


def student(*args) -> None:
    """One student (see ``_student``); anything unexpected is recorded, never lost in a thread."""
    try:
        _student(*args)
    except Exception as e:  # noqa: BLE001
        args[-2]["client_error"] = repr(e)


def _student(url: str, page: str, start_at: float, stop_at: float, every: float, timeout: float,
             rec: dict, rng: random.Random) -> None:
    """One student: connect, render the page, rerun it every ~``every`` s until ``stop_at``, close."""
    time.sleep(max(0.0, start_at - time.monotonic()))
    t = time.perf_counter()
    try:
        session = Session(url, timeout=timeout)
    except Exception as e:  # noqa: BLE001 - a refused connection is a result
        rec["connect_error"] = repr(e)
        return
    with session:
        r = session.run(page)
        _note(rec, r)
        if r.status != "ok":
            return
        rec["first_render_s"] = time.perf_counter() - t
        for _ in range(10_000):  # bounded; the deadline ends it long before
            wake = time.monotonic() + every * rng.uniform(0.5, 1.5)
            if wake >= stop_at:
                break
            time.sleep(wake - time.monotonic())
            r = session.run(page)
            _note(rec, r)
            if r.status == "ok":
                rec["reruns_s"].append(r.seconds)
            elif r.status == "disconnected":
                return


def sample_rss(pid: int, stop: threading.Event, samples: list, every: float = 0.5) -> None:
    """Append (seconds since start, RSS MB) every ``every`` s until ``stop`` is set."""
    t0 = time.monotonic()
    while not stop.is_set():
        samples.append((round(time.monotonic() - t0, 2), round(rss_mb(pid), 1)))
        stop.wait(every)


def summarize(records: list[dict], rss: dict | None = None, tracebacks: list[str] | None = None,
              server_cpu_s: float | None = None) -> dict:
    """Figures for the table from the per-session records (RSS at start/peak/after in MB, server CPU seconds)."""
    firsts = [r["first_render_s"] for r in records if r["first_render_s"] is not None]
    reruns = [t for r in records for t in r["reruns_s"]]
    exc = Counter(f"{r['page'] or 'home'}: {e}" for r in records for e in r["exceptions"])
    errs = Counter(f"{r['page'] or 'home'}: {e}" for r in records for e in r["errors"])
    out = {
        "sessions": len(records),
        "rendered": len(firsts),
        "first_render_s": {"median": percentile(firsts, 50), "p95": percentile(firsts, 95),
                           "max": max(firsts, default=float("nan"))},
        "rerun_s": {"n": len(reruns), "median": percentile(reruns, 50), "p95": percentile(reruns, 95),
                    "max": max(reruns, default=float("nan"))},
        "connect_errors": sum(r["connect_error"] is not None for r in records),
        "client_errors": [r["client_error"] for r in records if r.get("client_error")],
        "disconnects": sum(r["disconnects"] for r in records),
        "timeouts": sum(r["timeouts"] for r in records),
        "pages_not_found": sum(r["not_found"] for r in records),
        "exceptions": dict(exc),
        "error_boxes": dict(errs),
        "server_tracebacks": dict(Counter(tracebacks or [])),
        "per_page": {},
        "rss_mb": rss or {},
        "server_cpu_s": server_cpu_s,
        "runs": len(firsts) + len(reruns),
    }
    for page in dict.fromkeys(r["page"] for r in records):
        mine = [r for r in records if r["page"] == page]
        f = [r["first_render_s"] for r in mine if r["first_render_s"] is not None]
        out["per_page"][page or "home"] = {"sessions": len(mine), "first_render_median_s": percentile(f, 50),
                                           "first_render_max_s": max(f, default=float("nan")),
                                           "rerun_median_s": percentile([t for r in mine for t in r["reruns_s"]], 50)}
    return out


def format_table(s: dict) -> str:
    f, r, m = s["first_render_s"], s["rerun_s"], s["rss_mb"]
    rows = [
        ("sessions rendered", f"{s['rendered']} / {s['sessions']}"),
        ("time to first render, median / p95 / max", f"{f['median']:.2f} / {f['p95']:.2f} / {f['max']:.2f} s"),
        (f"rerun ({r['n']} reruns), median / p95 / max", f"{r['median']:.2f} / {r['p95']:.2f} / {r['max']:.2f} s"),
        ("connect errors / disconnects / timeouts", f"{s['connect_errors']} / {s['disconnects']} / {s['timeouts']}"),
        ("pages not found / client errors", f"{s['pages_not_found']} / {len(s['client_errors'])}"),
        ("exception boxes seen", str(sum(s["exceptions"].values()))),
        ("error boxes (st.error) seen", str(sum(s["error_boxes"].values()))),
        ("server tracebacks logged", str(sum(s["server_tracebacks"].values()))),
    ]
    if s.get("server_cpu_s") is not None and s["runs"]:
        rows.append(("server CPU seconds per run (all pages)", f"{s['server_cpu_s'] / s['runs']:.2f} s"))
    if m:
        rows.append(("server RSS start / peak / after close",
                     f"{m['start']:.0f} / {m['peak']:.0f} / {m['after']:.0f} MB"))
    lines = ["| figure | value |", "|---|---|"] + [f"| {a} | {b} |" for a, b in rows]
    lines += ["", "| page | sessions | first render median / max | rerun median |", "|---|---|---|---|"]
    lines += [f"| {p} | {v['sessions']} | {v['first_render_median_s']:.2f} / {v['first_render_max_s']:.2f} s | "
              f"{v['rerun_median_s']:.2f} s |" for p, v in s["per_page"].items()]
    for title, counts in (("Exceptions", s["exceptions"]), ("Error boxes", s["error_boxes"]),
                          ("Server tracebacks", s["server_tracebacks"]),
                          ("Client errors", Counter(s["client_errors"]))):
        lines += [f"\n{title}:"] + [f"  {n}x {text[:200]}" for text, n in counts.items()] if counts else []
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    pages = args.pages.split(",") if args.pages is not None else list(page_texts())
    proc, url, pid = None, args.url, args.pid
    if not url:
        print("starting streamlit…", file=sys.stderr, flush=True)
        proc, url = start_server(extra_args=tuple(args.streamlit_arg))
        pid = proc.pid
    samples: list = []
    stop = threading.Event()
    rss = {}
    try:
        if pid:
            rss["start"], cpu0 = rss_mb(pid), cpu_s(pid)
            threading.Thread(target=sample_rss, args=(pid, stop, samples), daemon=True).start()
        records = [new_record(p) for p in assign_pages(args.sessions, pages)]
        t0 = time.monotonic()
        stop_at = t0 + args.ramp + args.minutes * 60
        threads = [threading.Thread(target=student, daemon=True,
                                    args=(url, rec["page"], t0 + args.ramp * i / args.sessions, stop_at,
                                          args.rerun_every, args.timeout, rec, random.Random(args.seed + i)))
                   for i, rec in enumerate(records)]
        print(f"{args.sessions} sessions over {len(pages)} pages for {args.minutes} min on {url}…",
              file=sys.stderr, flush=True)
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=max(1.0, stop_at + args.timeout - time.monotonic()))
        stuck = sum(t.is_alive() for t in threads)
        server_cpu = cpu_s(pid) - cpu0 if pid else None
        if pid:
            rss["peak"] = max((m for _, m in samples), default=rss["start"])
            print(f"sessions closed; waiting {args.settle:.0f} s…", file=sys.stderr, flush=True)
            time.sleep(args.settle)
            rss["after"] = rss_mb(pid)
    finally:
        stop.set()
        if proc:
            stop_server(proc)
    tracebacks = server_tracebacks(proc.log_path) if proc else []
    summary = summarize(records, rss, tracebacks, server_cpu)
    summary.update(url=url, streamlit_args=args.streamlit_arg, minutes=args.minutes, rerun_every_s=args.rerun_every,
                   stuck_sessions=stuck,
                   pages=pages, server_log=str(proc.log_path) if proc else None)
    print(format_table(summary))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"summary": summary, "sessions": records,
                                           "rss_samples": samples}, indent=2, default=str))
    print(f"\nwrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
