"""Run a parser that can crash where a crash hurts no one: a short-lived child process with limits.

``run_isolated(fn, arg, limits)`` calls ``fn(arg)`` in a child and returns what it returned (plain JSON data:
dicts, lists, strings, numbers). The child has a memory cap (RLIMIT_AS: what it may map beyond an idle child),
a CPU-time cap (RLIMIT_CPU), Python's recursion limit and no core dumps; the caller waits at most ``wall_s``
and kills it after. A child that dies by a signal (a segfault in C code), exceeds a limit or runs out of time
is a ``SandboxError`` in plain words; so is any exception inside it. The answer comes back as JSON read with a
size cap, never as a pickle: a child that was made to misbehave cannot send the server code or a structure that
crashes it.

The children come from one zygote per server process: a fresh Python (never a fork of the threaded Streamlit
server) started on first use, which imports torch and the callers' modules once. For each job it forks a
worker (one fork: tens of milliseconds), kills it at the wall-clock limit and reports how it ended. At most
``MAX_CHILDREN`` run at once; further jobs wait for a slot. The zygote exits when the server does (its socket
closes) and kills its workers then; a worker never outlives its limits.
"""
from __future__ import annotations

import gc
import importlib
import json
import logging
import os
import pickle
import resource
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

log = logging.getLogger("resviz")

MAX_CHILDREN = max(2, os.cpu_count() or 1)  # children at once: one a core; a burst of uploads queues here
PREFIX = "This file could not be read safely: "
_FRAME = struct.Struct("<cQ")  # one message on a job's socket: kind (J job, A answer, X how it ended), length
_WALL = struct.Struct("<d")  # what the server sends the zygote with each job socket: the wall-clock limit


class SandboxError(ValueError):
    """The child could not finish; the message says why, in plain words."""


@dataclass(frozen=True)
class Limits:
    """What one child may use; a limit it exceeds is a SandboxError, never a problem for the server."""

    memory_mb: int = 1024  # address space beyond an idle child (Python + torch); past it, MemoryError
    cpu_s: int = 10  # CPU seconds; SIGXCPU then, a second later, SIGKILL (a loop in C code cannot ignore it)
    wall_s: float = 30.0  # seconds a child may run before it is killed (waiting for a free slot: as long again)
    recursion: int = 1000  # Python's recursion limit in the child (its default): deeper is a RecursionError
    answer_mb: int = 16  # the largest answer accepted from the child


class _Zygote:
    """A fresh Python with torch and the callers' modules imported, started once; it forks a child per job.

    Not ``multiprocessing``'s forkserver: on Python 3.11 that one re-runs the server's main script in every
    child (the ``streamlit`` launcher: about a second a job) and ignores the server's ``sys.path``.
    """

    def __init__(self, modules: tuple[str, ...]):
        self.modules = modules
        self.control, theirs = socket.socketpair()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        code = f"from {__name__} import _zygote_main; _zygote_main({theirs.fileno()}, {list(modules)!r})"
        self.proc = subprocess.Popen([sys.executable, "-c", code], pass_fds=[theirs.fileno()], env=env,
                                     stdin=subprocess.DEVNULL, cwd=os.getcwd())
        theirs.close()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def job(self, wall_s: float) -> socket.socket:
        """A socket to a new worker (the zygote forks it and kills it after ``wall_s``)."""
        mine, theirs = socket.socketpair()
        try:
            socket.send_fds(self.control, [_WALL.pack(wall_s)], [theirs.fileno()])
        finally:
            theirs.close()
        return mine


_slots = threading.BoundedSemaphore(MAX_CHILDREN)
_start_lock = threading.Lock()
_zygote: _Zygote | None = None


def start(*modules: str) -> None:
    """Start the zygote now, in the background (it imports torch and ``modules``: seconds), not on the first job."""
    global _zygote
    with _start_lock:
        if _zygote is None or not _zygote.alive():
            _zygote = _Zygote(tuple(dict.fromkeys(("torch", __name__, *modules))))


