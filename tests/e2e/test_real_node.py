"""The chart's pods run by a real kubelet from the images `make image` built (`make e2e`).

A release ``node`` in namespace ``node``: the chart's own Redis (the stand-in image, its
PersistentVolumeClaim bound to a hostPath PersistentVolume) and one ``io`` worker Deployment
(prefork), both placed on the real node of :mod:`tests.e2e.node`. The kubelet runs their probes,
mounts the Redis password Secret as a file, applies the chart's security context, resolves the
broker's Service name through CoreDNS (kube-proxy routes its ClusterIP), and stops a deleted pod
with SIGTERM within its grace period. Tasks are counted: sent, succeeded, run (the queue's ``runs``
counter, which an acknowledgement adds to once per run).

Not here yet (issue 18): KEDA scaling pods on this node (the node release has autoscaling off:
KEDA runs on the host, where the release's Service names do not resolve), and the other scenarios
still run on KWOK's nodes with the pod bridge.
"""

from __future__ import annotations

import base64
import json
import time

import pytest
import redis
from celery import Celery

from tests.e2e.harness import KUBECONFIG, ROOT, wait_for
from tests.e2e.node import PLACEMENT

from celery_autoscale.keys import stats_key

pytestmark = [pytest.mark.e2e, pytest.mark.k8s(provider="external", k8s_kubeconfig=str(KUBECONFIG))]

NAMESPACE = RELEASE = "node"
FULLNAME = f"{RELEASE}-celery-autoscale"
WORKERS = "app.kubernetes.io/component=worker,celery-autoscale/queue=io"
GRACE = 60  # the worker's terminationGracePeriodSeconds
VALUES = {
    "environment": "dev",
    "celery": {"app": "tasks.app:app"},
    "redis": {"image": {"repository": "localhost/celery-autoscale/redis-standin", "tag": "bookworm"},
              "persistence": {"size": "1Gi"}, "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
              **PLACEMENT},
    "flower": {"enabled": False},
    "reconciler": {"enabled": False},
    "workerDefaults": {"autoscaling": {"enabled": False}, "podDisruptionBudget": {"enabled": False},
                       "terminationGracePeriodSeconds": GRACE, "taskTimeLimit": 40,
                       "probes": {"heartbeatInterval": 2},
                       "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "400Mi"}},
                       **PLACEMENT},
    "queues": {"cpu": None, "mixed": None, "io": {"pool": "prefork", "concurrency": 2}},
}


@pytest.fixture(scope="module")
def node(release, real_node):
    """The ``node`` release installed and its pods Ready on the real node."""
    import helm_python as helm

    cluster = release.cluster
    cluster.kubectl("create", "namespace", NAMESPACE)
    real_node.volume("node-redis", "1Gi")
    hc = helm.Config(kubeconfig_path=str(cluster.kubeconfig), namespace=NAMESPACE)
    chart = helm.Chart.load(ROOT / "charts" / "celery-autoscale")
    hc.install(chart, RELEASE, VALUES, namespace=NAMESPACE, timeout=120)
    found = NodeRelease(cluster, real_node, hc, chart)
    try:
        wait_for(lambda: found.ready("app.kubernetes.io/component=redis") and found.ready(), 240,
                 "the node release's Redis and io worker Ready on the real node",
                 explain=lambda: cluster.kubectl("get", "pods,pvc", "-n", NAMESPACE, "-o", "wide").stdout)
        yield found
    finally:
        hc.uninstall(RELEASE, timeout=60)
        cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)


class NodeRelease:
    def __init__(self, cluster, node, helm, chart):
        self.cluster, self.real_node, self.helm, self.chart = cluster, node, helm, chart

    def pods(self, selector: str = WORKERS) -> list[dict]:
        done = self.cluster.kubectl("get", "pods", "-n", NAMESPACE, "-l", selector, "-o", "json")
        return json.loads(done.stdout)["items"]

    def ready(self, selector: str = WORKERS) -> list[str]:
        """Names of the pods of ``selector`` that are Ready and not being deleted."""
        return [p["metadata"]["name"] for p in self.pods(selector) if p["metadata"].get("deletionTimestamp") is None
                and any(c["type"] == "Ready" and c["status"] == "True"
                        for c in p.get("status", {}).get("conditions", []))]

    def restarts(self, pod: str) -> int:
        (found,) = [p for p in self.pods() if p["metadata"]["name"] == pod]
        return sum(c.get("restartCount", 0) for c in found["status"].get("containerStatuses", []))

    def password(self) -> str:
        secret = json.loads(self.cluster.kubectl("get", "secret", f"{FULLNAME}-redis", "-n", NAMESPACE,
                                                 "-o", "json").stdout)
        return base64.b64decode(secret["data"]["redis-password"]).decode()

    def redis_address(self) -> str:
        """The Redis Service's ClusterIP: kube-proxy's rules take the host's connections to the pod."""
        service = json.loads(self.cluster.kubectl("get", "service", f"{FULLNAME}-redis", "-n", NAMESPACE,
                                                  "-o", "json").stdout)
        return service["spec"]["clusterIP"]

    def url(self) -> str:
        return f"redis://:{self.password()}@{self.redis_address()}:6379/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url())

    def producer(self) -> Celery:
        return Celery("node-producer", broker=self.url(), backend=self.url())

    def exec(self, pod: str, *argv: str) -> tuple[int, str]:
        done = self.cluster.kubectl("exec", "-n", NAMESPACE, pod, "--", *argv, check=False)
        return done.returncode, done.stdout + done.stderr

    def runs(self) -> int:
        return int(self.client().hget(stats_key("io"), "runs") or 0)

    def upgrade(self, io: dict) -> None:
        values = json.loads(json.dumps(VALUES))
        values["queues"]["io"].update(io)
        self.helm.upgrade(self.chart, RELEASE, values, namespace=NAMESPACE, timeout=120)


