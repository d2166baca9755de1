"""A class of N students following the teacher, and their vote, on one server: the load figure of issue 21.

    python -m resviz.tools.load_class --sessions 30              # starts its own server with a teacher key
    python -m resviz.tools.load_class --url http://127.0.0.1:8501 --cache DIR --key KEY   # a running one
    (add --pid PID, the server's process, for its CPU time per change)

Every tab is a websocket client (``resviz.tools.session``: no browser) that also asks for its fragments' timed
reruns as a browser does (the sidebar's check-in and vote), so the server carries a real class's load.

1. Follow. The teacher unlocks with the key and leads; the students open the home page and follow; the teacher
   opens ``--page`` and the class moves there. Then ``--changes`` times the teacher sets ``--widget`` (a number
   input bound to the URL) to a new value, sending it in the URL as a browser does. A student shows the change
   when the widget arrives drawn with the new value (the follower's screen and address bar change then). Figures:
   each student's time from the teacher's change (median, p95, max), per change the time until every
   student shows it, and the server's CPU seconds per change (its thirty reruns: a figure a loaded machine
   changes less than the times).
2. Vote. The class goes back home; the teacher's question is opened in the class state; every student votes at
   the same moment (a barrier); the teacher presses Lock; every student then presses Vote for another answer.
   Figures: votes cast, counted (none lost), and changed after the lock (none).

Prints a table and the machine's load average (a shared machine says how loaded it was); writes JSON.
Loopback only; every wait is bounded and the script stops by itself.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

from resviz.tools.load_test import percentile
from resviz.tools.server import ROOT, cpu_s, server_tracebacks, start_server, stop_server
from resviz.tools.session import RunResult, Session, widget_key

QUESTION = ("After 300 steps, which ends with the lower training loss?", ("plain-20", "plain-56", "as low"))


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=30, help="students (default 30)")
    ap.add_argument("--changes", type=int, default=5, help="settings the teacher changes (default 5)")
    ap.add_argument("--page", default="shortcut_lab", help="the page the teacher leads on (URL path)")
    ap.add_argument("--widget", default="sl_cout", help="the number input the teacher changes (its key)")
    ap.add_argument("--first-value", type=int, default=9, help="the values set are first, first+1, ...")
    ap.add_argument("--pause", type=float, default=3.0, help="seconds between two changes, once all show one")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds one student may take to show a change")
    ap.add_argument("--url", help="use this running server (loopback) instead of starting one")
    ap.add_argument("--cache", help="the --url server's RESVIZ_CACHE folder (the class state is read there)")
    ap.add_argument("--key", help="the --url server's RESVIZ_TEACHER_KEY")
    ap.add_argument("--pid", type=int, help="the --url server's process id (its CPU time is read from /proc)")
    ap.add_argument("--json", default=str(ROOT / "out" / "load_class.json"), help="where to write the results")
    args = ap.parse_args(argv)
    if args.sessions < 1 or args.changes < 1 or args.pause < 0 or args.timeout <= 0:
        ap.error("--sessions and --changes must be >= 1, --pause >= 0, --timeout > 0")
    if args.pid and not args.url:
        ap.error("--pid is the --url server's process")
    if args.url and not (args.cache and args.key):
        ap.error("--url needs the server's --cache folder and --key")
    if args.url and not args.url.startswith(("http://127.0.0.1", "http://localhost")):
        ap.error("--url must be a loopback address (http://127.0.0.1:PORT)")
    return args


# --- what a student's tab sees --------------------------------------------------------------------------------
def shows(msg: ForwardMsg, key: str, value: float) -> bool:
    """Whether ``msg`` draws the number input ``key`` with ``value`` set by the server (a follower's move)."""
    if msg.WhichOneof("type") != "delta" or msg.delta.WhichOneof("type") != "new_element":
        return False
    el = msg.delta.new_element
    if el.WhichOneof("type") != "number_input":
        return False
    proto = el.number_input
    return widget_key(proto.id) == key and proto.set_value and math.isclose(proto.value, value)


def draws(msg: ForwardMsg, key: str) -> bool:
    """Whether ``msg`` draws the widget ``key`` (the page that has it has arrived)."""
    if msg.WhichOneof("type") != "delta" or msg.delta.WhichOneof("type") != "new_element":
        return False
    el = msg.delta.new_element
    return widget_key(getattr(getattr(el, el.WhichOneof("type") or "", None), "id", "") or "") == key


@dataclass
class Target:
    """What the followers wait for: ``key`` drawn (with ``value`` when set), from ``since`` (perf_counter)."""
    index: int
    key: str
    value: float | None
    since: float


class Follower(Session):
    """A student's tab that stays open: while following it reads everything the server sends (a run it did not ask
    for moves it; unread messages would also stop the client's keepalive), asks for its fragments' timed reruns
    (``auto_rerun``) as the browser does, and notes when it shows each of the teacher's changes."""

    def __init__(self, url: str, timeout: float):
        super().__init__(url, timeout=timeout)
        self.page = ""
        self.timers: dict[str, tuple[float, float]] = {}  # fragment id -> (interval s, next due, perf_counter)
        self.shown: dict[int, float] = {}  # target index -> seconds from the teacher's change

    def follow(self, targets: Class, stop: threading.Event) -> None:
        """Read until ``stop``; each time ``targets.current`` shows, note it and tell ``targets``."""
        res = RunResult(page=self.page)
        while not stop.is_set():
            now = time.perf_counter()
            self._fragments_due(now)
            due = min([now + 0.2, *(t for _, t in self.timers.values())])
            try:
                msg = self._recv(max(0.0, due - now))
            except TimeoutError:
                continue
            kind = msg.WhichOneof("type")
            if kind == "new_session" and not msg.metadata.run.fragment_ids:  # a whole page's run: new fragments
                self.timers.clear()
            elif kind == "auto_rerun":
                a = msg.auto_rerun
                self.timers[a.fragment_id] = (a.interval, time.perf_counter() + a.interval)
            elif kind == "stop_auto_rerun":
                for fid in msg.stop_auto_rerun.fragment_ids:  # a repeated field (Streamlit 1.67's proto)
                    self.timers.pop(fid, None)
            self._read(msg, res, 0.0)  # keeps the widgets this tab knows up to date
            t = targets.current
            if t is None or t.index in self.shown:
                continue
            if draws(msg, t.key) if t.value is None else shows(msg, t.key, t.value):
                self.shown[t.index] = time.perf_counter() - t.since
                targets.noted()

    def _fragments_due(self, now: float) -> None:
        for fid, (every, due) in list(self.timers.items()):
            if now >= due:
                self.timers[fid] = (every, now + every)

                def build(m, fid=fid):
                    m.rerun_script.page_name = self.page
                    m.rerun_script.page_script_hash = self.page_hashes.get(self.page, "")
                    m.rerun_script.fragment_id = fid
                    m.rerun_script.is_auto_rerun = True
                    m.rerun_script.widget_states.widgets.extend(self._states.values())

                self._send(build)


class Class:
    """The followers' readers and the target they wait for (one change at a time)."""

    def __init__(self, students: list[Follower]):
        self.students = students
        self.current: Target | None = None
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=s.follow, args=(self, self._stop), daemon=True) for s in students]

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._threads:
            t.join()

    def noted(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def wait(self, target: Target, act, timeout: float) -> list[float | None]:
        """Set ``target``, do ``act()`` (the teacher's change, in its own thread), wait until every student shows
        it or ``timeout``; each student's seconds (None: not in time)."""
        self.current = target
        teacher = threading.Thread(target=act, daemon=True)
        teacher.start()
        with self._changed:
            self._changed.wait_for(lambda: all(target.index in s.shown for s in self.students), timeout)
        teacher.join(timeout)
        return [s.shown.get(target.index) for s in self.students]


# --- the class ------------------------------------------------------------------------------------------------
def vote_plan(n: int, answers: int) -> list[tuple[int, int]]:
    """Each student's (vote, the other answer pressed after the lock): answers spread round-robin."""
    return [(i % answers, (i + 1) % answers) for i in range(n)]


def follow_figures(latencies: list[list[float | None]]) -> dict:
    """``latencies[change][student]`` (None: not shown in time) -> the figures of the table."""
    flat = [t for row in latencies for t in row]
    shown = [t for t in flat if t is not None]
    every = [max(row) if row and None not in row else None for row in latencies]
    return {"changes": len(latencies), "students": len(latencies[0]) if latencies else 0,
            "shown": len(shown), "missed": len(flat) - len(shown),
            "median_s": percentile(shown, 50), "p95_s": percentile(shown, 95),
            "max_s": max(shown, default=float("nan")),
            "every_student_s": every}


def vote_figures(plan: list[tuple[int, int]], tally: list[int], votes_before_lock: dict, votes_after: dict) -> dict:
    """Votes cast by plan, counted in the class state, and changed after the lock."""
    expected = [0] * len(tally)
    for choice, _ in plan:
        expected[choice] += 1
    return {"cast": len(plan), "counted": len(votes_before_lock), "tally": tally, "expected_tally": expected,
            "lost": len(plan) - len(votes_before_lock),
            "changed_after_lock": sum(votes_after.get(m) != v for m, v in votes_before_lock.items())}


def format_table(s: dict) -> str:
    f, v = s["follow"], s["vote"]
    every = ", ".join("-" if t is None else f"{t:.2f}" for t in f["every_student_s"])
    rows = [
        ("students following", f"{s['following']} of {f['students']}"),
        ("class moved to the page (last student)", _s(s["page_arrival_s"])),
        (f"a student shows the change ({f['shown']} of {f['shown'] + f['missed']}), median / p95 / max",
         f"{f['median_s']:.2f} / {f['p95_s']:.2f} / {f['max_s']:.2f} s"),
        ("every student shows it, per change", f"{every} s"),
        ("server CPU per change (median)", _cpu(f.get("server_cpu_s"))),
        ("votes cast / counted / lost", f"{v['cast']} / {v['counted']} / {v['lost']}"),
        ("tally / expected", f"{v['tally']} / {v['expected_tally']}"),
        ("votes changed after the lock", str(v["changed_after_lock"])),
        ("exception or error boxes, client errors in the vote", str(len(v["problems"]))),
        ("server tracebacks logged", str(len(s.get("server_tracebacks", [])))),
        ("load average (1 min) before / after", f"{s['load_before'][0]:.1f} / {s['load_after'][0]:.1f} "
                                                f"on {os.cpu_count()} CPUs"),
    ]
    return "\n".join(["| figure | value |", "|---|---|"] + [f"| {a} | {b} |" for a, b in rows])


def _cpu(per_change: list[float] | None) -> str:
    return f"{percentile(per_change, 50):.2f} s" if per_change else "not measured (--pid)"


def _s(t: float | None) -> str:
    return "not in time" if t is None else f"{t:.2f} s"


def _in_threads(fn, items) -> list:
    """``fn(item)`` for every item at once, one thread each; results in order (an exception is a result)."""
    out: list = [None] * len(items)

    def one(i, item):
        try:
            out[i] = fn(item)
        except Exception as e:  # noqa: BLE001 - reported, never lost in a thread
            out[i] = e

    threads = [threading.Thread(target=one, args=(i, x), daemon=True) for i, x in enumerate(items)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def _run_until(s: Session, key: str, timeout: float) -> RunResult:
    """Rerun ``s``'s page until it draws ``key`` (a server process reads the class's question at most every
    ``ui_classroom.READ_EVERY_S`` for all its sessions, and this script asked it from outside); bounded."""
    deadline = time.monotonic() + timeout
    while key not in (res := s.run("")).keys:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{key} was not drawn in {timeout:.0f} s")
    return res


def run_class(url: str, key: str, room, args, cpu=None) -> dict:
    """Drive the class on the server at ``url`` (``room``: its ``Classroom``; ``cpu()``: the server's CPU seconds so
    far, when known); returns the figures."""
    teacher = Session(url, timeout=args.timeout * 3)
    students: list[Follower] = []
    try:
        teacher.run("")
        teacher.run("", widgets={"class_key": key}, click="class_unlock")
        teacher.run("", widgets={"class_lead": True})
        for _ in range(args.sessions):
            s = Follower(url, timeout=args.timeout * 3)
            students.append(s)
            s.run("")
            room.still_presenting()  # what the teacher's tab's check-in fragment says every 3 s (not run here)
        with Class(students) as cls:  # the teacher opens the page: the bell moves every student there
            arrivals = cls.wait(Target(0, args.widget, None, time.perf_counter()),
                                lambda: teacher.run(args.page), args.timeout)
            following = room.roster().following  # each student checked in on the run that moved it
            for s in students:
                s.page = args.page
            latencies, cpu_per_change = [], []
            for i in range(1, args.changes + 1):
                value = args.first_value + i - 1
                room.still_presenting()
                url = urlencode({**room.view().query, args.widget: value})  # the teacher's address bar, changed
                before = cpu() if cpu else None
                latencies.append(cls.wait(Target(i, args.widget, float(value), time.perf_counter()), lambda q=url:
                                          teacher.run(args.page, widgets={args.widget: value}, query_string=q),
                                          args.timeout))
                if cpu:
                    cpu_per_change.append(cpu() - before)
                time.sleep(args.pause)  # the class looks at the view before the teacher changes it again
            cls.wait(Target(args.changes + 1, "class_step_away", None, time.perf_counter()),
                     lambda: teacher.run(""), args.timeout)  # the vote, at home
        for s in students:
            s.page = ""
        q = room.ask(QUESTION[0], list(QUESTION[1]))  # the teacher's question (the form's text, as typed)
        plan = vote_plan(len(students), len(q.answers))
        radio, press = f"class_vote_{q.id}", f"class_vote_go_{q.id}"
        shown = _in_threads(lambda s: _run_until(s, radio, args.timeout), students)  # the question on every screen
        teacher.run("")  # and Lock on the teacher's
        go = threading.Barrier(len(students))

        def vote(pair):  # as in the browser: choose (the fragment's rerun enables Vote), then press, all at once
            s, (choice, _) = pair
            s.run("", widgets={radio: q.answers[choice]})
            go.wait(timeout=args.timeout)
            return s.run("", click=press)

        runs = _in_threads(vote, list(zip(students, plan)))
        before = dict(room.question().votes)
        teacher.run("", click="class_lock")
        runs += _in_threads(lambda pair: pair[0].run("", widgets={radio: q.answers[pair[1][1]]}, click=press),
                            list(zip(students, plan)))
        after = room.question()
        problems = [repr(r) for r in [*shown, *runs] if isinstance(r, Exception)]
        problems += [e for r in runs if isinstance(r, RunResult) for e in [*r.exceptions, *r.errors]]
        teacher.run("", widgets={"class_lead": False})  # the lesson is over
        room.close()
        return {"page_arrival_s": None if None in arrivals else max(arrivals, default=None),
                "follow": {**follow_figures(latencies), "server_cpu_s": cpu_per_change},
                "following": following, "latencies_s": latencies,
                "vote": {**vote_figures(plan, after.tally, before, after.votes), "problems": problems}}
    finally:
        for s in [teacher, *students]:
            s.close()


def main(argv=None) -> int:
    args = parse_args(argv)
    from resviz.classroom import Classroom

    import diskcache

    proc, url, cache, key = None, args.url, args.cache, args.key
    if not url:
        cache, key = tempfile.mkdtemp(prefix="resviz-class-"), secrets.token_urlsafe(16)
        print("starting streamlit with a teacher key…", file=sys.stderr, flush=True)
        proc, url = start_server(env={"RESVIZ_TEACHER_KEY": key, "RESVIZ_CACHE": cache, "RESVIZ_WARM_UP": "0"})
    load_before = os.getloadavg()
    try:
        with diskcache.Cache(cache) as store:
            print(f"{args.sessions} students follow the teacher on {url}…", file=sys.stderr, flush=True)
            pid = proc.pid if proc else args.pid
            summary = run_class(url, key, Classroom(store=store), args, cpu=(lambda: cpu_s(pid)) if pid else None)
    finally:
        if proc:
            stop_server(proc)
    summary.update(url=url, load_before=load_before, load_after=os.getloadavg(), sessions=args.sessions,
                   page=args.page, widget=args.widget,
                   server_tracebacks=server_tracebacks(proc.log_path) if proc else [],
                   server_log=str(proc.log_path) if proc else None)
    print(format_table(summary))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(summary, indent=2, default=str))
    print(f"\nwrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
