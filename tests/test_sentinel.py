"""Redis behind Sentinel: a failover (the primary SIGKILLed) in the middle of a run loses nothing.

Real parts: two ``redis-server`` processes (a primary and its replica, password and append-only
file on both) and one Debian ``redis-sentinel`` watching them; workers of a plain Celery app
started by the chart's wrapper with ``sentinel://`` URLs and ``CELERY_SENTINEL_MASTER``, as the
chart's ``redis.external.sentinel`` values configure them; a plain producer.
"""

import signal
import time
from pathlib import Path

import pytest
import redis
from celery import Celery
from celery_autoscale import backlog, connect, install, settings_of
from helpers import eventually
from sentinel import MASTER, PASSWORD, SentinelSet

from loadgen.stack import LocalStack, WorkerSpec

PLAIN = Path(__file__).resolve().parent / "plainapp"
APP = "myproject.celery:app"
QUEUE = "reports.daily"


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_a_sentinel_failover_mid_run_loses_nothing_and_workers_follow_the_new_primary(tmp_path, pool):
    with LocalStack(tmp_path) as stack:
        cluster = SentinelSet(stack).start()
        stack.env.update(PYTHONPATH=str(PLAIN), CELERY_BROKER_URL=cluster.url, CELERY_RESULT_BACKEND=cluster.url,
                         CELERY_SENTINEL_MASTER=MASTER, REDIS_PASSWORD=PASSWORD,
                         CELERY_VISIBILITY_TIMEOUT="12", CELERY_TASK_TIME_LIMIT="10")
        for i in range(2):
            stack.start_worker(WorkerSpec(QUEUE, pool, concurrency=2, app=APP), name=f"worker{i}")
        # No result backend: completions are counted in Redis by the tasks themselves.
        producer = Celery("web", broker=cluster.url)
        producer.conf.update(broker_transport_options={"master_name": MASTER}, broker_password=PASSWORD)
        runtime = install(Celery("reader", broker=cluster.url), environ={"CELERY_SENTINEL_MASTER": MASTER,
                                                                          "REDIS_PASSWORD": PASSWORD})
        settings = settings_of(runtime)
        tasks = [producer.send_task("myproject.daily_report", args=[f"a{i}"], kwargs={"seconds": 1}, queue=QUEUE)
                 for i in range(20)]

        def completions() -> list[int]:
            client = connect(settings)
            try:
                return [int(client.get(f"myproject:completed:{t.id}") or 0) for t in tasks]
            except redis.ConnectionError:  # MasterNotFoundError too: the sentinels are still agreeing
                return [0] * len(tasks)

        eventually(lambda: sum(completions()) >= 4, 60, "the run under way")
        eventually(cluster.in_sync, 10, "the replica caught up")  # Redis replicates asynchronously
        stack.signal("primary", signal.SIGKILL)
        killed = time.monotonic()
        eventually(lambda: cluster.master() == cluster.ports["replica"], 60, "sentinel promoted the replica")
        promoted = time.monotonic() - killed
        later = [producer.send_task("myproject.daily_report", args=[f"b{i}"], queue=QUEUE) for i in range(4)]
        tasks += later
        eventually(lambda: all(completions()), 120, "every task completed", interval=0.5)
        done = time.monotonic() - killed
        time.sleep(14)  # past the visibility timeout: a redelivered second run would show here
        assert completions() == [1] * 24  # none lost, none run twice
        assert backlog(connect(settings), QUEUE, settings).total == 0  # the runtime reads the new primary
        assert cluster.client("replica").hlen("unacked") == 0
        assert all(stack.procs[f"worker{i}"].poll() is None for i in range(2)), "the workers followed by themselves"
        print(f"{pool}: replica promoted {promoted:.1f}s after the primary died; all 24 done after {done:.1f}s")
