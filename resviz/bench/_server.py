"""Helpers for the app-level measurements: a real ``streamlit run app.py``, its memory, and a session client.

``Session`` speaks Streamlit's websocket protocol the way the browser does, without a browser: it connects to
``/_stcore/stream`` (subprotocol ``streamlit``), sends a ``BackMsg.rerun_script`` carrying a ``ClientState`` for
one page (``page_name`` = the URL path, as the frontend sends it), and reads ``ForwardMsg``s until
``script_finished``. Not a benchmark itself (underscore: ``python -m resviz.bench`` skips it).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from streamlit.proto.Alert_pb2 import Alert
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from websockets.sync.client import connect

ROOT = Path(__file__).resolve().parents[2]  # the repository: app.py lives here
WS_PATH = "/_stcore/stream"
HEALTH_PATH = "/_stcore/health"


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int | None = None, log_path: str | Path | None = None, timeout: float = 180,
                 script: str | Path = "app.py", cwd: str | Path = ROOT,
                 extra_args: tuple[str, ...] = ()) -> tuple[subprocess.Popen, str]:
    """``streamlit run app.py`` on loopback; returns (process, base URL) once ``/_stcore/health`` answers.

    ``script``/``cwd`` run another app (tests use a tiny one); ``cwd`` also picks its ``.streamlit/config.toml``.
    ``extra_args`` are more ``streamlit run`` options (``"--runner.postScriptGC=false"``) to compare settings.
    Output goes to ``log_path`` (a temp file by default; its path is ``proc.log_path``): uncaught page
    exceptions are logged there with their traceback, since students only see a redacted message.
    """
    port = port or free_port()
    log_path = Path(log_path or tempfile.mkstemp(prefix="resviz-server-", suffix=".log")[1])
    cmd = [sys.executable, "-m", "streamlit", "run", str(script), "--server.headless=true", f"--server.port={port}",
           "--server.address=127.0.0.1", "--browser.gatherUsageStats=false", *extra_args]
    with open(log_path, "w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    proc.log_path = log_path
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url + HEALTH_PATH, timeout=1)
            return proc, url
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.1)
    stop_server(proc)
    raise RuntimeError(f"streamlit did not start on {url}:\n{log_path.read_text()[-3000:]}")


def stop_server(proc: subprocess.Popen, timeout: float = 20) -> None:
    """Terminate the server (and kill it if it does not stop within ``timeout`` s)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)


