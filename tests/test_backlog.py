"""The true backlog: every priority list of a queue plus the tasks in flight."""

import time

import pytest
from celery_autoscale import backlog, backlog_keys, prune
from celery_autoscale.keys import dead_letter_key, in_flight_key
from helpers import eventually, producer, run_module, scrape, settings

from loadgen.stack import WorkerSpec


def lists_in_redis(client, queue: str) -> dict[str, int]:
    return {k.decode(): client.llen(k) for k in client.scan_iter(f"{queue}*") if client.type(k) == b"list"}


@pytest.mark.parametrize("conf, names", [
    ({}, ["io", "io\x06\x163", "io\x06\x166", "io\x06\x169"]),  # kombu's defaults, as plain producers write
    ({"broker_transport_options": {"sep": ":", "priority_steps": [0, 5]}}, ["io", "io:5"]),
], ids=["kombu-defaults", "own-sep-and-steps"])
def test_backlog_keys_are_exactly_the_lists_a_producer_writes(fresh_stack, conf, names):
    app = producer(fresh_stack, **conf)
    for priority in range(10):
        app.send_task("tasks.io.transfer", kwargs={"wait_seconds": 0}, queue="io", priority=priority)
    written = lists_in_redis(fresh_stack.client(), "io")
    # kombu maps a priority down to the highest step <= it (0-2 -> "io", 3-5 -> "io<sep>3", ...).
    assert sorted(written) == sorted(names) and sum(written.values()) == 10
    assert backlog_keys("io", settings(fresh_stack, **conf)) == [
        *names, "celery-autoscale:in-flight:io", "celery-autoscale:scheduled:io"]
    assert backlog(fresh_stack.client(), "io", settings(fresh_stack, **conf)).queued == 10


def test_backlog_counts_every_priority_with_no_worker_running(fresh_stack):
    sent = run_module(fresh_stack, "loadgen", "burst", "--count", "40", "--queues", "cpu",
                      "--priorities", "0=1,3=1,7=1,9=1", "--seed", "7")
    assert sent.returncode == 0, sent.stderr
    found = backlog(fresh_stack.client(), "cpu", settings(fresh_stack))
    assert len(found.waiting) == 4 and all(found.waiting.values())
    assert found.queued == 40 and found.in_flight == 0 and found.total == 40


def test_running_tasks_count_as_in_flight_and_waiting_ones_stay_in_redis(fresh_stack):
    app = producer(fresh_stack)
    name = fresh_stack.start_worker(WorkerSpec("io", "threads", concurrency=2))
    results = [app.send_task("tasks.io.transfer", kwargs={"size_bytes": 0, "wait_seconds": 4}, queue="io",
                             priority=[0, 9][i % 2]) for i in range(7)]
    client = fresh_stack.client()
    # Prefetch is disabled: the worker holds only what it runs, so 5 wait in the lists.
    found = eventually(lambda: (b := backlog(client, "io", settings(fresh_stack))).in_flight == 2 and b, 20,
                       "two running tasks")
    assert found.queued == 5 and found.total == 7
    gauge = {dict(labels)["part"]: value for (metric, labels), value in scrape(fresh_stack.metrics_ports[name]).items()
             if metric == "celery_autoscale_backlog_tasks"}
    assert gauge == {"queued": 5.0, "in_flight": 2.0, "scheduled": 0.0}
    for r in results:
        r.get(timeout=60)
    # A result is stored before its message is acknowledged, which removes the in-flight entry.
    eventually(lambda: backlog(client, "io", settings(fresh_stack)).total == 0, 10, "every entry acknowledged")


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_the_in_flight_record_is_written_in_the_same_script_as_kombus_delivery_and_ack(fresh_stack, pool):
    """Redis's MONITOR, while a worker runs 3 tasks: each task's in-flight entry and owner are
    written by the script (``EVALSHA``, atomic) that records its message in kombu's ``unacked``
    hash, and removed by the one that acknowledges it, with the run record; the run counters count
    all 3. No other command touches the in-flight keys."""
    import threading

    app = producer(fresh_stack)
    client = fresh_stack.client()
    fresh_stack.start_worker(WorkerSpec("io", pool, concurrency=2))
    seen, stop = [], threading.Event()

    def watch():
        with client.monitor() as monitor:
            ready.set()
            while not stop.is_set():
                seen.append(monitor.next_command())

    ready = threading.Event()
    threading.Thread(target=watch, daemon=True).start()
    ready.wait(5)
    results = [app.send_task("tasks.io.transfer", kwargs={"size_bytes": 0, "wait_seconds": 0.2}, queue="io")
               for _ in range(3)]
    ids = {r.id for r in results}
    assert all(r.get(timeout=30) for r in results)
    eventually(lambda: client.hget("celery-autoscale:stats:io", "runs") == b"3", 10, "3 runs counted")
    app.send_task("tasks.io.transfer", kwargs={"size_bytes": 0, "wait_seconds": 0}, queue="io").get(timeout=30)
    stop.set()

    units, outside, open_, script = [], [], {}, None
    for entry in seen:  # MONITOR lists a transaction's commands at its EXEC, a script's after its EVALSHA
        words, who = entry["command"].split(), (entry["client_address"], entry["client_port"])
        if entry["client_type"] == "lua" and script is not None:
            script.append(words)
            continue
        script = None
        if words[0] == "EVALSHA":
            script = []
            units.append(script)
        elif words[0] == "MULTI":
            open_[who] = []
        elif words[0] == "EXEC" and who in open_:
            units.append(open_.pop(who))
        else:
            (open_[who] if who in open_ else outside).append(words)

    def written(cmd: str, key: str, where) -> set[str]:
        return {w[2 if cmd != "ZADD" else 3] for t in where for w in t if w[0] == cmd and w[1] == key}

    delivered = [t for t in units if any(w[:2] == ["HSET", "unacked"] for w in t)]
    acked = [t for t in units if any(w[:2] == ["HDEL", "unacked"] for w in t)]
    assert written("ZADD", "celery-autoscale:in-flight:io", delivered) >= ids
    assert written("HSET", "celery-autoscale:in-flight-owner:io", delivered) >= ids
    assert written("ZREM", "celery-autoscale:in-flight:io", acked) >= ids
    assert written("HDEL", "celery-autoscale:in-flight-owner:io", acked) >= ids
    assert {w[1] for t in acked for w in t if w[0] == "SET"} >= {f"celery-autoscale:run:{i}" for i in ids}
    assert not [w for w in outside if w[0] in ("ZADD", "ZREM", "HSET", "HDEL") and w[1].startswith("celery-autoscale:in-flight")]
    eventually(lambda: backlog(client, "io", settings(fresh_stack)).total == 0, 10, "every entry acknowledged")


