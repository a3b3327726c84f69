"""What the chart promises: per-queue workers that KEDA scales on the true backlog, and no leaked secret."""

import base64
import hashlib
import json
import re

import helm_python as helm
import pytest
import yaml
from celery import Celery
from celery_autoscale import backlog_keys, install, settings_of
from chart import VALUES_FILES, by_kind, load_values, queue_of, render_chart, render_manifests

PROD = load_values(next(p for p in VALUES_FILES if p.name == "prod.yaml"))


def worker_container(deployment: dict) -> dict:
    return next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "worker")


def consumed_queue(deployment: dict) -> str:
    [arg] = [a for a in worker_container(deployment)["args"] if a.startswith("--queues=")]
    return arg.removeprefix("--queues=")


def redis_triggers(scaled: dict) -> list[dict]:
    return [t for t in scaled["spec"]["triggers"] if t["type"] == "redis"]


@pytest.mark.parametrize("values", [{}, PROD], ids=["defaults", "prod"])
def test_one_deployment_and_one_scaledobject_per_queue_each_aimed_at_its_consumer(values):
    objects = render_chart(values)
    deployments, scaled = by_kind(objects, "Deployment"), by_kind(objects, "ScaledObject")
    workers = {n: d for n, d in deployments.items() if d["metadata"]["labels"]["app.kubernetes.io/component"] == "worker"}
    assert sorted(queue_of(d) for d in workers.values()) == ["cpu", "io", "mixed"]
    assert sorted(queue_of(s) for s in scaled.values()) == ["cpu", "io", "mixed"]
    for so in scaled.values():
        target = workers[so["spec"]["scaleTargetRef"]["name"]]
        assert so["spec"]["scaleTargetRef"]["kind"] == "Deployment"
        lists = [t["metadata"]["listName"] for t in redis_triggers(so) if t["name"] not in ("in_flight", "scheduled")]
        assert lists[0] == consumed_queue(target) and all(name.startswith(lists[0]) for name in lists)


def runtime_settings(transport: dict | None = None):
    """The runtime's settings for an app with these transport options (kombu's defaults when None)."""
    app = Celery("plain", broker="redis://redis:6379/0")
    app.conf.broker_transport_options = transport or {}
    return settings_of(install(app, environ={}))


@pytest.mark.parametrize("values, transport", [
    ({}, None),
    ({"celery": {"priority": {"separator": ":", "steps": [0, 5]}}}, {"sep": ":", "priority_steps": [0, 5]}),
    ({"celery": {"keyPrefix": "shop:"}}, {"global_keyprefix": "shop:"}),
], ids=["kombu-defaults", "own-separator", "key-prefix"])
def test_triggers_watch_exactly_the_keys_producers_and_workers_write_and_the_formula_sums_them(values, transport):
    for so in by_kind(render_chart(values), "ScaledObject").values():
        queue = queue_of(so)
        triggers = redis_triggers(so)
        assert [t["metadata"]["listName"] for t in triggers] == backlog_keys(queue, runtime_settings(transport))
        modifiers = so["spec"]["advanced"]["scalingModifiers"]
        assert sorted(modifiers["formula"].split(" + ")) == sorted(t["name"] for t in triggers)
        assert modifiers["metricType"] == "AverageValue"


def test_list_length_is_tasks_per_replica_derived_from_concurrency_unless_set():
    objects = render_chart({"queues": {"mixed": {"concurrency": 3, "autoscaling": {"listLength": 7}}}})
    targets = {queue_of(s): s["spec"]["advanced"]["scalingModifiers"]["target"] for s in by_kind(objects, "ScaledObject").values()}
    assert targets == {"cpu": "2", "io": "16", "mixed": "7"}
    assert all(t["metadata"]["listLength"] == targets[queue_of(s)]
               for s in by_kind(objects, "ScaledObject").values() for t in redis_triggers(s))


def test_one_priority_step_means_one_list_per_queue():
    so = next(iter(by_kind(render_chart({"celery": {"priority": {"steps": [0]}}}), "ScaledObject").values()))
    assert [t["name"] for t in redis_triggers(so)] == ["queued_0", "in_flight", "scheduled"]
    configmap = next(iter(by_kind(render_chart({"celery": {"priority": {"steps": [0]}}}), "ConfigMap").values()))
    assert configmap["data"]["CELERY_PRIORITY_STEPS"] == "0"


