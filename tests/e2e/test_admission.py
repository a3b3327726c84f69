"""KEDA's own admission webhooks (cmd/webhooks of the KEDA module, registered with KEDA's own
ValidatingWebhookConfiguration at ``failurePolicy: Fail``) judge the chart's ScaledObjects.

Every release in the other tests was admitted by them. Here: the ScaledObjects of every values
file pass a server-side dry run (which runs the webhooks), and what KEDA refuses — a minimum
above the maximum (its CRD's own rule), a name past 63 characters (its webhook) — the chart
refuses first, readably.
"""

from __future__ import annotations

import copy

import helm_python as helm
import pytest
import yaml
from chart import VALUES_FILES, load_values, render_chart
from e2e_cluster import KUBECONFIG, NAMESPACE

pytestmark = [pytest.mark.e2e, pytest.mark.k8s(provider="external", k8s_kubeconfig=str(KUBECONFIG))]
DENIED = 'admission webhook "vscaledobject.kb.io" denied the request'


def dry_run(release, obj: dict):
    """``kubectl apply --dry-run=server``: admission (KEDA's webhook included), nothing stored."""
    return release.cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(obj), check=False)


def scaled_objects(values: dict, name: str = "admission") -> list[dict]:
    return [o for o in render_chart(values, name=name, namespace=NAMESPACE) if o["kind"] == "ScaledObject"]


@pytest.mark.parametrize("path", VALUES_FILES, ids=[p.name for p in VALUES_FILES])
def test_kedas_webhooks_admit_every_scaledobject_the_chart_renders(release, path):
    objects = scaled_objects(load_values(path))
    assert objects
    for obj in objects:
        done = dry_run(release, obj)
        assert done.returncode == 0, done.stderr


def test_what_kedas_webhooks_refuse_the_chart_refuses_first_with_a_readable_message(release):
    [admitted, *_] = scaled_objects({})

    # KEDA refuses this in its CRD already (a CEL rule of spec), before its webhook's own check.
    too_few = copy.deepcopy(admitted)
    too_few["spec"].update(minReplicaCount=5, maxReplicaCount=2)
    done = dry_run(release, too_few)
    assert done.returncode != 0 and "minReplicaCount must be less than or equal to maxReplicaCount" in done.stderr, \
        done.stderr
    with pytest.raises(helm.HelmError, match=r"queues.cpu.autoscaling: minReplicaCount \(5\) must not exceed "
                                             r"maxReplicaCount \(2\)"):
        render_chart({"queues": {"cpu": {"autoscaling": {"minReplicaCount": 5, "maxReplicaCount": 2}}}})

    long_name = copy.deepcopy(admitted)
    name = "payments-team-eu-west-1-celery-autoscale-worker-notifications-digest"
    long_name["metadata"]["name"] = long_name["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["name"] = name
    done = dry_run(release, long_name)
    assert done.returncode != 0 and DENIED in done.stderr and "must be no more than 63 characters" in done.stderr, \
        done.stderr
    with pytest.raises(helm.HelmError, match=f"the ScaledObject name {name} is longer than 63 characters"):
        render_chart({"queues": {"notifications-digest": {"concurrency": 2}}}, name="payments-team-eu-west-1")


def test_a_cpu_trigger_is_admitted_beside_the_backlog_and_becomes_an_hpa_resource_metric(release):
    """A real apply (KEDA's webhook skips its resource-request check in dry runs): ``io`` with
    ``cpuUtilization`` 70 and its CPU request is admitted, and its HPA holds the pods' cpu
    Utilization metric beside the composite backlog metric (the HPA runs the larger count)."""
    import subprocess

    from e2e_cluster import wait_for, worker

    def resource_metrics():
        try:  # KEDA replaces the HPA when its metrics change
            return [m for m in release.get("hpa", worker("io"))["spec"]["metrics"] if m["type"] != "External"]
        except subprocess.CalledProcessError:
            return None

    try:
        release.upgrade({"queues": {"io": {"autoscaling": {"cpuUtilization": 70}}}})
        metrics = wait_for(resource_metrics, 60, "the cpu metric on the HPA")
        assert metrics == [{"type": "Resource", "resource": {  # a containerName's ContainerResource KEDA drops
            "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}]
    finally:
        release.upgrade({})
