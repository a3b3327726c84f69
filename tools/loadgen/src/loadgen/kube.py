"""The worker Deployments' replicas, read from a cluster's Kubernetes API while a load runs.

What users otherwise watch with ``kubectl get hpa -w`` in a second terminal: for each worker
Deployment of a chart release (labels ``app.kubernetes.io/instance=<release>`` and
``app.kubernetes.io/component=worker``), the replicas it asks for (``spec.replicas``, set by
KEDA's HPA) and the ready ones (``status.readyReplicas``), keyed by the Celery queue it consumes
(the Deployment's ``celery-autoscale/celery-queue`` annotation, else its
``celery-autoscale/queue`` label). Needs the ``kubernetes`` extra.
"""

from __future__ import annotations

from dataclasses import dataclass

QUEUE_ANNOTATION = "celery-autoscale/celery-queue"
QUEUE_LABEL = "celery-autoscale/queue"


class ClusterError(RuntimeError):
    """The cluster cannot be read, or the release has no worker Deployment; the message is one line."""


@dataclass(frozen=True)
class Replicas:
    """One Deployment's replicas: asked for (``spec.replicas``) and ready (``status.readyReplicas``)."""

    desired: int
    ready: int


class WorkerDeployments:
    """Reads the replicas of ``release``'s worker Deployments in ``namespace``.

    Args:
        release: the Helm release name (its ``app.kubernetes.io/instance`` label).
        namespace: the release's namespace.
        kubeconfig: a kubeconfig file; ``None`` uses ``KUBECONFIG`` or ``~/.kube/config`` (the
            client's default), and inside a pod its service account.

    Raises:
        ClusterError: the ``kubernetes`` package is missing or the kubeconfig cannot be read.
    """

    def __init__(self, release: str, namespace: str = "default", kubeconfig: str | None = None):
        try:
            from kubernetes import client, config
        except ImportError:
            raise ClusterError("reading replicas needs the kubernetes client: "
                               "pip install 'celery-autoscale[kubernetes]'") from None
        try:
            if kubeconfig is None and _in_cluster():
                config.load_incluster_config()
                api_client = client.ApiClient()
            else:
                api_client = config.new_client_from_config(kubeconfig)
        except Exception as exc:  # kubernetes raises ConfigException, OSError, yaml errors
            raise ClusterError(f"cannot read the kubeconfig{f' {kubeconfig}' if kubeconfig else ''}: "
                               f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
        self.api = client.AppsV1Api(api_client)
        self.release, self.namespace = release, namespace
        self.selector = f"app.kubernetes.io/instance={release},app.kubernetes.io/component=worker"

    def read(self) -> dict[str, Replicas]:
        """``{celery queue: Replicas}`` now (one LIST call).

        Raises:
            ClusterError: the API cannot be reached or refuses the call.
        """
        try:
            items = self.api.list_namespaced_deployment(self.namespace, label_selector=self.selector,
                                                        _request_timeout=10).items
        except Exception as exc:
            status = getattr(exc, "status", None)
            raise ClusterError(f"cannot list the worker Deployments of release {self.release!r} in namespace "
                               f"{self.namespace!r}: {f'HTTP {status}' if status else type(exc).__name__}") from None
        out = {}
        for d in items:
            queue = (d.metadata.annotations or {}).get(QUEUE_ANNOTATION) or (d.metadata.labels or {}).get(QUEUE_LABEL)
            out[queue or d.metadata.name] = Replicas(d.spec.replicas or 0, (d.status.ready_replicas if d.status else 0) or 0)
        return out

    def check(self, queues: list[str]) -> None:
        """Fail unless the release has a worker Deployment for each of ``queues``.

        Raises:
            ClusterError: one missing, named.
        """
        found = self.read()
        missing = [q for q in queues if q not in found]
        if missing:
            have = ", ".join(sorted(found)) or "none"
            raise ClusterError(f"release {self.release!r} in namespace {self.namespace!r} has no worker Deployment "
                               f"for queue {missing[0]!r} (it has: {have})")


def _in_cluster() -> bool:
    """Inside a pod with no kubeconfig of its own: use the pod's service account."""
    import os
    from pathlib import Path

    return ("KUBERNETES_SERVICE_HOST" in os.environ and not os.environ.get("KUBECONFIG")
            and not Path("~/.kube/config").expanduser().exists())


def replicas_text(replicas: dict[str, dict] | None) -> str:
    """``"io 3/4 ready/desired"``-style text for the live view, from a timeline sample's
    ``{queue: {"desired", "ready"}}`` (``None``: the API could not be read)."""
    if replicas is None:
        return "replicas: ?"
    return "  ".join(f"{q} {r['ready']}/{r['desired']}" for q, r in sorted(replicas.items())) + " ready/desired"
