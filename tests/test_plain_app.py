"""A user's own Celery app (tests/plainapp, Celery's defaults) autoscales with the same guarantees.

The producer here is a bare ``Celery()`` with no runtime and kombu's default priority lists;
the workers run the user's app through ``celery -A celery_autoscale.worker`` exactly as the
chart starts them.
"""

import json
import os
import signal
import time
from pathlib import Path

import pytest
from celery import Celery
import celery_autoscale
from celery_autoscale import backlog, settings_of
from chart import by_kind, render_chart
from helpers import eventually, run_module, scrape

from loadgen.stack import LocalStack, WorkerSpec, free_port

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


def test_a_worker_of_the_wrong_app_dead_letters_the_users_tasks_and_requeue_runs_them_once(plain_stack):
    """The worker runs our sample app on the user's queue: it knows none of the user's tasks. None is
    dropped: each goes to the dead-letter list, whole, naming the worker and why; once a worker of
    the user's app runs, ``deadletter requeue`` sends them again and each runs once."""
    producer = plain_producer(plain_stack)
    results = [producer.send_task("myproject.send_email", args=[f"u{i}@example.com"], queue="emails", priority=p)
               for i, p in enumerate([0, 3, 9, 0, 6, 9])]
    wrong = plain_stack.start_worker(WorkerSpec("emails", "threads", concurrency=2, app="tasks.app:app"), name="wrong")
    client = plain_stack.client()
    eventually(lambda: client.llen("celery-autoscale:dead-letter") == 6, 60, "six dead-lettered")
    plain_stack.stop(wrong)
    entries = [json.loads(raw) for raw in client.lrange("celery-autoscale:dead-letter", 0, -1)]
    assert sorted(e["task_id"] for e in entries) == sorted(r.id for r in results)
    assert {(e["task"], e["queue"], e["reason"]) for e in entries} == {("myproject.send_email", "emails", "unregistered")}
    assert all(e["worker"].startswith("wrong@") and "NotRegistered" in e["error"] for e in entries)
    assert sorted(e["args"][0] for e in entries) == sorted(f"u{i}@example.com" for i in range(6))
    assert backlog(client, "emails", settings_of(Celery(broker=plain_stack.broker_url))).total == 0

    requeued = run_module(plain_stack, "celery_autoscale.deadletter", "--app", APP, "requeue")
    assert requeued.returncode == 0 and requeued.stdout.strip() == "requeued 6", requeued.stderr
    plain_worker(plain_stack, "emails", "right")
    eventually(lambda: client.llen("celery-autoscale:dead-letter") == 0 and backlog(
        client, "emails", settings_of(Celery(broker=plain_stack.broker_url))).total == 0, 60, "drained")
    runs = client.keys("myproject:completed:*")
    assert len(runs) == 6 and all(int(client.get(k)) == 1 for k in runs)  # six new ids, each run once


def test_a_worker_whose_app_has_no_task_refuses_to_start(plain_stack):
    """No app named (CELERY_AUTOSCALE_APP empty): the wrapper's bare app knows no task of the user's."""
    done = run_module(plain_stack, "celery", "-A", "celery_autoscale.worker", "worker", "-Q", "emails",
                      CELERY_AUTOSCALE_APP="")
    assert done.returncode == 2, done.stderr
    assert "error: the app 'celery_autoscale' registers no task" in done.stderr
    assert plain_stack.client().llen("emails") == 0


