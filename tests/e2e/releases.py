"""Releases of the chart whose pods all run on the real node (test harness for `make e2e`).

:func:`placed` installs the chart through the real Helm SDK into a namespace of its own, with
:data:`node.PLACEMENT` and the Redis stand-in image merged over the given values (the only
images this machine has; no registry is reachable), and names the namespace's Services by their
ClusterIPs in ``/etc/hosts`` (see :mod:`services`): KEDA and the tests, on the host, reach the
release's Redis and Flower by the names a pod would use. :class:`PlacedRelease` reads the
release's objects, pods and logs; :class:`PodEvents` records its pods' starts and ends.
"""

from __future__ import annotations

import base64
import functools
import json
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

from .harness import ROOT, merge
from .node import PLACEMENT, REDIS_STANDIN
from .watching import list_and_watch


@dataclass
class PlacedRelease:
    cluster: object
    real_node: object
    helm: object  # helm_python.Config of the release's namespace
    chart: object
    name: str
    namespace: str
    values: dict  # what was installed, placement included
    pod_events: PodEvents | None = None  # started by placed()

    @property
    def events(self) -> list[tuple[float, str, str]]:
        """``(time, pod, what)`` of the release's namespace: see :class:`PodEvents`."""
        return self.pod_events.events

    @property
    def fullname(self) -> str:
        return f"{self.name}-celery-autoscale"

    def kubectl(self, *args: str, check: bool = True):
        return self.cluster.kubectl(*args, "-n", self.namespace, check=check)

    def get(self, kind: str, name: str) -> dict:
        return json.loads(self.kubectl("get", kind, name, "-o", "json").stdout)

    def pods(self, selector: str = "") -> list[dict]:
        """The release's pods that match ``selector`` (a label selector, or every pod)."""
        labels = ",".join(filter(None, [f"app.kubernetes.io/instance={self.name}", selector]))
        return json.loads(self.kubectl("get", "pods", "-l", labels, "-o", "json").stdout)["items"]

    def ready(self, selector: str = "") -> list[str]:
        """Names of the pods of ``selector`` that are Ready and not being deleted."""
        return [p["metadata"]["name"] for p in self.pods(selector) if p["metadata"].get("deletionTimestamp") is None
                and any(c["type"] == "Ready" and c["status"] == "True"
                        for c in p.get("status", {}).get("conditions", []))]

    def deployment_replicas(self, name: str) -> int:
        """``spec.replicas`` of the Deployment ``name``: what KEDA and the HPA ask for."""
        return self.get("deployment", name)["spec"].get("replicas", 0)

    def secret(self, name: str, key: str) -> str:
        return base64.b64decode(self.get("secret", name)["data"][key]).decode()

    def redis_password(self) -> str:
        """The password of the chart's own Redis, from the Secret the chart generated."""
        return self.secret(f"{self.fullname}-redis", "redis-password")

    def redis_address(self) -> str:
        """The chart's Redis Service's ClusterIP: kube-proxy's rules take the host's connections to the pod."""
        return self.get("service", f"{self.fullname}-redis")["spec"]["clusterIP"]

    @functools.cached_property
    def redis_url(self) -> str:
        """The chart's own Redis, for a producer or a client on the host."""
        return f"redis://:{self.redis_password()}@{self.redis_address()}:6379/0"

    def logs(self, selector: str) -> str:
        """The log of the newest pod of ``selector`` ("" if there is none)."""
        pods = sorted(self.pods(selector), key=lambda p: p["metadata"]["creationTimestamp"])
        return self.kubectl("logs", pods[-1]["metadata"]["name"], check=False).stdout if pods else ""

    def scaling(self) -> str:
        """The ScaledObjects, HPAs and pods, for a failure message."""
        return self.kubectl("get", "scaledobject,hpa,pods", "-o", "wide").stdout

    def upgrade(self, values: dict, timeout: float = 120) -> None:
        """``helm upgrade`` with ``values`` (placement and the Redis image merged over them again)."""
        self.values = on_the_node(values)
        self.helm.upgrade(self.chart, self.name, self.values, namespace=self.namespace, timeout=timeout)


