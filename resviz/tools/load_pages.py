"""Time to a lesson's first chart: N students open the pages of a warmed server at once; per session, the time from
opening the tab until the page's content (its lesson figure) arrives, not only the first script run.

    python -m resviz.tools.load_pages --sessions 30                         # starts its own server, warms it
    python -m resviz.tools.load_pages --url http://127.0.0.1:8501 --sessions 30   # a running (prepared) one

Each session is a websocket client (``resviz.tools.session``: no browser) that also sends its fragments' timed
reruns as the browser does, so a page whose result is computed in the background (first screen, then a progress
bar, then the page reruns with the chart) is timed until the chart. Sessions are spread round-robin over the pages
and open within ``--ramp`` s. What counts as a page's content is ``CONTENT`` below: one element of the main
column, named by kind and widget key; the sidebar (its logo image), controls, text and progress bars never count.

Warm first (skip with ``--no-warm`` on a server ``python -m resviz.prepare`` prepared and a first student visited):
one session visits each page in turn and waits for its content, as the teacher opening the lesson before class;
those first-visit times are reported too. The Training race's content is the replayed default race: a server whose
disk cache holds none shows no chart before Start, so warming trains it once (Start with the page's defaults, as the
teacher would; ``--no-train`` skips it, and the page then counts as "no content", reported, not hidden).
Prints p50/p95/max per page and overall with the machine's load average, writes JSON. Loopback only; every wait
is bounded by ``--timeout``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from resviz.lessons import page_texts
from resviz.tools.load_test import assign_pages, percentile
from resviz.tools.server import ROOT, server_tracebacks, start_server, stop_server
from resviz.tools.session import RunResult, widget_key
from resviz.tools import start_test

NAN = float("nan")
MAIN_CONTAINER = 0  # the first index of a delta's path: 0 the main column, 1 the sidebar


@dataclass(frozen=True)
class Content:
    """The element that is a page's content: its ``kind`` (the Element proto's field) and widget ``key`` (None:
    the first of that kind in the main column)."""
    kind: str
    key: str | None
    what: str  # said in the report


CONTENT = {  # URL path -> the first screen's lesson figure
    "": Content("imgs", None, "the residual-block picture"),
    "architecture": Content("plotly_chart", "arch_graph", "the network graph"),
    "shortcut_lab": Content("table", None, "the fixes' table (the first screen's result; its first figure, "
                                           "sl_product, is two screens down)"),
    "training": Content("plotly_chart", "tr_loss", "the race's loss chart (the replayed default race)"),
    "signal_flow": Content("plotly_chart", "sf_chart_act", "the activations' RMS chart"),
    "feature_maps": Content("plotly_chart", "fm_view_0", "the first of the three block views"),
    "lesion": Content("plotly_chart", "le_chart", "the lesion chart"),
    "paths": Content("plotly_chart", "pa_chart", "the gradient-by-path-length chart"),
    "shattered": Content("plotly_chart", "sh_chart", "the shattered-gradients chart"),
    "landscape": Content("plotly_chart", "ls_1d", "the 1-D loss slice"),
}


def is_content(el, path: list[int], content: Content) -> bool:
    """Whether the element ``el`` drawn at delta ``path`` is ``content``: its kind, its key, in the main column."""
    kind = el.WhichOneof("type")
    if not path or path[0] != MAIN_CONTAINER or kind != content.kind:
        return False
    return content.key is None or widget_key(getattr(getattr(el, kind), "id", "") or "") == content.key


class PageVisit(start_test.StartSession):
    """A student's tab opening one page: notes when the page's content arrives (seconds from ``opened``, the moment
    before the websocket was opened) and runs the page's timed fragments until it does."""

    def __init__(self, base_url: str, timeout: float, page: str, opened: float):
        super().__init__(base_url, timeout, page)
        self.content = CONTENT[page]
        self.opened = opened
        self.content_s: float | None = None
        self._path: list[int] = []
        self.first_run: RunResult | None = None  # the page's first script run (controls, maybe a progress bar)
        self.progressing = False  # a progress bar was drawn since the last round of fragment reruns

    def _read(self, msg, res: RunResult, t0: float) -> bool:
        self._path = list(msg.metadata.delta_path)
        return super()._read(msg, res, t0)

    def _element(self, el, res: RunResult, t0: float) -> None:
        super()._element(el, res, t0)
        self.progressing = self.progressing or el.WhichOneof("type") == "progress"
        if self.content_s is None and is_content(el, self._path, self.content):
            self.content_s = time.perf_counter() - self.opened

    def wait_for_content(self, deadline: float) -> RunResult:
        """Open the page, then run its fragments on their timers while it shows a progress bar (a result on its
        way: the page reruns itself with it), until the content arrives or ``deadline`` (monotonic). A page that
        shows no progress and no content has nothing coming (the race without a replay): no content."""
        self.progressing = False
        res = first = self.first_run = self.run(self.page)
        while (self.content_s is None and self.progressing and self.fragments and res.ok
               and time.monotonic() < deadline):
            self.progressing = False
            time.sleep(min(min(self.fragments.values()), max(0.0, deadline - time.monotonic())))  # the browser's timer
            for fid in list(self.fragments):
                res = self.run_fragment(fid)
                if self.content_s is not None or not res.ok:
                    break
        return res if not res.ok else first


