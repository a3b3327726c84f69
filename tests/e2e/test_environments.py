"""The chart as its users install it: values/staging.yaml and values/dev.yaml with the chart's own
Redis StatefulSet and Flower, on the real control plane with the real KEDA, then `helm test`
through the Helm SDK. Every pod of these releases (Redis, Flower, the workers, the reconciler and
the helm test's Job) is run by the real node's kubelet from the images `make image` built (see
releases.py); the tests and KEDA, on the host, reach the Services by their names (services.py).
Overrides are only KEDA timings that fit a test, and what places the pods on the real node.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request

import helm_python as helm
import pytest
import redis
import yaml
from e2e_cluster import KUBECONFIG, ROOT, merge, placed, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.k8s(provider="external", k8s_kubeconfig=str(KUBECONFIG))]
FAST = {"workerDefaults": {"autoscaling": {"pollingInterval": 2, "cooldownPeriod": 10}},
        "reconciler": {"interval": 1}, "helmTest": {"timeout": 120}}


def values_file(name: str) -> dict:
    return yaml.safe_load((ROOT / "values" / f"{name}.yaml").read_text())


def own_redis(release) -> redis.Redis:
    """A client of the release's own Redis, by its Service's name and the password of its Secret."""
    return redis.Redis(host=f"{release.fullname}-redis.{release.namespace}.svc", port=6379,
                       password=release.secret(f"{release.fullname}-redis", "redis-password"), socket_timeout=5)


def answers(client: redis.Redis) -> bool:
    try:
        return client.ping()
    except redis.RedisError:
        return False


HELM_TEST = "app.kubernetes.io/component=helm-test"


def test_staging_values_with_the_charts_own_redis_and_flower_pass_helm_test_and_survive_a_redis_pod_restart(
        release, real_node):
    from celery import Celery

    from celery_autoscale.keys import run_record_key

    name = "staging"
    with placed(release.cluster, real_node, name, merge(values_file("staging"), FAST),
                volumes={"staging-redis": "4Gi"}) as staging:
        client = own_redis(staging)
        wait_for(lambda: answers(client), 180, "the chart's Redis answering by its Service name",
                 explain=staging.scaling)
        claim = staging.get("pvc", f"data-{staging.fullname}-redis-0")
        assert claim["status"]["phase"] == "Bound" and claim["spec"]["volumeName"] == "staging-redis"

        # Flower behind basic auth, with the password the chart generated.
        flower = f"http://{staging.fullname}-flower.{name}.svc:5555"
        wait_for(lambda: status(f"{flower}/healthcheck") == 200, 120, "Flower answering", explain=staging.scaling)
        assert status(f"{flower}/api/workers") == 401
        user = staging.secret(f"{staging.fullname}-flower", "username")
        password = staging.secret(f"{staging.fullname}-flower", "password")
        assert status(f"{flower}/api/workers", (user, password)) == 200

        # helm test: the probe task answered by every queue, each woken from zero by KEDA.
        staging.helm.test(name, timeout=240)
        assert "queue io: answered" in staging.logs(HELM_TEST)

        # A burst, and the Redis pod deleted while io scales up: the StatefulSet's new pod starts
        # on the same claim, replays the append-only file, and every task runs once.
        url = f"redis://:{client.connection_pool.connection_kwargs['password']}@{staging.fullname}-redis.{name}.svc:6379/0"
        producer = Celery("web", broker=url)
        sent = [producer.send_task("tasks.io.transfer", kwargs={"size_bytes": 0, "wait_seconds": 5}, queue="io")
                for _ in range(40)]
        io = f"{staging.fullname}-worker-io"
        # 40 tasks, listLength 16 (io's concurrency in staging): 3 replicas wanted.
        wait_for(lambda: staging.deployment_replicas(io) >= 2, 90, "io scaling up", explain=staging.scaling)
        redis_pod = f"{staging.fullname}-redis-0"
        old_uid = staging.get("pod", redis_pod)["metadata"]["uid"]
        staging.kubectl("delete", "pod", redis_pod, "--wait=false")
        wait_for(lambda: pod_uid(staging, redis_pod) not in (None, old_uid), 120, "the StatefulSet's new Redis pod")
        wait_for(lambda: answers(client), 120, "the new Redis pod answering")
        wait_for(lambda: sum(client.exists(run_record_key(r.id)) for r in sent) == 40, 300, "all 40 tasks ran",
                 explain=lambda: f"{sum(client.exists(run_record_key(r.id)) for r in sent)} of 40 ran\n{staging.scaling()}")
        wait_for(lambda: staging.deployment_replicas(io) == 0, 180, "io back to zero", explain=staging.scaling)
        assert client.hlen("unacked") == 0
        staging.helm.test(name, timeout=240)  # and the whole release serves again


def test_dev_values_pass_helm_test_and_a_queue_that_cannot_be_served_fails_it_by_name(release, real_node):
    name = "dev"
    with placed(release.cluster, real_node, name, merge(values_file("dev"), FAST)) as dev:
        wait_for(lambda: answers(own_redis(dev)), 180, "the chart's Redis answering by its Service name",
                 explain=dev.scaling)
        dev.helm.test(name, timeout=240)
        # An operator pauses cpu at zero replicas (KEDA's paused-replicas annotation): the next
        # helm test cannot get an answer from it and fails, naming the queue.
        dev.upgrade(merge(merge(values_file("dev"), FAST), {"helmTest": {"timeout": 20}}))
        # The first helm test woke cpu: its workers must be gone before the probe is sent, or one of
        # them still answers it. cpu is paused once its cooldown took it back to zero: pausing a
        # running Deployment races the HPA controller's last sync, which can set it back to one
        # after KEDA deleted the HPA and scaled it to zero (KEDA's handlePause).
        cpu = f"{dev.fullname}-worker-cpu"

        def gone():  # no replica asked for, and no pod left, not even a terminating one
            return dev.deployment_replicas(cpu) == 0 and not dev.pods("celery-autoscale/queue=cpu")

        def explain():
            return json.dumps({"replicas": dev.deployment_replicas(cpu),
                               "scaledobject": dev.get("scaledobject", cpu).get("status")},
                              indent=1, default=str) + "\n" + dev.scaling()

        wait_for(gone, 180, "cpu back to zero after its cooldown", explain=explain)
        dev.kubectl("annotate", "scaledobject", cpu, "autoscaling.keda.sh/paused-replicas=0")
        wait_for(lambda: dev.get("scaledobject", cpu).get("status", {}).get("pausedReplicaCount") == 0, 60,
                 "KEDA reporting cpu paused at zero", explain=explain)
        wait_for(gone, 60, "cpu paused at zero, its workers gone", explain=explain)
        with pytest.raises(helm.HelmError):
            dev.helm.test(name, timeout=120)
        assert "FAILED queue cpu: no answer within 20s" in dev.logs(HELM_TEST)


def pod_uid(release, pod: str) -> str | None:
    """The uid of ``pod`` once it runs, else None."""
    done = release.kubectl("get", "pod", pod, "-o", "json", check=False)
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