def test_stale_in_flight_entries_of_dead_workers_are_pruned(fresh_stack):
    fresh_stack.env.update(CELERY_VISIBILITY_TIMEOUT="60", CELERY_TASK_TIME_LIMIT="30")
    client = fresh_stack.client()
    client.zadd(in_flight_key("cpu"), {"dead-worker-task": time.time() - 61, "live-task": time.time()})
    assert backlog(client, "cpu", settings(fresh_stack)).in_flight == 2, "reading the backlog changes nothing"
    assert prune(client, "cpu", settings(fresh_stack)).in_flight == ("dead-worker-task",)
    assert backlog(client, "cpu", settings(fresh_stack)).in_flight == 1


def test_tasks_held_for_a_countdown_count_until_they_run(fresh_stack):
    """A countdown (or a retry's backoff, which Celery sends as one) takes the message out of the
    lists into the worker's hands: without the scheduled record the backlog would read 0."""
    app = producer(fresh_stack)
    fresh_stack.start_worker(WorkerSpec("io", "threads", concurrency=2))
    results = [app.send_task("tasks.io.transfer", kwargs={"size_bytes": 0, "wait_seconds": 0}, queue="io",
                             countdown=6) for _ in range(3)]
    client = fresh_stack.client()
    held = eventually(lambda: (b := backlog(client, "io", settings(fresh_stack))).scheduled == 3 and b, 20,
                      "three tasks scheduled")
    assert held.queued == 0 and held.in_flight == 0 and held.total == 3
    for r in results:
        r.get(timeout=60)
    eventually(lambda: backlog(client, "io", settings(fresh_stack)).total == 0, 10, "backlog drained")


def test_tasks_waiting_out_their_retry_backoff_keep_the_backlog_above_zero(fresh_stack):
    """Four tasks that always fail transiently: between their runs they wait out a backoff (up to
    3 s, jittered) in the worker's hands. Sampled every 0.1 s until all four are dead-lettered,
    the backlog never reads zero, and the waits show as scheduled."""

    fresh_stack.env.update(CELERY_MAX_RETRIES="3", CELERY_RETRY_BACKOFF_MAX="3")
    app = producer(fresh_stack)
    fresh_stack.start_worker(WorkerSpec("cpu", "prefork", concurrency=2))
    found = settings(fresh_stack)
    client = fresh_stack.client()
    for _ in range(4):
        app.send_task("tasks.cpu.hash_chain", kwargs={"work_units": 10, "fail_rate": 1.0}, queue="cpu")
    samples = []
    deadline = time.monotonic() + 90
    while client.llen(dead_letter_key(found.key_prefix)) < 4 and time.monotonic() < deadline:
        samples.append(backlog(client, "cpu", found))
        time.sleep(0.1)
    assert client.llen(dead_letter_key(found.key_prefix)) == 4, "all four failed for good"
    assert min(b.total for b in samples) >= 1
    assert max(b.scheduled for b in samples) >= 1, "backoffs counted as scheduled"
    eventually(lambda: backlog(client, "cpu", found).total == 0, 10, "backlog drained")