def test_a_fourth_queue_is_a_values_only_change():
    objects = render_chart({"queues": {"reports": {"pool": "threads", "concurrency": 8}}})
    assert sorted(queue_of(d) for d in by_kind(objects, "Deployment").values() if "worker" in d["metadata"]["name"]) \
        == ["cpu", "io", "mixed", "reports"]
    deployment = by_kind(objects, "Deployment")["rel-celery-autoscale-worker-reports"]
    assert "--pool=threads" in worker_container(deployment)["args"]
    scaled = by_kind(objects, "ScaledObject")["rel-celery-autoscale-worker-reports"]
    assert scaled["spec"]["advanced"]["scalingModifiers"]["target"] == "8"
    assert [t["metadata"]["listName"] for t in redis_triggers(scaled)][-2:] == [
        "celery-autoscale:in-flight:reports", "celery-autoscale:scheduled:reports"]
    roundtrip = by_kind(objects, "Job")["rel-celery-autoscale-roundtrip"]
    assert "--queues=cpu,io,mixed,reports" in roundtrip["spec"]["template"]["spec"]["containers"][0]["args"]


def test_a_queue_set_to_null_is_removed():
    objects = render_chart({"queues": {"mixed": None}})
    assert sorted(queue_of(s) for s in by_kind(objects, "ScaledObject").values()) == ["cpu", "io"]


def test_cron_triggers_only_when_configured_and_inside_the_formula():
    assert not [t for s in by_kind(render_chart({}), "ScaledObject").values() for t in s["spec"]["triggers"]
                if t["type"] == "cron"]
    cpu = by_kind(render_chart(PROD), "ScaledObject")["rel-celery-autoscale-worker-cpu"]
    [cron] = [t for t in cpu["spec"]["triggers"] if t["type"] == "cron"]
    assert cron["metadata"] == {"timezone": "Europe/Berlin", "start": "0 8 * * 1-5", "end": "0 18 * * 1-5",
                                "desiredReplicas": "4"}
    # KEDA hands the HPA only the composite metric, so the cron trigger must be in the formula:
    # peak_0 is desiredReplicas while in the window, times the per-replica target.
    assert cpu["spec"]["advanced"]["scalingModifiers"]["formula"] == \
        "max(queued_0 + queued_3 + queued_6 + queued_9 + in_flight + scheduled, peak_0 * 4)"


def test_cpu_and_memory_triggers_only_when_configured_outside_the_formula_and_only_with_requests():
    """KEDA's webhook admits no resource trigger in the formula; the HPA runs the largest count."""
    objects = render_chart({"queues": {"io": {"autoscaling": {"cpuUtilization": 70, "memoryUtilization": 80}}}})
    scaled = {queue_of(o): o["spec"] for o in objects if o["kind"] == "ScaledObject"}
    resource = [t for t in scaled["io"]["triggers"] if t["type"] in ("cpu", "memory")]
    assert resource == [{"type": "cpu", "name": "cpu", "metricType": "Utilization", "metadata": {"value": "70"}},
                        {"type": "memory", "name": "memory", "metricType": "Utilization", "metadata": {"value": "80"}}]
    assert "cpu" not in scaled["io"]["advanced"]["scalingModifiers"]["formula"]
    assert not [t for t in scaled["cpu"]["triggers"] if t["type"] in ("cpu", "memory")]
    with pytest.raises(Exception, match=r"queues.mixed.autoscaling.cpuUtilization needs "
                                        r"queues.mixed.resources.requests.cpu"):
        render_chart({"workerDefaults": {"resources": {"requests": {"cpu": None}}},
                      "queues": {"mixed": {"autoscaling": {"cpuUtilization": 70}}}})


def test_keda_owns_replicas_unless_autoscaling_is_off():
    objects = render_chart({"queues": {"io": {"autoscaling": {"enabled": False}, "replicas": 3}}})
    deployments = by_kind(objects, "Deployment")
    assert "replicas" not in deployments["rel-celery-autoscale-worker-cpu"]["spec"]
    assert deployments["rel-celery-autoscale-worker-io"]["spec"]["replicas"] == 3
    assert "rel-celery-autoscale-worker-io" not in by_kind(objects, "ScaledObject")