def _children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (from the ppid field of /proc/*/stat)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the name in (...) may hold spaces
        parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and all its children in MB (VmRSS from /proc/<pid>/status)."""
    total_kb = 0
    for p in [pid, *_children(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        except OSError:  # the process ended while we read
            continue
    return total_kb / 1024


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and its live children (/proc/<pid>/stat)."""
    total = 0
    for p in [pid, *_children(pid)]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of stat(5)
    return total / os.sysconf("SC_CLK_TCK")


@dataclass
class RunResult:
    """One script run as a client saw it."""
    page: str
    seconds: float = float("nan")  # rerun request sent -> script_finished
    first_element_s: float | None = None  # rerun request sent -> first element of the page
    status: str = "ok"  # ok | compile_error | timeout | disconnected
    exceptions: list[str] = field(default_factory=list)  # exception boxes ("Type: message")
    errors: list[str] = field(default_factory=list)  # st.error boxes (friendly messages)
    warnings: list[str] = field(default_factory=list)  # exception elements flagged as warnings
    page_not_found: bool = False
    elements: int = 0

    @property
    def ok(self) -> bool:
        """Rendered to the end with no exception and no 'page not found'."""
        return self.status == "ok" and not self.exceptions and not self.page_not_found


class Session:
    """One student's browser tab, over the websocket: ``run(page)`` renders a page and returns a ``RunResult``.

    The connection stays open between runs (``heartbeat()`` keeps it alive like the frontend does), so the
    server keeps this session's state until ``close()``.
    """

    def __init__(self, base_url: str, timeout: float = 120):
        self.timeout = timeout
        self.page_hashes: dict[str, str] = {}  # url path -> page_script_hash, from the navigation message
        ws_url = base_url.replace("http://", "ws://").replace("https://", "wss://").rstrip("/") + WS_PATH
        self._ws = connect(ws_url, subprotocols=["streamlit"], max_size=None, open_timeout=timeout,
                           legacy=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        self._ws.close()

    def _send(self, build) -> None:
        msg = BackMsg()
        build(msg)
        self._ws.send(msg.SerializeToString())

    def _recv(self, timeout: float | None):
        msg = ForwardMsg()
        msg.ParseFromString(self._ws.recv(timeout=timeout))
        return msg

    def drain(self) -> int:
        """Read whatever the server sent since the last run; returns how many messages."""
        n = 0
        while True:
            try:
                self._recv(timeout=0)
            except TimeoutError:
                return n
            n += 1

    def heartbeat(self) -> float:
        """Send the frontend's app heartbeat and wait for the ack; returns the round trip in seconds."""
        self.drain()
        t = time.perf_counter()
        self._send(lambda m: setattr(m, "app_heartbeat", True))
        while not self._recv(self.timeout).heartbeat_ack:
            pass
        return time.perf_counter() - t

    def run(self, page: str = "", query_string: str = "") -> RunResult:
        """Rerun the script for the page at URL path ``page`` ("" = home) with default widget values."""
        res = RunResult(page=page)
        try:
            self.drain()
        except Exception:  # noqa: BLE001 - a dead connection is reported as a result, not raised
            res.status = "disconnected"
            return res

        def build(m):
            m.rerun_script.page_name = page
            m.rerun_script.page_script_hash = self.page_hashes.get(page, "")
            m.rerun_script.query_string = query_string

        t = time.perf_counter()
        deadline = t + self.timeout
        try:
            self._send(build)
            while True:
                msg = self._recv(max(0.0, deadline - time.perf_counter()))
                kind = msg.WhichOneof("type")
                if kind == "navigation":
                    self.page_hashes.update({p.url_pathname: p.page_script_hash for p in msg.navigation.app_pages})
                elif kind == "page_not_found":
                    res.page_not_found = True
                elif kind == "session_event" and msg.session_event.HasField("script_compilation_exception"):
                    e = msg.session_event.script_compilation_exception
                    res.exceptions.append(f"{e.type}: {e.message}")
                elif kind == "delta" and msg.delta.WhichOneof("type") == "new_element":
                    el = msg.delta.new_element
                    res.elements += 1
                    if res.first_element_s is None:
                        res.first_element_s = time.perf_counter() - t
                    if el.WhichOneof("type") == "exception":
                        text = f"{el.exception.type}: {el.exception.message}".strip(": ")
                        (res.warnings if el.exception.is_warning else res.exceptions).append(text)
                    elif el.WhichOneof("type") == "alert" and el.alert.format == Alert.ERROR:
                        res.errors.append(el.alert.body)
                elif kind == "script_finished":
                    if msg.script_finished == ForwardMsg.FINISHED_EARLY_FOR_RERUN:
                        continue  # st.rerun() or a newer request: the run goes on
                    if msg.script_finished == ForwardMsg.FINISHED_WITH_COMPILE_ERROR:
                        res.status = "compile_error"
                    break
        except TimeoutError:
            res.status = "timeout"
        except Exception:  # noqa: BLE001 - ConnectionClosed and friends
            res.status = "disconnected"
        res.seconds = time.perf_counter() - t
        return res


def server_tracebacks(log_path: str | Path) -> list[str]:
    """The last line of every traceback in a server log (what students saw redacted), in order."""
    out, in_tb = [], False
    for line in Path(log_path).read_text(errors="replace").splitlines():
        if line.startswith("Traceback (most recent call last)"):
            in_tb = True
        elif in_tb and line and not line.startswith((" ", "\t")):
            out.append(line.strip())
            in_tb = False
    return out
