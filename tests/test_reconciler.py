"""The reconciler gives a dead worker's tasks back to their queue with no worker of it running.

A plain Celery app (tests/plainapp), real workers killed with SIGKILL, a real reconciler process.
The backlog is read as KEDA reads it: the raw sizes of the keys the chart's triggers name.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from celery import Celery
from celery_autoscale import backlog, backlog_keys, settings_of
from helpers import eventually, run_module, wait_started

from loadgen.stack import LocalStack, WorkerSpec

PLAIN = Path(__file__).resolve().parent / "plainapp"
APP = "myproject.celery:app"
QUEUE = "reports.daily"


def keda_reads(client, settings) -> int:
    """What KEDA's redis triggers sum: LLEN of each list, ZCARD of each sorted set."""
    return sum(client.llen(k) if client.type(k) == b"list" else client.zcard(k)
               for k in backlog_keys(QUEUE, settings))


@contextmanager
def plain_stack(tmp_path, pool: str = "prefork", worker_env: dict | None = None, **env):
    """A Redis, one worker ("first", concurrency 1, its own ``worker_env``) of the plain app and a
    plain producer: yields ``(stack, settings, client, producer)``."""
    with LocalStack(tmp_path, env={"PYTHONPATH": str(PLAIN), **env}) as stack:
        stack.start_redis()
        stack.start_worker(WorkerSpec(QUEUE, pool, concurrency=1, app=APP), name="first", **(worker_env or {}))
        yield (stack, settings_of(stack.producer()), stack.client(),
               Celery("web", broker=stack.broker_url, backend=stack.broker_url))


def kill(stack, name):
    os.killpg(stack.procs[name].pid, signal.SIGKILL)
    stack.wait(name, timeout=10)


def test_a_dead_workers_task_returns_to_its_list_after_its_time_limit_and_the_backlog_never_reads_zero(tmp_path):
    with plain_stack(tmp_path, CELERY_VISIBILITY_TIMEOUT="600",
                     CELERY_TASK_TIME_LIMIT="4") as (stack, settings, client, producer):
        doomed = "first"
        result = producer.send_task("myproject.daily_report", args=["d"], kwargs={"seconds": 3}, queue=QUEUE)
        eventually(lambda: backlog(client, QUEUE, settings).in_flight == 1, 30, "task running")
        wait_started(producer, 1)
        kill(stack, doomed)
        killed = time.monotonic()
        stack.start_reconciler("--interval", "0.5", "--margin", "1", app=APP)
        samples = []
        while not client.llen(QUEUE) and time.monotonic() - killed < 60:
            samples.append(keda_reads(client, settings))
            time.sleep(0.2)
        restored_after = time.monotonic() - killed
        assert client.llen(QUEUE) == 1, "restored to its list with no worker running"
        assert min(samples) >= 1, "the backlog KEDA reads never dropped to zero"
        assert client.hlen("unacked") == 0  # nothing left for a second restore
        eventually(lambda: keda_reads(client, settings) == 1, 10, "the stale in-flight entry pruned")
        print(f"restored {restored_after:.1f}s after the SIGKILL (time limit 4 s, margin 1 s; "
              f"visibility timeout 600 s)")
        stack.start_worker(WorkerSpec(QUEUE, "prefork", concurrency=1, app=APP), name="survivor")
        assert result.get(timeout=60)["day"] == "d"
        assert int(client.get(f"myproject:completed:{result.id}")) == 1


