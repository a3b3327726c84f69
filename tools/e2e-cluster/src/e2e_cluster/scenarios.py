"""Scenarios a test and a benchmark both run on release ``ci`` (:func:`releases.environment`)."""

from __future__ import annotations

import json
import time

from .harness import pod_seconds, wait_for, worker


#: What a worker logs when its pod cannot resolve the Redis Service's name (glibc's EAI_AGAIN).
UNRESOLVED = "Temporary failure in name resolution"


class PodDnsFault(AssertionError):
    """Worker pods of the round (``pods``) could not resolve Redis's name, so they took no task."""

    def __init__(self, pods: list[str]):
        super().__init__(f"pods {pods} could not resolve Redis's name")
        self.pods = pods


def scale_down_with_busy_and_idle_pods(release, producer) -> dict:
    """io at concurrency 1 (upgrade first): two tasks of 36 s start on two pods, then (12 s later,
    so those pods are older) two of 50 s on two newer pods. When the first two end, the HPA scales
    4 -> 2. (The first tasks outlast the start of the newer pods by far: a kubelet-run pod takes
    about 10 s from the scale-up to its worker consuming. With first tasks of 24 s, one round of
    four here never saw four running, as when the first tasks end before the newer pods consume:
    their pods then take the long tasks and the newer pods stay idle.)

    The round needs every pod it starts to consume. On the e2e node a new pod, rarely, gets no
    answer from the cluster DNS for a minute or more while the other pod of the same scale-up
    resolves at once (its worker logs ``UNRESOLVED`` and retries; on 2026-12-07 once in CI, and
    once in 110 pod starts here: 30 rounds of two and 50 bare pods): then the round is run once
    more, after the queue is idle again, and ``dns_retried`` names the pods. A second such fault
    fails.

    Returns ``busy_removed`` (removed pods that were running a 50 s task), ``removed`` (pod
    names), ``pod_seconds`` / ``terminating_seconds`` of the io pods over the round (from the
    first task to io idle at 0), ``first_running_seconds`` (from the first task sent to both
    first tasks running) and ``dns_retried``. ``release``: a :class:`releases.CiRelease`."""
    try:
        return {**_round(release, producer), "dns_retried": []}
    except PodDnsFault as fault:
        print(f"scale-down round run again: {fault}")
        return {**_round(release, producer), "dns_retried": fault.pods}


def _round(release, producer) -> dict:
    from celery_autoscale import backlog

    settings = release.settings()
    client = release.client()
    began = time.time()
    first = [producer.send_task("tasks.io.transfer", kwargs={"size_bytes": 0, "wait_seconds": 36}, queue="io")
             for _ in range(2)]

    def explain():
        return release.explain("io")

    def idle():
        return backlog(client, "io", settings).total == 0 and release.replicas("io") == 0

    try:
        wait_for(lambda: backlog(client, "io", settings).in_flight == 2, 90, "two first tasks running",
                 explain=explain)
    except AssertionError:
        unresolved = release.pod_events.logged(worker("io"), UNRESOLVED, began)
        if not unresolved:
            raise
        for r in first:
            r.get(timeout=180)
        wait_for(idle, 180, "io idle again")
        raise PodDnsFault(unresolved) from None
    first_running = time.time() - began
    time.sleep(12)
    mark = len(release.events)
    long = [producer.send_task("tasks.io.transfer", kwargs={"size_bytes": 0, "wait_seconds": 50}, queue="io")
            for _ in range(2)]
    wait_for(lambda: backlog(client, "io", settings).in_flight == 4, 90, "four tasks running on four pods",
             explain=explain)
    owners = {k.decode(): json.loads(v)["worker"].split("@")[-1]
              for k, v in client.hgetall("celery-autoscale:in-flight-owner:io").items()}
    long_pods = {owners[r.id] for r in long}
    for r in first:
        r.get(timeout=120)
    wait_for(lambda: release.replicas("io") == 2, 90, "io scaled down to the 2 running tasks")
    time.sleep(3)  # the ReplicaSet's deletions reach the events
    removed = sorted({e[1] for e in release.events[mark:] if e[2] == "sigterm" and e[1].startswith(worker("io"))})
    for r in long:
        r.get(timeout=180)
    wait_for(idle, 180, "io idle again")
    time.sleep(2)
    total, terminating = pod_seconds(list(release.events), worker("io"), began, time.time())
    return {"busy_removed": sum(pod in long_pods for pod in removed), "removed": removed,
            "pod_seconds": round(total, 1), "terminating_seconds": round(terminating, 1),
            "first_running_seconds": round(first_running, 1)}