def test_a_queue_the_release_does_not_serve_is_logged_once_and_exported_by_the_reconciler(plain_stack):
    """The user's producer writes ``reports`` and ``celery`` while the release serves ``reports.daily``
    and ``emails``: the reconciler names both queues and their waiting tasks in one log line (not one
    per round), and ``celery_autoscale_unserved_queue_tasks`` counts them across priority lists."""
    producer = plain_producer(plain_stack)
    for priority in range(10):
        producer.send_task("myproject.daily_report", args=["2026-11-25"], queue="reports", priority=priority)
    producer.send_task("myproject.add", args=[1, 2])  # Celery's default queue: celery
    producer.send_task("myproject.send_email", args=["ops@example.com"], queue="emails")
    port = free_port()
    plain_stack.start_reconciler("--interval", "0.5", "--metrics-port", str(port), "--queues", "reports.daily,emails",
                                 app=APP)
    samples = eventually(lambda: {dict(labels)["queue"]: value for (name, labels), value in scrape(port).items()
                                  if name == "celery_autoscale_unserved_queue_tasks"} or None, 30, "the metric")
    assert samples == {"reports": 10, "celery": 1}
    time.sleep(2)  # four more rounds
    log = (plain_stack.workdir / "reconciler.log").read_text()
    lines = [line for line in log.splitlines() if "no worker of this release serves" in line]
    assert len(lines) == 1 and "celery (1), reports (10) (served: reports.daily, emails)" in lines[0], log


#: A user's app that keeps its keys under a prefix (kombu's ``global_keyprefix``), nothing else of ours.
PREFIXED_APP = '''
import time
from celery import Celery

app = Celery("shop")  # broker and backend: CELERY_BROKER_URL, CELERY_RESULT_BACKEND
app.conf.broker_transport_options = {"global_keyprefix": "shop:"}


@app.task(name="shop.slow")
def slow(seconds):
    time.sleep(seconds)
    return seconds
'''


def prefixed_app(stack) -> Celery:
    app = Celery("web", broker=stack.broker_url, backend=stack.broker_url)
    app.conf.broker_transport_options = {"global_keyprefix": "shop:"}
    return app