def test_a_live_worker_keeps_a_task_that_runs_past_its_time_limit(tmp_path):
    """A threads pool enforces no hard time limit: its worker answers the ping, so its task stays."""
    with plain_stack(tmp_path, "threads", CELERY_VISIBILITY_TIMEOUT="600",
                     CELERY_TASK_TIME_LIMIT="2") as (stack, settings, client, producer):
        result = producer.send_task("myproject.daily_report", args=["d"], kwargs={"seconds": 8}, queue=QUEUE)
        eventually(lambda: backlog(client, QUEUE, settings).in_flight == 1, 30, "task running")
        time.sleep(4)  # past its deadline (2 s) plus the margin (1 s)
        done = run_module(stack, "celery_autoscale.reconciler", "--app", APP, "--margin", "1", "--once")
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert (report["kept"], report["restored"]) == ([result.id], [])
        assert result.get(timeout=30)["day"] == "d"
        assert int(client.get(f"myproject:completed:{result.id}")) == 1


def test_a_dead_workers_countdown_task_is_restored_at_the_visibility_timeout(tmp_path):
    """kombu's own restore, run by the reconciler: a task held for its ETA by a worker that died."""
    with plain_stack(tmp_path, CELERY_VISIBILITY_TIMEOUT="3",
                     CELERY_TASK_TIME_LIMIT="2") as (stack, settings, client, producer):
        doomed = "first"
        producer.send_task("myproject.daily_report", args=["d"], countdown=600, queue=QUEUE)
        eventually(lambda: backlog(client, QUEUE, settings).scheduled == 1, 30, "task scheduled for its ETA")
        kill(stack, doomed)
        time.sleep(4)  # past the visibility timeout
        done = run_module(stack, "celery_autoscale.reconciler", "--app", APP, "--once")
        assert done.returncode == 0, done.stderr
        assert client.llen(QUEUE) == 1 and client.hlen("unacked") == 0
        assert backlog(client, QUEUE, settings).total == 1  # the list; the dead scheduled entry pruned


def test_a_far_future_eta_task_holds_no_replica_and_runs_on_time_once(tmp_path):
    """ETA horizon 6 s: a task due in 14 s is parked in Redis (no worker holds it, the backlog
    reads 0), the reconciler puts it back on its list 3 s before its ETA, and a worker started
    only then runs it at its ETA, once. A countdown within the horizon is held as before."""
    with plain_stack(tmp_path, CELERY_ETA_HORIZON="6") as (stack, settings, client, producer):
        early = "first"
        near = producer.send_task("myproject.daily_report", args=["near"], countdown=3, queue=QUEUE)
        eventually(lambda: backlog(client, QUEUE, settings).scheduled == 1, 30, "the near task held for its ETA")
        sent = time.time()
        far = producer.send_task("myproject.daily_report", args=["far"], countdown=14, queue=QUEUE)
        eventually(lambda: client.zcard("celery-autoscale:parked-eta") == 1, 30, "the far task parked")
        assert client.hlen("unacked") <= 1  # the near one only
        assert near.get(timeout=30)["day"] == "near"
        eventually(lambda: backlog(client, QUEUE, settings).total == 0, 10, "nothing held: the queue may scale to 0")
        stack.stop(early)
        stack.start_reconciler("--interval", "0.5", app=APP)
        eventually(lambda: client.llen(QUEUE) == 1, 30, "the far task back on its list before its ETA")
        back = time.time() - sent
        assert 14 - 6 / 2 - 1.5 <= back < 14, f"put back {back:.1f}s after sending"
        stack.start_worker(WorkerSpec(QUEUE, "prefork", concurrency=1, app=APP), name="late")
        assert far.get(timeout=60)["day"] == "far"
        record = f"celery-autoscale:run:{far.id}"  # written at task_postrun, just after the result
        eventually(lambda: client.exists(record), 10, "the far task's run record")
        started, _ = map(float, client.get(record).decode().split(","))
        assert started >= sent + 14 - 0.5, "not before its ETA"
        assert int(client.get(f"myproject:completed:{far.id}")) == 1
        assert client.zcard("celery-autoscale:parked-eta") == 0 and client.hlen("celery-autoscale:parked") == 0
        print(f"far task back on its list {back:.1f}s after sending (ETA 14 s), started {started - sent:.1f}s")


