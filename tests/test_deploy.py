"""deploy/: two replicas of the real app behind HAProxy and behind nginx, on loopback.

Every student opens the app through the proxy. The proxy pins a student to one replica by a cookie, so the
websocket, its reconnects and the file uploads (``PUT /_stcore/upload_file/<session>/<file>``) all reach the
replica that holds the student's session; the tests check each of the three, and that a replica which does not
hold the session really refuses it (so the checks can fail). Skipped where the proxy is not installed.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from websockets.sync.client import connect

from deploy import start

TIMEOUT = 120  # s: a replica's first run of the home page imports torch and builds the sidebar model
APT = "apt-get install -y haproxy nginx"


class Tab:
    """One student's browser tab through the proxy: its cookies, its websocket, its Streamlit session.

    A local helper: the public client (resviz.tools.session.Session) sends no cookies, cannot resume a
    session and does not ask for upload URLs, which is what stickiness is about.
    """

    def __init__(self, url: str):
        self.url = url
        self.http = requests.Session()  # the cookie jar: the proxy's replica cookie and Streamlit's XSRF cookie
        r = self.http.get(url + start.HEALTH_PATH, timeout=TIMEOUT)  # the frontend asks this before connecting
        r.raise_for_status()
        self.replica = r.headers["X-Resviz-Replica"]
        self.session_id = ""
        self.ws = None

    def connect(self, url: str | None = None, resume: bool = False) -> str:
        """Open the websocket (through the proxy unless ``url``), as the frontend does, and render the home page;
        ``resume`` asks for this tab's earlier session, as the frontend does when it reconnects. Returns the
        session id the server ran the page in."""
        cookies = "; ".join(f"{k}={v}" for k, v in self.http.cookies.items())
        protocols = ["streamlit", "xsrf", self.session_id] if resume else ["streamlit"]
        ws_url = (url or self.url).replace("http://", "ws://") + "/_stcore/stream"
        self.ws = connect(ws_url, subprotocols=protocols, additional_headers={"Cookie": cookies},
                          max_size=None, open_timeout=TIMEOUT)
        msg = self._send(lambda m: m.rerun_script.SetInParent())
        ids, exceptions = set(), []
        while msg.WhichOneof("type") != "script_finished" or msg.script_finished == ForwardMsg.FINISHED_EARLY_FOR_RERUN:
            if msg.WhichOneof("type") == "new_session":
                ids.add(msg.new_session.initialize.session_id)
            elif msg.WhichOneof("type") == "delta" and msg.delta.new_element.WhichOneof("type") == "exception":
                exceptions.append(msg.delta.new_element.exception.message)
            msg = self._recv()
        assert msg.script_finished == ForwardMsg.FINISHED_SUCCESSFULLY and not exceptions, exceptions
        (self.session_id,) = ids
        return self.session_id

    def close(self) -> None:
        self.ws.close()

    def upload(self, url: str | None = None) -> requests.Response:
        """Ask for an upload URL over the websocket and PUT a small file to it (through the proxy unless ``url``),
        with the XSRF header the frontend sends."""
        msg = self._send(lambda m: m.file_urls_request.file_names.append("probe.txt"))
        while msg.WhichOneof("type") != "file_urls_response":
            msg = self._recv()
        path = msg.file_urls_response.file_urls[0].upload_url
        return self.http.put((url or self.url) + path, files={"file": ("probe.txt", b"resviz", "text/plain")},
                             headers={"X-Xsrftoken": self.http.cookies["_streamlit_xsrf"]}, timeout=TIMEOUT)

    def _send(self, build) -> ForwardMsg:
        back = BackMsg()
        build(back)
        self.ws.send(back.SerializeToString())
        return self._recv()

    def _recv(self) -> ForwardMsg:
        msg = ForwardMsg()
        msg.ParseFromString(self.ws.recv(timeout=TIMEOUT))
        return msg


@pytest.fixture(scope="module", params=sorted(start.PROXIES))
def cluster(request, tmp_path_factory):
    """Two replicas of app.py behind the proxy, on free loopback ports, sharing one disk cache."""
    binary = start.PROXIES[request.param].binary
    if not (shutil.which(binary) or shutil.which(binary, path="/usr/sbin")):
        pytest.skip(f"{binary} is not installed ({APT}); CI installs it")
    tmp = tmp_path_factory.mktemp(request.param)
    with start.start_cluster(2, port=0, proxy=request.param, first_port=0, cache_dir=tmp / "cache",
                             run_dir=tmp / "run") as c:
        yield c


@pytest.fixture(scope="module")
def tabs(cluster):
    """Students opening the app until each replica holds at least two of them (HAProxy's leastconn alternates;
    nginx hashes a random cookie, so the count varies: at most 40 tabs)."""
    opened: list[Tab] = []
    while min(held(cluster, opened).values()) < 2 and len(opened) < 40:
        tab = Tab(cluster.url)
        tab.connect()
        opened.append(tab)
    yield opened
    for tab in opened:
        tab.close()


def held(cluster, tabs: list[Tab]) -> dict[str, int]:
    """How many of ``tabs`` each replica holds."""
    return {r.name: sum(cluster.replica_named(t.replica) is r for t in tabs) for r in cluster.replicas}


def other_replica(cluster, tab: Tab) -> start.Replica:
    mine = cluster.replica_named(tab.replica)
    return next(r for r in cluster.replicas if r is not mine)


def test_students_are_spread_over_both_replicas(cluster, tabs):
    counts = held(cluster, tabs)
    assert min(counts.values()) >= 2, counts
    assert len({t.session_id for t in tabs}) == len(tabs)


def test_a_reconnecting_student_gets_their_session_back(cluster, tabs):
    """The frontend reconnects after a network hiccup, asking for its session: the cookie brings it to the
    replica that still holds that session, so nothing the student did is lost."""
    for tab in tabs:
        before = tab.session_id
        tab.close()
        assert tab.connect(resume=True) == before


def test_a_replica_without_the_session_starts_a_new_one(cluster, tabs):
    """The check above can fail: resuming on the other replica gives a fresh session."""
    tab = tabs[0]
    before, other = tab.session_id, other_replica(cluster, tab)
    probe = Tab(cluster.url)
    probe.session_id = before
    try:
        assert probe.connect(url=other.url, resume=True) != before
    finally:
        probe.close()


def test_uploads_reach_the_replica_that_holds_the_websocket(cluster, tabs):
    for tab in tabs:
        r = tab.upload()
        assert r.status_code == 204, (r.status_code, r.text)
        assert cluster.replica_named(r.headers["X-Resviz-Replica"]) is cluster.replica_named(tab.replica)


def test_an_upload_to_the_wrong_replica_is_refused(cluster, tabs):
    """Why stickiness must cover uploads: the other replica does not know the session and says so."""
    tab = tabs[0]
    r = tab.upload(url=other_replica(cluster, tab).url)
    assert r.status_code == 400 and "sticky sessions" in r.text


def test_replicas_share_one_disk_cache(cluster):
    """What one replica stores (a trained pair, a fine loss grid), another reads: a process with replica 1's
    environment saves, a process with replica 2's environment loads."""
    envs = [_env(r.proc.pid) for r in cluster.replicas]
    assert {e["RESVIZ_CACHE"] for e in envs} == {str(cluster.run_dir.parent / "cache")}
    code = "from resviz import disk_cache; import sys; {}"
    save = code.format("disk_cache.save('deploy-probe', {'replica': sys.argv[1]})")
    load = code.format("print(disk_cache.load('deploy-probe'))")
    subprocess.run([sys.executable, "-c", save, "r1"], env=envs[0], cwd=start.ROOT, check=True)
    out = subprocess.run([sys.executable, "-c", load], env=envs[1], cwd=start.ROOT, check=True,
                         capture_output=True, text=True).stdout
    assert out.strip() == "{'replica': 'r1'}"