def new_record(page: str) -> dict:
    return {"page": page, "content_s": None, "first_run_s": None, "status": "not started", "exceptions": [],
            "errors": [], "client_error": None}


def visit(url: str, rec: dict, start_at: float, timeout: float) -> None:
    """One student: at ``start_at`` open ``rec['page']`` and wait for its content; the figures go into ``rec``."""
    time.sleep(max(0.0, start_at - time.monotonic()))
    opened = time.perf_counter()
    try:
        with PageVisit(url, timeout, rec["page"], opened) as s:
            r = s.wait_for_content(time.monotonic() + timeout)
            rec.update(content_s=s.content_s, exceptions=r.exceptions, errors=r.errors,
                       first_run_s=s.first_run.seconds if s.first_run else None)
            rec["status"] = "content" if s.content_s is not None else f"no content ({r.status})"
    except Exception as e:  # noqa: BLE001 - a refused or dropped connection is a result
        rec.update(client_error=repr(e), status="client error")


def measure(url: str, pages: list[str], sessions: int, ramp: float, timeout: float) -> list[dict]:
    """``sessions`` students, round-robin over ``pages``, open their page within ``ramp`` s."""
    records = [new_record(p) for p in assign_pages(sessions, pages)]
    t0 = time.monotonic()
    threads = [threading.Thread(target=visit, daemon=True, args=(url, rec, t0 + ramp * i / sessions, timeout))
               for i, rec in enumerate(records)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + ramp + 30)
    for t, rec in zip(threads, records):
        if t.is_alive():
            rec["status"] = "stuck (client still running at the deadline)"
    return records


def warm(url: str, pages: list[str], timeout: float, train: bool = True) -> list[dict]:
    """The teacher's first visit to each page, one after the other (the results a page computes are then ready).
    With ``train``, a Training race page with no replay gets its default race trained (Start, as the teacher
    would press it) and is visited again: the finished default race is what the class then sees replayed."""
    records = [new_record(p) for p in pages]
    for rec in records:
        visit(url, rec, 0.0, timeout)
        if train and rec["page"] == start_test.PAGE and rec["content_s"] is None:
            rec["trained_s"] = train_default_race(url, timeout)
            visit(url, rec, 0.0, timeout)
    return records


def train_default_race(url: str, timeout: float) -> float | None:
    """Press Start on the race page with its default settings and follow it; seconds until finished (None: not)."""
    with start_test.StartSession(url, timeout) as s:
        s.run(start_test.PAGE)
        if s.press_start({}).ok:
            s.follow(time.monotonic() + timeout)
        return s.finished_s


def spread(xs: list[float]) -> dict:
    return {"n": len(xs), "p50": percentile(xs, 50), "p95": percentile(xs, 95), "max": max(xs, default=float("nan"))}


def summarize(records: list[dict]) -> dict:
    """p50/p95/max of the time to content, per page (home is "") and over all sessions; counts of the rest."""
    out = {"sessions": len(records), "overall": spread([r["content_s"] for r in records if r["content_s"] is not None]),
           "per_page": {}, "no_content": sum(r["content_s"] is None for r in records),
           "exceptions": sum(len(r["exceptions"]) for r in records),
           "client_errors": sum(r["client_error"] is not None for r in records)}
    for page in dict.fromkeys(r["page"] for r in records):
        mine = [r for r in records if r["page"] == page]
        out["per_page"][page] = {**spread([r["content_s"] for r in mine if r["content_s"] is not None]),
                                 "sessions": len(mine), "first_run_p50": percentile(
                                     [r["first_run_s"] for r in mine if r["first_run_s"] is not None], 50)}
    return out


