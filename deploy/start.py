"""Start N resviz replicas (``streamlit run app.py``) and a reverse proxy with sticky sessions in front of them;
with ``--workers M``, a Dask scheduler and M workers that run the class's runs once for every replica.

    python -m deploy.start --replicas 2 --port 8080                   # HAProxy on 127.0.0.1:8080
    python -m deploy.start --replicas 4 --port 8080 --bind 0.0.0.0    # the class reaches http://<this machine>:8080
    python -m deploy.start --replicas 2 --port 8080 --proxy nginx
    python -m deploy.start --replicas 3 --workers 2                   # + scheduler on 127.0.0.1:8786, 2 workers

Replicas listen on loopback only (ports 8501.., ``--first-port``), share one disk cache (``$RESVIZ_CACHE``) and
get ``cores / replicas`` torch threads each. With workers, replicas get ``RESVIZ_SCHEDULER`` (resviz/cluster.py) and
each worker runs one run at a time (``--worker-threads``); ``--gpu`` gives each worker the resource GPU=1. The proxy is rendered from ``deploy/haproxy.cfg`` or
``deploy/nginx.conf`` into a run folder (logs too) and runs in the foreground; Ctrl-C stops everything.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the repository: app.py and .streamlit/config.toml live here
HERE = Path(__file__).resolve().parent
HEALTH_PATH = "/_stcore/health"


@dataclass(frozen=True)
class Proxy:
    """How to render, check and run one reverse proxy."""
    binary: str
    template: str  # file in deploy/
    server_line: str  # one upstream server; {name} and {port}
    check: tuple[str, ...]  # validate the rendered config ({config})
    run: tuple[str, ...]  # run it in the foreground ({config}, {run_dir})


PROXIES = {
    "haproxy": Proxy("haproxy", "haproxy.cfg", "    server {name} 127.0.0.1:{port} cookie {name} check",
                     ("-c", "-q", "-f", "{config}"), ("-db", "-f", "{config}")),
    "nginx": Proxy("nginx", "nginx.conf", "        server 127.0.0.1:{port};  # {name}",
                   ("-t", "-q", "-p", "{run_dir}", "-e", "{run_dir}/error.log", "-c", "{config}"),
                   ("-p", "{run_dir}", "-e", "{run_dir}/error.log", "-c", "{config}")),
}


@dataclass
class Replica:
    name: str  # r1, r2, ...: HAProxy's cookie value and X-Resviz-Replica header
    port: int
    proc: subprocess.Popen
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Cluster:
    """Running replicas behind a running proxy; ``url`` is what students open."""
    proxy: str
    url: str
    run_dir: Path
    replicas: list[Replica] = field(default_factory=list)
    proxy_proc: subprocess.Popen | None = None

    def replica_named(self, header: str) -> Replica:
        """The replica an ``X-Resviz-Replica`` header names (HAProxy: r1; nginx: 127.0.0.1:8501)."""
        return next(r for r in self.replicas if header in (r.name, f"127.0.0.1:{r.port}"))

    def sessions_per_replica(self) -> dict[str, dict[str, int]] | None:
        """HAProxy's counters per replica: {"r1": {"now": open connections, "total": connections so far}};
        None for nginx (its free version has no per-upstream counters)."""
        if self.proxy != "haproxy":
            return None
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(self.run_dir / "haproxy.sock"))
            s.sendall(b"show stat\n")
            text = b"".join(iter(lambda: s.recv(65536), b"")).decode()
        head, *rows = [line.split(",") for line in text.lstrip("# ").splitlines() if line]
        col = {name: i for i, name in enumerate(head)}
        return {row[col["svname"]]: {"now": int(row[col["scur"]]), "total": int(row[col["stot"]])}
                for row in rows if row[col["pxname"]] == "streamlit" and row[col["svname"]] != "BACKEND"}


def free_port() -> int:
    """A free loopback port (the launcher imports nothing of resviz: no torch in this process)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def max_upload_mb(root: Path = ROOT) -> int:
    """``server.maxUploadSize`` from the app's .streamlit/config.toml (Streamlit's default: 200 MB)."""
    config = root / ".streamlit" / "config.toml"
    settings = tomllib.loads(config.read_text()) if config.exists() else {}
    return int(settings.get("server", {}).get("maxUploadSize", 200))