def test_a_sigkilled_workers_task_is_back_in_its_list_long_before_its_time_limit(tmp_path):
    """Its lease expires: the reconciler restores the task within a lease lifetime, a renewal interval and a round,
    although its time limit (600 s) and the visibility timeout (3600 s) are far away."""
    with plain_stack(tmp_path, CELERY_HEARTBEAT_INTERVAL="1",
                     CELERY_TASK_TIME_LIMIT="600") as (stack, settings, client, producer):
        result = producer.send_task("myproject.daily_report", args=["d"], kwargs={"seconds": 30}, queue=QUEUE)
        eventually(lambda: backlog(client, QUEUE, settings).in_flight == 1, 30, "task running")
        wait_started(producer, 1)
        assert client.exists("celery-autoscale:lease:" + json.loads(
            client.hvals(f"celery-autoscale:in-flight-owner:{QUEUE}")[0])["worker"])
        stack.start_reconciler("--interval", "1", app=APP)
        kill(stack, "first")
        killed = time.monotonic()
        samples = []
        while not client.llen(QUEUE) and time.monotonic() - killed < 60:
            samples.append(keda_reads(client, settings))
            time.sleep(0.2)
        restored_after = time.monotonic() - killed
        assert client.llen(QUEUE) == 1 and restored_after < 20, f"restored after {restored_after:.1f} s"
        assert min(samples) >= 1, "the backlog KEDA reads never dropped to zero"
        print(f"restored {restored_after:.1f}s after the SIGKILL (lease 5 s; time limit 600 s)")
        stack.start_worker(WorkerSpec(QUEUE, "prefork", concurrency=1, app=APP), name="survivor")
        assert result.get(timeout=90)["day"] == "d"
        assert int(client.get(f"myproject:completed:{result.id}")) == 1


def test_a_worker_that_takes_a_restored_task_at_once_keeps_its_in_flight_record(tmp_path):
    """A round restores a dead worker's task to its list, then forgets the dead worker's records.
    A worker waiting on that list takes the message in between (its records are written as it
    takes it; CI caught it so once). Its records stay: the backlog KEDA reads counts the task it runs."""
    from celery_autoscale.reconciler._round import reconcile

    with plain_stack(tmp_path, CELERY_TASK_TIME_LIMIT="4") as (stack, settings, client, producer):
        result = producer.send_task("myproject.daily_report", args=["d"], kwargs={"seconds": 3}, queue=QUEUE)
        eventually(lambda: backlog(client, QUEUE, settings).in_flight == 1, 30, "task running")
        wait_started(producer, 1)
        stack.start_worker(WorkerSpec(QUEUE, "prefork", concurrency=1, app=APP), name="survivor")
        kill(stack, "first")
        owner = f"celery-autoscale:in-flight-owner:{QUEUE}"
        app = stack.producer()
        with app.connection_for_write() as connection:
            qos = connection.default_channel.qos
            restore = qos.restore_by_tag

            def restore_and_let_the_survivor_take_it(tag, **options):  # the interleaving, made certain
                restore(tag, **options)
                eventually(lambda: any(b"survivor@" in raw for raw in client.hvals(owner)), 10, "the survivor took it")

            qos.restore_by_tag = restore_and_let_the_survivor_take_it
            done = reconcile(app, connection, client, margin=1, now=time.time() + 10)
        assert done.restored == [result.id]
        assert any(b"survivor@" in raw for raw in client.hvals(owner))
        assert backlog(client, QUEUE, settings).in_flight == 1
        assert result.get(timeout=30)["day"] == "d"
        assert int(client.get(f"myproject:completed:{result.id}")) == 1