def pod_specs(objects: list[dict]) -> dict[str, dict]:
    """The pod spec of every object that makes pods (Deployments, the StatefulSet, Jobs, CronJobs), by name."""
    specs = {}
    for o in objects:
        spec = o.get("spec", {})
        template = spec.get("template") or spec.get("jobTemplate", {}).get("spec", {}).get("template")
        if template:
            specs[o["metadata"]["name"]] = template["spec"]
    return specs


def test_every_pod_runs_where_the_chart_places_it_unless_its_component_says_otherwise():
    """A tainted node pool for the whole release: the top-level nodeSelector, tolerations and affinity
    reach every pod (beat, the canary and the helm test included); Redis's and a queue's own win."""
    pool = {"nodeSelector": {"pool": "celery"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "celery", "effect": "NoSchedule"}],
            "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 1, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}}]}}}
    specs = pod_specs(render_chart({**pool, "flower": {"enabled": True}, "beat": {"enabled": True},
                                    "canary": {"enabled": True}, "redis": {"nodeSelector": {"pool": "redis"}},
                                    "queues": {"cpu": {"nodeSelector": {"pool": "cpu"}}}}))
    assert len(specs) == 9  # 3 workers, Redis, the reconciler, Flower, beat, the canary, the helm test
    own = {"rel-celery-autoscale-redis": {"pool": "redis"}, "rel-celery-autoscale-worker-cpu": {"pool": "cpu"}}
    for name, spec in specs.items():
        assert spec["nodeSelector"] == own.get(name, pool["nodeSelector"]), name
        assert spec["tolerations"] == pool["tolerations"] and spec["affinity"] == pool["affinity"], name
    assert not any({"nodeSelector", "tolerations", "affinity"} & set(spec)
                   for spec in pod_specs(render_chart({"canary": {"enabled": True}})).values())


def test_no_app_is_its_pods_pid_1_so_a_sigterm_before_its_handler_still_ends_it():
    """Every pod shares its process namespace (the pause process is PID 1): a worker deleted while it
    starts, before Celery's SIGTERM handler exists, ends instead of consuming until its SIGKILL (the
    kernel drops a signal to a PID namespace's init that has no handler for it), with any image."""
    for deletion_cost in (True, False):  # the reconciler's pod spec has two forms
        specs = pod_specs(render_chart({"flower": {"enabled": True}, "beat": {"enabled": True}, "canary": {"enabled": True},
                                        "reconciler": {"deletionCost": {"enabled": deletion_cost}}}))
        assert len(specs) == 9
        assert {name for name, spec in specs.items() if spec.get("shareProcessNamespace") is not True} == set()


def test_warm_shutdown_reaches_celery_within_a_grace_period_longer_than_any_task():
    for deployment in by_kind(render_chart(PROD), "Deployment").values():
        if "worker" not in deployment["metadata"]["name"]:
            continue
        pod = deployment["spec"]["template"]["spec"]
        container = worker_container(deployment)
        assert container["command"][:4] == ["celery", "-A", "celery_autoscale.worker", "worker"]  # exec form: PID 1 is Celery
        limit = int(next(e["value"] for e in container["env"] if e["name"] == "CELERY_TASK_TIME_LIMIT"))
        assert pod["terminationGracePeriodSeconds"] > limit


def test_prefork_processes_are_replaced_after_the_tasks_or_memory_a_queue_allows():
    deployments = by_kind(render_chart({"queues": {"cpu": {"maxTasksPerChild": 100, "maxMemoryPerChild": 200000}}}),
                          "Deployment")
    assert {"--max-tasks-per-child=100", "--max-memory-per-child=200000"} <= set(
        worker_container(deployments["rel-celery-autoscale-worker-cpu"])["args"])
    assert not [a for a in worker_container(deployments["rel-celery-autoscale-worker-mixed"])["args"] if "per-child" in a]
    with pytest.raises(helm.HelmError, match="queues.io.maxTasksPerChild and maxMemoryPerChild replace prefork pool "
                                             "processes; pool threads has none"):
        render_chart({"queues": {"io": {"maxMemoryPerChild": 200000}}})


