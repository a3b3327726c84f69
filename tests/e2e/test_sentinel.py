"""A release the pod bridge still runs (`make e2e`): one behind Redis Sentinel. Its workers need
what the real node cannot give them yet: a Sentinel set whose addresses pods can reach (it
listens on this host's loopback, and announces the master there). See :mod:`bridge`; every other
autoscaling scenario runs on the real node.

values/ci.yaml: io concurrency 4 (listLength 4); maxReplicaCount 4; pollingInterval 2 s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json

import pytest
from tests.e2e.harness import CI_VALUES, KUBECONFIG, NAMESPACE, condition, merge, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.k8s(provider="external", k8s_kubeconfig=str(KUBECONFIG))]


@contextlib.contextmanager
def idle_at_zero(release, name: str, values: dict, deployment: str):
    """``helm install`` of ``values`` as release ``name``; yields once the ScaledObject of
    ``deployment`` is Ready and KEDA has scaled it to zero (the Deployment omits spec.replicas,
    Kubernetes' default is 1, and KEDA scales it to zero on a later poll than the one that marks the
    ScaledObject Ready); uninstalled on exit."""
    release.helm.install(release.chart, name, values, namespace=NAMESPACE, timeout=120)
    try:
        wait_for(lambda: condition(release.get("scaledobject", deployment), "Ready").get("status") == "True", 90,
                 f"{deployment} ScaledObject Ready")
        wait_for(lambda: release.deployment_replicas(deployment) == 0, 90, f"{deployment} idle at zero")
        yield
    finally:
        release.helm.uninstall(name, timeout=60)


def explain(release, cluster, deployment: str) -> str:
    """What KEDA and the workers could see: the master Sentinel names, the io backlog on the primary
    and the replica (what KEDA's triggers read), the bridged pods' starts and ends, and the
    ScaledObject's status."""
    from celery_autoscale import backlog

    def sizes(server: str) -> dict:
        return dataclasses.asdict(backlog(cluster.client(server), "io", release.settings()))

    status = release.get("scaledobject", deployment).get("status", {})
    return json.dumps({"sentinel master port": cluster.master(), "ports": cluster.ports,
                       "primary": sizes("primary"), "replica": sizes("replica"),
                       "pods": [e for e in release.bridge.events if e[1].startswith("sentinel-")],
                       "scaledobject": status}, default=str)


def test_a_release_behind_redis_sentinel_scales_on_the_masters_lists_from_zero_and_back(idle):
    """redis.external.sentinel: KEDA's redis-sentinel triggers and the workers both find the master
    through a real redis-sentinel (primary and replica on the host) and read the same keys."""
    from celery import Celery
    from sentinel import MASTER, PASSWORD, SentinelSet

    from celery_autoscale.keys import run_record_key
    from loadgen.stack import LocalStack

    release = idle
    import tempfile

    with LocalStack(tempfile.mkdtemp(prefix="sentinel-set-", dir=release.redis.workdir.parent)) as stack:
        cluster = SentinelSet(stack).start()
        release.cluster.kubectl("create", "secret", "generic", "sentinel-redis", "-n", NAMESPACE,
                                f"--from-literal=password={PASSWORD}")
        values = merge(CI_VALUES, {
            "redis": {"auth": {"existingSecret": "sentinel-redis"},
                      "external": {"sentinel": {"enabled": True, "masterName": MASTER,
                                                "addresses": [f"127.0.0.1:{cluster.sentinel_port}"]}}},
            "queues": {"cpu": None, "mixed": None}})
        name = "sentinel-celery-autoscale-worker-io"
        try:
            with idle_at_zero(release, "sentinel", values, name):
                producer = Celery("web", broker=cluster.url)
                producer.conf.update(broker_transport_options={"master_name": MASTER}, broker_password=PASSWORD)
                sent = [producer.send_task("tasks.io.transfer", kwargs={"size_bytes": 0, "wait_seconds": 4}, queue="io",
                                           priority=i % 10) for i in range(12)]
                # 12 tasks over kombu's priority lists, listLength 4 (io concurrency): 3 replicas.
                wait_for(lambda: release.deployment_replicas(name) >= 3, 120, "sentinel io scaled up to 3",
                         explain=lambda: explain(release, cluster, name))
                master = cluster.client("primary")
                wait_for(lambda: all(master.exists(run_record_key(r.id)) for r in sent), 180, "all 12 tasks ran",
                         explain=lambda: f"{sum(master.exists(run_record_key(r.id)) for r in sent)} of 12 ran")
                wait_for(lambda: release.deployment_replicas(name) == 0, 120, "sentinel io back to zero")
        finally:
            release.cluster.kubectl("delete", "secret", "sentinel-redis", "-n", NAMESPACE)