def _env(pid: int) -> dict[str, str]:
    """The environment a running process was started with."""
    pairs = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(p.decode().split("=", 1) for p in pairs if b"=" in p)


def test_haproxy_counts_the_sessions_of_each_replica(cluster, tabs):
    counts = cluster.sessions_per_replica()
    if cluster.proxy != "haproxy":
        assert counts is None
        return
    assert set(counts) == {r.name for r in cluster.replicas}
    for r in cluster.replicas:
        open_tabs = sum(cluster.replica_named(t.replica) is r for t in tabs)
        assert counts[r.name]["now"] >= open_tabs  # every open websocket is one connection


@pytest.mark.parametrize("proxy", sorted(start.PROXIES))
def test_rendered_config_names_every_replica_and_the_upload_cap(proxy, tmp_path):
    path = start.render_config(proxy, [("r1", 8501), ("r2", 8502), ("r3", 8503)], 8080, "127.0.0.1", tmp_path)
    text = path.read_text()
    assert "{{" not in text and "127.0.0.1:8080" in text
    assert [p for p in ("8501", "8502", "8503") if f"127.0.0.1:{p}" in text] == ["8501", "8502", "8503"]
    if proxy == "nginx":
        assert f"client_max_body_size {start.max_upload_mb()}m;" in text
        assert start.max_upload_mb() == 300  # .streamlit/config.toml's server.maxUploadSize


def test_a_missing_proxy_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda *a, **k: None)
    with pytest.raises(RuntimeError, match="apt-get install -y haproxy"):
        with start.start_cluster(proxy="haproxy"):
            pass


def test_the_launcher_loads_no_torch():
    """The launcher only starts processes: importing deploy.start must not pull in resviz (and torch)."""
    code = "import sys, deploy.start; print(sorted(m for m in ('torch', 'resviz', 'streamlit') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=start.ROOT, check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "[]"


def test_replicas_share_out_the_cores_as_torch_threads(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert start.replica_env(4, "/c")["OMP_NUM_THREADS"] == "4"
    assert start.replica_env(32, "/c")["OMP_NUM_THREADS"] == "1"
    assert start.replica_env(4, "/c")["RESVIZ_CACHE"] == "/c"


def test_replicas_get_the_schedulers_address_only_with_workers(monkeypatch):
    monkeypatch.delenv("RESVIZ_SCHEDULER", raising=False)
    assert "RESVIZ_SCHEDULER" not in start.replica_env(2, "/c")
    assert start.replica_env(2, "/c", "tcp://127.0.0.1:8786")["RESVIZ_SCHEDULER"] == "tcp://127.0.0.1:8786"


def test_the_engine_keeps_its_queue_on_the_scheduler(monkeypatch):
    """worker-saturation 1.0: a worker gets only the runs it can start, the rest wait in the scheduler's order."""
    monkeypatch.delenv("DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION", raising=False)
    assert start.engine_env()["DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION"] == "1.0"
    assert start.parse_args(["--workers", "3"]).workers == 3
    with pytest.raises(SystemExit):
        start.parse_args(["--workers", "-1"])
