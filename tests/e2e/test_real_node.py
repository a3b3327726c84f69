"""The chart's pods run by a real kubelet from the images `make image` built (`make e2e`).

A release ``node`` in namespace ``node``: the chart's own Redis (the stand-in image, its
PersistentVolumeClaim bound to a hostPath PersistentVolume) and one ``io`` worker Deployment
(prefork), both placed on the real node of :mod:`tests.e2e.node`. The kubelet runs their probes,
mounts the Redis password Secret as a file, applies the chart's security context, resolves the
broker's Service name through CoreDNS (kube-proxy routes its ClusterIP), and stops a deleted pod
with SIGTERM within its grace period. Tasks are counted: sent, succeeded, run (the queue's ``runs``
counter, which an acknowledgement adds to once per run).

The release starts with autoscaling off, so each test knows its worker pod; the last test turns it
on and KEDA (on the host, where ``/etc/hosts`` names the release's Services by their ClusterIPs,
see :mod:`tests.e2e.services`) scales the queue's pods on this node from zero and back.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request

import pytest
import redis
from celery import Celery

from e2e_cluster import CI_VALUES, KUBECONFIG, PLACEMENT, PlacedRelease, merge, placed, wait_for

from celery_autoscale.keys import stats_key

pytestmark = [pytest.mark.e2e, pytest.mark.k8s(provider="external", k8s_kubeconfig=str(KUBECONFIG))]

NAMESPACE = RELEASE = "node"
FULLNAME = f"{RELEASE}-celery-autoscale"
WORKERS = "app.kubernetes.io/component=worker,celery-autoscale/queue=io"
GRACE = 60  # the worker's terminationGracePeriodSeconds
VALUES = {
    "environment": "dev",
    "celery": {"app": "tasks.app:app"},
    "redis": {"persistence": {"size": "1Gi"}, "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}}},
    "flower": {"auth": {"enabled": True}, "resources": {"requests": {"cpu": "20m", "memory": "64Mi"}}},
    "reconciler": {"deletionCost": {"minInterval": 1}},  # through the `kubernetes` Service, as in any cluster
    "beat": {"enabled": True, "schedule": {"ping": {"task": "tasks.io.transfer", "schedule": 3600,
                                                    "kwargs": {"size_bytes": 0, "wait_seconds": 0}, "queue": "io"}}},
    "helmTest": {"timeout": 120},
    "workerDefaults": {"autoscaling": {"enabled": False}, "podDisruptionBudget": {"enabled": False},
                       "terminationGracePeriodSeconds": GRACE, "taskTimeLimit": 40,
                       "probes": {"heartbeatInterval": 2,
                                  "liveness": {"maxAge": 10, "periodSeconds": 5, "failureThreshold": 2}},
                       "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "400Mi"}}},
    # io's workers are the tests' own; mixed's one worker runs the threads pool beside them.
    "queues": {"cpu": None, "mixed": {"pool": "threads", "concurrency": 2},
               "io": {"pool": "prefork", "concurrency": 2}},
}
DEPLOYMENT = f"{FULLNAME}-worker-io"
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
#: The io queue scaled by KEDA as ci.yaml scales it (short windows), to at most 3 replicas.
AUTOSCALED = {"autoscaling": {**CI_VALUES["workerDefaults"]["autoscaling"], "enabled": True, "maxReplicaCount": 3}}
#: The release's pods that run the app image, one each, by what they are: selector.
APP_PODS = {"prefork worker": WORKERS, "threads worker": "app.kubernetes.io/component=worker,celery-autoscale/queue=mixed",
            **{c: f"app.kubernetes.io/component={c}" for c in ("flower", "reconciler", "beat")}}


@pytest.fixture(scope="module")
def node(release, real_node):
    """The ``node`` release installed and its pods Ready on the real node."""
    with placed(release.cluster, real_node, RELEASE, VALUES, volumes={"node-redis": "1Gi"}, kind=NodeRelease,
                timeout=120) as found:
        wait_for(lambda: all(found.ready(selector) for selector in ("app.kubernetes.io/component=redis",
                                                                    *APP_PODS.values())), 300,
                 "the node release's pods Ready on the real node",
                 explain=lambda: found.kubectl("get", "pods,pvc", "-o", "wide").stdout)
        yield found


class NodeRelease(PlacedRelease):
    """The ``node`` release; its pods by default are the io workers'."""

    def pods(self, selector: str = WORKERS) -> list[dict]:
        return super().pods(selector)

    def ready(self, selector: str = WORKERS) -> list[str]:
        return super().ready(selector)

    def replicas(self) -> int:
        """``spec.replicas`` of the io workers' Deployment: what KEDA and the HPA ask for."""
        return self.deployment_replicas(DEPLOYMENT)

    def restarts(self, pod: str) -> int:
        (found,) = [p for p in self.pods() if p["metadata"]["name"] == pod]
        return sum(c.get("restartCount", 0) for c in found["status"].get("containerStatuses", []))

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url)

    def producer(self) -> Celery:
        return Celery("node-producer", broker=self.redis_url, backend=self.redis_url)

    def exec(self, pod: str, *argv: str) -> tuple[int, str]:
        """``argv``'s exit code and output in ``pod``; a refused stream (the API server's way to the
        kubelet and containerd's streaming server) is tried again, up to 3 times, and printed."""
        for attempt in range(3):
            done = self.cluster.kubectl("exec", "-n", NAMESPACE, pod, "--", *argv, check=False)
            if done.returncode == 0 or "connection refused" not in done.stderr or attempt == 2:
                return done.returncode, done.stdout + done.stderr
            self.real_node.alive()  # a node process that exited is named with its log
            print(f"kubectl exec {pod} {argv}: {done.stderr.strip()}; again")
            time.sleep(3)

    def runs(self) -> int:
        """The io queue's run counter, read through the Redis Service (a producer's path), waiting up
        to a minute for an answer (kombu's producers retry a refused connection too)."""
        deadline = time.monotonic() + 60
        while True:
            try:
                return int(self.client().hget(stats_key("io"), "runs") or 0)
            except redis.ConnectionError as refused:
                if time.monotonic() > deadline:
                    raise
                print(f"Redis through its Service: {refused}; pods:\n"
                      + self.cluster.kubectl("get", "pods,endpoints", "-n", NAMESPACE, "-o", "wide").stdout)
                time.sleep(2)

    def wait_runs(self, before: int, count: int) -> None:
        """Wait up to 10 s for exactly ``count`` runs counted since ``before`` (an acknowledgement
        adds to the counter once per run, right after the result is stored); more is a task run twice."""
        wait_for(lambda: self.runs() - before == count, 10, f"{count} runs counted",
                 explain=lambda: f"{self.runs() - before} counted")

    def redis_pod(self) -> tuple[str, int]:
        """The Redis pod's uid and its container's restart count."""
        (pod,) = self.pods("app.kubernetes.io/component=redis")
        return pod["metadata"]["uid"], sum(c.get("restartCount", 0) for c in pod["status"]["containerStatuses"])

    @contextlib.contextmanager
    def port_forward(self, target: str, port: int):
        """``kubectl port-forward`` to ``target``'s ``port``; yields the local port."""
        proc = subprocess.Popen([str(self.cluster.bins["kubectl"]), "--kubeconfig", str(self.cluster.kubeconfig),
                                 "port-forward", "-n", NAMESPACE, target, f":{port}", "--address", "127.0.0.1"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            line = proc.stdout.readline()  # "Forwarding from 127.0.0.1:PORT -> 5555"
            assert "Forwarding from" in line, line + proc.stdout.read()
            yield int(line.split("->")[0].rsplit(":", 1)[1])
        finally:
            proc.terminate()
            proc.wait(10)

    def upgrade_io(self, io: dict) -> None:
        """``helm upgrade`` of :data:`VALUES` with ``io`` merged over the io queue's values."""
        self.upgrade(merge(VALUES, {"queues": {"io": io}}))

    def autoscale(self) -> None:
        """Autoscaling on (:data:`AUTOSCALED`), and the idle queue scaled to zero, its pods gone."""
        self.upgrade_io(AUTOSCALED)
        wait_for(lambda: self.replicas() == 0 and not self.pods(), 120, "the idle queue at zero replicas",
                 explain=self.scaling)


def send(producer, count: int, **kwargs):
    return [producer.send_task("tasks.io.transfer", kwargs={"size_bytes": 0, **kwargs}, queue="io")
            for _ in range(count)]


def test_the_kubelet_runs_the_chart_under_its_security_context_and_tasks_reach_redis_by_its_service_name(node):
    """Probes passed (the pods are Ready); the workers (prefork and threads), Flower, the reconciler
    and beat each run as 10001 on a read-only root with no capabilities, with the password from the mounted Secret
    file and never in their environment; and 40 tasks sent to the Redis Service run once each."""
    for component, selector in APP_PODS.items():
        (pod,) = node.ready(selector)
        assert node.exec(pod, "id", "-u") == (0, "10001\n"), component
        code, out = node.exec(pod, "touch", "/x")
        assert code != 0 and "Read-only file system" in out, (component, out)
        code, out = node.exec(pod, "grep", "CapEff", "/proc/1/status")
        assert code == 0 and out.split()[-1] == "0000000000000000", (component, out)
        code, out = node.exec(pod, "sh", "-c", 'test -s "$REDIS_PASSWORD_FILE" && env')
        assert code == 0 and node.redis_password() not in out, component
    (pod,) = node.ready()
    code, out = node.exec(pod, "python", "-c", "import socket; print(socket.gethostbyname("
                          f"'{FULLNAME}-redis.{NAMESPACE}.svc'))")
    assert code == 0 and out.strip() == node.redis_address(), out  # CoreDNS answers the Service name

    before = node.runs()
    results = send(node.producer(), 40, wait_seconds=0.05)
    assert [r.get(timeout=120)["bytes"] for r in results] == [0] * 40
    node.wait_runs(before, 40)


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
    node.wait_runs(before, 2)
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
    node.wait_runs(before, 8)
    assert node.restarts(pod) == restarts  # the pool process died, not the container

    redis_pod = node.redis_pod()
    node.upgrade_io({"maxMemoryPerChild": 150 * 1024})
    wait_for(lambda: len(node.ready()) == 1 and len(node.pods()) == 1, 180,
             "the worker rolled with maxMemoryPerChild")
    (pod,) = node.ready()
    before = node.runs()
    # A queue's upgrade leaves Redis alone: the kept password renders as the generated one did, so
    # the pods' checksum/secret holds (it did not: Redis was restarted by the first upgrade).
    assert node.redis_pod() == redis_pod
    results = send(node.producer(), 8, wait_seconds=0.5, leak_bytes=leak)
    assert [r.get(timeout=300)["bytes"] for r in results] == [0] * 8
    logs = node.cluster.kubectl("logs", "-n", NAMESPACE, pod).stdout
    assert "signal 9" not in logs, logs[-3000:]
    node.wait_runs(before, 8)


def test_a_wedged_worker_is_restarted_by_the_kubelets_liveness_probe_and_then_runs_every_task_once(node):
    """The worker's main process stopped (SIGSTOP from the host: its event loop, heartbeat and
    consumer frozen, as a deadlock would freeze them) while idle: the heartbeat file ages past the
    liveness probe's ``maxAge``, the kubelet kills the container (SIGKILL once the grace period is
    over: a stopped process takes no SIGTERM) and starts it again; then 10 tasks run once each."""
    (pod,) = wait_for(node.ready, 120, "the io worker Ready after the previous test's roll")
    restarts = node.restarts(pod)
    wait_for(lambda: node.client().zcard("celery-autoscale:in-flight:io") == 0, 60, "the worker idle")
    os.kill(node.real_node.container_pid(pod, NAMESPACE), signal.SIGSTOP)
    stopped = time.monotonic()
    wait_for(lambda: node.restarts(pod) > restarts, GRACE + 120, "the liveness probe's restart",
             explain=lambda: node.cluster.kubectl("describe", "pod", pod, "-n", NAMESPACE).stdout[-3000:])
    print(f"wedged worker restarted {time.monotonic() - stopped:.0f}s after SIGSTOP")
    wait_for(lambda: node.ready() == [pod], 180, "the restarted worker Ready")
    before = node.runs()
    results = send(node.producer(), 10, wait_seconds=0.1)
    assert [r.get(timeout=120)["bytes"] for r in results] == [0] * 10
    node.wait_runs(before, 10)


def test_flower_through_its_service_asks_for_its_password_and_shows_the_worker_in_chromium(node, chromium):
    """``kubectl port-forward`` to Flower's Service (the kubelet and containerd forward into the pod):
    without credentials 401; in Debian's chromium with the generated ones, the io worker is listed."""
    secret = json.loads(node.cluster.kubectl("get", "secret", f"{FULLNAME}-flower", "-n", NAMESPACE, "-o",
                                             "json").stdout)["data"]
    user, password = (base64.b64decode(secret[k]).decode() for k in ("username", "password"))
    with node.port_forward(f"svc/{FULLNAME}-flower", 5555) as port:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/workers", timeout=10)
        assert refused.value.code == 401
        context = chromium.new_context(http_credentials={"username": user, "password": password})
        page = context.new_page()
        page.goto(f"http://127.0.0.1:{port}/workers")
        page.get_by_text("io@").first.wait_for(timeout=60_000)
        context.close()


def test_helm_test_passes_with_its_job_on_the_real_node(node):
    """The chart's helm test (the round trip to every queue) as a Job the kubelet runs to success."""
    node.helm.test(RELEASE, timeout=180)
    jobs = node.pods("app.kubernetes.io/component=helm-test")
    assert [p["spec"]["nodeName"] for p in jobs] == ["real-node"] and jobs[0]["status"]["phase"] == "Succeeded"


#: Tries to open a TCP connection to host:port (argv 1, 2) for up to argv[3] seconds; prints the outcome.
CONNECT = """
import socket, sys, time
host, port, deadline = sys.argv[1], int(sys.argv[2]), time.monotonic() + float(sys.argv[3])
while True:
    try:
        socket.create_connection((host, port), timeout=2).close()
        print("connected"); break
    except OSError as error:
        if time.monotonic() > deadline:
            print(f"not connected: {error!r}"); break
        time.sleep(1)
"""


def connect_from_pod(node, name: str, labels: dict, seconds: float = 20) -> str:
    """What a pod of the app image labelled ``labels`` on the real node printed after trying
    :data:`CONNECT` to the Redis Service's name for up to ``seconds``."""
    (worker,) = node.pods()
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels},
           "spec": {**PLACEMENT, "restartPolicy": "Never", "automountServiceAccountToken": False,
                    "securityContext": worker["spec"]["securityContext"],
                    "containers": [{"name": "connect", "image": worker["spec"]["containers"][0]["image"],
                                    "imagePullPolicy": "IfNotPresent",
                                    "securityContext": worker["spec"]["containers"][0]["securityContext"],
                                    "command": ["python", "-c", CONNECT, f"{FULLNAME}-redis", "6379", str(seconds)]}]}}
    node.cluster.apply(pod)
    try:
        wait_for(lambda: node.cluster.kubectl("get", "pod", "-n", NAMESPACE, name, "-o", "jsonpath={.status.phase}",
                                              check=False).stdout in ("Succeeded", "Failed"),
                 seconds + 60, f"pod {name} done")
        return node.cluster.kubectl("logs", "-n", NAMESPACE, name).stdout.strip()
    finally:
        node.cluster.kubectl("delete", "pod", "-n", NAMESPACE, name, "--wait=false", check=False)