def on_the_node(values: dict) -> dict:
    """``values`` with every pod placed on the real node and the chart's Redis from the stand-in image."""
    return merge(merge(values, PLACEMENT), {"redis": {"image": REDIS_STANDIN}})


@contextmanager
def placed(cluster, real_node, name: str, values: dict, volumes: dict[str, str] | None = None,
           kind: type[PlacedRelease] = PlacedRelease, timeout: float = 180,
           secrets: dict[str, dict[str, str]] | None = None):
    """Release ``name`` of the chart in namespace ``name`` with ``values`` (see :func:`on_the_node`),
    after a ``hostPath`` PersistentVolume on the real node for each of ``volumes`` (name: size) and
    a generic Secret in the namespace for each of ``secrets`` (name: {key: value}, e.g. a password
    the values name in ``existingSecret``); yields a ``kind``, its pods followed by a
    :class:`PodEvents`. On exit: uninstalled and its namespace deleted (the Secrets and the claim
    the chart keeps on uninstall go with it); the volumes go with the node."""
    import helm_python as helm
    from kubernetes import client, config

    from .services import ServiceAddresses

    cluster.kubectl("create", "namespace", name)
    for volume, size in (volumes or {}).items():
        real_node.volume(volume, size)
    for secret, data in (secrets or {}).items():  # on kubectl's stdin, never its arguments
        cluster.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": secret, "namespace": name},
                       "type": "Opaque", "stringData": data})
    hc = helm.Config(kubeconfig_path=str(cluster.kubeconfig), namespace=name)
    chart = helm.Chart.load(ROOT / "charts" / "celery-autoscale")
    api = client.CoreV1Api(config.new_client_from_config(str(cluster.kubeconfig)))
    names = ServiceAddresses(api, name, cluster_ips=True)
    events = PodEvents(api, name).start()
    try:
        release = kind(cluster, real_node, hc, chart, name, name, on_the_node(values), events)
        hc.install(chart, name, release.values, namespace=name, timeout=timeout)
        names.refresh()
        yield release
    finally:
        events.stop()
        names.stop()
        hc.uninstall(name, timeout=120)
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


class PodEvents:
    """What happens to the pods of ``namespace``, as ``(time, pod, what)`` in :attr:`events` (the
    shape the pod bridge records): ``started`` (its container running), ``sigterm`` (its deletion
    began: the kubelet sends SIGTERM), ``exited`` (the pod gone). A thread follows them with
    :func:`watching.list_and_watch`."""

    def __init__(self, api, namespace: str):
        self.api, self.namespace = api, namespace
        self.events: list[tuple[float, str, str]] = []
        self._seen: set[tuple[str, str]] = set()  # (pod uid, what)
        self._live: dict[str, str] = {}  # uid -> name
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name=f"pod-events-{namespace}")

    def start(self) -> PodEvents:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def _loop(self) -> None:
        list_and_watch(self.api, self.namespace, "", self._listed, self._handle, self._stop)

    def _listed(self, pods: list) -> None:
        for uid in set(self._live) - {p.metadata.uid for p in pods}:
            self._add(uid, self._live.pop(uid), "exited")
        for pod in pods:
            self._handle("ADDED", pod)

    def _handle(self, kind: str, pod) -> None:
        uid, name = pod.metadata.uid, pod.metadata.name
        if kind == "DELETED":
            self._live.pop(uid, None)
            self._add(uid, name, "exited")
            return
        self._live[uid] = name
        if any(s.state and s.state.running for s in pod.status.container_statuses or []):
            self._add(uid, name, "started")
        if pod.metadata.deletion_timestamp is not None:
            self._add(uid, name, "sigterm")

    def _add(self, uid: str, name: str, what: str) -> None:
        if (uid, what) not in self._seen:
            self._seen.add((uid, what))
            self.events.append((time.time(), name, what))