def _s(x: float) -> str:
    return "-" if x != x else f"{x:.2f}"  # NaN: no session got there


def format_table(summary: dict, warmed: list[dict] | None = None) -> str:
    lines = ["| page | content | sessions with it | to content p50 / p95 / max (s) | first script run p50 (s) |",
             "|---|---|---|---|---|"]
    for page, s in summary["per_page"].items():
        lines.append(f"| {page or 'home'} | {CONTENT[page].what} | {s['n']} / {s['sessions']} | "
                     f"{_s(s['p50'])} / {_s(s['p95'])} / {_s(s['max'])} | {_s(s['first_run_p50'])} |")
    o = summary["overall"]
    lines.append(f"| **all** | | {o['n']} / {summary['sessions']} | {_s(o['p50'])} / {_s(o['p95'])} / "
                 f"{_s(o['max'])} | |")
    lines.append(f"\nexception boxes: {summary['exceptions']}, client errors: {summary['client_errors']}, "
                 f"load average before / after: {summary.get('load_before')} / {summary.get('load_after')}")
    if warmed:
        lines.append("first visits (warming): " + ", ".join(
            f"{r['page'] or 'home'} {_s(r['content_s']) if r['content_s'] is not None else r['status']}"
            + (f" (after training its default race: {_s(r['trained_s'] or NAN)} s)" if "trained_s" in r else "")
            for r in warmed))
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=30, help="students opening a page (default 30)")
    ap.add_argument("--ramp", type=float, default=5.0, help="seconds over which they open their pages (default 5)")
    ap.add_argument("--pages", help="comma-separated URL paths, '' for home (default: every page)")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds a session may wait for its content")
    ap.add_argument("--warm-timeout", type=float, default=900.0, help="seconds a first visit may take")
    ap.add_argument("--no-warm", action="store_true", help="the server is warmed already: no first visits")
    ap.add_argument("--no-train", action="store_true", help="warming does not train the default race when the "
                    "Training race has none to replay (its page then counts as no content)")
    ap.add_argument("--url", help="use this running server (loopback) instead of starting one")
    ap.add_argument("--json", default=str(ROOT / "out" / "load_pages.json"), help="where to write the results")
    args = ap.parse_args(argv)
    args.pages = args.pages.split(",") if args.pages is not None else list(page_texts())
    unknown = [p for p in args.pages if p not in CONTENT]
    if args.sessions < 1 or args.ramp < 0 or args.timeout <= 0 or unknown:
        ap.error(f"--sessions >= 1, --ramp >= 0, --timeout > 0, --pages of {sorted(CONTENT)} (unknown: {unknown})")
    if args.url and not args.url.startswith(("http://127.0.0.1", "http://localhost")):
        ap.error("--url must be a loopback address (http://127.0.0.1:PORT)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    proc, url = None, args.url
    if not url:
        print("starting streamlit…", file=sys.stderr, flush=True)
        proc, url = start_server(env={"RESVIZ_WARM_UP": "0"})  # warmed below, before the class, not during it
    try:
        warmed = None
        if not args.no_warm:
            print(f"warming: a first visit to each of {len(args.pages)} pages…", file=sys.stderr, flush=True)
            warmed = warm(url, args.pages, args.warm_timeout, not args.no_train)
        load_before = os.getloadavg()
        print(f"{args.sessions} sessions over {len(args.pages)} pages within {args.ramp:g} s on {url}…",
              file=sys.stderr, flush=True)
        records = measure(url, args.pages, args.sessions, args.ramp, args.timeout)
        load_after = os.getloadavg()
    finally:
        if proc:
            stop_server(proc)
    summary = summarize(records)
    summary.update(load_before=[round(x, 2) for x in load_before], load_after=[round(x, 2) for x in load_after])
    tracebacks = server_tracebacks(proc.log_path) if proc else []
    print(format_table(summary, warmed))
    if tracebacks:
        print("\nServer tracebacks:\n" + "\n".join(f"  {t}" for t in tracebacks))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"summary": summary, "sessions": records, "warm": warmed, "url": url,
                                           "args": vars(args), "tracebacks": tracebacks}, indent=2, default=str))
    print(f"\nwrote {args.json}", file=sys.stderr)
    return 0 if summary["no_content"] == 0 and not summary["client_errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
