"""The names, values and helpers every real-cluster test, benchmark and script shares.

What they run on is :func:`releases.environment`: the control plane and KEDA built from their Go
modules (:mod:`cluster`), the real node (:mod:`node`), and release :data:`RELEASE` of
values/ci.yaml on it, in namespace :data:`NAMESPACE`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import yaml

#: tools/e2e-cluster: build.sh and versions.env (the package is installed editable from here).
TOOL = Path(__file__).resolve().parents[2]
#: The repository: the chart and values/ the harness installs.
ROOT = TOOL.parents[1]
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