def test_the_redis_network_policy_refuses_a_pod_outside_the_release_and_admits_the_release_s_own(node):
    """kube-router, on the real node, enforces the chart's Redis NetworkPolicy: a pod of the app
    image labelled as no component of the release gets no connection to Redis's Service in 20 s
    (kube-router rejects what no policy admits: "Connection refused"), while the same pod labelled
    as the release's helm test (one of the admitted peers) connects."""
    outsider = connect_from_pod(node, "outsider", {"app": "outsider"})
    admitted = connect_from_pod(node, "admitted", {"app.kubernetes.io/name": "celery-autoscale",
                                                   "app.kubernetes.io/instance": RELEASE,
                                                   "app.kubernetes.io/component": "helm-test"})
    assert admitted == "connected", admitted
    assert outsider.startswith("not connected"), outsider


def test_keda_scales_the_queue_from_zero_with_pods_on_the_real_node_and_running_tasks_hold_them(node):
    """Autoscaling on (ci.yaml's windows, at most 3 replicas): KEDA scales the idle queue to zero;
    16 tasks of 5 s bring it up to the cap, with every pod run by the kubelet; while any task is
    unfinished (waiting or running: the true backlog) the queue keeps at least one replica; the
    reconciler, in its pod, sets the busy pods' deletion cost through the ``kubernetes`` Service;
    every task runs once, and the queue returns to zero."""
    node.autoscale()
    before = node.runs()
    results = send(node.producer(), 16, wait_seconds=5)
    samples, nodes, costs = [], set(), set()  # (replicas, unfinished tasks); where the workers ran; deletion costs
    deadline = time.monotonic() + 300
    while not all(r.ready() for r in results):
        assert time.monotonic() < deadline, f"unfinished after 300 s: {samples[-10:]}"
        samples.append((node.replicas(), sum(not r.ready() for r in results)))
        pods = node.pods()
        nodes |= {p["spec"].get("nodeName") for p in pods}
        costs |= {p["metadata"].get("annotations", {}).get(DELETION_COST) for p in pods}
        time.sleep(1)
    assert [r.get(timeout=10)["bytes"] for r in results] == [0] * 16
    node.wait_runs(before, 16)
    assert max(replicas for replicas, _ in samples) == 3, samples
    scaled_up = next(i for i, (replicas, _) in enumerate(samples) if replicas)
    assert all(replicas for replicas, _ in samples[scaled_up:]), samples  # never zero with a task unfinished
    assert nodes == {"real-node"}, nodes
    # The reconciler, in its pod, patched the busy pods' deletion cost through the API server.
    assert {"1", "2"} & costs, costs
    wait_for(lambda: node.replicas() == 0, 120, "the queue back at zero replicas", explain=node.scaling)


