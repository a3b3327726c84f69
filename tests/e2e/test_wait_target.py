"""A queue sized to a queue-wait target on a real control plane with the real KEDA (`make e2e`).

Release ``ci`` (the session's: values/ci.yaml, the chart's own Redis, every pod on the real node).
``io`` (concurrency 4, at most 4 replicas) gets
``targetQueueWaitSeconds``: KEDA's ``metrics-api`` trigger reads the reconciler's
``celery_autoscale_desired_processes`` through its Service (KEDA, on the host, by the name
``/etc/hosts`` gives its ClusterIP), and falls back to the true backlog when the reconciler is gone.
"""

from __future__ import annotations

import math
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from e2e_cluster import KUBECONFIG, wait_for

from celery_autoscale import backlog

pytestmark = [pytest.mark.e2e, pytest.mark.k8s(provider="external", k8s_kubeconfig=str(KUBECONFIG))]

TARGET = 20  # seconds a task may wait
RUN = 2.0  # seconds each task runs


@pytest.fixture
def waiting(idle):
    """io idle at zero; afterwards release ``ci`` as installed again, its reconciler back."""
    try:
        yield idle
    finally:
        idle.upgrade({})
        idle.kubectl("scale", "deployment", f"{idle.fullname}-reconciler", "--replicas=1")


def send(producer, count: int) -> list[tuple[float, object]]:
    return [(time.time(), producer.send_task("tasks.io.transfer", kwargs={"size_bytes": 0, "wait_seconds": RUN},
                                             queue="io")) for _ in range(count)]


def waits(sent) -> list[float]:
    """Seconds each task waited: its start (the task's own clock) less when it was sent."""
    return [r.get(timeout=300)["started_at"] - at for at, r in sent]


def sizing(url: str) -> dict[str, float] | None:
    """io's sizing series at ``url`` (the reconciler's /metrics, as KEDA reads it); None while its pod
    does not serve."""
    try:
        text = urllib.request.urlopen(url, timeout=5).read().decode()
    except OSError:
        return None
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples
            if s.labels.get("queue") == "io"}


def run_seconds(url: str) -> float:
    """io's run time as the reconciler's sizing has it, seconds (inf while unknown)."""
    return (sizing(url) or {}).get("celery_autoscale_task_run_seconds_average", math.inf)


def watch(release, until, seconds: float) -> list[tuple[int, int]]:
    """(replicas, running tasks) of io every half second until ``until()`` or ``seconds`` pass."""
    client, settings, seen = release.client(), release.settings(), []
    deadline = time.monotonic() + seconds
    while not until() and time.monotonic() < deadline:
        seen.append((release.replicas("io"), backlog(client, "io", settings).in_flight))
        time.sleep(0.5)
    return seen


def test_a_wait_target_sizes_io_cheaper_within_the_target_and_a_reconciler_outage_falls_back(waiting):
    """With a 20 s target, 24 tasks of 2 s (48 process-seconds) need one replica of 4 processes, where
    one task per process asks for all 4: every task starts within the target on fewer replicas.
    Then the reconciler is scaled to zero and 60 tasks sent: KEDA's trigger fails, the formula falls back to
    the true backlog (one task per process: 4 replicas), the replicas never drop below what the
    running tasks hold, and every task succeeds."""
    release, producer = waiting, waiting.producer()
    release.upgrade({"queues": {"io": {"autoscaling": {"targetQueueWaitSeconds": TARGET}}}})
    scaled = release.get("scaledobject", release.worker("io"))
    url = next(t["metadata"]["url"] for t in scaled["spec"]["triggers"] if t["type"] == "metrics-api")
    # `helm upgrade` returns before the rollout ends: until then the reconciler of the install, with no
    # wait target, answers. The new one learns io's run time from runs it sees end: its /metrics
    # scraped (a read) before and after them.
    wait_for(lambda: "celery_autoscale_queue_wait_target_seconds" in (sizing(url) or {}), 120,
             "the upgraded reconciler serving io's wait target", explain=release.scaling)
    for _ in range(5):
        for _, r in send(producer, 4):
            r.get(timeout=180)
        time.sleep(2)  # two reads at least a second apart see the runs' counters change
        if run_seconds(url) <= 2 * RUN:
            break
    assert run_seconds(url) <= 2 * RUN, "the reconciler's run time of io"

    burst = send(producer, 24)
    seen = watch(release, lambda: all(r.ready() for _, r in burst), 240)
    took = waits(burst)
    start = (sizing(url) or {}).get("celery_autoscale_worker_start_seconds")
    print(f"wait target {TARGET}s: max wait {max(took):.1f}s, replicas seen {sorted({r for r, _ in seen})}, "
          f"worker start {start}s")
    assert max(took) <= TARGET, took
    # One task per process asks for all 4; the target, fewer (how many depends on the worker start
    # time the reconciler measured on this machine: 1 or 2 replicas seen with 8-12 s).
    assert max(r for r, _ in seen) < 4, "one task per process would have asked for 4 replicas"

    release.kubectl("scale", "deployment", f"{release.fullname}-reconciler", "--replicas=0")
    outage = send(producer, 60)  # 30 s on one replica: KEDA gives up on the trigger after 3 polls
    seen = watch(release, lambda: all(r.ready() for _, r in outage), 240)
    assert [r.get(timeout=60)["bytes"] for _, r in outage] == [0] * 60
    print(f"reconciler down: replicas seen {sorted({r for r, _ in seen})}")
    assert max(r for r, _ in seen) == 4, "the true backlog at one task per process, capped at 4"
    assert all(replicas >= math.ceil(running / 4) for replicas, running in seen), seen