def test_workers_are_locked_down_and_probed_without_broadcasts():
    deployment = by_kind(render_chart({}), "Deployment")["rel-celery-autoscale-worker-cpu"]
    pod = deployment["spec"]["template"]["spec"]
    container = worker_container(deployment)
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "privileged": False, "capabilities": {"drop": ["ALL"]}}
    assert {"name": "tmp", "emptyDir": {}} in pod["volumes"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["exec"]["command"][:3] == ["python", "-m", "celery_autoscale.health"]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert re.fullmatch("[0-9a-f]{64}", annotations["checksum/config"])


def test_a_config_change_rolls_the_workers():
    before = by_kind(render_chart({}), "Deployment")["rel-celery-autoscale-worker-cpu"]
    after = by_kind(render_chart({"celery": {"maxRetries": 2}}), "Deployment")["rel-celery-autoscale-worker-cpu"]
    key = "checksum/config"
    assert before["spec"]["template"]["metadata"]["annotations"][key] != after["spec"]["template"]["metadata"]["annotations"][key]


@pytest.mark.parametrize("values", [{}, PROD, {"flower": {"auth": {"enabled": True}}}], ids=["defaults", "prod", "flower-auth"])
def test_no_secret_value_outside_a_secret(values):
    objects = render_chart(values)
    secrets = [base64.b64decode(v).decode() for o in objects if o["kind"] == "Secret" for v in o["data"].values()]
    secrets = [s for s in secrets if len(s) >= 16]  # the generated passwords, not user names
    assert secrets or values is PROD  # prod names existing Secrets only
    for obj in objects:
        if obj["kind"] == "Secret":
            continue
        text = json.dumps(obj)
        assert not any(s in text for s in secrets), obj["metadata"]["name"]
    for so in by_kind(objects, "ScaledObject").values():
        for trigger in so["spec"]["triggers"]:
            assert not {"password", "username"} & set(trigger["metadata"])
    for configmap in by_kind(objects, "ConfigMap").values():
        assert "@" not in configmap["data"].get("CELERY_BROKER_URL", "")


def test_secrets_reach_containers_as_files_not_environment_variables():
    for obj in render_chart({"flower": {"auth": {"enabled": True}}}):
        spec = obj.get("spec", {}).get("template", {}).get("spec", {})
        for container in spec.get("containers", []):
            assert not [e for e in container.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})], obj["metadata"]["name"]
    worker = worker_container(by_kind(render_chart({}), "Deployment")["rel-celery-autoscale-worker-cpu"])
    assert {"name": "REDIS_PASSWORD_FILE", "value": "/etc/celery-autoscale/redis-auth/password"} in worker["env"]


def test_each_pods_secret_checksum_is_that_of_the_secret_the_same_render_writes():
    """A generated password is drawn once per render: the checksum an install writes is then the
    one the next upgrade computes from the kept Secret (a fresh draw in each include made every
    first upgrade restart Redis and every worker; the real node's test caught it)."""
    manifests = render_manifests({"flower": {"auth": {"enabled": True}}})
    digest = {component: hashlib.sha256(manifests[f"celery-autoscale/templates/{component}/secret.yaml"]
                                        .encode()).hexdigest() for component in ("redis", "flower")}
    checked = 0
    for path, text in manifests.items():
        for obj in yaml.safe_load_all(text) if path.endswith(".yaml") else ():
            annotations = (obj or {}).get("spec", {}).get("template", {}).get("metadata", {}).get("annotations", {})
            if "checksum/secret" in annotations:
                component = "flower" if obj["metadata"]["name"].endswith("-flower") else "redis"
                assert annotations["checksum/secret"] == digest[component], obj["metadata"]["name"]
                checked += 1
    assert checked == 5  # Redis, Flower and the three workers