def render(text: str, **fields) -> str:
    """Replace every ``{{name}}`` in ``text``; KeyError for a field without a value."""
    return re.sub(r"\{\{(\w+)\}\}", lambda m: str(fields[m.group(1)]), text)


def render_config(proxy: str, replicas: list[tuple[str, int]], port: int, bind: str, run_dir: Path) -> Path:
    """Write the proxy's config for ``replicas`` [(name, port)] into ``run_dir``; returns its path."""
    spec = PROXIES[proxy]
    servers = "\n".join(spec.server_line.format(name=n, port=p) for n, p in replicas)
    text = render((HERE / spec.template).read_text(), replicas=len(replicas), servers=servers, port=port, bind=bind,
                  run_dir=run_dir, stats_socket=run_dir / "haproxy.sock", max_upload_mb=max_upload_mb())
    path = run_dir / spec.template
    path.write_text(text)
    return path


def wait_healthy(url: str, procs: list[subprocess.Popen], timeout: float, what: str, log: Path) -> None:
    """Poll ``url`` + /_stcore/health until it answers 200; RuntimeError (with the log's end) on timeout or exit."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + HEALTH_PATH, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if any(p.poll() is not None for p in procs):
            break
        time.sleep(0.2)  # polling interval, not a wait for a condition
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
    raise RuntimeError(f"{what} did not become healthy on {url}:\n{tail}")


def start_replica(name: str, port: int, run_dir: Path, env: dict, script: str, cwd: Path) -> Replica:
    """``streamlit run <script>`` on 127.0.0.1:``port``, output to ``run_dir/<name>.log``."""
    log = run_dir / f"{name}.log"
    cmd = [sys.executable, "-m", "streamlit", "run", script, "--server.headless=true", f"--server.port={port}",
           "--server.address=127.0.0.1", "--browser.gatherUsageStats=false"]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    return Replica(name, port, proc, log)


def stop(procs: list[subprocess.Popen], timeout: float = 20) -> None:
    """Terminate ``procs`` together, then kill any that have not exited within ``timeout`` s."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@dataclass
class Engine:
    """A Dask scheduler and its workers (processes on this machine); ``address`` is what replicas connect to."""
    address: str
    scheduler: subprocess.Popen
    workers: list[subprocess.Popen] = field(default_factory=list)
    run_dir: Path | None = None
    env: dict = field(default_factory=dict)

    @property
    def procs(self) -> list[subprocess.Popen]:
        return [*self.workers, self.scheduler]

    def add_worker(self, name: str, threads: int = 1, resources: str | None = None) -> subprocess.Popen:
        """Start one more worker (``dask worker``, no nanny: a killed worker stays dead) and return its process."""
        cmd = [sys.executable, "-m", "distributed.cli.dask_worker", self.address, "--name", name, "--nthreads",
               str(threads), "--no-nanny", "--no-dashboard", "--host", "127.0.0.1"]
        if resources:
            cmd += ["--resources", resources]
        with open(self.run_dir / f"{name}.log", "w") as out:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        self.workers.append(proc)
        return proc

    def wait_for_workers(self, n: int, timeout: float = 120) -> None:
        """Block until the scheduler counts ``n`` workers; RuntimeError (with the logs' ends) on timeout."""
        from distributed import Client  # only here: the launcher without workers imports no Dask

        try:
            with Client(self.address, timeout=timeout, set_as_default=False) as client:
                client.wait_for_workers(n, timeout=timeout)
        except (OSError, TimeoutError) as e:
            tails = "\n".join(p.read_text(errors="replace")[-1500:] for p in sorted(self.run_dir.glob("*.log")))
            raise RuntimeError(f"the Dask scheduler at {self.address} did not get {n} workers ({e}):\n{tails}")


