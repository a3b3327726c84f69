"""The chart as its users install it: values/staging.yaml and values/dev.yaml with the chart's own
Redis StatefulSet and Flower, on the real control plane with the real KEDA, then `helm test`
through the Helm SDK. The bridge runs every pod of these releases (Redis from the pod's own
command, Flower, the workers, the reconciler and the helm test's Job), each reached by its
Service's name (see services.py). Overrides are only KEDA timings that fit a test.
"""

from __future__ import annotations

import base64
import json
import shutil
import urllib.error
import urllib.request
from contextlib import contextmanager

import helm_python as helm
import pytest
import redis
import yaml
from tests.e2e.harness import KUBECONFIG, NAMESPACE, ROOT, merge, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.k8s(provider="external", k8s_kubeconfig=str(KUBECONFIG))]
FAST = {"workerDefaults": {"autoscaling": {"pollingInterval": 2, "cooldownPeriod": 10}},
        "reconciler": {"interval": 1}, "helmTest": {"timeout": 120}}


def values_file(name: str) -> dict:
    return yaml.safe_load((ROOT / "values" / f"{name}.yaml").read_text())


def secret(release, name: str, key: str) -> str:
    data = release.get("secret", name)["data"]
    return base64.b64decode(data[key]).decode()


def own_redis(release, name: str) -> redis.Redis:
    """A client of the release's own Redis, by its Service's name and the password of its Secret."""
    return redis.Redis(host=f"{name}-celery-autoscale-redis.{NAMESPACE}.svc", port=6379,
                       password=secret(release, f"{name}-celery-autoscale-redis", "redis-password"),
                       socket_timeout=5)


def answers(client: redis.Redis) -> bool:
    try:
        return client.ping()
    except redis.RedisError:
        return False


@contextmanager
def installed(release, name: str, values: dict):
    """``helm install`` of ``values`` as release ``name``; uninstalled after, its kept Secret and
    claim deleted (the chart keeps both on uninstall, for a reinstall)."""
    release.helm.install(release.chart, name, values, namespace=NAMESPACE, timeout=180)
    try:
        yield
    finally:
        release.helm.uninstall(name, timeout=120)
        release.cluster.kubectl("delete", "secret,pvc", "-n", NAMESPACE, "-l", f"app.kubernetes.io/instance={name}",
                                "--ignore-not-found", check=False)
        release.cluster.kubectl("delete", "secret", f"{name}-celery-autoscale-redis", "-n", NAMESPACE,
                                "--ignore-not-found", check=False)
        shutil.rmtree(release.bridge.workdir / "volumes" / f"data-{name}-celery-autoscale-redis-0", ignore_errors=True)


def helm_test_log(release, name: str) -> str:
    """The output of the release's last helm test pod (the bridge keeps each pod's log)."""
    homes = sorted((release.bridge.workdir).glob(f"{name}-celery-autoscale-roundtrip-*"), key=lambda p: p.stat().st_mtime)
    return (homes[-1] / "container.log").read_text() if homes else ""


