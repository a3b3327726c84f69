"""A release behind Redis Sentinel, its pods on the real node (`make e2e`).

Release ``sentinel`` in namespace ``sentinel``: values/ci.yaml's io queue (cpu and mixed off) with
``redis.external.sentinel`` naming a real ``redis-sentinel`` set (a primary, a replica and one
sentinel, :class:`sentinel.SentinelSet`) that listens on the real node's pod gateway
(:data:`tests.e2e.node.GATEWAY`, an address of this host) and announces the master there: the
workers, in their pods, and KEDA's ``redis-sentinel`` triggers, on the host, find the same master.
The password is in a Secret the test creates (``redis.auth.existingSecret``).

values/ci.yaml: io concurrency 4 (listLength 4); maxReplicaCount 4; pollingInterval 2 s.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile

import pytest
from e2e_cluster import CI_VALUES, GATEWAY, KUBECONFIG, RUN_DIR, condition, merge, placed, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.k8s(provider="external", k8s_kubeconfig=str(KUBECONFIG))]

RELEASE = "sentinel"
DEPLOYMENT = f"{RELEASE}-celery-autoscale-worker-io"


def explain(release, sentinels, settings) -> str:
    """What KEDA and the workers could see: the master the sentinel names, the io backlog on the
    primary and the replica (what KEDA's triggers read), the pods' starts and ends, the
    ScaledObject's status and the pods."""
    from celery_autoscale import backlog

    def sizes(server: str) -> dict:
        return dataclasses.asdict(backlog(sentinels.client(server), "io", settings))

    status = release.get("scaledobject", DEPLOYMENT).get("status", {})
    return json.dumps({"sentinel master port": sentinels.master(), "ports": sentinels.ports,
                       "primary": sizes("primary"), "replica": sizes("replica"), "events": release.events,
                       "scaledobject": status}, default=str) + "\n" + release.scaling()


def test_a_release_behind_redis_sentinel_scales_on_the_masters_lists_from_zero_and_back(release, real_node):
    """redis.external.sentinel: KEDA's redis-sentinel triggers and the workers both find the master
    through a real redis-sentinel and read the same keys; 12 tasks over kombu's priority lists
    scale io from zero to 3 pods on the real node, every task runs, and io goes back to zero."""
    from celery import Celery
    from sentinel import MASTER, PASSWORD, SentinelSet

    from celery_autoscale import settings_of
    from celery_autoscale.keys import run_record_key
    from loadgen.stack import LocalStack

    values = merge({key: value for key, value in CI_VALUES.items() if key != "redis"}, {
        "redis": {"enabled": False, "auth": {"enabled": True, "existingSecret": "sentinel-redis",
                                             "existingSecretPasswordKey": "password"}},
        "queues": {"cpu": None, "mixed": None}})
    with LocalStack(tempfile.mkdtemp(prefix="sentinel-set-", dir=RUN_DIR)) as stack:
        sentinels = SentinelSet(stack, host=GATEWAY).start()
        values["redis"]["external"] = {"sentinel": {"enabled": True, "masterName": MASTER,
                                                    "addresses": [f"{GATEWAY}:{sentinels.sentinel_port}"]}}
        with placed(release.cluster, real_node, RELEASE, values, secrets={"sentinel-redis": {"password": PASSWORD}},
                    timeout=120) as found:
            producer = Celery("web", broker=sentinels.url)
            producer.conf.update(broker_transport_options={"master_name": MASTER}, broker_password=PASSWORD)

            def why() -> str:
                return explain(found, sentinels, settings_of(producer))

            wait_for(lambda: condition(found.get("scaledobject", DEPLOYMENT), "Ready").get("status") == "True", 90,
                     "io ScaledObject Ready", explain=why)
            # The Deployment omits spec.replicas (Kubernetes' default is 1); KEDA scales it to zero.
            wait_for(lambda: found.deployment_replicas(DEPLOYMENT) == 0, 90, "io idle at zero", explain=why)
            sent = [producer.send_task("tasks.io.transfer", kwargs={"size_bytes": 0, "wait_seconds": 4}, queue="io",
                                       priority=i % 10) for i in range(12)]
            # 12 tasks over kombu's priority lists, listLength 4 (io concurrency): 3 replicas.
            wait_for(lambda: found.deployment_replicas(DEPLOYMENT) >= 3, 120, "io scaled up to 3", explain=why)
            master = sentinels.client("primary")
            wait_for(lambda: all(master.exists(run_record_key(r.id)) for r in sent), 240, "all 12 tasks ran",
                     explain=lambda: f"{sum(master.exists(run_record_key(r.id)) for r in sent)} of 12 ran\n{why()}")
            wait_for(lambda: found.deployment_replicas(DEPLOYMENT) == 0, 120, "io back to zero", explain=why)
