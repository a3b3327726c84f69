"""What the runtime costs a worker: plain Celery and the runtime paired in one run; prints one JSON line.

    python -m bench.worker_overhead [--count 2000] [--repeat 3]

On a Redis server of its own, for each row (no-op and 10 ms tasks; ``prefork`` concurrency 2 and
``threads`` concurrency 16) it preloads ``--count`` tasks of ``bench/overhead_app.py`` (a plain
app, Celery's defaults) on one queue for one started worker, and times from the first push to the
last task's end, once under ``celery -A bench.overhead_app worker`` (plain Celery, its defaults), once under
``celery -A bench.overhead_app_required worker`` (plain Celery with only the settings the runtime
requires: ``acks_late``, reject on worker lost, no prefetch) and once under
``celery -A celery_autoscale.worker worker`` with ``CELERY_AUTOSCALE_APP=bench.overhead_app:app``
(the runtime), in turn, ``--repeat`` times; the fastest of each counts. Per row:

- ``plain_tasks_per_s``, ``runtime_tasks_per_s`` and ``ratio`` (runtime ÷ plain; goal >= 0.95);
- ``required_tasks_per_s`` and ``ratio_to_required`` (runtime ÷ plain with the required settings):
  what the runtime's code costs beyond what its settings cost Celery itself;
- ``plain_worker_cpu_ms_per_task``, ``required_worker_cpu_ms_per_task``, ``runtime_worker_cpu_ms_per_task``:
  the worker's CPU time (its main process and its pool's processes, user + system) per task in that
  fastest run, milliseconds;
- ``plain_redis_commands_per_task``, ``runtime_redis_commands_per_task``: Redis commands
  (``INFO commandstats``, every client) per task, the bench's own counting ``INCR`` included in
  both, its polling ``GET`` and ``INFO`` not; ``*_commands`` list them by name (those of at least
  0.05 per task).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
from celery import Celery

ROOT = Path(__file__).resolve().parents[1]
QUEUE = "overhead"
#: The worker configurations of a row, run in turn (see the module's doc).
KINDS = ("plain", "required", "runtime")
ROWS = [("prefork", 2, 0.0), ("prefork", 2, 0.01), ("threads", 16, 0.0), ("threads", 16, 0.01)]


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` and its live descendants (Linux ``/proc``)."""
    total, pending = 0.0, [pid]
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return total


def commandstats(client) -> dict[str, int]:
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in client.info("commandstats").items()}


def start_worker(kind: str, pool: str, concurrency: int, url: str, workdir: Path) -> tuple[subprocess.Popen, Path]:
    app = {"plain": "bench.overhead_app", "required": "bench.overhead_app_required"}.get(kind, "celery_autoscale.worker")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELERY_")}
    env.update(CELERY_BROKER_URL=url, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "src"), env.get("PYTHONPATH", "")]),
               CELERY_AUTOSCALE_APP="bench.overhead_app:app", CELERY_HEARTBEAT_FILE=str(workdir / f"{kind}.beat"),
               PROMETHEUS_MULTIPROC_DIR=str(workdir / f"metrics-{kind}"))
    (workdir / f"metrics-{kind}").mkdir(exist_ok=True)
    log = workdir / f"{kind}-{pool}.log"
    argv = [sys.executable, "-m", "celery", "-A", app, "worker", "-Q", QUEUE, "--pool", pool,
            "--concurrency", str(concurrency), "--loglevel", "WARNING", "-n", f"{kind}@%h",
            "--without-mingle", "--without-gossip", "--without-heartbeat"]
    proc = subprocess.Popen(argv, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    return proc, log


def one_run(kind: str, pool: str, concurrency: int, seconds: float, count: int, url: str, workdir: Path) -> dict:
    client = redis.Redis.from_url(url)
    client.flushall()
    proc, log = start_worker(kind, pool, concurrency, url, workdir)
    try:
        producer = Celery("producer", broker=url)
        deadline = time.monotonic() + 60
        while not any(f"{kind}@" in n for r in producer.control.ping(timeout=0.5) for n in r):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"the {kind} worker did not start; see {log}")
        messages = [producer.amqp.as_task_v2(f"t{i}", "overhead.work", kwargs={"seconds": seconds}) for i in range(count)]
        before = commandstats(client)
        cpu_before = cpu_seconds(proc.pid)
        start = time.perf_counter()
        with producer.producer_or_acquire() as p:
            with p.batch():
                for message in messages:
                    producer.amqp.send_task_message(p, "overhead.work", message, queue=QUEUE, declare=[])
        while int(client.get("overhead:done") or 0) < count:
            if proc.poll() is not None:
                raise RuntimeError(f"the {kind} worker exited; see {log}")
            time.sleep(0.01)
        elapsed = time.perf_counter() - start
        cpu = cpu_seconds(proc.pid) - cpu_before
        after = commandstats(client)
    finally:
        proc.terminate()
        proc.wait(30)
    calls = {name: after[name] - before.get(name, 0) for name in after if after[name] - before.get(name, 0)}
    calls.pop("info", None)
    calls.pop("get", None)  # the bench's own polling of the done counter
    return {"tasks_per_s": count / elapsed, "cpu_ms_per_task": 1000 * cpu / count, "calls": calls}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.worker_overhead", description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=2000, help="tasks per run (default 2000)")
    p.add_argument("--repeat", type=int, default=5,
                   help="runs per configuration, alternating; the fastest counts (default 5: a shared 2-core machine's "
                        "speed varies by up to 40%% from run to run, for both alike)")
    args = p.parse_args(argv)
    from loadgen.stack import LocalStack

    rows = []
    with tempfile.TemporaryDirectory() as tmp, LocalStack(Path(tmp)) as stack:
        stack.start_redis()
        url = stack.broker_url
        for pool, concurrency, seconds in ROWS:
            best = dict.fromkeys(KINDS)
            for _ in range(args.repeat):
                for kind in KINDS:
                    run = one_run(kind, pool, concurrency, seconds, args.count, url, Path(tmp))
                    if best[kind] is None or run["tasks_per_s"] > best[kind]["tasks_per_s"]:
                        best[kind] = run
            per_task = {k: {n: round(c / args.count, 2) for n, c in sorted(best[k]["calls"].items())
                            if c / args.count >= 0.05} for k in best}
            rows.append({
                "pool": pool, "concurrency": concurrency, "task_seconds": seconds,
                "plain_tasks_per_s": round(best["plain"]["tasks_per_s"], 1),
                "runtime_tasks_per_s": round(best["runtime"]["tasks_per_s"], 1),
                "ratio": round(best["runtime"]["tasks_per_s"] / best["plain"]["tasks_per_s"], 3),
                "required_tasks_per_s": round(best["required"]["tasks_per_s"], 1),
                "ratio_to_required": round(best["runtime"]["tasks_per_s"] / best["required"]["tasks_per_s"], 3),
                "plain_worker_cpu_ms_per_task": round(best["plain"]["cpu_ms_per_task"], 3),
                "runtime_worker_cpu_ms_per_task": round(best["runtime"]["cpu_ms_per_task"], 3),
                "required_worker_cpu_ms_per_task": round(best["required"]["cpu_ms_per_task"], 3),
                "plain_redis_commands_per_task": round(sum(per_task["plain"].values()), 2),
                "runtime_redis_commands_per_task": round(sum(per_task["runtime"].values()), 2),
                "plain_commands": per_task["plain"], "runtime_commands": per_task["runtime"],
            })
    print(json.dumps({"count": args.count, "repeat": args.repeat, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
