"""A queue sized to a queue-wait target: the formula, and the figures the reconciler serves KEDA.

``reconciler._sizing.wanted_processes`` is the formula the README derives; the reconciler serves it
per queue as ``celery_autoscale_desired_processes`` with its inputs, measured from a plain app's
tasks (no ``published_at`` stamp) and the runtime's run counters.
"""

import time

import pytest
from celery_autoscale.keys import run_record_key, stats_key
from celery_autoscale.reconciler._sizing import QueueSizer, wanted_processes
from chart import by_kind, render_chart
from helpers import eventually, scrape, settings
from test_chart_render import WAIT_TARGET
from test_chart_schema import rejected
from test_plain_app import APP, plain_producer, plain_stack, plain_worker  # noqa: F401 (a fixture)

from loadgen.stack import free_port


def wanted(**given) -> int:
    inputs = dict(target=10.0, busy=0, queued=0, scheduled=0, run_seconds=1.0, arrival_rate=0.0, oldest_wait=0.0,
                  start_seconds=2.0)
    return wanted_processes(**{**inputs, **given})


def test_the_backlog_is_drained_within_the_time_left_after_a_worker_starts():
    # 80 tasks of 1 s, W = 10 s, S = 2 s: 8 s are left, 80 process-seconds of work take 10 processes
    assert wanted(queued=80) == 10
    # AWS's rule (backlog per instance = latency / processing time) is the case S = 0, A = 0
    assert wanted(queued=80, start_seconds=0) == 8
    # Little's law: 3 tasks/s of 2 s keep 6 processes busy, whatever the backlog
    assert wanted(arrival_rate=3.0, run_seconds=2.0, busy=6) == 6
    assert wanted(arrival_rate=3.0, run_seconds=2.0, busy=6, queued=16) == 6 + 4  # 32 s of work in 8 s


def test_a_stale_arrival_rate_holds_no_more_processes_than_the_tasks_in_the_queue():
    # The load fell: λ still decays from 0.45 tasks/s, R = 10 s, yet 2 tasks run and none waits
    assert wanted(arrival_rate=0.45, run_seconds=10.0, busy=2) == 2
    # λ·R capped at 3, and 8 s left is less than one run: a process for the waiting task
    assert wanted(arrival_rate=0.45, run_seconds=10.0, busy=2, queued=1) == 3 + 1
    # In steady state B + Q ≥ λ·R (Little's law over the queue): the cap does not bite
    assert wanted(arrival_rate=3.0, run_seconds=2.0, busy=7, queued=1) == 7


def test_as_the_oldest_wait_nears_the_target_every_waiting_task_gets_a_process():
    counts = [wanted(queued=40, oldest_wait=age) for age in (0, 4, 6, 8, 9, 9.5, 12)]
    assert counts == sorted(counts) and counts[0] == 5 and counts[-1] == 40
    assert wanted(queued=40, oldest_wait=9.5) == 40  # 0.5 s left is less than one run: a process each


def test_never_fewer_than_the_busy_processes_never_zero_with_an_unfinished_task():
    assert wanted(busy=7) == 7  # idle arrivals do not scale a running task's process away
    assert wanted(queued=1, run_seconds=0.01) == 1
    assert wanted(scheduled=3) == 1  # an ETA task needs a live worker to hold it
    assert wanted() == 0
    assert wanted(queued=25, run_seconds=None) == 25  # nothing measured yet: the default target


@pytest.mark.parametrize("given", [dict(target=1.0, queued=10, start_seconds=30.0), dict(queued=10, oldest_wait=100.0)])
def test_a_target_that_cannot_be_met_asks_a_process_per_task_not_more(given):
    assert wanted(**given) == 10


