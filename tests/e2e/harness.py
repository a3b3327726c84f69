"""Everything the real-cluster tests and the scaling benchmark stand on, brought up in order.

``environment()`` starts a real ``redis-server`` on 127.0.0.1:16379 (the address
``values/ci.yaml`` gives KEDA and the workers) with a password, the control plane and KEDA
built from their Go modules (:mod:`cluster`), installs the chart with ``values/ci.yaml``
through the real Helm SDK, and starts the pod bridge (:mod:`bridge`). On exit it stops them in
reverse: bridge, release, KEDA and the cluster, Redis.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RUN_DIR = Path(os.environ.get("E2E_RUN_DIR", "/tmp/celery-autoscale-e2e"))
KUBECONFIG = RUN_DIR / "cluster" / "kubeconfig"
NAMESPACE = "celery"
RELEASE = "ci"
#: The release whose pods the bridge runs: the sample app's (the scaling report, the wait target,
#: the admission tests, the live view). Every other release runs on the real node: see :mod:`releases`.
BRIDGED_RELEASES = (RELEASE,)
REDIS_PORT = 16379
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


@dataclass
class Release:
    cluster: object
    helm: object
    chart: object
    redis: object
    bridge: object

    def upgrade(self, values: dict) -> None:
        """``helm upgrade`` with ci.yaml and ``values`` merged over it."""
        self.helm.upgrade(self.chart, RELEASE, merge(CI_VALUES, values), namespace=NAMESPACE, timeout=120)

    def get(self, kind: str, name: str) -> dict:
        return json.loads(self.cluster.kubectl("get", kind, name, "-n", NAMESPACE, "-o", "json").stdout)

    def replicas(self, queue: str) -> int:
        """What the Deployment asks for (``spec.replicas``, set by KEDA and the HPA)."""
        self.cluster.keda_alive()
        return self.deployment_replicas(worker(queue))

    def deployment_replicas(self, name: str) -> int:
        """``spec.replicas`` of the Deployment ``name`` (of any release)."""
        return self.get("deployment", name)["spec"].get("replicas", 0)

    def explain(self, queue: str) -> str:
        """The ScaledObject's and the HPA's view of ``queue``, for a failure message."""
        so = self.get("scaledobject", worker(queue)).get("status", {})
        hpa = self.get("hpa", worker(queue)).get("status", {})
        return json.dumps({"replicas": self.replicas(queue), "scaledobject": so, "hpa": hpa,
                           "bridge": self.bridge.events[-10:]}, indent=1, default=str)

    def producer(self):
        """A plain Celery producer with the runtime, bound to this Redis (it names every task's queue)."""
        return self.redis.producer()

    def client(self):
        """A redis-py client of the broker."""
        return self.redis.client()

    @property
    def events(self) -> list[tuple[float, str, str]]:
        """``(time, pod, what)`` of the bridged pods' processes: started, sigterm, exited N, crashed N."""
        return self.bridge.events

    def settings(self):
        """The runtime's settings for this Redis (kombu's default priority lists, as the chart's)."""
        from celery_autoscale import settings_of

        return settings_of(self.redis.producer())


def queue_backlog(release, queue: str) -> int:
    """``queue``'s true backlog in the release's Redis (waiting, running, scheduled)."""
    from celery_autoscale import backlog

    return backlog(release.client(), queue, release.settings()).total


@contextmanager
def environment(run_dir: Path = RUN_DIR):
    import helm_python as helm
    from .bridge import PodBridge
    from .cluster import E2ECluster
    from kubernetes import client, config
    from .services import ServiceAddresses

    from loadgen.stack import LocalStack

    # A SIGTERM (a CI timeout, a Ctrl-C'd make) must still run the teardown below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with LocalStack(run_dir / "redis", redis_port=REDIS_PORT, redis_password=secrets.token_hex(16)) as redis:
        redis.start_redis(persist=True)  # an append-only file, as the chart's Redis keeps on its volume
        cluster = E2ECluster(run_dir / "cluster")
        # pytest-kubernetes runs the kubectl it finds on PATH: the one built with the control plane.
        os.environ["PATH"] = f"{cluster.bins['kubectl'].parent}{os.pathsep}{os.environ['PATH']}"
        try:
            cluster.start()
            cluster.kubectl("create", "namespace", NAMESPACE)
            cluster.kubectl("create", "secret", "generic", "ci-redis", "-n", NAMESPACE,
                            f"--from-literal=password={redis.redis_password}")
            hc = helm.Config(kubeconfig_path=str(cluster.kubeconfig), namespace=NAMESPACE)
            chart = helm.Chart.load(ROOT / "charts" / "celery-autoscale")
            hc.install(chart, RELEASE, CI_VALUES, namespace=NAMESPACE, timeout=120)
            api = client.CoreV1Api(config.new_client_from_config(str(cluster.kubeconfig)))
            services = ServiceAddresses(api, NAMESPACE)
            bridge = PodBridge(api, NAMESPACE,
                               f"app.kubernetes.io/instance in ({','.join(BRIDGED_RELEASES)}),"
                               "app.kubernetes.io/component in (worker,reconciler)",
                               run_dir / "pods", services=services)
            bridge.start()
            try:
                yield Release(cluster, hc, chart, redis, bridge)
            finally:
                bridge.stop()
                services.stop()
                hc.uninstall(RELEASE, timeout=60)
        finally:
            cluster.stop()


def wait_for(check, timeout: float, what: str, interval: float = 1.0, explain=None):
    """Poll until ``check()`` is truthy; return it. Fails naming ``what``, the last value and
    ``explain()`` (e.g. :meth:`Release.explain`)."""
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
    :attr:`Release.events` (the bridge's) or :class:`releases.PodEvents` (the real node's)."""
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
    first task to io idle at 0). ``release``: the bridged :class:`Release`, or
    one on the real node with the same ``client``, ``settings``, ``replicas`` and ``events``."""
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
