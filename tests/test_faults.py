"""Redis restarts under load: every task ends exactly once, and the worker consumes again by itself.

The app is tests/plainapp (it counts completions per task id in Redis); Redis keeps its data in
an append-only file with ``appendfsync always``, as a production Redis with a volume would.
"""

import signal
import time
from pathlib import Path

import pytest
from celery import Celery
from celery_autoscale import backlog, settings_of
from helpers import eventually

from loadgen.stack import LocalStack, WorkerSpec

PLAIN = Path(__file__).resolve().parent / "plainapp"
APP = "myproject.celery:app"
QUEUE = "reports.daily"


def completions(stack, results) -> list[int]:
    client = stack.client()
    return [int(client.get(f"myproject:completed:{r.id}") or 0) for r in results]


@pytest.mark.parametrize("pool", ["prefork", "threads"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["redis-sigterm", "redis-sigkill"])
def test_a_redis_restart_mid_task_loses_nothing_and_runs_nothing_twice(tmp_path, pool, sig):
    env = {"PYTHONPATH": str(PLAIN), "CELERY_VISIBILITY_TIMEOUT": "30", "CELERY_TASK_TIME_LIMIT": "20"}
    with LocalStack(tmp_path, env=env) as stack:
        stack.start_redis(persist=True)
        worker = stack.start_worker(WorkerSpec(QUEUE, pool, concurrency=2, app=APP), name="worker")
        producer = Celery("web", broker=stack.broker_url, backend=stack.broker_url)
        settings = settings_of(stack.producer())
        running = [producer.send_task("myproject.daily_report", args=[f"a{i}"], kwargs={"seconds": 3}, queue=QUEUE)
                   for i in range(4)]
        eventually(lambda: backlog(stack.client(), QUEUE, settings).in_flight == 2, 30, "two tasks running")
        stack.restart_redis(3, sig)
        later = [producer.send_task("myproject.daily_report", args=[f"b{i}"], kwargs={"seconds": 0.5}, queue=QUEUE)
                 for i in range(4)]
        started = time.monotonic()
        assert sorted(r.get(timeout=120)["day"] for r in running + later) == sorted(
            [f"a{i}" for i in range(4)] + [f"b{i}" for i in range(4)])
        assert completions(stack, running + later) == [1] * 8  # none lost, none run twice
        assert stack.procs[worker].poll() is None, "the worker recovered by itself"
        print(f"{pool} after Redis {sig.name}: all 8 done {time.monotonic() - started:.1f}s after the restart")
