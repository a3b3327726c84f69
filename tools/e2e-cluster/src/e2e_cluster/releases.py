"""Releases of the chart whose pods all run on the real node (the e2e cluster).

:func:`placed` installs the chart through the real Helm SDK into a namespace of its own, with
:data:`node.PLACEMENT` and the Redis stand-in image merged over the given values (the only
images this machine has; no registry is reachable), and names the namespace's Services by their
ClusterIPs in ``/etc/hosts`` (see :mod:`services`): KEDA and the tests, on the host, reach the
release's Redis and Flower by the names a pod would use. :class:`PlacedRelease` reads the
release's objects, pods and logs; :class:`PodEvents` records its pods' starts and ends.

:func:`environment` is what every e2e test, ``make report`` and ``make demo-cluster`` stand on:
the control plane and KEDA (:mod:`cluster`), the real node (:mod:`node`), and release ``ci`` of
values/ci.yaml placed on it as a :class:`CiRelease`.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import shutil
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .harness import CI_VALUES, RELEASE, ROOT, RUN_DIR, merge, wait_for
from .node import NAME as NODE_NAME, PLACEMENT, REDIS_STANDIN
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


class CiRelease(PlacedRelease):
    """A release of values/ci.yaml, read as the sample app's producer and KEDA read it."""

    def worker(self, queue: str) -> str:
        """Name of the queue's Deployment, ScaledObject and HPA."""
        return f"{self.fullname}-worker-{queue}"

    def client(self):
        """A redis-py client of the chart's Redis."""
        import redis

        return redis.Redis.from_url(self.redis_url)

    def producer(self):
        """A plain Celery producer with the runtime (it names every task's queue), results in the chart's Redis."""
        from celery import Celery

        import celery_autoscale

        return celery_autoscale.install(Celery("producer", broker=self.redis_url, backend=self.redis_url), environ={})

    def process_env(self) -> dict[str, str]:
        """The environment of a ``python -m loadgen`` child: ours with the chart's Redis as broker
        and result backend and the sample app as the producer's app."""
        from loadgen.stack import WorkerSpec

        env = {k: v for k, v in os.environ.items() if not k.startswith("CELERY_")}
        env.update(CELERY_BROKER_URL=self.redis_url, CELERY_RESULT_BACKEND=self.redis_url,
                   CELERY_AUTOSCALE_APP=WorkerSpec.app)
        return env

    @functools.cached_property
    def _settings(self):
        from celery_autoscale import settings_of

        return settings_of(self.producer())

    def settings(self):
        """The runtime's settings (the chart's: Celery's and kombu's defaults)."""
        return self._settings

    def replicas(self, queue: str) -> int:
        """What the queue's Deployment asks for (``spec.replicas``, set by KEDA and the HPA)."""
        self.cluster.keda_alive()
        return self.deployment_replicas(self.worker(queue))

    def explain(self, queue: str) -> str:
        """The ScaledObject's and the HPA's view of ``queue``, the pods, the last lines of its
        workers' logs, its backlog and its pods' last events, for a failure message: one line
        each, the most telling last (CI keeps a log's head and tail)."""
        from celery_autoscale import backlog

        so = self.get("scaledobject", self.worker(queue)).get("status", {})
        hpa = self.get("hpa", self.worker(queue)).get("status", {})
        now = time.time()
        logs = self.pod_events.log_lines(self.worker(queue)) if self.pod_events.logs else []
        return "\n".join([
            *logs[-15:], self.scaling(),
            "scaledobject: " + json.dumps({k: v for k, v in so.items() if k not in ("health", "externalMetricNames")}),
            "hpa: " + json.dumps(hpa),
            f"replicas: {self.replicas(queue)}; backlog: {backlog(self.client(), queue, self.settings())}",
            "pod events: " + "; ".join(f"{pod} {what} {now - at:.0f}s ago" for at, pod, what in self.events[-12:]),
        ])

    def upgrade(self, values: dict, timeout: float = 120) -> None:
        """``helm upgrade`` with values/ci.yaml and ``values`` merged over it."""
        super().upgrade(merge(CI_VALUES, values), timeout)


@contextmanager
def ci_on_the_node(cluster, real_node, name: str, logs: Path | None = None):
    """Release ``name`` of values/ci.yaml (see :func:`placed`; its worker pods' logs kept in
    ``logs``), yielded as a :class:`CiRelease` once its Redis and reconciler are Ready."""
    with placed(cluster, real_node, name, CI_VALUES, volumes={f"{name}-redis": "1Gi"}, kind=CiRelease,
                timeout=120, logs=logs) as found:
        wait_for(lambda: found.ready("app.kubernetes.io/component=redis")
                 and found.ready("app.kubernetes.io/component=reconciler"), 300,
                 f"the {name} release's Redis and reconciler Ready on the real node", explain=found.scaling)
        yield found