def test_keda_authenticates_through_a_trigger_authentication_referencing_the_secret():
    objects = render_chart({})
    [auth] = by_kind(objects, "TriggerAuthentication").values()
    assert auth["spec"]["secretTargetRef"] == [{"parameter": "password", "name": "rel-celery-autoscale-redis",
                                                "key": "redis-password"}]
    for so in by_kind(objects, "ScaledObject").values():
        assert all(t["authenticationRef"]["name"] == auth["metadata"]["name"] for t in redis_triggers(so))


def test_external_redis_with_tls_verifies_with_its_ca():
    objects = render_chart({"redis": {"enabled": False, "external": {"host": "redis.example.com", "port": 6380,
                                                                   "tls": {"enabled": True, "caSecret": "redis-ca"}},
                                      "auth": {"existingSecret": "redis-auth"}}})
    assert "StatefulSet" not in {o["kind"] for o in objects}
    configmap = next(iter(by_kind(objects, "ConfigMap").values()))
    assert configmap["data"]["CELERY_BROKER_URL"] == "rediss://redis.example.com:6380/0"
    so = by_kind(objects, "ScaledObject")["rel-celery-autoscale-worker-io"]
    assert all(t["metadata"]["enableTLS"] == "true" and t["metadata"]["address"] == "redis.example.com:6380"
               for t in redis_triggers(so))
    [auth] = by_kind(objects, "TriggerAuthentication").values()
    assert {"parameter": "ca", "name": "redis-ca", "key": "ca.crt"} in auth["spec"]["secretTargetRef"]
    env = worker_container(by_kind(objects, "Deployment")["rel-celery-autoscale-worker-io"])["env"]
    assert {"name": "REDIS_TLS_CA_FILE", "value": "/etc/celery-autoscale/redis-ca/ca.crt"} in env


def test_redis_persists_its_append_only_file_on_a_claim():
    objects = render_chart({"redis": {"persistence": {"size": "5Gi", "storageClass": "fast"}}})
    [sts] = by_kind(objects, "StatefulSet").values()
    [claim] = sts["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi" and claim["spec"]["storageClassName"] == "fast"
    assert "--appendonly yes" in sts["spec"]["template"]["spec"]["containers"][0]["args"][0]
    dev = render_chart({"redis": {"persistence": {"enabled": False}}})
    [sts] = by_kind(dev, "StatefulSet").values()
    assert "volumeClaimTemplates" not in sts["spec"]


def test_redis_pauses_writes_for_its_grace_period_before_the_kubelets_sigterm():
    """The hook itself is run against a real Redis in tests/test_faults.py."""
    [sts] = by_kind(render_chart({}), "StatefulSet").values()
    pod = sts["spec"]["template"]["spec"]
    hook = pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
    assert hook[:2] == ["sh", "-c"]
    assert f"CLIENT PAUSE {pod['terminationGracePeriodSeconds'] * 1000} WRITE" in hook[2]
    assert 'REDISCLI_AUTH="$(cat /etc/redis-auth/password)" redis-cli' in hook[2]


@pytest.mark.parametrize("setting, rendered", [(False, False), (True, True), ("auto", False)])
def test_monitoring_objects_render_when_explicitly_enabled(setting, rendered):
    objects = render_chart({"flower": {"serviceMonitor": {"enabled": setting}},
                            "metrics": {"podMonitor": {"enabled": setting}, "prometheusRule": {"enabled": setting}}})
    kinds = {o["kind"] for o in objects}
    # "auto" renders only where the cluster serves monitoring.coreos.com/v1; `helm template` has none.
    assert ({"ServiceMonitor", "PodMonitor", "PrometheusRule"} <= kinds) is rendered
    assert not kinds & {"ServiceMonitor", "PodMonitor", "PrometheusRule", "CronJob"} or setting is not False


def test_network_policies_admit_only_the_release_and_keda_to_redis():
    policies = by_kind(render_chart({}), "NetworkPolicy")
    sources = policies["rel-celery-autoscale-redis"]["spec"]["ingress"][0]["from"]
    components = [s.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component") for s in sources]
    assert components == ["worker", "flower", "helm-test", "reconciler", "canary", "beat", None]
    assert sources[-1] == {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}}}
    app = policies["rel-celery-autoscale-app"]["spec"]
    assert app["ingress"] == [{"ports": [{"port": "metrics", "protocol": "TCP"}, {"port": "http", "protocol": "TCP"}]}]
    assert not by_kind(render_chart({"networkPolicy": {"enabled": False}}), "NetworkPolicy")


