"""The gevent pool (Celery's greenlet pool for I/O-bound queues) keeps every guarantee.

A plain app's worker run with ``--pool gevent`` (Celery monkey-patches the process before the app
loads): its running tasks are in the in-flight record and its run counters count, a SIGTERM lets
the running tasks finish and takes no waiting one, a SIGKILL mid-task loses nothing (the
reconciler gives the task back), and a Redis crash mid-task neither loses a task nor runs one twice.

``eventlet`` passed the first test here but not the second: 2 of 2 runs, its worker exited at the
Redis restart with "Unrecoverable error: RuntimeError('Second simultaneous read on fileno 4
detected ...')", and eventlet itself warns that it is deprecated; the chart refuses it.
"""

import os
import signal
import time

import pytest
from celery import Celery
from celery_autoscale import backlog, settings_of
from chart import render_chart
from helpers import eventually, wait_started
from test_chart_schema import rejected
from test_plain_app import APP, PLAIN, completed

from loadgen.stack import LocalStack, WorkerSpec

QUEUE = "reports.daily"
POOLS = ["gevent"]


def stack_for(tmp_path):
    env = {"PYTHONPATH": str(PLAIN), "CELERY_VISIBILITY_TIMEOUT": "30", "CELERY_TASK_TIME_LIMIT": "10"}
    return LocalStack(tmp_path, env=env)


def report(producer, day: str, seconds: float):
    return producer.send_task("myproject.daily_report", args=[day], kwargs={"seconds": seconds}, queue=QUEUE)


@pytest.mark.parametrize("pool", POOLS)
def test_a_greenlet_worker_records_its_tasks_finishes_them_on_sigterm_and_loses_none_to_a_sigkill(tmp_path, pool):
    with stack_for(tmp_path) as stack:
        stack.start_redis()
        client, settings = stack.client(), settings_of(stack.producer())
        producer = Celery("web", broker=stack.broker_url, backend=stack.broker_url)
        stack.start_reconciler("--interval", "0.5", "--margin", "1", app=APP)
        first = stack.start_worker(WorkerSpec(QUEUE, pool, concurrency=4, app=APP), name="first")
        busy = [report(producer, f"a{i}", 3) for i in range(6)]
        eventually(lambda: backlog(client, QUEUE, settings).in_flight == 4, 20, "four greenlets running")
        wait_started(producer, 4)
        assert backlog(client, QUEUE, settings).total == 6
        stack.signal(first, signal.SIGTERM)  # warm shutdown: the four finish, the two wait
        stack.wait(first, timeout=30)
        assert [r.state for r in busy].count("SUCCESS") == 4 and client.llen(QUEUE) == 2
        assert int(client.hget("celery-autoscale:stats:" + QUEUE, "runs")) == 4

        doomed = stack.start_worker(WorkerSpec(QUEUE, pool, concurrency=4, app=APP), name="doomed")
        more = [report(producer, f"b{i}", 4) for i in range(2)]
        eventually(lambda: backlog(client, QUEUE, settings).in_flight == 4, 20, "the rest running")
        wait_started(producer, 4)
        os.killpg(stack.procs[doomed].pid, signal.SIGKILL)
        stack.wait(doomed, timeout=10)
        assert backlog(client, QUEUE, settings).total == 4  # nothing looks finished
        stack.start_worker(WorkerSpec(QUEUE, pool, concurrency=4, app=APP), name="survivor")
        tasks = busy + more
        assert sorted(r.get(timeout=90)["day"] for r in tasks) == sorted(f"a{i}" for i in range(6)) + ["b0", "b1"]
        assert completed(stack, tasks) == [1] * 8  # the killed ones ran again, to the end, once
        eventually(lambda: backlog(client, QUEUE, settings).total == 0, 20, "backlog drained")


@pytest.mark.parametrize("pool", POOLS)
def test_a_redis_crash_mid_task_under_a_greenlet_pool_loses_nothing_and_runs_nothing_twice(tmp_path, pool):
    with stack_for(tmp_path) as stack:
        stack.start_redis(persist=True)
        worker = stack.start_worker(WorkerSpec(QUEUE, pool, concurrency=2, app=APP), name="worker")
        producer = Celery("web", broker=stack.broker_url, backend=stack.broker_url)
        settings = settings_of(stack.producer())
        running = [report(producer, f"a{i}", 3) for i in range(4)]
        eventually(lambda: backlog(stack.client(), QUEUE, settings).in_flight == 2, 30, "two tasks running")
        wait_started(producer, 2)
        stack.restart_redis(3, signal.SIGKILL)
        tasks = running + [report(producer, f"b{i}", 0.5) for i in range(4)]
        eventually(lambda: all(completed(stack, tasks)), 120, "every task completed", interval=0.5)
        assert stack.client().hlen("unacked") == 0
        time.sleep(2)
        assert completed(stack, tasks) == [1] * 8
        assert backlog(stack.client(), QUEUE, settings).total == 0
        assert stack.procs[worker].poll() is None, "the worker recovered by itself"


def test_the_chart_offers_gevent_and_refuses_eventlet():
    assert "/queues/io/pool" in rejected({"queues": {"io": {"pool": "eventlet"}}})
    deployment = next(o for o in render_chart({"queues": {"io": {"pool": "gevent", "concurrency": 100}}})
                      if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("worker-io"))
    assert "--pool=gevent" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