def test_with_the_default_values_a_sigkilled_workers_task_runs_again_within_a_minute(tmp_path):
    """The chart's defaults: a heartbeat every 10 s (a lease of 20 s), a reconciler round every 10 s
    with a margin of 30 s, a time limit of 1800 s and a visibility timeout of 3600 s. The task of a
    SIGKILLed worker starts again on another worker within a minute of the kill, once."""
    beat = {"CELERY_HEARTBEAT_INTERVAL": "10"}
    with plain_stack(tmp_path, worker_env=beat) as (stack, settings, client, producer):
        result = producer.send_task("myproject.daily_report", args=["d"], kwargs={"seconds": 30}, queue=QUEUE)
        eventually(lambda: backlog(client, QUEUE, settings).in_flight == 1, 30, "task running")
        wait_started(producer, 1)
        stack.start_reconciler(app=APP)
        stack.start_worker(WorkerSpec(QUEUE, "prefork", concurrency=1, app=APP), name="survivor", **beat)
        kill(stack, "first")
        killed = time.monotonic()
        owner = f"celery-autoscale:in-flight-owner:{QUEUE}"
        eventually(lambda: any(b"survivor@" in raw for raw in client.hvals(owner)), 90, "the task started again")
        again = time.monotonic() - killed
        assert again < 60, f"started again {again:.1f} s after the SIGKILL"
        assert result.get(timeout=90)["day"] == "d"
        assert int(client.get(f"myproject:completed:{result.id}")) == 1
        print(f"started again {again:.1f}s after the SIGKILL (default values)")


def test_a_worker_in_warm_shutdown_keeps_its_lease_and_its_task_runs_once(tmp_path):
    """SIGTERM: the consumer stops (and with it the ping's answer) while the task runs on for 12 s,
    longer than two lease lifetimes; the lease is renewed throughout, so nothing is restored."""
    with plain_stack(tmp_path, CELERY_HEARTBEAT_INTERVAL="1",
                     CELERY_TASK_TIME_LIMIT="600") as (stack, settings, client, producer):
        stack.start_reconciler("--interval", "0.5", app=APP)
        result = producer.send_task("myproject.daily_report", args=["d"], kwargs={"seconds": 12}, queue=QUEUE)
        eventually(lambda: backlog(client, QUEUE, settings).in_flight == 1, 30, "task running")
        wait_started(producer, 1)
        stack.procs["first"].send_signal(signal.SIGTERM)
        stack.wait("first", timeout=60)
        assert result.get(timeout=30)["day"] == "d"
        assert int(client.get(f"myproject:completed:{result.id}")) == 1
        assert client.llen(QUEUE) == 0 and not client.keys("celery-autoscale:lease:*"), "the lease ended with it"


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="a PID namespace needs root and unshare")
def test_as_its_containers_pid_1_the_reconciler_stops_on_sigterm_after_its_round(tmp_path):
    """In a pod the reconciler is its container's PID 1, and the kernel drops any signal to a PID
    namespace's init that has no handler for it: the kubelet's SIGTERM must still end it, with exit
    status 0, long before the SIGKILL at the end of the grace period (30 s by default). Here it is
    PID 1 of a new PID namespace (util-linux's ``unshare --pid --fork``), signalled from outside."""
    with LocalStack(tmp_path) as stack:
        stack.start_redis()
        heartbeat = tmp_path / "reconciler.heartbeat"
        outer = subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", "--", sys.executable, "-m",
                                  "celery_autoscale.reconciler", "--interval", "1", "--heartbeat-file", str(heartbeat)],
                                 env=stack.process_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            eventually(lambda: heartbeat.exists() or outer.poll() is not None, 60, "the reconciler's first round")
            [init] = Path(f"/proc/{outer.pid}/task/{outer.pid}/children").read_text().split()
            nspid = next(line for line in Path(f"/proc/{init}/status").read_text().splitlines() if line.startswith("NSpid:"))
            assert nspid.split()[-1] == "1", nspid  # its PID inside the namespace
            os.kill(int(init), signal.SIGTERM)
            assert outer.wait(timeout=10) == 0, outer.stdout.read()
        finally:
            outer.kill()
    assert "stopping on a signal, after the round" in outer.stdout.read()