@contextmanager
def environment(run_dir: Path = RUN_DIR):
    """The control plane and KEDA (:mod:`cluster`), the real node (:mod:`node`), metrics-server, and release
    :data:`harness.RELEASE` of values/ci.yaml on it (:func:`ci_on_the_node`, its worker pods' logs
    in ``run_dir/pods``); on exit all stopped in reverse, whatever the node left removed."""
    from .cluster import E2ECluster
    from .node import RealNode

    # A SIGTERM (a CI timeout, a Ctrl-C'd make) must still run the teardown below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    cluster = E2ECluster(run_dir / "cluster")
    # pytest-kubernetes runs the kubectl it finds on PATH: the one built with the control plane.
    os.environ["PATH"] = f"{cluster.bins['kubectl'].parent}{os.pathsep}{os.environ['PATH']}"
    try:
        cluster.start()
        node = RealNode(cluster, run_dir / "node")
        try:
            node.start()
            cluster.start_metrics_server(NODE_NAME)
            shutil.rmtree(run_dir / "pods", ignore_errors=True)  # an earlier run's logs
            with ci_on_the_node(cluster, node, RELEASE, logs=run_dir / "pods") as release:
                yield release
        finally:
            node.stop()
    finally:
        cluster.stop()


def on_the_node(values: dict) -> dict:
    """``values`` with every pod placed on the real node and the chart's Redis from the stand-in image."""
    return merge(merge(values, PLACEMENT), {"redis": {"image": REDIS_STANDIN}})


@contextmanager
def placed(cluster, real_node, name: str, values: dict, volumes: dict[str, str] | None = None,
           kind: type[PlacedRelease] = PlacedRelease, timeout: float = 180,
           secrets: dict[str, dict[str, str]] | None = None, logs: Path | None = None):
    """Release ``name`` of the chart in namespace ``name`` with ``values`` (see :func:`on_the_node`),
    after a ``hostPath`` PersistentVolume on the real node for each of ``volumes`` (name: size) and
    a generic Secret in the namespace for each of ``secrets`` (name: {key: value}, e.g. a password
    the values name in ``existingSecret``); yields a ``kind``, its pods followed by a
    :class:`PodEvents` (which keeps the worker pods' logs in ``logs``, if given). On exit: uninstalled and its namespace deleted (the Secrets and the claim
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
    names = ServiceAddresses(api, name)
    events = PodEvents(api, name, logs).start()
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
    """What happens to the pods of ``namespace``, as ``(time, pod, what)`` in :attr:`events`:
    ``started`` (its container running), ``sigterm`` (its deletion began: the kubelet sends
    SIGTERM), ``exited`` (the pod gone). A thread follows them with :func:`watching.list_and_watch`.
    With ``logs`` (a folder), each worker pod's log is followed from its start to its container's
    end into ``logs/<pod>.log``: the kubelet deletes a pod's log with the pod."""

    def __init__(self, api, namespace: str, logs: Path | None = None):
        self.api, self.namespace, self.logs = api, namespace, logs
        self.events: list[tuple[float, str, str]] = []
        self._seen: set[tuple[str, str]] = set()  # (pod uid, what)
        self._live: dict[str, str] = {}  # uid -> name
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name=f"pod-events-{namespace}")
        if logs:
            logs.mkdir(parents=True, exist_ok=True)

    def start(self) -> PodEvents:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def alive(self, prefix: str) -> tuple[int, int]:
        """``(running, terminating)``: pods named ``prefix*`` whose container runs, not being
        deleted / being deleted and not yet gone."""
        last = {pod: what for _, pod, what in list(self.events) if pod.startswith(prefix)}
        return sum(w == "started" for w in last.values()), sum(w == "sigterm" for w in last.values())

    def log_lines(self, prefix: str) -> list[str]:
        """Every line the worker pods named ``prefix*`` logged so far (see ``logs``)."""
        return [line for path in sorted(self.logs.glob(f"{prefix}*.log"))
                for line in path.read_text(errors="replace").splitlines()]

    def logged(self, prefix: str, text: str, since: float) -> list[str]:
        """The worker pods named ``prefix*`` that started after ``since`` (a ``time.time()``) and
        logged ``text`` so far (see ``logs``)."""
        started = sorted({pod for at, pod, what in list(self.events)
                          if what == "started" and at >= since and pod.startswith(prefix)})
        logs = {pod: self.logs / f"{pod}.log" for pod in started}
        return [pod for pod, log in logs.items() if log.exists() and text in log.read_text(errors="replace")]

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
            if self._add(uid, name, "started") and self.logs and \
                    (pod.metadata.labels or {}).get("app.kubernetes.io/component") == "worker":
                threading.Thread(target=self._follow, args=(name, pod.spec.containers[0].name), daemon=True,
                                 name=f"log-{name}").start()
        if pod.metadata.deletion_timestamp is not None:
            self._add(uid, name, "sigterm")

    def _add(self, uid: str, name: str, what: str) -> bool:
        """Record ``what`` once per pod; True if it is new."""
        if (uid, what) in self._seen:
            return False
        self._seen.add((uid, what))
        self.events.append((time.time(), name, what))
        return True

    def _follow(self, pod: str, container: str) -> None:
        """Copy the log of ``pod``'s ``container`` until the container ends (the stream closes)."""
        try:
            stream = self.api.read_namespaced_pod_log(pod, self.namespace, container=container, follow=True,
                                                      _preload_content=False)
            with open(self.logs / f"{pod}.log", "ab") as out:
                for chunk in stream.stream(65536):
                    out.write(chunk)
                    out.flush()
        except Exception as exc:  # the pod gone before its log was asked for: what it logged is lost
            with open(self.logs / f"{pod}.log", "a") as out:
                out.write(f"# log follower: {type(exc).__name__}: {exc}\n")
