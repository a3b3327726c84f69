"""The names, values and helpers every real-cluster test and benchmark shares (`make e2e`).

What they run on is :func:`releases.environment`: the control plane and KEDA built from their Go
modules (:mod:`cluster`), the real node (:mod:`node`), and release :data:`RELEASE` of
values/ci.yaml on it, in namespace :data:`NAMESPACE`.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RUN_DIR = Path(os.environ.get("E2E_RUN_DIR", "/tmp/celery-autoscale-e2e"))
KUBECONFIG = RUN_DIR / "cluster" / "kubeconfig"
#: The release of values/ci.yaml every test shares, in a namespace of its name (see :func:`releases.placed`).
RELEASE = NAMESPACE = "ci"
CI_VALUES = yaml.safe_load((ROOT / "values" / "ci.yaml").read_text())
QUEUES = ("cpu", "io", "mixed")


def worker(queue: str) -> str:
    """Name of the queue's Deployment, ScaledObject and HPA."""
    return f"{RELEASE}-celery-autoscale-worker-{queue}"


def merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def queue_backlog(release, queue: str) -> int:
    """``queue``'s true backlog in the release's Redis (waiting, running, scheduled)."""
    from celery_autoscale import backlog

    return backlog(release.client(), queue, release.settings()).total


def wait_for(check, timeout: float, what: str, interval: float = 1.0, explain=None):
    """Poll until ``check()`` is truthy; return it. Fails naming ``what``, the last value and
    ``explain()`` (e.g. :meth:`releases.CiRelease.explain`)."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    detail = f"\n{explain()}" if explain else ""
    raise AssertionError(f"{what}: still {last!r} after {timeout:.0f}s{detail}")


def condition(obj: dict, kind: str) -> dict:
    """The status condition ``kind`` (e.g. ``Ready``) of a Kubernetes object, or ``{}``."""
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == kind), {})


def pod_seconds(events: list[tuple[float, str, str]], prefix: str, since: float, until: float) -> tuple[float, float]:
    """Seconds the pods named ``prefix*`` ran within [since, until], and of those, seconds spent
    terminating (SIGTERM to exit): what the pods cost, draining included. ``events`` as a release's
    :class:`releases.PodEvents`."""
    started, stopping, total, terminating = {}, {}, 0.0, 0.0
    for when, pod, what in sorted(events):
        if not pod.startswith(prefix):
            continue
        if what == "started":
            started[pod] = when
        elif what == "sigterm":
            stopping[pod] = when
        elif what.startswith("exited") or what.startswith("crashed"):
            begin = max(started.pop(pod, since), since)
            total += max(0.0, min(when, until) - begin)
            if pod in stopping:
                terminating += max(0.0, min(when, until) - max(stopping.pop(pod), since))
    for pod, begin in started.items():  # still running
        total += max(0.0, until - max(begin, since))
        if pod in stopping:
            terminating += max(0.0, until - max(stopping[pod], since))
    return total, terminating


def scale_down_with_busy_and_idle_pods(release, producer) -> dict:
    """io at concurrency 1 (upgrade first): two tasks of 36 s start on two pods, then (12 s later,
    so those pods are older) two of 50 s on two newer pods. When the first two end, the HPA scales
    4 -> 2. (The first tasks outlast the start of the newer pods by far: a kubelet-run pod takes
    about 10 s from the scale-up to its worker consuming. With first tasks of 24 s, one round of
    four here never saw four running, as when the first tasks end before the newer pods consume:
    their pods then take the long tasks and the newer pods stay idle.)

    Returns ``busy_removed`` (removed pods that were running a 50 s task), ``removed`` (pod
    names), and ``pod_seconds`` / ``terminating_seconds`` of the io pods over the round (from the
    first task to io idle at 0). ``release``: a :class:`releases.CiRelease`."""
    from celery_autoscale import backlog

    settings = release.settings()
    client = release.client()
    began = time.time()
    first = [producer.send_task("tasks.io.transfer", kwargs={"size_bytes": 0, "wait_seconds": 36}, queue="io")
             for _ in range(2)]

    def explain():
        return release.explain("io")

    wait_for(lambda: backlog(client, "io", settings).in_flight == 2, 90, "two first tasks running", explain=explain)
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
    wait_for(lambda: backlog(client, "io", settings).total == 0 and release.replicas("io") == 0, 180, "io idle again")
    time.sleep(2)
    total, terminating = pod_seconds(list(release.events), worker("io"), began, time.time())
    return {"busy_removed": sum(pod in long_pods for pod in removed), "removed": removed,
            "pod_seconds": round(total, 1), "terminating_seconds": round(terminating, 1)}