def engine_env(env: dict | None = None) -> dict:
    """The environment of the scheduler and workers: one torch thread a run, one run a thread, no oversubscription
    (``worker-saturation`` 1.0: a worker is sent only what it can start now, so the queue stays on the scheduler,
    in order, where every replica reads it)."""
    env = dict(os.environ if env is None else env)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION", "1.0")
    return env


@contextlib.contextmanager
def start_engine(workers: int = 2, run_dir: str | Path | None = None, port: int = 8786, host: str = "127.0.0.1",
                 threads: int = 1, gpu: bool = False, timeout: float = 120):
    """Start a Dask scheduler on ``host:port`` (0: a free port) and ``workers`` workers; yields an ``Engine``."""
    run_dir = Path(run_dir or tempfile.mkdtemp(prefix="resviz-engine-"))
    run_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    env = engine_env()
    cmd = [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", host, "--port", str(port),
           "--no-dashboard"]
    with open(run_dir / "scheduler.log", "w") as out:
        scheduler = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    engine = Engine(f"tcp://{host}:{port}", scheduler, run_dir=run_dir, env=env)
    try:
        for i in range(workers):
            engine.add_worker(f"w{i + 1}", threads, "GPU=1" if gpu else None)
        engine.wait_for_workers(workers, timeout)
        yield engine
    finally:
        stop(engine.procs)


def replica_env(replicas: int, cache_dir: str | Path | None, scheduler: str | None = None) -> dict:
    """The environment every replica gets: one shared disk cache, the cores shared out as torch threads, and the
    Dask scheduler's address when there is one."""
    env = dict(os.environ)
    env["RESVIZ_CACHE"] = str(cache_dir or env.get("RESVIZ_CACHE") or Path.home() / ".cache" / "resviz")
    if scheduler:
        env["RESVIZ_SCHEDULER"] = scheduler
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // replicas)))
    return env