def test_flower_behind_a_prefix_with_basic_auth_from_its_secret():
    objects = render_chart(PROD)
    flower = by_kind(objects, "Deployment")["rel-celery-autoscale-flower"]
    container = flower["spec"]["template"]["spec"]["containers"][0]
    assert "--url_prefix=flower" in container["args"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/flower/healthcheck"
    assert container["command"] == ["python", "-m", "celery_autoscale.flower"]
    assert {"name": "BASIC_AUTH_DIR", "value": "/etc/celery-autoscale/flower-auth"} in container["env"]
    volumes = {v["name"]: v for v in flower["spec"]["template"]["spec"]["volumes"]}
    assert volumes["flower-auth"]["secret"]["secretName"] == "celery-flower-basic-auth"
    [ingress] = by_kind(objects, "Ingress").values()
    assert ingress["spec"]["rules"][0]["http"]["paths"][0]["path"] == "/flower"


def test_one_reconciler_runs_for_all_queues_with_the_apps_settings_and_password_file():
    reconciler = by_kind(render_chart({"reconciler": {"interval": 5, "margin": 60}}), "Deployment")[
        "rel-celery-autoscale-reconciler"]
    assert reconciler["spec"]["replicas"] == 1
    pod = reconciler["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["command"] == ["python", "-m", "celery_autoscale.reconciler"]
    assert container["args"] == ["--interval=5", "--margin=60",
                                 "--deletion-cost-selector=app.kubernetes.io/instance=rel,app.kubernetes.io/component=worker",
                                 "--deletion-cost-min-interval=5", "--metrics-port=9809", "--queues=cpu,io,mixed"]
    assert container["ports"] == [{"name": "metrics", "containerPort": 9809, "protocol": "TCP"}]
    assert container["envFrom"][0]["configMapRef"]["name"] == "rel-celery-autoscale-celery"
    assert {"name": "REDIS_PASSWORD_FILE", "value": "/etc/celery-autoscale/redis-auth/password"} in container["env"]
    assert container["livenessProbe"]["exec"]["command"][-1] == "--max-age=90"
    # Its own service account, the only one with a token: a Role to get, list and patch pods.
    assert pod["serviceAccountName"] == "rel-celery-autoscale-reconciler" and pod["automountServiceAccountToken"] is True
    objects = render_chart({})
    [rule] = by_kind(objects, "Role")["rel-celery-autoscale-reconciler"]["rules"]
    assert rule == {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "patch"]}
    binding = by_kind(objects, "RoleBinding")["rel-celery-autoscale-reconciler"]
    assert binding["subjects"][0]["name"] == "rel-celery-autoscale-reconciler"
    workers = [d for n, d in by_kind(objects, "Deployment").items() if "-worker-" in n]
    assert all(d["spec"]["template"]["spec"]["automountServiceAccountToken"] is False for d in workers)
    no_cost = by_kind(render_chart({"reconciler": {"deletionCost": {"enabled": False}}}), "Deployment")
    assert no_cost["rel-celery-autoscale-reconciler"]["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    data = by_kind(render_chart({}), "ConfigMap")["rel-celery-autoscale-celery"]["data"]
    assert data["CELERY_ETA_HORIZON"] == "300"  # far-future ETA tasks parked: the reconciler brings them back
    off = render_chart({"reconciler": {"enabled": False}})
    assert "rel-celery-autoscale-reconciler" not in by_kind(off, "Deployment")
    assert "CELERY_ETA_HORIZON" not in by_kind(off, "ConfigMap")["rel-celery-autoscale-celery"]["data"]


def test_the_helm_test_is_a_hook_job_running_the_round_trip_once():
    job = by_kind(render_chart({}), "Job")["rel-celery-autoscale-roundtrip"]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert job["spec"]["backoffLimit"] == 0
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["command"] == ["python", "-m", "celery_autoscale.roundtrip"]
    assert pod["restartPolicy"] == "Never"


class TestTheUsersOwnApp:
    """Values for an existing Celery project: its image and app, queue names Celery accepts, its files."""

    VALUES = {
        "image": {"repository": "registry.example.com/myproject", "tag": "1.4.2"},
        "celery": {"app": "myproject.celery:app", "workerArgs": ["--max-tasks-per-child=100"],
                   "extraEnvFrom": [{"configMapRef": {"name": "myproject-settings"}}],
                   "extraVolumes": [{"name": "conf", "configMap": {"name": "myproject-files"}}],
                   "extraVolumeMounts": [{"name": "conf", "mountPath": "/etc/myproject"}]},
        "queues": {"cpu": None, "io": None, "mixed": None,
                   "default": {"queue": "celery"}, "emails": {},
                   "reports": {"queue": "reports.daily", "extraArgs": ["--prefetch-multiplier=1"]}},
        "networkPolicy": {"extraRedisFrom": [{"podSelector": {"matchLabels": {"app": "web"}}}]},
    }

    def test_workers_run_the_users_app_through_the_runtime_wrapper(self):
        objects = render_chart(self.VALUES)
        [configmap] = by_kind(objects, "ConfigMap").values()
        assert configmap["data"]["CELERY_AUTOSCALE_APP"] == "myproject.celery:app"
        reports = by_kind(objects, "Deployment")["rel-celery-autoscale-worker-reports"]
        container = worker_container(reports)
        assert container["image"] == "registry.example.com/myproject:1.4.2"
        assert container["command"] == ["celery", "-A", "celery_autoscale.worker", "worker"]
        assert consumed_queue(reports) == "reports.daily"
        assert container["args"][-2:] == ["--max-tasks-per-child=100", "--prefetch-multiplier=1"]
        assert {"configMapRef": {"name": "myproject-settings"}} in container["envFrom"]
        assert {"name": "conf", "mountPath": "/etc/myproject"} in container["volumeMounts"]
        assert {"name": "conf", "configMap": {"name": "myproject-files"}} in reports["spec"]["template"]["spec"]["volumes"]

    def test_triggers_and_the_helm_test_use_the_celery_queue_names(self):
        objects = render_chart(self.VALUES)
        scaled = by_kind(objects, "ScaledObject")
        assert [t["metadata"]["listName"] for t in redis_triggers(scaled["rel-celery-autoscale-worker-reports"])] == \
            ["reports.daily", "reports.daily\x06\x163", "reports.daily\x06\x166", "reports.daily\x06\x169",
             "celery-autoscale:in-flight:reports.daily", "celery-autoscale:scheduled:reports.daily"]
        assert redis_triggers(scaled["rel-celery-autoscale-worker-default"])[0]["metadata"]["listName"] == "celery"
        job = by_kind(objects, "Job")["rel-celery-autoscale-roundtrip"]
        # an entry of {} is a queue with the defaults
        assert "--queues=celery,emails,reports.daily" in job["spec"]["template"]["spec"]["containers"][0]["args"]

    def test_producers_are_admitted_to_redis(self):
        policy = by_kind(render_chart(self.VALUES), "NetworkPolicy")["rel-celery-autoscale-redis"]
        assert {"podSelector": {"matchLabels": {"app": "web"}}} in policy["spec"]["ingress"][0]["from"]

    @pytest.mark.parametrize("queue", ["a,b", "has space", ""])
    def test_queue_names_the_helm_test_cannot_pass_are_refused(self, queue):
        import helm_python as helm
        from chart import render_manifests

        with pytest.raises(helm.HelmError, match="/queues/x/queue"):
            render_manifests({"queues": {"x": {"queue": queue}}})


@pytest.mark.parametrize("autoscaling, polling, cooldown", [
    ({}, 15, 300),
    ({"minReplicaCount": 1}, 15, None),  # cached metrics still refresh every pollingInterval
    ({"minReplicaCount": 1, "useCachedMetrics": False}, None, None),
])
def test_polling_and_cooldown_are_rendered_only_where_keda_uses_them(autoscaling, polling, cooldown):
    """KEDA's webhook warns that both are irrelevant above zero replicas (scaledobject_webhook.go)."""
    so = by_kind(render_chart({"queues": {"io": {"autoscaling": autoscaling}}}), "ScaledObject")["rel-celery-autoscale-worker-io"]
    assert so["spec"].get("pollingInterval") == polling and so["spec"].get("cooldownPeriod") == cooldown
    assert all(t.get("useCachedMetrics", False) is autoscaling.get("useCachedMetrics", True)
               for t in redis_triggers(so))


def test_an_external_redis_behind_sentinel_reaches_celery_and_keda_by_the_same_master():
    sentinel = {"enabled": True, "addresses": ["s0.sentinel:26379", "s1.sentinel:26379"], "masterName": "cache"}
    objects = render_chart({"redis": {"enabled": False, "external": {"sentinel": sentinel}}})
    data = by_kind(objects, "ConfigMap")["rel-celery-autoscale-celery"]["data"]
    assert data["CELERY_BROKER_URL"] == "sentinel://s0.sentinel:26379/0;sentinel://s1.sentinel:26379/0"
    assert data["CELERY_SENTINEL_MASTER"] == "cache"
    triggers = by_kind(objects, "ScaledObject")["rel-celery-autoscale-worker-io"]["spec"]["triggers"]
    redis_triggers = [t for t in triggers if t["type"] != "cron"]
    assert {t["type"] for t in redis_triggers} == {"redis-sentinel"}
    assert all(t["metadata"]["addresses"] == "s0.sentinel:26379,s1.sentinel:26379"
               and t["metadata"]["sentinelMaster"] == "cache" and "address" not in t["metadata"] for t in redis_triggers)
    assert "rel-celery-autoscale-redis" not in by_kind(objects, "StatefulSet")


def test_beat_is_one_recreated_pod_whose_schedule_file_the_runtime_accepts():
    schedule = {"cleanup": {"task": "myproject.cleanup", "schedule": 300},
                "report": {"task": "myproject.report", "schedule": "0 6 * * 1-5", "queue": "reports.daily",
                           "args": [1]}}
    objects = render_chart({"beat": {"enabled": True, "schedule": schedule}})
    beat = by_kind(objects, "Deployment")["rel-celery-autoscale-beat"]
    assert beat["spec"]["replicas"] == 1 and beat["spec"]["strategy"] == {"type": "Recreate"}
    [container] = beat["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["python", "-m", "celery_autoscale.beat"]
    assert "--schedule=/etc/celery-autoscale/beat/schedule.json" in container["args"]
    rendered = json.loads(by_kind(objects, "ConfigMap")["rel-celery-autoscale-beat"]["data"]["schedule.json"])
    assert rendered == schedule
    from celery_autoscale.beat import entries

    assert entries(rendered)["report"]["options"] == {"queue": "reports.daily"}
    assert "rel-celery-autoscale-beat" not in by_kind(render_chart({}), "Deployment")


def test_the_canary_is_a_cronjob_that_never_overlaps_and_records_every_queue():
    objects = render_chart({"canary": {"enabled": True, "schedule": "*/5 * * * *", "timeout": 120}})
    [cron] = by_kind(objects, "CronJob").values()
    assert cron["spec"]["schedule"] == "*/5 * * * *" and cron["spec"]["concurrencyPolicy"] == "Forbid"
    job = cron["spec"]["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 0 and job["activeDeadlineSeconds"] == 180
    [container] = job["template"]["spec"]["containers"]
    assert container["args"] == ["--queues=cpu,io,mixed", "--timeout=120", "--record"]
    assert not by_kind(render_chart({}), "CronJob")


def test_keda_in_its_own_namespace_and_the_workers_reach_the_charts_redis_by_a_namespace_qualified_name():
    """KEDA's operator resolves the trigger address in the `keda` namespace: a short Service name
    would resolve there (to nothing), so the chart names `<service>.<namespace>.svc`."""
    objects = render_chart({})
    for so in by_kind(objects, "ScaledObject").values():
        for trigger in so["spec"]["triggers"]:
            if trigger["type"] == "redis":
                assert trigger["metadata"]["address"] == "rel-celery-autoscale-redis.apps.svc:6379"
    config = by_kind(objects, "ConfigMap")["rel-celery-autoscale-celery"]["data"]
    assert config["CELERY_BROKER_URL"] == "redis://rel-celery-autoscale-redis.apps.svc:6379/0"