def test_the_redis_container_killed_mid_burst_restarts_from_its_volume_and_every_task_runs_once(node):
    """Autoscaling on; 24 tasks of 2 s sent; once the first have run, the chart's Redis container is
    SIGKILLed. The kubelet starts it again in the same pod, from the append-only file on its
    PersistentVolume (a reply is sent only after its write reached the file); the workers and KEDA
    reconnect; every task succeeds, none runs twice (the run counter, kept in the same file), and
    the queue returns to zero."""
    node.autoscale()
    uid, restarts = node.redis_pod()
    before = node.runs()
    results = send(node.producer(), 24, wait_seconds=2)
    wait_for(lambda: node.runs() - before >= 2, 180, "the first tasks run", explain=node.scaling)
    (redis_pod,) = [p["metadata"]["name"] for p in node.pods("app.kubernetes.io/component=redis")]
    os.kill(node.real_node.container_pid(redis_pod, NAMESPACE), signal.SIGKILL)
    killed = time.monotonic()
    wait_for(lambda: node.redis_pod() == (uid, restarts + 1) and node.ready("app.kubernetes.io/component=redis"),
             120, "the Redis container restarted in its pod and Ready", explain=node.scaling)
    reader = node.producer()  # a fresh client: the producer's result connection died with Redis
    wait_for(lambda: [reader.AsyncResult(r.id).state for r in results] == ["SUCCESS"] * 24, 300,
             "all 24 tasks succeeded", explain=node.scaling)
    print(f"all 24 done {time.monotonic() - killed:.1f}s after the Redis container was killed")
    node.wait_runs(before, 24)
    wait_for(lambda: node.replicas() == 0, 180, "the queue back at zero replicas", explain=node.scaling)
    assert node.client().hlen("unacked") == 0