def _job_socket(modules: tuple[str, ...], wall_s: float) -> socket.socket:
    global _zygote
    with _start_lock:
        for attempt in range(2):  # a zygote that died (killed, out of memory) is replaced once
            try:
                if _zygote is None or not _zygote.alive() or attempt:
                    if _zygote is not None:
                        _zygote.control.close()  # an old one still running sees its end and exits
                    _zygote = _Zygote(tuple(dict.fromkeys(("torch", __name__, *modules))))
                return _zygote.job(wall_s)
            except OSError as e:
                log.warning("sandbox: the zygote did not take a job (%s); starting another", e)
        raise SandboxError(PREFIX + "the server could not start a reader for it; try again in a minute.")


def run_isolated(fn, arg, limits: Limits = Limits()):
    """``fn(arg)`` in a child process under ``limits``; its JSON-able result, or a SandboxError in plain words.

    ``fn`` must be a module-level function (the child imports it by name); ``arg`` is pickled to the child.
    """
    if not _slots.acquire(timeout=limits.wall_s):
        raise SandboxError("The server is reading too many files at once; try again in a minute.")
    try:
        with _job_socket((fn.__module__,), limits.wall_s) as job:
            return _run(job, fn, arg, limits)
    finally:
        _slots.release()


def _run(job: socket.socket, fn, arg, limits: Limits):
    _send(job, b"J", pickle.dumps((fn, arg, limits)))
    job.settimeout(limits.wall_s + 10)  # the zygote kills the worker at wall_s and then reports its end
    answer, ended = None, b""
    try:
        while not (ended or answer):  # an answer is enough: the worker exits right after it (the zygote reaps it)
            kind, payload = _receive(job, limits.answer_mb * 2**20)
            answer, ended = (payload, ended) if kind == b"A" else (answer, payload)
    except (OSError, ValueError, EOFError):  # a zygote that vanished, a garbled or oversized message
        ended = ended or b"?"
    if answer is None:
        raise SandboxError(PREFIX + _death(ended.decode(errors="replace"), limits) + ".")
    return _decode(answer, limits)


def _send(sock: socket.socket, kind: bytes, payload: bytes) -> None:
    sock.sendall(_FRAME.pack(kind, len(payload)) + payload)


def _receive(sock: socket.socket, max_bytes: int) -> tuple[bytes, bytes]:
    kind, n = _FRAME.unpack(_exactly(sock, _FRAME.size))
    if n > max_bytes:
        raise ValueError("answer too large")
    return kind, _exactly(sock, n)


