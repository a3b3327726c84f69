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
    env = {"PYTHONPATH": str(PLAIN), "CELERY_VISIBILITY_TIMEOUT": "12", "CELERY_TASK_TIME_LIMIT": "10"}
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
        tasks = running + later
        eventually(lambda: all(completions(stack, tasks)), 120, "every task completed",
                   interval=0.5)
        recovered_in = time.monotonic() - started
        assert stack.client().hlen("unacked") == 0  # nothing left that kombu could redeliver later
        time.sleep(14)  # past the visibility timeout: a redelivered second run would show here
        assert completions(stack, tasks) == [1] * 8  # none lost, none run twice
        # The results were stored too (a fresh client: the producer's result subscription died with Redis).
        reader = Celery("reader", broker=stack.broker_url, backend=stack.broker_url)
        assert [reader.AsyncResult(r.id).state for r in tasks] == ["SUCCESS"] * 8
        assert stack.procs[worker].poll() is None, "the worker recovered by itself"
        print(f"{pool} after Redis {sig.name}: all 8 done {recovered_in:.1f}s after Redis was back")


def test_a_threads_worker_with_idle_threads_survives_a_redis_stop_mid_task(tmp_path):
    """The shape that made Celery 5.7.0 exit with "Unrecoverable error: AttributeError" (3 of 3
    before celery_autoscale.worker._consumer): idle threads beside two running tasks, Redis stopped
    1.5 s into them. The worker stays up, consumes again, and nothing runs twice."""
    env = {"PYTHONPATH": str(PLAIN), "CELERY_VISIBILITY_TIMEOUT": "12", "CELERY_TASK_TIME_LIMIT": "10"}
    with LocalStack(tmp_path, env=env) as stack:
        stack.start_redis(persist=True)
        worker = stack.start_worker(WorkerSpec(QUEUE, "threads", concurrency=4, app=APP), name="worker")
        producer = Celery("web", broker=stack.broker_url, backend=stack.broker_url)
        settings = settings_of(stack.producer())
        running = [producer.send_task("myproject.daily_report", args=[f"a{i}"], kwargs={"seconds": 4}, queue=QUEUE)
                   for i in range(2)]
        eventually(lambda: backlog(stack.client(), QUEUE, settings).in_flight == 2, 30, "two tasks running")
        time.sleep(1.5)
        stack.restart_redis(3, signal.SIGTERM)
        later = [producer.send_task("myproject.daily_report", args=[f"b{i}"], kwargs={"seconds": 0.5}, queue=QUEUE)
                 for i in range(4)]
        tasks = running + later
        eventually(lambda: all(completions(stack, tasks)), 90, "every task completed", interval=0.5)
        assert stack.procs[worker].poll() is None, "the worker survived the lost connection"
        time.sleep(14)  # past the visibility timeout: a redelivered second run would show here
        assert completions(stack, tasks) == [1] * 6
        assert stack.client().hlen("unacked") == 0
        assert "Unrecoverable error" not in (tmp_path / "worker.log").read_text()
