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
from helpers import eventually, wait_started

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
        wait_started(producer, 2)
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
        # The runtime's records too: a run record for each, no in-flight entry left over.
        assert all(stack.client().exists(f"celery-autoscale:run:{r.id}") for r in tasks)
        assert backlog(stack.client(), QUEUE, settings).total == 0
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
        wait_started(producer, 2)
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


def test_a_message_taken_just_before_redis_goes_away_is_recorded_once_redis_is_back(tmp_path):
    """kombu's pop has taken the message off its list, and Redis stops before kombu's delivery
    transaction (its ``unacked`` entry; measured under load: 1 task in 3,000 lost over 4
    restarts). The worker's QoS sends that transaction again once Redis is back: the message is
    then unacknowledged and in flight, where kombu and the backlog find it, not in no key at all."""
    import threading

    from celery_autoscale.worker._delivery import record_in
    from celery_autoscale.worker._runtime import runtime_of

    with LocalStack(tmp_path, env={"PYTHONPATH": str(PLAIN)}) as stack:
        stack.start_redis(persist=True)
        app = stack.producer()
        settings = settings_of(app)
        sent = app.send_task("myproject.daily_report", args=["x"], queue=QUEUE)
        with app.connection_for_read() as connection:
            channel = connection.default_channel
            record_in(channel, runtime_of(app), "worker@host")
            deliver = channel.qos.append

            def redis_restarts_first(message, delivery_tag):  # the fault, at the moment it bites
                redis_server = stack.procs["redis"]
                threading.Thread(target=stack.restart_redis, args=(3, signal.SIGTERM)).start()
                eventually(lambda: redis_server.poll() is not None, 10, "Redis stopped")
                return deliver(message, delivery_tag)

            channel.qos.append = redis_restarts_first
            message = channel.basic_get(QUEUE)
            assert message.headers["id"] == sent.id
            client = stack.client()
            assert client.llen(QUEUE) == 0 and client.hexists("unacked", message.delivery_tag)
            assert backlog(client, QUEUE, settings).in_flight == 1
            message.ack()
            assert backlog(client, QUEUE, settings).total == 0 and client.hlen("unacked") == 0


def test_the_charts_redis_stops_without_dropping_the_task_a_worker_just_popped(tmp_path):
    """Redis's shutdown drops replies it has not sent yet: stopped by SIGTERM while a worker pops,
    the last task its ``BRPOP`` took is gone from its list and from the append-only file, and the
    worker never gets it (a raw ``BRPOP`` loop here loses 1 item per SIGTERM, 3 of 3). The chart's
    Redis runs a ``preStop`` hook first, as the kubelet does before SIGTERM: that hook, taken from
    the rendered chart and run against this Redis before each of 5 SIGTERMs while a worker
    drains 2,500 short tasks (without it: 1 lost in 1 of 3 runs of 3 SIGTERMs), leaves every task run exactly once."""
    import subprocess

    from chart import render_chart

    with LocalStack(tmp_path, env={"PYTHONPATH": str(PLAIN), "CELERY_VISIBILITY_TIMEOUT": "3600"}) as stack:
        redis_set = next(o for o in render_chart({"redis": {"auth": {"enabled": False}, "port": stack.redis_port}})
                         if o["kind"] == "StatefulSet")
        pre_stop = redis_set["spec"]["template"]["spec"]["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
        stack.start_redis(persist=True)
        stack.start_worker(WorkerSpec(QUEUE, "threads", concurrency=8, app=APP), name="worker")
        producer = Celery("web", broker=stack.broker_url)
        tasks = [producer.send_task("myproject.daily_report", args=[f"t{i}"], kwargs={"seconds": 0.01}, queue=QUEUE)
                 for i in range(2500)]
        for _ in range(5):
            time.sleep(0.7)
            subprocess.run(pre_stop, check=True, timeout=30)
            stack.restart_redis(0.5, signal.SIGTERM)
        eventually(lambda: all(completions(stack, tasks)), 120, "every task completed", interval=1)
        assert completions(stack, tasks) == [1] * len(tasks)
        assert stack.client().hlen("unacked") == 0


def test_a_requeue_interrupted_by_a_redis_crash_moves_each_entry_once_and_says_how_many(tmp_path):
    """``deadletter requeue`` of 30,000 entries with Redis SIGKILLed mid-run (so many that a busy
    machine cannot finish the run between the check and the kill): every entry is either
    still dead-lettered or on its queue, never both and never twice; the CLI says how many it moved
    (the move in flight at the crash may have landed: one more), and a second run finishes the job."""
    import base64
    import json
    import subprocess
    import sys

    count = 30000
    with LocalStack(tmp_path) as stack:
        stack.start_redis(persist=True)
        client = stack.client()
        entry = {"task": "myproject.send_email", "queue": "emails", "args": [], "error": "TransientError: x",
                 "retries": 3, "failed_at": 1.0, "traceback": ""}
        client.rpush("celery-autoscale:dead-letter",
                     *(json.dumps({**entry, "task_id": f"t{n}", "kwargs": {"to": f"u{n}"}}) for n in range(count)))

        def numbers() -> tuple[list[int], list[int]]:
            queued = [json.loads(base64.b64decode(json.loads(raw)["body"]))[1]["to"] for raw in client.lrange("emails", 0, -1)]
            held = [json.loads(raw)["kwargs"]["to"] for raw in client.lrange("celery-autoscale:dead-letter", 0, -1)]
            return [int(t[1:]) for t in queued], [int(t[1:]) for t in held]

        def requeue() -> subprocess.Popen:
            return subprocess.Popen([sys.executable, "-m", "celery_autoscale.deadletter", "--app", APP, "requeue"],
                                    cwd=PLAIN, env=stack.process_env(), stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)

        first = requeue()
        eventually(lambda: client.llen("emails") >= 300, 60, "the requeue to be under way", interval=0.01)
        stack.restart_redis(1, signal.SIGKILL)
        out, err = first.communicate(timeout=60)
        assert first.returncode == 3 and "ConnectionError talking to redis://" in err, (out, err)
        reported = int(err.rsplit("after requeueing ", 1)[1].split()[0])
        queued, held = numbers()
        assert sorted(queued + held) == list(range(count))  # none lost, none twice
        assert 300 <= reported <= len(queued) <= reported + 1 < count

        second = requeue()
        out, err = second.communicate(timeout=120)
        assert second.returncode == 0 and out.strip() == f"requeued {count - len(queued)}", err
        queued, held = numbers()
        assert sorted(queued) == list(range(count)) and held == []