def send(producer, count: int, **kwargs):
    return [producer.send_task("tasks.io.transfer", kwargs={"size_bytes": 0, **kwargs}, queue="io")
            for _ in range(count)]


def test_the_kubelet_runs_the_chart_under_its_security_context_and_tasks_reach_redis_by_its_service_name(node):
    """Probes passed (the pods are Ready), the worker runs as 10001 on a read-only root with no
    capabilities, its password comes from the mounted Secret file and never from its environment,
    and 40 tasks sent to the Redis Service run once each."""
    (pod,) = node.ready()
    assert node.exec(pod, "id", "-u") == (0, "10001\n")
    code, out = node.exec(pod, "touch", "/x")
    assert code != 0 and "Read-only file system" in out, out
    code, out = node.exec(pod, "grep", "CapEff", "/proc/1/status")
    assert code == 0 and out.split()[-1] == "0000000000000000", out
    code, out = node.exec(pod, "sh", "-c", 'cat "$REDIS_PASSWORD_FILE" >/dev/null && env')
    assert code == 0 and node.password() not in out
    code, out = node.exec(pod, "python", "-c", "import socket; print(socket.gethostbyname("
                          f"'{FULLNAME}-redis.{NAMESPACE}.svc'))")
    assert code == 0 and out.strip() == node.redis_address(), out  # CoreDNS answers the Service name

    before = node.runs()
    results = send(node.producer(), 40, wait_seconds=0.05)
    assert [r.get(timeout=120)["bytes"] for r in results] == [0] * 40
    wait_for(lambda: node.runs() - before == 40 or node.runs() - before, 10, "40 runs counted")
    assert node.runs() - before == 40  # none twice


def test_a_deleted_busy_pod_gets_sigterm_and_finishes_its_tasks_within_the_grace_period(node):
    """The kubelet's SIGTERM is Celery's warm shutdown: both running 8 s tasks finish, once, and the
    pod is gone well before its grace period would have ended in a SIGKILL."""
    (pod,) = node.ready()
    before = node.runs()
    client = node.client()
    results = send(node.producer(), 2, wait_seconds=8)
    wait_for(lambda: client.zcard("celery-autoscale:in-flight:io") == 2, 60, "both tasks running")
    deleted = time.monotonic()
    node.cluster.kubectl("delete", "pod", pod, "-n", NAMESPACE, "--wait=false")
    assert [r.get(timeout=120)["bytes"] for r in results] == [0, 0]
    wait_for(lambda: not [p for p in node.pods() if p["metadata"]["name"] == pod], GRACE + 30,
             f"pod {pod} gone")
    took = time.monotonic() - deleted
    print(f"deleted busy pod gone after {took:.1f}s (grace {GRACE}s)")
    assert took < GRACE - 10
    wait_for(lambda: node.runs() - before == 2 or node.runs() - before, 10, "2 runs counted")
    assert node.runs() - before == 2
    wait_for(lambda: node.ready(), 120, "the replacement worker Ready")


def test_a_leaking_task_is_oom_killed_by_the_memory_cgroup_and_runs_again_and_max_memory_per_child_prevents_it(node):
    """Each task leaks 120 MB into its pool process; the container's limit is 400 MiB. The kernel's
    OOM killer kills a pool process mid-task (Celery logs signal 9): its task goes back to the queue
    (acks_late, reject on worker lost) and every task completes once. With ``maxMemoryPerChild``
    (Celery's --max-memory-per-child, KiB) the process is replaced after the task that crossed it
    and no OOM kill happens."""
    leak = 120 << 20
    (pod,) = node.ready()
    restarts = node.restarts(pod)
    before = node.runs()
    results = send(node.producer(), 8, wait_seconds=0.5, leak_bytes=leak)
    assert [r.get(timeout=300)["bytes"] for r in results] == [0] * 8
    logs = node.cluster.kubectl("logs", "-n", NAMESPACE, pod).stdout
    assert "signal 9" in logs, logs[-3000:]  # a pool process was OOM-killed mid-task
    wait_for(lambda: node.runs() - before == 8 or node.runs() - before, 10, "8 runs counted")
    assert node.runs() - before == 8
    assert node.restarts(pod) == restarts  # the pool process died, not the container

    node.upgrade({"maxMemoryPerChild": 150 * 1024})
    wait_for(lambda: len(node.ready()) == 1 and len(node.pods()) == 1, 180,
             "the worker rolled with maxMemoryPerChild")
    (pod,) = node.ready()
    before = node.runs()
    results = send(node.producer(), 8, wait_seconds=0.5, leak_bytes=leak)
    assert [r.get(timeout=300)["bytes"] for r in results] == [0] * 8
    logs = node.cluster.kubectl("logs", "-n", NAMESPACE, pod).stdout
    assert "signal 9" not in logs, logs[-3000:]
    wait_for(lambda: node.runs() - before == 8 or node.runs() - before, 10, "8 runs counted")
    assert node.runs() - before == 8

