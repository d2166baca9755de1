"""resviz.class_store: the class on a real Dask scheduler, shared by two "hosts" on loopback.

Two host processes with DIFFERENT disk-cache folders (so the disk cache cannot be what they share) and the same
``RESVIZ_SCHEDULER``: the teacher presents in one, the other sees it; 30 votes from both at once, none lost, none
changed after the lock. The scheduler lost mid-lesson: nothing raises, the class goes on from this host's copy with
a logged warning and ``health()``'s sentence, and is handed back to the scheduler when it returns. Without the
setting, Dask is not imported. Every wait is bounded.
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
print(json.dumps([type(room.store).__name__, class_store.health()]), flush=True)

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
    """A server process on its own "host": its own disk cache, the class's scheduler; answers one JSON line each."""

    def __init__(self, address: str, cache: str):
        env = {**os.environ, "RESVIZ_SCHEDULER": address, "RESVIZ_CACHE": cache, "RESVIZ_SCHEDULER_TIMEOUT": "30"}
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
    with scheduler() as (_, address):
        pair = [Host(address, str(tmp_path_factory.mktemp(f"host{i}-cache"))) for i in range(2)]
        try:
            for h in pair:
                assert h.answer() == ["SchedulerStore", None]  # the class on the scheduler, shared by every host
            yield address, pair
        finally:
            start.stop([h.proc for h in pair])


def test_the_teacher_presents_on_one_host_and_the_other_sees_it(hosts):
    teacher, other = hosts[1]
    assert teacher(op="present", page="training", params={"tr_pair": "deep", "tr_seed": "3"}) == 1
    assert other(op="view") == ["training", {"tr_pair": "deep", "tr_seed": "3"}, 1]
    assert teacher(op="present", page="lesion", params={}) == 2
    assert other(op="view") == ["lesion", {}, 2]


def test_thirty_votes_from_two_hosts_at_once_none_lost_none_changed_after_the_lock(hosts, tmp_path):
    address, hosts = hosts
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




def test_the_scheduler_lost_mid_lesson_then_back(tmp_path, monkeypatch, caplog):
    """The scheduler dies: no call raises, the class goes on from this host's copy (the teacher's view, the
    question, a vote), with a logged warning and health()'s sentence; a scheduler on the same address again: the
    store reconnects and hands it what it lost, and another host sees the vote cast meanwhile."""
    monkeypatch.setattr(class_store, "RECONNECT_S", 0.5)
    port = start.free_port()
    with scheduler(port) as (proc, address), scheduler_store(address, tmp_path, connect_timeout=WAIT) as store:
        room = Classroom(store=store)
        assert store.connected and store.health() is None
        room.present("paths", {"pa_samples": "4"})
        qid = room.ask("Which is lower?", ["plain-20", "plain-56"]).id
        proc.kill()
        proc.wait()
        with caplog.at_level(logging.WARNING, logger="resviz"):
            assert room.view().page == "paths"  # from this host's copy: the first call after the loss, no error
            room.vote("student", qid, 1)
            until(lambda: not store.connected, what="the store to notice")
        assert "stopped answering" in caplog.text and "has not answered since" in store.health()
        assert room.question().votes == {member("student"): 1} and room.view_version() == 1
        with scheduler(port) as (_, again):
            until(lambda: store.connected, what="the store to reconnect")
            assert store.health() is None
            with scheduler_store(again, tmp_path, connect_timeout=WAIT) as other:
                other_room = Classroom(store=other)
                assert other_room.question().votes == {member("student"): 1}
                assert other_room.view().page == "paths" and other_room.view_version() == 1


def test_a_frozen_scheduler_costs_one_bounded_call_and_the_teachers_view_survives_it(tmp_path, monkeypatch):
    """The scheduler's process stops answering but keeps its connections (SIGSTOP: a host that hangs): one call
    waits ``CALL_S``, then the class goes on here; the teacher presents meanwhile; the scheduler answers again: it
    keeps that view, not its own older one, and another host sees it."""
    monkeypatch.setattr(class_store, "CALL_S", 1.0)
    monkeypatch.setattr(class_store, "RECONNECT_S", 0.5)
    with scheduler() as (proc, address), scheduler_store(address, tmp_path, connect_timeout=WAIT) as store:
        room = Classroom(store=store)
        room.present("paths", {})
        proc.send_signal(signal.SIGSTOP)
        try:
            began = time.monotonic()
            assert room.view().page == "paths"  # the frozen call times out, this host's copy answers
            assert time.monotonic() - began < WAIT and not store.connected
            assert room.present("lesion", {"le_block": "2"}).version == 2
        finally:
            proc.send_signal(signal.SIGCONT)
        until(lambda: store.connected, what="the store to reconnect")
        with scheduler_store(address, tmp_path, connect_timeout=WAIT) as other:
            view = Classroom(store=other).view()
            assert (view.page, view.query, view.version) == ("lesion", {"le_block": "2"}, 2)


def test_an_unreachable_scheduler_at_start_keeps_the_class_on_this_host(tmp_path):
    with scheduler_store(f"tcp://127.0.0.1:{start.free_port()}", tmp_path, connect_timeout=1) as store:
        assert not store.connected and "this host only" in store.health()
        room = Classroom(store=store)
        assert room.present("training", {"tr_seed": "3"}).version == 1 and room.view().page == "training"
        with pytest.raises(TypeError, match="JSON strings"):
            store.set("class:view", {"page": "training"})  # values stay JSON text, never pickles


def test_the_default_imports_no_dask_and_says_the_class_is_one_host_only(tmp_path):
    code = ("import sys; from resviz import class_store, classroom; room = classroom.Classroom(); "
            "room.present('paths', {}); print(type(room.store).__name__, room.view().page, "
            "sorted({'dask', 'distributed'} & set(sys.modules)), class_store.health())")
    env = {k: v for k, v in os.environ.items() if k != "RESVIZ_SCHEDULER"} | {"RESVIZ_CACHE": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=start.ROOT, check=True, capture_output=True,
                         text=True).stdout
    assert out.startswith("Cache paths [] ") and "one host share it" in out