def _exactly(sock: socket.socket, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = sock.recv(min(left, 2**20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _decode(raw: bytes, limits: Limits):
    try:
        answer = json.loads(raw)
    except (ValueError, RecursionError):
        raise SandboxError(PREFIX + "the reader's answer was not understood.") from None
    if not isinstance(answer, dict) or not isinstance(answer.get("failed"), (str, type(None))):
        raise SandboxError(PREFIX + "the reader's answer was not understood.")
    if answer.get("failed"):
        raise SandboxError(PREFIX + _failure(answer["failed"], limits) + ".")
    return answer.get("result")


def _failure(kind: str, limits: Limits) -> str:
    if kind == "RecursionError":
        return f"it is nested too deeply (more than {limits.recursion:,} levels)"
    if kind == "MemoryError":
        return f"reading it needs more than {limits.memory_mb:,} MB of memory"
    return f"reading it failed ({kind[:60]})"


def _death(ended: str, limits: Limits) -> str:
    """Why a child gave no answer, from how the zygote saw it end (T: timed out, else its exit code)."""
    if ended == "T":
        return f"reading it took longer than {limits.wall_s:g} s"
    if not ended.lstrip("-").isdigit():
        return "the reader vanished without an answer"
    exitcode = int(ended)
    if exitcode in (-signal.SIGXCPU, -signal.SIGKILL):  # SIGKILL: the hard CPU limit, or the system's OOM killer
        return f"reading it took more than {limits.cpu_s} s of computing time, or more memory than allowed"
    if exitcode < 0:
        name = signal.Signals(-exitcode).name if -exitcode in signal.valid_signals() else f"signal {-exitcode}"
        what = {"SIGSEGV": "segmentation fault", "SIGBUS": "bus error", "SIGABRT": "abort"}.get(name, name)
        return f"the reader crashed on it ({what}); the server is unharmed"
    return f"the reader stopped without an answer (exit code {exitcode})"


# --- in the child -------------------------------------------------------------------------------------------


def _zygote_main(fd: int, modules: list[str]) -> None:
    """The zygote: import ``modules`` once; then fork a worker for each job socket the server sends, kill it at
    its wall-clock limit, and report on its socket how it ended. Ends (killing its workers) with the server."""
    for name in modules:
        importlib.import_module(name)
    gc.freeze()  # children never scan what the zygote imported: their pages stay shared, forks stay cheap
    control = socket.socket(fileno=fd)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a worker's end wakes the select through wake_w
    jobs: dict[int, list] = {}  # worker pid -> [its job socket, deadline, killed for time]
    with selectors.DefaultSelector() as sel:
        sel.register(control, selectors.EVENT_READ)
        sel.register(wake_r, selectors.EVENT_READ)
        while True:
            deadlines = [job[1] for job in jobs.values() if not job[2]]
            wait = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
            for key, _ in sel.select(wait):
                if key.fileobj is wake_r:
                    while _drained(wake_r):
                        pass
                elif not _fork_worker(control, jobs, (wake_r, wake_w)):
                    for pid in jobs:  # the server is gone: so are its workers (killed and reaped)
                        _kill(pid)
                        os.waitpid(pid, 0)
                    return
            _reap(jobs)
            _expire(jobs)


def _drained(fd: int) -> bool:
    try:
        return bool(os.read(fd, 512))
    except BlockingIOError:
        return False


def _fork_worker(control: socket.socket, jobs: dict, wake: tuple[int, int]) -> bool:
    """Fork a worker for the job socket the server sent; False once the server has closed its end."""
    try:
        msg, fds, _, _ = socket.recv_fds(control, _WALL.size, 1)
    except OSError:
        return False
    if not msg:
        return False
    if len(msg) != _WALL.size or len(fds) != 1:  # garbled: nothing to run
        for f in fds:
            os.close(f)
        return True
    pid = os.fork()
    if pid == 0:
        control.close()
        for job in jobs.values():  # a worker never holds another job's socket
            job[0].close()
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for f in wake:
            os.close(f)
        _worker(socket.socket(fileno=fds[0]))
    jobs[pid] = [socket.socket(fileno=fds[0]), time.monotonic() + _WALL.unpack(msg)[0], False]
    return True


def _reap(jobs: dict) -> None:
    """Tell each finished worker's server how it ended (T: killed for time, else its exit code)."""
    while jobs:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        job = jobs.pop(pid, None)
        if job:
            code = "T" if job[2] else str(os.waitstatus_to_exitcode(status))
            try:
                job[0].settimeout(5)
                _send(job[0], b"X", code.encode())
            except OSError:  # the server stopped waiting
                pass
            job[0].close()


def _expire(jobs: dict) -> None:
    now = time.monotonic()
    for pid, job in jobs.items():
        if not job[2] and now >= job[1]:
            job[2] = True
            _kill(pid)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _worker(job: socket.socket) -> None:
    """Runs in the worker: its job, limits, ``fn(arg)``, one JSON answer, then exit at once (nothing torn down)."""
    try:
        fn, arg, limits = pickle.loads(_receive(job, 2**31)[1])  # from the server itself, not from a student
        _limit(limits)
        answer = {"result": fn(arg)}
    except BaseException as e:  # noqa: BLE001 - whatever happens in here is reported, never raised
        answer = {"failed": type(e).__name__}
    try:
        raw = json.dumps(answer, allow_nan=False).encode()
    except (ValueError, TypeError, RecursionError) as e:
        raw = json.dumps({"failed": type(e).__name__}).encode()
    try:
        _send(job, b"A", raw)
    finally:
        sys.stderr.flush()
        os._exit(0)  # skip freeing what fn built: tearing down a hostile structure can cost more than building it


def _limit(limits: Limits) -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash writes no core file
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 1))  # a forked child starts at 0 s
    mapped = _address_space()
    if mapped is not None:
        cap = mapped + limits.memory_mb * 2**20
        try:
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        except (ValueError, OSError):  # macOS does not enforce RLIMIT_AS; the CPU limit and timeout still hold
            log.info("sandbox: no address-space limit on this system")
    sys.setrecursionlimit(limits.recursion)


def _address_space() -> int | None:
    """Bytes this process maps now (Linux: /proc/self/statm), or None where that cannot be read."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None
