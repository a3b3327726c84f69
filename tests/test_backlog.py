"""The true backlog: every priority list of a queue plus the tasks in flight."""

import time

from helpers import eventually, producer, run_module, scrape

from loadgen.stack import WorkerSpec
from tasks import backlog, config


def test_priority_lists_are_named_queue_colon_step_in_real_redis(fresh_stack):
    app = producer(fresh_stack)
    for priority in range(10):
        app.send_task("tasks.io.transfer", kwargs={"wait_seconds": 0}, queue="io", priority=priority)
    client = fresh_stack.client()
    lists = {k.decode(): client.llen(k) for k in client.scan_iter("io*") if client.type(k) == b"list"}
    # kombu maps a priority down to its step: 0-2 -> "io", 3-5 -> "io:3", 6-8 -> "io:6", 9 -> "io:9".
    assert lists == {"io": 3, "io:3": 3, "io:6": 3, "io:9": 1}


def test_backlog_counts_every_priority_with_no_worker_running(fresh_stack):
    settings = config.load({"CELERY_BROKER_URL": fresh_stack.broker_url})
    sent = run_module(fresh_stack, "loadgen", "burst", "--count", "40", "--queues", "cpu",
                      "--priorities", "0=1,3=1,7=1,9=1", "--seed", "7")
    assert sent.returncode == 0, sent.stderr
    found = backlog.backlog(fresh_stack.client(), "cpu", settings)
    assert set(found.waiting) == {"cpu", "cpu:3", "cpu:6", "cpu:9"} and all(found.waiting.values())
    assert found.queued == 40 and found.in_flight == 0 and found.total == 40
    assert backlog.backlog_keys("cpu", settings.priority_steps) == [
        "cpu", "cpu:3", "cpu:6", "cpu:9", "celery-autoscale:in-flight:cpu"]


def test_running_tasks_count_as_in_flight_and_waiting_ones_stay_in_redis(fresh_stack):
    app = producer(fresh_stack)
    settings = config.load({"CELERY_BROKER_URL": fresh_stack.broker_url})
    name = fresh_stack.start_worker(WorkerSpec("io", "threads", concurrency=2))
    results = [app.send_task("tasks.io.transfer", kwargs={"size_bytes": 0, "wait_seconds": 4}, queue="io",
                             priority=[0, 9][i % 2]) for i in range(7)]
    client = fresh_stack.client()
    # Prefetch is disabled: the worker holds only what it runs, so 5 wait in the lists.
    found = eventually(lambda: (b := backlog.backlog(client, "io", settings)).in_flight == 2 and b, 20,
                       "two running tasks")
    assert found.queued == 5 and found.total == 7
    gauge = {dict(labels)["part"]: value for (metric, labels), value in scrape(fresh_stack.metrics_ports[name]).items()
             if metric == "celery_autoscale_backlog_tasks"}
    assert gauge == {"queued": 5.0, "in_flight": 2.0}
    for r in results:
        r.get(timeout=60)
    assert backlog.backlog(client, "io", settings).total == 0


def test_stale_in_flight_entries_of_dead_workers_are_pruned(fresh_stack):
    settings = config.load({"CELERY_BROKER_URL": fresh_stack.broker_url, "CELERY_VISIBILITY_TIMEOUT": "60",
                            "CELERY_TASK_TIME_LIMIT": "30"})
    client = fresh_stack.client()
    client.zadd(backlog.in_flight_key("cpu"), {"dead-worker-task": time.time() - 61, "live-task": time.time()})
    assert backlog.backlog(client, "cpu", settings).in_flight == 1