@contextlib.contextmanager
def start_cluster(replicas: int = 2, port: int = 8080, proxy: str = "haproxy", bind: str = "127.0.0.1",
                  first_port: int = 8501, cache_dir: str | Path | None = None, run_dir: str | Path | None = None,
                  script: str = "app.py", cwd: Path = ROOT, timeout: float = 180, scheduler: str | None = None):
    """Start ``replicas`` app processes and ``proxy`` in front of them; yields a ``Cluster``, stops all on exit.
    ``scheduler``: the Dask scheduler's address the replicas send their runs to (``RESVIZ_SCHEDULER``).

    ``port=0`` / ``first_port=0`` pick free ports (tests). RuntimeError if the proxy binary is missing, its
    rendered config does not pass its own check, or anything does not answer /_stcore/health within ``timeout``.
    """
    spec = PROXIES[proxy]
    binary = shutil.which(spec.binary) or shutil.which(spec.binary, path="/usr/sbin:/usr/local/sbin")
    if not binary:
        raise RuntimeError(f"{spec.binary} not found: apt-get install -y {spec.binary}")
    run_dir = Path(run_dir or tempfile.mkdtemp(prefix=f"resviz-{proxy}-"))
    run_dir.mkdir(parents=True, exist_ok=True)
    run_dir.chmod(0o755)  # nginx's workers (user nobody) create their temp folders in it
    ports = [first_port + i if first_port else free_port() for i in range(replicas)]
    port = port or free_port()
    config = render_config(proxy, [(f"r{i + 1}", p) for i, p in enumerate(ports)], port, bind, run_dir)
    fill = {"config": config, "run_dir": run_dir}
    checked = subprocess.run([binary, *(a.format(**fill) for a in spec.check)], capture_output=True, text=True)
    if checked.returncode:
        raise RuntimeError(f"{proxy} rejected {config}:\n{checked.stdout}{checked.stderr}")
    cluster = Cluster(proxy, f"http://{'127.0.0.1' if bind == '0.0.0.0' else bind}:{port}", run_dir)
    env = replica_env(replicas, cache_dir, scheduler)
    try:
        cluster.replicas = [start_replica(f"r{i + 1}", p, run_dir, env, script, cwd) for i, p in enumerate(ports)]
        for r in cluster.replicas:
            wait_healthy(r.url, [r.proc], timeout, f"replica {r.name}", r.log)
        with open(run_dir / f"{proxy}.log", "w") as out:
            cluster.proxy_proc = subprocess.Popen([binary, *(a.format(**fill) for a in spec.run)],
                                                  stdout=out, stderr=subprocess.STDOUT)
        wait_healthy(cluster.url, [cluster.proxy_proc], 30, proxy, run_dir / f"{proxy}.log")
        yield cluster
    finally:
        stop([p for p in [cluster.proxy_proc] if p] + [r.proc for r in cluster.replicas])


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--replicas", type=int, default=2, help="app processes (default 2; about one per core)")
    ap.add_argument("--port", type=int, default=8080, help="the proxy's port, what students open (default 8080)")
    ap.add_argument("--bind", default="127.0.0.1",
                    help="the proxy's address (default 127.0.0.1; 0.0.0.0 lets the class reach it)")
    ap.add_argument("--proxy", choices=sorted(PROXIES), default="haproxy")
    ap.add_argument("--first-port", type=int, default=8501, help="replica ports start here (loopback only)")
    ap.add_argument("--cache-dir", help="the shared disk cache (default $RESVIZ_CACHE or ~/.cache/resviz)")
    ap.add_argument("--run-dir", help="where the rendered config and the logs go (default: a new temp folder)")
    ap.add_argument("--workers", type=int, default=0,
                    help="Dask workers that run the class's runs once for all replicas (default 0: each replica runs "
                         "its own, in process)")
    ap.add_argument("--scheduler-port", type=int, default=8786, help="the Dask scheduler's port (default 8786)")
    ap.add_argument("--worker-threads", type=int, default=1, help="runs each worker executes at once (default 1)")
    ap.add_argument("--gpu", action="store_true", help="workers offer GPU=1 and each run asks for RESVIZ_RUN_GPU "
                                                       "(default 1; 0.5: two runs share a GPU)")
    args = ap.parse_args(argv)
    if args.replicas < 1:
        ap.error("--replicas must be at least 1")
    if args.workers < 0:
        ap.error("--workers must be 0 or more")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop like Ctrl-C: the context managers clean up
    try:
        with contextlib.ExitStack() as stack:
            engine = None
            if args.workers:
                if args.gpu:
                    os.environ.setdefault("RESVIZ_RUN_GPU", "1")
                engine = stack.enter_context(start_engine(args.workers, Path(args.run_dir or tempfile.mkdtemp(
                    prefix="resviz-engine-")) / "engine", args.scheduler_port, threads=args.worker_threads,
                    gpu=args.gpu))
            cluster = stack.enter_context(start_cluster(args.replicas, args.port, args.proxy, args.bind,
                                                        args.first_port, args.cache_dir, args.run_dir,
                                                        scheduler=engine and engine.address))
            ports = ", ".join(str(r.port) for r in cluster.replicas)
            workers = f"; {len(engine.workers)} Dask workers, scheduler {engine.address}" if engine else ""
            print(f"resviz: {len(cluster.replicas)} replicas (127.0.0.1:{ports}) behind {args.proxy} on "
                  f"{args.bind}:{args.port}{workers}; open {cluster.url}\nconfig and logs: {cluster.run_dir}\n"
                  "Ctrl-C stops everything.", flush=True)
            engine_lost = False
            while cluster.proxy_proc.poll() is None:
                for r in cluster.replicas:
                    if r.proc.poll() is not None:
                        raise RuntimeError(f"replica {r.name} exited; its log: {r.log}")
                if engine and engine.scheduler.poll() is not None and not engine_lost:
                    engine_lost = True  # the replicas go on with their own engines and tell the teacher
                    print(f"resviz: the Dask scheduler exited (its log: {engine.run_dir / 'scheduler.log'}); the "
                          "replicas run new runs themselves", file=sys.stderr, flush=True)
                time.sleep(1)  # supervision interval
            raise RuntimeError(f"{args.proxy} exited; its log: {cluster.run_dir / (args.proxy + '.log')}")
    except KeyboardInterrupt:
        pass
    except RuntimeError as e:
        print(f"resviz: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