def test_the_run_time_is_learnt_from_runs_seen_ending_and_survives_a_reconciler_restart(fresh_stack):
    """The workers' counters hold a history of 30 s runs; the queue now runs 2 s tasks. A new sizer
    does not take the lifetime mean (30 s) but the runs it sees end (2 s), writes its averages beside
    the counters, and a second sizer (a restarted reconciler) resumes them."""
    client, now = fresh_stack.client(), [1000.0]
    stats = stats_key("io")
    client.hset(stats, mapping={"runs": 100, "run_seconds": 3000.0})

    def sizer():
        return QueueSizer("io", 20, settings(fresh_stack), clock=lambda: now[0])

    first = sizer()
    assert first.read(client).run_seconds is None  # no run seen ending yet: a process per waiting task
    client.hincrby(stats, "runs", 4)
    client.hincrbyfloat(stats, "run_seconds", 8.0)
    now[0] += 2
    assert first.read(client).run_seconds == pytest.approx(2.0)
    client.rpush("io", *[b"{}"] * 24)
    now[0] += 30
    resumed = sizer().read(client)
    assert resumed.run_seconds == pytest.approx(2.0)
    # 24 tasks of 2 s drained within 20 s less the default 10 s start: 4.8 processes, plus the
    # arrivals of the first reads (0.04 tasks/s after 30 s of decay) at 2 s each
    assert resumed.processes == 5


def test_a_queue_whose_tasks_got_shorter_is_sized_for_them_after_a_few_dozen_runs(fresh_stack):
    """After 30 s runs, 6 tasks/s of 0.3 s: a minute of time smoothing alone would still have the run
    time near 11 s (λ·R some 66 processes); counted by runs, 60 runs (10 s) bring it under 2 s, and
    the queue back to the few processes its arrivals keep busy."""
    client, now = fresh_stack.client(), [1000.0]
    stats = stats_key("io")
    client.hset(stats, mapping={"runs": 0, "run_seconds": 0.0})
    sizer = QueueSizer("io", 5, settings(fresh_stack), clock=lambda: now[0])
    sizer.read(client)
    for _ in range(3):  # 30 s tasks, one ending every 10 s
        now[0] += 10
        client.hincrby(stats, "runs", 1)
        client.hincrbyfloat(stats, "run_seconds", 30.0)
        sizer.read(client)
    assert sizer.read(client).run_seconds == pytest.approx(30.0)
    for _ in range(10):  # 6 runs of 0.3 s a second, read every second
        now[0] += 1
        client.hincrby(stats, "runs", 6)
        client.hincrbyfloat(stats, "run_seconds", 6 * 0.3)
        found = sizer.read(client)
    assert found.run_seconds < 2.0
    assert found.processes <= 12, found


def test_the_reconciler_serves_the_desired_processes_from_a_plain_apps_tasks(plain_stack):
    """A plain producer (no ``published_at``) sends 12 tasks of 0.5 s to ``reports.daily``; one plain
    worker of 2 threads runs them. The reconciler's /metrics, at each scrape: the queue latency
    (first seen) grows while tasks wait, the average run time approaches 0.5 s, the worker's start
    time is measured, and the desired processes are the formula of those inputs, never below busy."""
    producer = plain_producer(plain_stack)
    port = free_port()
    plain_stack.start_reconciler("--interval", "1", "--metrics-port", str(port), "--queues", "reports.daily",
                                 "--wait-targets", "reports.daily=3", app=APP)

    def sizing():
        samples = {name: value for (name, labels), value in scrape(port).items()
                   if dict(labels).get("queue") == "reports.daily"}
        return {name.removeprefix("celery_autoscale_"): value for name, value in samples.items()}

    assert sizing()["desired_processes"] == 0
    results = [producer.send_task("myproject.daily_report", args=[f"day-{i}"], kwargs={"seconds": 0.5},
                                  queue="reports.daily") for i in range(12)]
    first = sizing()
    assert first["desired_processes"] == 12  # no run measured yet: a process per waiting task
    time.sleep(1.5)
    later = sizing()
    assert later["queue_latency_seconds"] >= 1.4  # the oldest, first seen a scrape ago, still waits
    plain_worker(plain_stack, "reports.daily", "sized")
    client = plain_stack.client()

    def finished() -> bool:  # a run record is written with the in-flight entry's removal
        return all(client.exists(run_record_key(r.id)) for r in results)

    while not finished():
        if sizing()["desired_processes"] == 0:  # never zero while a task is unfinished
            assert finished(), "the desired processes read 0 before every task had ended"
        time.sleep(0.1)
    assert [r.get(timeout=10)["day"] for r in results] == [f"day-{i}" for i in range(12)]
    done = eventually(lambda: next((s for s in [sizing()] if s["desired_processes"] == 0), None), 30, "an idle queue")
    assert 0.45 <= done["task_run_seconds_average"] <= 0.7, done
    assert 0 < done["worker_start_seconds"] < 30, done
    assert done["queue_wait_target_seconds"] == 3 and done["queue_latency_seconds"] == 0


