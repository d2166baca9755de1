"""resviz.class_store: the class on a real Dask scheduler, shared by two "hosts" on loopback.

Two host processes with DIFFERENT disk-cache folders (so the disk cache cannot be what they share) and the same
``RESVIZ_SCHEDULER``: the teacher presents in one, the other sees it; 30 votes from both at once, none lost, none
changed after the lock. The scheduler frozen, then lost mid-lesson: nothing raises, the class goes on from this
host's copy with a logged warning and ``health()``'s sentence, and is handed back to the scheduler when it answers
again. Without the setting (a third host), Dask is not imported. Every wait is bounded.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("distributed", reason="Dask distributed is not installed (pip install -r requirements.txt)")
import diskcache  # noqa: E402 - after the skip

from deploy import start  # noqa: E402
from resviz import class_store  # noqa: E402
from resviz.classroom import Classroom, member  # noqa: E402
from test_cluster import until  # noqa: E402 - the cluster tests' bounded wait (tests/ is on the path, as for helpers)

WAIT = 60  # s: the most any condition below may take (a host imports torch; a loaded 2-core machine)
VOTERS = 15  # per host: 30 in all

HOST = """
import json, sys, threading
from resviz import class_store
from resviz.classroom import ClassError, Classroom

room = Classroom()
print(json.dumps([type(room.store).__name__, class_store.health(), sorted({"dask", "distributed"} & set(sys.modules))]),
      flush=True)

