"""A user's own Celery app (tests/plainapp, Celery's defaults) autoscales with the same guarantees.

The producer here is a bare ``Celery()`` with no runtime and kombu's default priority lists;
the workers run the user's app through ``celery -A celery_autoscale.worker`` exactly as the
chart starts them.
"""

import json
import os
import signal
from pathlib import Path

import pytest
from celery import Celery
from celery_autoscale import backlog, settings_of
from chart import by_kind, render_chart
from helpers import eventually, run_module, scrape

from loadgen.stack import LocalStack, WorkerSpec

PLAIN = Path(__file__).resolve().parent / "plainapp"
APP = "myproject.celery:app"
#: The chart's values for this project: object names are Kubernetes names, queues are Celery's.
VALUES = {"celery": {"app": APP},
          "queues": {"cpu": None, "io": None, "mixed": None,
                     "default": {"queue": "celery"}, "emails": {}, "reports": {"queue": "reports.daily"}}}
QUEUES = {"celery": "myproject.add", "emails": "myproject.send_email", "reports.daily": "myproject.daily_report"}
ARGS = {"celery": [1, 2], "emails": ["ops@example.com"], "reports.daily": ["2026-11-25"]}


@pytest.fixture
def plain_stack(tmp_path):
    with LocalStack(tmp_path, env={"PYTHONPATH": os.pathsep.join([str(PLAIN), os.environ.get("PYTHONPATH", "")])}) as s:
        s.start_redis()
        yield s


def plain_producer(stack) -> Celery:
    """What the user's web app has: Celery's defaults, no runtime."""
    return Celery("web", broker=stack.broker_url, backend=stack.broker_url)


def plain_worker(stack, queue: str, name: str, **env) -> str:
    return stack.start_worker(WorkerSpec(queue, "threads", concurrency=2, app=APP), name=name, **env)


def completed(stack, results) -> list[int]:
    client = stack.client()
    return [int(client.get(f"myproject:completed:{r.id}") or 0) for r in results]


def test_the_charts_triggers_count_every_list_a_plain_producer_writes_and_workers_drain_them(plain_stack):
    producer = plain_producer(plain_stack)
    results = [producer.send_task(task, args=ARGS[queue], queue=queue, priority=priority)
               for queue, task in QUEUES.items() for priority in range(10) for _ in range(3)]
    client = plain_stack.client()
    in_redis = {k.decode(): client.llen(k) for k in client.scan_iter("*") if client.type(k) == b"list"}
    assert sum(in_redis.values()) == 90

    scaled = by_kind(render_chart(VALUES), "ScaledObject")
    watched = {t["metadata"]["listName"] for so in scaled.values() for t in so["spec"]["triggers"]
               if t["type"] == "redis" and t["name"] not in ("in_flight", "scheduled")}
    assert set(in_redis) <= watched  # every list that holds a task is read by a trigger
    counted = {queue: sum(client.llen(t["metadata"]["listName"]) for t in so["spec"]["triggers"] if t["type"] == "redis")
               for queue, so in ((so["spec"]["triggers"][0]["metadata"]["listName"], so) for so in scaled.values())}
    assert counted == {"celery": 30, "emails": 30, "reports.daily": 30}

    for i, queue in enumerate(QUEUES):
        plain_worker(plain_stack, queue, f"plain-{i}")
    assert [r.get(timeout=60) is not None for r in results] == [True] * 90
    assert completed(plain_stack, results) == [1] * 90
    assert not [k for k in client.scan_iter("*") if client.type(k) == b"list" and client.llen(k)]


def test_sigkill_mid_task_loses_nothing_and_in_flight_and_metrics_work(plain_stack):
    plain_stack.env.update(CELERY_VISIBILITY_TIMEOUT="8", CELERY_TASK_TIME_LIMIT="6")
    producer = plain_producer(plain_stack)
    doomed = plain_worker(plain_stack, "reports.daily", "doomed")
    results = [producer.send_task("myproject.daily_report", args=[f"day-{i}"], kwargs={"seconds": 3},
                                  queue="reports.daily", priority=i * 4) for i in range(3)]
    settings = settings_of(plain_stack.producer())
    client = plain_stack.client()
    eventually(lambda: backlog(client, "reports.daily", settings).in_flight == 2, 20, "two tasks running")
    found = backlog(client, "reports.daily", settings)
    assert found.total == 3 and found.queued == 1
    samples = scrape(plain_stack.metrics_ports[doomed])
    assert samples[("celery_autoscale_backlog_tasks", (("part", "in_flight"), ("queue", "reports.daily")))] == 2

    os.killpg(plain_stack.procs[doomed].pid, signal.SIGKILL)
    plain_stack.wait(doomed, timeout=10)
    assert backlog(client, "reports.daily", settings).total == 3  # nothing looks finished

    survivor = plain_worker(plain_stack, "reports.daily", "survivor")
    assert sorted(r.get(timeout=90)["day"] for r in results) == ["day-0", "day-1", "day-2"]
    assert completed(plain_stack, results) == [1, 1, 1]  # each ran to the end exactly once
    eventually(lambda: backlog(client, "reports.daily", settings).total == 0, 20, "backlog drained")
    ran = scrape(plain_stack.metrics_ports[survivor])
    assert ran[("celery_autoscale_tasks_total", (("queue", "reports.daily"), ("state", "success"),
                                                 ("task", "myproject.daily_report")))] == 3


def test_loadgen_drives_the_users_tasks_with_priorities(plain_stack):
    plain_worker(plain_stack, "celery", "plain-default")
    plain_worker(plain_stack, "emails", "plain-emails")
    mix = json.dumps([{"task": "myproject.add", "queue": "celery", "args": [2, 3], "weight": 2},
                      {"task": "myproject.send_email", "queue": "emails", "args": ["a@example.com"]}])
    done = run_module(plain_stack, "loadgen", "burst", "--count", "60", "--app", APP, "--mix", mix,
                      "--priorities", "0=1,5=1,9=1", "--wait", "--timeout", "60", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["succeeded"] == 60 and summary["lost"] == 0 and summary["failed"] == 0
    assert set(summary["queues"]) == {"celery", "emails"}
    assert summary["queue_wait"]["p50"] is not None  # from the runtime's run record, not the tasks' results
    routed = run_module(plain_stack, "loadgen", "burst", "--count", "5", "--app", APP, "--task", "myproject.add",
                        "--args", "[1, 1]", "--wait", "--timeout", "60", "--json")
    assert routed.returncode == 0, routed.stderr
    assert list(json.loads(routed.stdout.strip().splitlines()[-1])["queues"]) == ["celery"]  # the app's own routing