def test_the_chart_reads_the_reconcilers_figure_and_falls_back_to_the_true_backlog():
    """``targetQueueWaitSeconds``: a ``metrics-api`` trigger reads the queue's desired processes from
    the reconciler's Service, at ``concurrency`` per replica; KEDA's ``scalingModifiers`` fallback
    turns a failing trigger into nil, so the formula falls back to the true backlog (one task per
    process), and the running tasks are its floor. A queue without a target is unchanged."""
    objects = render_chart(WAIT_TARGET)
    scaled = by_kind(objects, "ScaledObject")
    cpu, io, mixed = (scaled[f"rel-celery-autoscale-worker-{q}"]["spec"] for q in ("cpu", "io", "mixed"))
    trigger = next(t for t in cpu["triggers"] if t["type"] == "metrics-api")
    assert trigger == {"type": "metrics-api", "name": "wait_target", "useCachedMetrics": True, "metadata": {
        "url": "http://rel-celery-autoscale-reconciler.apps.svc:9809/metrics", "format": "prometheus",
        "valueLocation": 'celery_autoscale_desired_processes{queue="cpu"}', "targetValue": "2"}}
    terms = ["queued_0", "queued_3", "queued_6", "queued_9", "in_flight", "scheduled"]
    unread = " || ".join(f"({t} ?? -1) < 0" for t in terms)  # KEDA's nil, or its cached placeholder -1
    backlog = f"(({unread}) ? nil : {' + '.join(terms)})"
    assert cpu["advanced"]["scalingModifiers"]["formula"] == \
        f"((wait_target ?? -1) < 0 ? {backlog} : max(wait_target, in_flight ?? 0))"
    assert cpu["advanced"]["scalingModifiers"]["target"] == "2" and cpu["fallback"]["behavior"] == "scalingModifiers"
    assert io["advanced"]["scalingModifiers"]["formula"].endswith(", peak_0 * 16)")  # the cron floor, at concurrency
    assert not any(t["type"] == "metrics-api" for t in mixed["triggers"])
    assert mixed["fallback"]["behavior"] == "currentReplicasIfHigher"

    reconciler = by_kind(objects, "Deployment")["rel-celery-autoscale-reconciler"]["spec"]["template"]
    assert "--wait-targets=cpu=30,io=2.5" in reconciler["spec"]["containers"][0]["args"]
    service = by_kind(objects, "Service")["rel-celery-autoscale-reconciler"]["spec"]
    assert service["selector"].items() <= reconciler["metadata"]["labels"].items()
    assert service["ports"] == [{"name": "metrics", "port": 9809, "targetPort": "metrics", "protocol": "TCP"}]
    assert {"name": "metrics", "containerPort": 9809, "protocol": "TCP"} in reconciler["spec"]["containers"][0]["ports"]


@pytest.mark.parametrize("values, message", [
    ({"listLength": 5}, "queues.io.autoscaling: targetQueueWaitSeconds and listLength cannot be combined"),
    ({"fallback": {"enabled": False}}, "queues.io.autoscaling.targetQueueWaitSeconds needs autoscaling.fallback.enabled"),
    ({"targetQueueWaitSeconds": 0}, "/queues/io/autoscaling/targetQueueWaitSeconds"),
])
def test_a_wait_target_that_cannot_work_fails_the_render(values, message):
    assert message in rejected({"queues": {"io": {"autoscaling": {"targetQueueWaitSeconds": 5, **values}}}})


@pytest.mark.parametrize("reconciler", [{"enabled": False}, {"metricsPort": 0}])
def test_a_wait_target_needs_the_reconcilers_metrics(reconciler):
    message = rejected({"reconciler": reconciler, "queues": {"io": {"autoscaling": {"targetQueueWaitSeconds": 5}}}})
    assert "queues.io.autoscaling.targetQueueWaitSeconds needs the reconciler with reconciler.metricsPort" in message
