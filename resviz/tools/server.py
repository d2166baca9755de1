"""A real ``streamlit run app.py`` on loopback, and the memory and CPU it uses (read from /proc).

No streamlit import here: the server runs in its own process.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository: app.py lives here
HEALTH_PATH = "/_stcore/health"


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int | None = None, log_path: str | Path | None = None, timeout: float = 180,
                 script: str | Path = "app.py", cwd: str | Path = ROOT,
                 extra_args: tuple[str, ...] = (), env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """``streamlit run app.py`` on loopback; returns (process, base URL) once ``/_stcore/health`` answers.

    ``script``/``cwd`` run another app (tests use a tiny one); ``cwd`` also picks its ``.streamlit/config.toml``.
    ``extra_args`` are more ``streamlit run`` options (``"--runner.postScriptGC=false"``) to compare settings;
    ``env`` adds environment variables (``{"RESVIZ_WARM_UP": "0"}``).
    Output goes to ``log_path`` (a temp file by default; its path is ``proc.log_path``): uncaught page
    exceptions are logged there with their traceback, since students only see a redacted message.
    """
    port = port or free_port()
    log_path = Path(log_path or tempfile.mkstemp(prefix="resviz-server-", suffix=".log")[1])
    cmd = [sys.executable, "-m", "streamlit", "run", str(script), "--server.headless=true", f"--server.port={port}",
           "--server.address=127.0.0.1", "--browser.gatherUsageStats=false", *extra_args]
    with open(log_path, "w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
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
            time.sleep(0.1)  # polling the health endpoint: the condition is the server answering
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


def descendants(pid: int) -> list[int]:
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
    for p in [pid, *descendants(pid)]:
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
    for p in [pid, *descendants(pid)]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of stat(5)
    return total / os.sysconf("SC_CLK_TCK")


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
