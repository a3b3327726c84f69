"""Pod deletion cost: when a queue scales down, the ReplicaSet removes idle workers first.

Kubernetes picks the pods a ReplicaSet deletes by rank (``ActivePodsWithRanks.Less`` in
``pkg/controller/controller_utils.go``, v1.35): unscheduled before scheduled, pending before
running, not ready before ready, then a lower ``controller.kubernetes.io/pod-deletion-cost``
first, and only then co-location, the time since ready (in log2 buckets) and the creation time.
It knows nothing of running tasks. The reconciler sets each worker pod's cost to the number of
tasks it runs (the runtime's in-flight owners: worker ``<queue>@<pod name>``, the chart's
``--hostname``), so among ready, running pods an idle one (cost 0) goes before a busy one.

What it cannot prevent: a pod that is not ready or not running ranks lower whatever its cost
(a busy worker failing its readiness probe is removed first); costs are at most one round
(``--interval``) plus the rate limit old; and a scale-down removing more pods than there are
idle ones still removes busy ones (warm shutdown keeps their tasks). Each pod is patched only
when its cost changed and at most once per ``min_interval`` seconds (the Kubernetes docs warn
against frequent updates); a patch that fails is logged and skipped: it never blocks a round.
"""

from __future__ import annotations

import json
import logging
import time

from .. import keys

__all__ = ["ANNOTATION", "DeletionCost", "busy_by_pod"]

logger = logging.getLogger("celery_autoscale.reconciler")

#: The annotation the ReplicaSet controller reads (feature PodDeletionCost, beta since 1.22).
ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"


def busy_by_pod(client, queues: list[str], prefix: str = "") -> dict[str, int]:
    """Pod name -> number of tasks running on it, from the in-flight owners of ``queues``."""
    counts: dict[str, int] = {}
    for queue in queues:
        for raw in client.hvals(keys.owners_key(queue, prefix)):
            try:
                worker = str(json.loads(raw)["worker"])
            except (ValueError, TypeError, KeyError):
                continue
            pod = worker.split("@", 1)[-1]
            counts[pod] = counts.get(pod, 0) + 1
    return counts


class DeletionCost:
    """Keeps the deletion cost of the worker pods matching ``selector`` equal to their running tasks.

    Args:
        api: a ``kubernetes.client.CoreV1Api``.
        namespace: the pods' namespace.
        selector: a label selector for the worker pods (e.g. the release's worker component).
        min_interval: seconds between two patches of one pod.
    """

    def __init__(self, api, namespace: str, selector: str, min_interval: float = 5.0):
        self.api, self.namespace, self.selector, self.min_interval = api, namespace, selector, min_interval
        self._patched: dict[str, float] = {}  # pod -> when it was last patched (monotonic)

    def update(self, busy: dict[str, int]) -> dict[str, int]:
        """Patch the pods whose cost differs from ``busy``; return ``{pod: cost}`` of those patched."""
        from kubernetes.client.exceptions import ApiException

        patched = {}
        now = time.monotonic()
        for pod in self.api.list_namespaced_pod(self.namespace, label_selector=self.selector).items:
            name = pod.metadata.name
            if pod.metadata.deletion_timestamp is not None:
                continue
            want = busy.get(name, 0)
            try:
                have = int((pod.metadata.annotations or {}).get(ANNOTATION, "0"))
            except ValueError:
                have = None
            if want == have or now - self._patched.get(name, -self.min_interval) < self.min_interval:
                continue
            try:
                self.api.patch_namespaced_pod(name, self.namespace, {"metadata": {"annotations": {ANNOTATION: str(want)}}})
            except ApiException as exc:
                logger.warning("could not set the deletion cost of pod %s: %s %s", name, exc.status, exc.reason)
                continue
            self._patched[name] = now
            patched[name] = want
        return patched


def kubernetes_api():
    """A ``CoreV1Api`` from the pod's service account, else from ``KUBECONFIG`` / ``~/.kube/config``."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.CoreV1Api()