def prefixed_stack(tmp_path) -> LocalStack:
    (tmp_path / "shop.py").write_text(PREFIXED_APP)
    return LocalStack(tmp_path, env={"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])})


def test_an_app_with_a_global_keyprefix_has_its_running_tasks_counted_under_its_prefix(tmp_path):
    """kombu's client prefixes the keys of some commands and not others: every key the runtime
    writes must carry the prefix exactly once, where the backlog (and KEDA) read it."""
    with prefixed_stack(tmp_path) as stack:
        stack.start_redis()
        stack.start_worker(WorkerSpec("celery", "threads", concurrency=2, app="shop:app"), name="shop")
        producer = prefixed_app(stack)
        settings = settings_of(producer)
        assert settings.key_prefix == "shop:"
        results = [producer.send_task("shop.slow", args=[3]) for _ in range(2)]
        client = stack.client()
        eventually(lambda: backlog(client, "celery", settings).in_flight == 2, 10, "both running, counted under shop:")
        scaled = by_kind(render_chart({"celery": {"app": "shop:app", "keyPrefix": "shop:"},
                                       "queues": {"cpu": None, "io": None, "mixed": None, "default": {"queue": "celery"}}}),
                         "ScaledObject")
        triggers = [t for so in scaled.values() for t in so["spec"]["triggers"] if t["type"] == "redis"]
        # What KEDA's redis scaler reads: LLEN of a list, ZCARD of a sorted set.
        seen = sum(client.zcard(key) if client.type(key) == b"zset" else client.llen(key)
                   for key in (t["metadata"]["listName"] for t in triggers))
        assert seen == 2, [t["metadata"]["listName"] for t in triggers]
        assert [r.get(timeout=30) for r in results] == [3, 3]
        eventually(lambda: backlog(client, "celery", settings).total == 0, 10, "both acknowledged")
        names = {k.decode() for k in client.scan_iter("*")}
        assert not [k for k in names if k.startswith("shop:shop:")]
        assert {f"shop:celery-autoscale:run:{r.id}" for r in results} <= names
        assert client.hget("shop:celery-autoscale:stats:celery", "runs") == b"2"
        assert client.hlen("shop:unacked") == 0


def test_a_task_put_back_on_its_list_leaves_the_in_flight_record_under_a_global_keyprefix(tmp_path):
    """A reject with requeue (Celery's ``Reject(requeue=True)``, a restore at close) runs in kombu's
    own restore transaction, through kombu's prefixing pipeline: the task is back on its list and
    out of the in-flight record, counted once, with no doubled prefix."""
    from celery_autoscale.worker._delivery import record_in
    from celery_autoscale.worker._runtime import runtime_of

    (tmp_path / "shop.py").write_text(PREFIXED_APP)
    with LocalStack(tmp_path) as stack:
        stack.start_redis()
        app = prefixed_app(stack)
        celery_autoscale.install(app, environ=stack.env)
        settings = settings_of(app)
        sent = app.send_task("shop.slow", args=[1])
        client = stack.client()
        with app.connection_for_read() as connection:
            channel = connection.default_channel
            record_in(channel, runtime_of(app), "shop@host")
            message = channel.basic_get("celery")
            assert message.headers["id"] == sent.id
            assert backlog(client, "celery", settings).in_flight == 1 and client.llen("shop:celery") == 0
            message.reject(requeue=True)
            assert backlog(client, "celery", settings).in_flight == 0 and client.llen("shop:celery") == 1
        assert not [k for k in client.scan_iter("shop:shop:*")]


def test_a_prefixed_apps_far_future_eta_task_is_parked_and_put_back_under_its_prefix(tmp_path):
    """Parking (the worker) and putting back (the reconciler) name the runtime's keys in full and
    leave kombu's list to kombu's prefix: the task is parked under ``shop:``, back on ``shop:celery``
    before its ETA, and runs once."""
    with prefixed_stack(tmp_path) as stack:
        stack.start_redis()
        stack.env["CELERY_ETA_HORIZON"] = "4"
        stack.start_worker(WorkerSpec("celery", "threads", concurrency=1, app="shop:app"), name="shop")
        producer = prefixed_app(stack)
        far = producer.send_task("shop.slow", args=[0], countdown=8)
        client = stack.client()
        eventually(lambda: client.zcard("shop:celery-autoscale:parked-eta") == 1, 30, "parked under shop:")
        assert client.hlen("shop:celery-autoscale:parked") == 1 and client.hlen("shop:unacked") == 0
        stack.start_reconciler("--interval", "0.5", app="shop:app")
        assert far.get(timeout=30) == 0
        assert client.zcard("shop:celery-autoscale:parked-eta") == 0 and client.llen("celery") == 0
        eventually(lambda: client.exists(f"shop:celery-autoscale:run:{far.id}"), 10, "its run record")
        assert client.hget("shop:celery-autoscale:stats:celery", "runs") == b"1"
        assert not [k for k in client.scan_iter("shop:shop:*")]


def test_a_prefixed_apps_dead_letter_entry_is_requeued_onto_its_prefixed_list(tmp_path):
    """The move reads and watches the dead-letter list under ``shop:`` and kombu pushes the task onto
    ``shop:celery``; a malformed entry left behind is reported at its index in that list."""
    with prefixed_stack(tmp_path) as stack:
        stack.start_redis()
        client = stack.client()
        entry = {"task_id": "t1", "task": "shop.slow", "queue": "celery", "args": [0], "kwargs": {},
                 "error": "TransientError: x", "retries": 2, "failed_at": 1.0, "traceback": ""}
        client.rpush("shop:celery-autoscale:dead-letter", "not json", json.dumps(entry))
        requeued = run_module(stack, "celery_autoscale.deadletter", "--app", "shop:app", "requeue")
        assert requeued.returncode == 1 and requeued.stdout.strip() == "requeued 1", requeued.stderr
        assert requeued.stderr.strip() == "error: skipped 1 malformed entries at index 0 (0: newest)"
        assert client.llen("shop:celery") == 1 and client.llen("celery") == 0
        assert client.lrange("shop:celery-autoscale:dead-letter", 0, -1) == [b"not json"]
        assert not [k for k in client.scan_iter("shop:shop:*")]