def votes(names, question, choices):
    go, out = threading.Barrier(len(names)), {}
    def one(name, choice):
        go.wait()  # every thread of this host votes at once
        try:
            room.vote(name, question, choice)
            out[name] = "ok"
        except ClassError as e:
            out[name] = str(e)
    threads = [threading.Thread(target=one, args=pair) for pair in zip(names, choices)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    return out

for line in sys.stdin:
    cmd = json.loads(line)
    if cmd["op"] == "present":
        answer = room.present(cmd["page"], cmd["params"]).version
    elif cmd["op"] == "view":
        v = room.view()
        answer = None if v is None else [v.page, v.query, v.version]
    elif cmd["op"] == "ask":
        answer = room.ask(cmd["text"], cmd["answers"]).id
    elif cmd["op"] == "votes":
        answer = votes(cmd["names"], cmd["question"], cmd["choices"])
    elif cmd["op"] == "lock":
        answer = room.lock().locked
    print(json.dumps(answer), flush=True)
"""


@contextlib.contextmanager
def scheduler(port: int | None = None):
    """A Dask scheduler on loopback (``deploy.start``'s command and environment, no workers: the class needs
    none); yields its process and address."""
    port = port or start.free_port()
    proc = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                             "--port", str(port), "--no-dashboard"], cwd=start.ROOT, env=start.engine_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield proc, f"tcp://127.0.0.1:{port}"
    finally:
        start.stop([proc])


@contextlib.contextmanager
def scheduler_store(address: str, tmp_path, **kw):
    """This process as one more host: a ``SchedulerStore`` with a disk cache of its own."""
    with diskcache.Cache(str(tmp_path / f"cache-{time.time_ns()}")) as local:
        store = class_store.SchedulerStore(address, local=local, **kw)
        try:
            yield store
        finally:
            store.close()


class Host:
    """A server process on its own "host": its own disk cache, the class's scheduler (or none); answers one JSON line
    each, the first when it is ready: its store's kind, ``health()``, and which of Dask's packages it imported."""

    def __init__(self, address: str | None, cache: str):
        env = {k: v for k, v in os.environ.items() if k != "RESVIZ_SCHEDULER"}
        env.update({"RESVIZ_SCHEDULER": address} if address else {}, RESVIZ_CACHE=cache, RESVIZ_SCHEDULER_TIMEOUT="30")
        self.proc = subprocess.Popen([sys.executable, "-c", HOST], cwd=start.ROOT, env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def send(self, **cmd) -> None:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def answer(self):
        ready, _, _ = select.select([self.proc.stdout], [], [], WAIT)
        line = self.proc.stdout.readline() if ready else ""
        assert line, f"the host did not answer in {WAIT} s (exit code {self.proc.poll()})"
        return json.loads(line)

    def __call__(self, **cmd):
        self.send(**cmd)
        return self.answer()


@pytest.fixture(scope="module")
def hosts(tmp_path_factory):
    """Two hosts on one scheduler, and a third without the setting (started together: each imports torch)."""
    with scheduler() as (_, address):
        started = [Host(a, str(tmp_path_factory.mktemp(f"host{i}-cache")))
                   for i, a in enumerate([address, address, None])]
        try:
            yield address, started[:2], started[2], [h.answer() for h in started]
        finally:
            start.stop([h.proc for h in started])


def test_the_teacher_presents_on_one_host_and_the_other_sees_it(hosts):
    _, (teacher, other), _, ready = hosts
    assert [r[:2] for r in ready[:2]] == [["SchedulerStore", None]] * 2  # the class on the scheduler, no warning
    assert teacher(op="present", page="training", params={"tr_pair": "deep", "tr_seed": "3"}) == 1
    assert other(op="view") == ["training", {"tr_pair": "deep", "tr_seed": "3"}, 1]
    assert teacher(op="present", page="lesion", params={}) == 2
    assert other(op="view") == ["lesion", {}, 2]


def test_thirty_votes_from_two_hosts_at_once_none_lost_none_changed_after_the_lock(hosts, tmp_path):
    address, hosts, _, _ = hosts
    teacher, other = hosts
    qid = teacher(op="ask", text="Which ends lower?", answers=["plain-20", "plain-56", "the same"])
    names = [[f"host{h}-student{i}" for i in range(VOTERS)] for h in range(2)]
    choices = [[(h + i) % 3 for i in range(VOTERS)] for h in range(2)]
    for h, host in enumerate(hosts):  # both hosts vote at once: each sends 15 votes from 15 threads
        host.send(op="votes", names=names[h], question=qid, choices=choices[h])
    assert [host.answer() for host in hosts] == [{n: "ok" for n in names[h]} for h in range(2)]
    assert teacher(op="lock") is True
    for h, host in enumerate(hosts):  # everyone changes their mind after the lock: refused
        host.send(op="votes", names=names[h], question=qid, choices=[(c + 1) % 3 for c in choices[h]])
    refused = [host.answer() for host in hosts]
    assert all(why.startswith("Votes are locked") for answer in refused for why in answer.values())
    assert sum(len(answer) for answer in refused) == 2 * VOTERS
    with scheduler_store(address, tmp_path) as store:  # a third host reads the class
        q = Classroom(store=store).question()
    expected = {member(n): c for h in range(2) for n, c in zip(names[h], choices[h])}
    assert q.locked and q.votes == expected and sum(q.tally) == 2 * VOTERS


def seen_by_another_host(address: str, tmp_path) -> tuple:
    with scheduler_store(address, tmp_path, connect_timeout=WAIT) as other:
        room = Classroom(store=other)
        view, q = room.view(), room.question()
        return view.page, view.query, view.version, q.votes


def test_the_scheduler_frozen_then_lost_mid_lesson_then_back(tmp_path, monkeypatch, caplog):
    """One lesson, two troubles; no call raises, and the class goes on from this host's copy each time.
    Frozen (SIGSTOP: a host that hangs, its connections open): one call waits ``CALL_S``; the teacher presents
    meanwhile; answering again, the scheduler takes that view, not its own older one. Killed: a logged warning and
    health()'s sentence; a student votes meanwhile; a new scheduler on the same address (empty) gets the class back:
    another host sees the view and the vote."""
    monkeypatch.setattr(class_store, "CALL_S", 1.0)
    monkeypatch.setattr(class_store, "RECONNECT_S", 0.5)
    port = start.free_port()
    with scheduler(port) as (proc, address), scheduler_store(address, tmp_path, connect_timeout=WAIT) as store:
        room = Classroom(store=store)
        assert store.connected and store.health() is None
        room.present("paths", {})
        qid = room.ask("Which is lower?", ["plain-20", "plain-56"]).id
        proc.send_signal(signal.SIGSTOP)
        try:
            began = time.monotonic()
            assert room.present("lesion", {"le_block": "2"}).version == 2  # the lock's first try timed out: here
            assert time.monotonic() - began < class_store.LOCK_WAIT_S and not store.connected
            assert room.view().page == "lesion"
        finally:
            proc.send_signal(signal.SIGCONT)
        # the lease its first try asked for, granted on waking, is handed back: no wait for it to expire
        until(lambda: store.connected, timeout=class_store.LEASE_S, what="the store to reconnect")
        assert seen_by_another_host(address, tmp_path) == ("lesion", {"le_block": "2"}, 2, {})

        proc.kill()
        proc.wait()
        with caplog.at_level(logging.WARNING, logger="resviz"):
            assert room.view().page == "lesion"  # the first call after the loss: no error
            room.vote("student", qid, 1)
            until(lambda: not store.connected, what="the store to notice")
        assert "stopped answering" in caplog.text and "has not answered since" in store.health()
        assert room.question().votes == {member("student"): 1} and room.view_version() == 2
        with scheduler(port):
            until(lambda: store.connected, what="the store to reconnect")
            assert store.health() is None
            assert seen_by_another_host(address, tmp_path) == ("lesion", {"le_block": "2"}, 2, {member("student"): 1})


def test_an_unreachable_scheduler_at_start_keeps_the_class_on_this_host(tmp_path):
    with scheduler_store(f"tcp://127.0.0.1:{start.free_port()}", tmp_path, connect_timeout=1) as store:
        assert not store.connected and "this host only" in store.health()
        room = Classroom(store=store)
        assert room.present("training", {"tr_seed": "3"}).version == 1 and room.view().page == "training"
        with pytest.raises(TypeError, match="JSON strings"):
            store.set("class:view", {"page": "training"})  # values stay JSON text, never pickles


def test_the_default_imports_no_dask_and_says_the_class_is_one_host_only(hosts):
    _, _, lone, ready = hosts  # a host without RESVIZ_SCHEDULER
    store, health, dask = ready[2]
    assert (store, dask) == ("Cache", []) and "one host share it" in health  # the disk cache, and Dask not imported
    assert lone(op="present", page="paths", params={}) == 1 and lone(op="view") == ["paths", {}, 1]