def test_staging_values_with_the_charts_own_redis_and_flower_pass_helm_test_and_survive_a_redis_pod_restart(release):
    from celery import Celery

    from celery_autoscale.keys import run_record_key

    name = "staging"
    release.cluster.apply({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "staging-redis-data"},
                           "spec": {"capacity": {"storage": "4Gi"}, "accessModes": ["ReadWriteOnce"],
                                    "persistentVolumeReclaimPolicy": "Delete",
                                    "hostPath": {"path": "/var/lib/celery-autoscale-e2e"}}})
    try:
        with installed(release, name, merge(values_file("staging"), FAST)):
            client = own_redis(release, name)
            wait_for(lambda: answers(client), 120, "the chart's Redis answering by its Service name")
            claim = release.get("pvc", f"data-{name}-celery-autoscale-redis-0")
            assert claim["status"]["phase"] == "Bound"

            # Flower behind basic auth, with the password the chart generated.
            flower = f"http://{name}-celery-autoscale-flower.{NAMESPACE}.svc:5555"
            wait_for(lambda: status(f"{flower}/healthcheck") == 200, 120, "Flower answering")
            assert status(f"{flower}/api/workers") == 401
            user = secret(release, f"{name}-celery-autoscale-flower", "username")
            password = secret(release, f"{name}-celery-autoscale-flower", "password")
            assert status(f"{flower}/api/workers", (user, password)) == 200

            # helm test: the probe task answered by every queue, each woken from zero by KEDA.
            release.helm.test(name, timeout=240)
            assert "queue io: answered" in helm_test_log(release, name)

            # A burst, and the Redis pod deleted while io scales up: the StatefulSet's new pod
            # starts on the same claim, replays the append-only file, and every task runs once.
            url = f"redis://:{client.connection_pool.connection_kwargs['password']}@{name}-celery-autoscale-redis.{NAMESPACE}.svc:6379/0"
            producer = Celery("web", broker=url)
            sent = [producer.send_task("tasks.io.transfer", kwargs={"size_bytes": 0, "wait_seconds": 5}, queue="io")
                    for _ in range(40)]
            io = f"{name}-celery-autoscale-worker-io"
            # 40 tasks, listLength 16 (io's concurrency in staging): 3 replicas wanted.
            wait_for(lambda: release.deployment_replicas(io) >= 2, 90, "io scaling up")
            old_uid = release.get("pod", f"{name}-celery-autoscale-redis-0")["metadata"]["uid"]
            release.cluster.kubectl("delete", "pod", f"{name}-celery-autoscale-redis-0", "-n", NAMESPACE, "--wait=false")
            wait_for(lambda: pod_uid(release, f"{name}-celery-autoscale-redis-0") not in (None, old_uid), 120,
                     "the StatefulSet's new Redis pod")
            wait_for(lambda: answers(client), 120, "the new Redis pod answering")
            wait_for(lambda: sum(client.exists(run_record_key(r.id)) for r in sent) == 40, 300, "all 40 tasks ran",
                     explain=lambda: f"{sum(client.exists(run_record_key(r.id)) for r in sent)} of 40 ran")
            wait_for(lambda: release.deployment_replicas(io) == 0, 180, "io back to zero")
            assert client.hlen("unacked") == 0
            release.helm.test(name, timeout=240)  # and the whole release serves again
    finally:
        release.cluster.kubectl("delete", "pv", "staging-redis-data", "--ignore-not-found", check=False)


def test_dev_values_pass_helm_test_and_a_queue_that_cannot_be_served_fails_it_by_name(release):
    name = "dev"
    with installed(release, name, merge(values_file("dev"), FAST)):
        wait_for(lambda: answers(own_redis(release, name)), 120, "the chart's Redis answering by its Service name")
        release.helm.test(name, timeout=240)
        # An operator pauses cpu at zero replicas (KEDA's paused-replicas annotation): the next
        # helm test cannot get an answer from it and fails, naming the queue.
        release.helm.upgrade(release.chart, name, merge(merge(values_file("dev"), FAST), {"helmTest": {"timeout": 20}}),
                             namespace=NAMESPACE, timeout=120)
        # The first helm test woke cpu: its workers must be gone before the probe is sent, or one of
        # them still answers it. cpu is paused once its cooldown took it back to zero: pausing a
        # running Deployment races the HPA controller's last sync, which can set it back to one
        # after KEDA deleted the HPA and scaled it to zero (KEDA's handlePause).
        cpu = f"{name}-celery-autoscale-worker-cpu"

        def gone():
            return release.deployment_replicas(cpu) == 0 and release.bridge.alive(cpu) == (0, 0)

        def explain():
            return json.dumps({"replicas": release.deployment_replicas(cpu), "alive": release.bridge.alive(cpu),
                               "scaledobject": release.get("scaledobject", cpu).get("status"),
                               "bridge": [e for e in release.bridge.events if e[1].startswith(cpu)][-10:]},
                              indent=1, default=str)

        wait_for(gone, 180, "cpu back to zero after its cooldown", explain=explain)
        release.cluster.kubectl("annotate", "scaledobject", cpu, "-n", NAMESPACE, "autoscaling.keda.sh/paused-replicas=0")
        wait_for(lambda: release.get("scaledobject", cpu).get("status", {}).get("pausedReplicaCount") == 0, 60,
                 "KEDA reporting cpu paused at zero", explain=explain)
        wait_for(gone, 60, "cpu paused at zero, its workers gone", explain=explain)
        with pytest.raises(helm.HelmError):
            release.helm.test(name, timeout=120)
        assert "FAILED queue cpu: no answer within 20s" in helm_test_log(release, name)


def pod_uid(release, pod: str) -> str | None:
    done = release.cluster.kubectl("get", "pod", pod, "-n", NAMESPACE, "-o", "json", check=False)
    if done.returncode != 0:
        return None
    found = json.loads(done.stdout)
    return found["metadata"]["uid"] if found.get("status", {}).get("phase") == "Running" else None


def status(url: str, auth: tuple[str, str] | None = None) -> int:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0
