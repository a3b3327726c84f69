"""Autoscaling on a real control plane with the real KEDA, closed by real workers (`make e2e`).

Release ``ci`` in namespace ``ci`` (the session's, :func:`releases.environment`): values/ci.yaml,
the chart's own Redis, every pod run by the real node's kubelet from the images `make image`
built; KEDA, on the host, reads that Redis by its Service's name.

values/ci.yaml: cpu concurrency 1, io 4, mixed 2 (so listLength 1, 4 and 2); maxReplicaCount 4;
pollingInterval 2 s, cooldownPeriod 10 s, scale-down stabilization window 5 s; HPA sync 2 s.
"""

from __future__ import annotations

import datetime
import json
import os
import secrets
import signal
import time

import pytest
import redis
from celery import Celery
from e2e_cluster import (CI_VALUES, KUBECONFIG, QUEUES, RUN_DIR, condition, merge, placed, queue_backlog,
                         scale_down_with_busy_and_idle_pods, wait_for, worker)

from celery_autoscale import backlog
from celery_autoscale.keys import in_flight_key

pytestmark = [pytest.mark.e2e, pytest.mark.k8s(provider="external", k8s_kubeconfig=str(KUBECONFIG))]


def test_install_makes_every_scaledobject_ready_with_one_hpa_each(release, kube):
    for queue in QUEUES:
        scaled = wait_for(lambda: (so := release.get("scaledobject", worker(queue)))
                          and condition(so, "Ready").get("status") == "True" and so, 120, f"{queue} ScaledObject Ready")
        assert scaled["spec"]["scaleTargetRef"]["name"] == worker(queue)
    hpas = kube.kubectl(["get", "hpa", "-n", release.namespace])["items"]
    assert sorted(h["spec"]["scaleTargetRef"]["name"] for h in hpas) == sorted(worker(q) for q in QUEUES)
    assert all(h["metadata"]["ownerReferences"][0]["kind"] == "ScaledObject" for h in hpas)


def test_a_burst_on_cpu_scales_it_from_zero_to_the_cap_and_leaves_the_others_alone(idle, producer):
    release = idle
    results = [producer.send_task("tasks.cpu.hash_chain", kwargs={"work_units": 3_000_000}, queue="cpu")
               for _ in range(12)]
    seen = {q: set() for q in QUEUES}

    def sample():
        for q in QUEUES:
            seen[q].add(release.replicas(q))
        return max(seen["cpu"]) >= 4

    wait_for(sample, 120, "cpu at maxReplicaCount 4 (backlog 12 / listLength 1, capped)")
    assert 1 in seen["cpu"] or min(seen["cpu"]) == 0  # KEDA activated 0 -> 1, the HPA went on
    assert seen["io"] == {0} and seen["mixed"] == {0}
    assert max(seen["cpu"]) == 4  # never above the cap

    # Drain: the workers finish every task, even those on pods removed while busy.
    for r in results:
        assert r.get(timeout=300)["queue"] == "cpu"
    wait_for(lambda: release.replicas("cpu") == 0, 120, "cpu back to minReplicaCount 0 after the cooldown",
             explain=lambda: release.explain("cpu"))
    stopped = [e for e in release.events if e[1].startswith(worker("cpu")) and e[2] == "sigterm"]
    assert stopped, "pods were removed on scale-down"
    assert all(queue_backlog(release, q) == 0 for q in QUEUES)


def test_running_tasks_keep_a_queue_from_scaling_to_zero(idle, producer):
    release = idle
    results = [producer.send_task("tasks.mixed.pipeline", kwargs={"work_units": 1000, "size_bytes": 0,
                                                                   "wait_seconds": 30}, queue="mixed")
               for _ in range(2)]
    settings = release.settings()
    wait_for(lambda: backlog(release.client(), "mixed", settings).in_flight == 2, 60,
             "both tasks running")
    assert backlog(release.client(), "mixed", settings).queued == 0
    # Lists empty, two tasks in flight: longer than cooldown + stabilization, still one replica.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert release.replicas("mixed") == 1
        time.sleep(1)
    for r in results:
        r.get(timeout=120)
    wait_for(lambda: release.replicas("mixed") == 0, 120, "mixed to zero once the tasks finished")


def test_every_priority_list_counts_towards_the_replicas(idle, producer):
    release = idle
    results = [producer.send_task("tasks.io.transfer", kwargs={"size_bytes": 0, "wait_seconds": 25}, queue="io",
                                  priority=[0, 5, 9][i % 3]) for i in range(12)]
    # 12 tasks over three priority lists, listLength 4: 3 replicas. Counting only the base
    # list (4 of them) would give 1.
    wait_for(lambda: release.replicas("io") == 3, 90, "io at ceil(12 / 4) = 3 replicas",
             explain=lambda: release.explain("io"))
    for r in results:
        r.get(timeout=180)


def test_a_cpu_trigger_adds_replicas_the_backlog_would_not_ask_for_and_lets_the_queue_go_to_zero(idle, producer):
    """``io`` with ``cpuUtilization`` 50 (its pods request 50m CPU) and at most 2 CPU-bound tasks sent
    at a time: the backlog alone asks for ceil(3 / 4) = 1 replica at most, the pods' CPU
    utilisation, read from metrics-server scraping the kubelet, for more; the HPA runs the larger.
    Every task succeeds, and with the queue empty again KEDA takes it to zero (a resource
    trigger does not hold a queue up)."""
    release = idle
    try:
        release.upgrade({"queues": {"io": {"autoscaling": {"cpuUtilization": 50}}}})

        def cpu_metric():
            try:  # KEDA replaces the HPA when its metrics change
                hpa = release.get("hpa", worker("io"))
            except Exception:
                return None
            return next((m["resource"]["current"] for m in hpa.get("status", {}).get("currentMetrics") or []
                         if m["type"] == "Resource"), None)

        sent, deadline, most = [], time.monotonic() + 150, 0
        while time.monotonic() < deadline and most < 2:
            if sum(not r.ready() for r in sent) < 2:  # about 4 s of CPU each
                sent.append(producer.send_task("tasks.cpu.hash_chain", kwargs={"work_units": 15_000_000}, queue="io"))
            # 2 running, and for a moment a third: a task's result is stored before its acknowledgement.
            assert queue_backlog(release, "io") <= 3
            most = max(most, release.replicas("io"))
            time.sleep(0.5)
        assert most >= 2, release.explain("io")
        current = cpu_metric()
        assert current is not None and current["averageUtilization"] > 50, release.explain("io")
        assert all(r.get(timeout=120)["queue"] == "io" for r in sent)
        wait_for(lambda: release.replicas("io") == 0, 180, "io back to zero with nothing to run",
                 explain=lambda: release.explain("io"))
    finally:
        release.upgrade({})


def test_a_cron_window_holds_desired_replicas_with_an_empty_queue(idle):
    release = idle
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(minutes=2), now + datetime.timedelta(minutes=20)
    window = {"timezone": "UTC", "start": f"{start.minute} {start.hour} * * *", "end": f"{end.minute} {end.hour} * * *",
              "desiredReplicas": 2}
    release.upgrade({"queues": {"mixed": {"autoscaling": {"cron": [window]}}}})
    try:
        wait_for(lambda: release.replicas("mixed") == 2, 90, "mixed held at the cron window's 2 replicas")
        time.sleep(15)  # beyond cooldown and stabilization: the window, not a backlog, holds them
        assert release.replicas("mixed") == 2 and queue_backlog(release, "mixed") == 0
    finally:
        release.upgrade({})
    wait_for(lambda: release.replicas("mixed") == 0, 120, "mixed back to zero without the window",
             explain=lambda: release.explain("mixed"))


def on_a_host_redis(release, port: int, password: str, queues: dict) -> dict:
    """values/ci.yaml for a second release beside ``ci`` (on KWOK's node: only its ScaledObject and
    replicas matter) whose Redis is a ``redis-server`` on this host's loopback at ``port``, KEDA's
    view of it, with ``password`` in the Secret ``host-redis`` (created in ``ci``'s namespace)."""
    release.cluster.apply({"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "stringData": {"password": password},
                           "metadata": {"name": "host-redis", "namespace": release.namespace}})
    return merge(CI_VALUES, {"redis": {"enabled": False, "external": {"host": "127.0.0.1", "port": port},
                                       "auth": {"existingSecret": "host-redis", "existingSecretPasswordKey": "password"}},
                             "queues": queues})


def test_a_wrong_redis_address_is_a_condition_not_a_crash_and_the_others_keep_scaling(release, idle, producer):
    """A second release of the chart with a wrong Redis address: KEDA cannot build its scalers and
    says so on the ScaledObject; KEDA keeps running and release ``ci`` keeps scaling."""
    values = on_a_host_redis(release, 1, secrets.token_hex(16), {"cpu": None, "mixed": None})
    release.helm.install(release.chart, "broken", values, namespace=release.namespace, timeout=120)
    try:
        broken = wait_for(lambda: (so := release.get("scaledobject", "broken-celery-autoscale-worker-io"))
                          and condition(so, "Ready").get("status") == "False" and so, 90, "broken io not Ready")
        ready = condition(broken, "Ready")
        assert ready["reason"] == "ScaledObjectCheckFailed" and "redis" in ready["message"].lower(), ready
        release.cluster.keda_alive()
        results = [producer.send_task("tasks.cpu.hash_chain", kwargs={"work_units": 10_000}, queue="cpu")
                   for _ in range(3)]
        wait_for(lambda: idle.replicas("cpu") >= 1, 60, "the healthy release's cpu still scales")
        for r in results:
            r.get(timeout=120)
    finally:
        release.helm.uninstall("broken", timeout=60)


def reports_failure(scaled: dict) -> bool:
    """The ScaledObject says a trigger fails: not Ready, in fallback, or a trigger's health Failing."""
    return (condition(scaled, "Ready").get("status") == "False" or condition(scaled, "Fallback").get("status") == "True"
            or any(h.get("status") == "Failing" for h in scaled.get("status", {}).get("health", {}).values()))


def test_a_redis_that_stops_answering_is_reported_and_never_scales_workers_away(release):
    """A second release of the chart whose Redis, on this host, goes away: KEDA reports the failure
    and the workers keep their replicas (never scaled to zero on a backlog nobody can read); KEDA
    keeps running.

    Measured with KEDA v2.20.2: its Redis scaler pings when it is built, and KEDA rebuilds a
    failing scaler, so while Redis is down the HPA, without a metric, holds the current replica
    count; `fallback.replicas` did not engage here. How KEDA reports it depends on a race: a
    reconcile after the scalers were dropped sets ``Ready=False`` (ScaledObjectCheckFailed); one
    before (seen 2 s after the stop) finds the old scalers and leaves ``Ready=True``, and as each
    later poll fails while rebuilding the scalers, before it records their health, nothing changes
    the object again; only the first failure, ``health.<trigger>.status: Failing``, shows.
    """
    from loadgen.stack import LocalStack

    with LocalStack(RUN_DIR / "doomed-redis", redis_password=secrets.token_hex(16)) as doomed:
        doomed.start_redis()
        values = on_a_host_redis(release, doomed.redis_port, doomed.redis_password,
                                 {"cpu": None, "mixed": None, "io": {"autoscaling": {"minReplicaCount": 1}}})
        release.helm.install(release.chart, "doomed", values, namespace=release.namespace, timeout=120)
        name = "doomed-celery-autoscale-worker-io"
        try:
            wait_for(lambda: condition(release.get("scaledobject", name), "Ready").get("status") == "True", 90,
                     "doomed io Ready while its Redis answers")
            doomed.stop("redis")
            failing = wait_for(lambda: (so := release.get("scaledobject", name)) and reports_failure(so) and so,
                               180, "doomed io reports the failure",
                               explain=lambda: json.dumps(release.get("scaledobject", name).get("status", {}), default=str))
            assert "redis" in json.dumps(failing["status"]).lower() or condition(failing, "Fallback")["status"] == "True"
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                assert release.get("deployment", name)["spec"].get("replicas", 1) >= 1
                time.sleep(2)
            release.cluster.keda_alive()
        finally:
            release.helm.uninstall("doomed", timeout=60)


def test_helm_upgrade_of_concurrency_rolls_the_workers_and_keda_stays_in_control(idle, producer):
    release = idle
    before = release.get("deployment", worker("io"))
    release.upgrade({"queues": {"io": {"concurrency": 6}}})
    after = release.get("deployment", worker("io"))
    assert after["metadata"]["generation"] > before["metadata"]["generation"]
    args = after["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--concurrency=6" in args
    so = release.get("scaledobject", worker("io"))
    assert so["spec"]["advanced"]["scalingModifiers"]["target"] == "6"
    assert release.get("hpa", worker("io"))["spec"]["maxReplicas"] == 4
    results = [producer.send_task("tasks.io.transfer", kwargs={"size_bytes": 0, "wait_seconds": 20}, queue="io")
               for _ in range(12)]
    wait_for(lambda: release.replicas("io") == 2, 90, "io at ceil(12 / 6) = 2 replicas after the upgrade")
    for r in results:
        r.get(timeout=180)
    release.upgrade({})


def test_a_queue_whose_only_pod_dies_mid_task_is_scaled_up_again_and_the_task_completes(idle, producer):
    """A node lost under a busy pod: its container's processes SIGKILLed, the pod force-deleted. The
    task's in-flight entry keeps the queue at a replica; the reconciler gives its message back once
    the task's own time limit (3 s) plus the margin (1 s) are past and its worker does not answer a
    ping, long before the visibility timeout; the new pod runs it."""
    release = idle
    result = producer.send_task("tasks.io.transfer", kwargs={"size_bytes": 0, "wait_seconds": 8}, queue="io",
                                time_limit=3)  # the threads pool does not enforce it; the record does
    settings = release.settings()
    client = release.client()

    def running_on():  # this task in flight (not another test's leftover entry) and the io pods running
        # Running, not Ready: a new pod can take the task before its readiness probe passes.
        pods = [p["metadata"]["name"] for p in release.pods("app.kubernetes.io/component=worker,celery-autoscale/queue=io")
                if p["status"].get("phase") == "Running" and p["metadata"].get("deletionTimestamp") is None]
        return pods if client.zscore(in_flight_key("io", settings.key_prefix), result.id) is not None else []

    [pod] = wait_for(running_on, 120, "the task running on the only io pod", explain=lambda: release.explain("io"))
    os.kill(release.real_node.container_pid(pod, release.namespace), signal.SIGKILL)  # PID 1: all of them go
    release.kubectl("delete", "pod", pod, "--grace-period=0", "--force", "--wait=false")
    killed = time.monotonic()
    seen = set()
    while not result.ready() and time.monotonic() - killed < 180:
        seen.add(release.replicas("io"))
        time.sleep(0.5)
    outcome = result.get(timeout=1)
    assert outcome["worker"].split("@")[-1] != pod, "run again on a new pod"
    assert 0 not in seen, "never scaled to zero while the task was unfinished"
    print(f"task done {time.monotonic() - killed:.1f}s after its pod died (replicas seen {sorted(seen)})")
    wait_for(lambda: queue_backlog(release, "io") == 0 and release.replicas("io") == 0, 120, "io idle again",
             explain=lambda: release.explain("io"))


def test_a_users_own_app_in_its_own_image_scales_from_zero_on_a_prioritized_burst_and_loses_nothing(
        release, real_node, idle):
    """tests/plainapp, a Celery project that knows nothing of ours, in its own image (the project
    beside the runtime: tests/plainapp/Containerfile), installed as a user would: its image, its
    app path, a Celery queue name that is not a Kubernetes name, kombu's default priority lists, and
    a producer with Celery's defaults (no runtime). Its release has the chart's own Redis."""
    name = "plain"
    values = merge(CI_VALUES, {
        "image": {"repository": "localhost/celery-autoscale/plainapp", "tag": "test"},
        # The release's own Redis by its Service's name; the runtime adds the password (from its file).
        "celery": {"app": "myproject.celery:app", "resultBackend": f"redis://{name}-celery-autoscale-redis:6379/0"},
        "queues": {"cpu": None, "io": None, "mixed": None,
                   "reports": {"queue": "reports.daily", "concurrency": 2,
                               "resources": CI_VALUES["workerDefaults"]["resources"]}},
    })
    with placed(release.cluster, real_node, name, values, volumes={"plain-redis": "1Gi"}) as plain:
        deployment = f"{plain.fullname}-worker-reports"
        wait_for(lambda: condition(plain.get("scaledobject", deployment), "Ready").get("status") == "True", 180,
                 "plain reports ScaledObject Ready", explain=plain.scaling)
        # The Deployment omits spec.replicas (Kubernetes' default is 1); KEDA scales it to zero on a
        # later poll than the one that marks the ScaledObject Ready.
        wait_for(lambda: plain.deployment_replicas(deployment) == 0, 90, "reports idle at zero before the burst",
                 explain=plain.scaling)
        producer = Celery("web", broker=plain.redis_url, backend=plain.redis_url)
        results = [producer.send_task("myproject.daily_report", args=[f"day-{i}"], kwargs={"seconds": 4},
                                      queue="reports.daily", priority=i % 10) for i in range(12)]
        # 12 tasks over four kombu priority lists, listLength 2: 6 replicas, capped at 4.
        wait_for(lambda: plain.deployment_replicas(deployment) == 4, 120, "reports from 0 to maxReplicaCount 4",
                 explain=plain.scaling)
        assert sorted(r.get(timeout=240)["day"] for r in results) == sorted(f"day-{i}" for i in range(12))
        client = redis.Redis.from_url(plain.redis_url)
        assert [int(client.get(f"myproject:completed:{r.id}") or 0) for r in results] == [1] * 12  # none lost, none twice
        assert {p["spec"]["nodeName"] for p in plain.pods("app.kubernetes.io/component=worker")} <= {"real-node"}
        wait_for(lambda: plain.deployment_replicas(deployment) == 0, 120, "reports back to zero", explain=plain.scaling)


def test_a_scale_down_removes_idle_workers_first_with_pod_deletion_cost(idle, producer):
    """The reconciler keeps controller.kubernetes.io/pod-deletion-cost = running tasks per worker
    pod, with its own service account (its token mounted by the kubelet: the Role is really applied). Two rounds
    with it; one where it lost its RoleBinding (its patches are refused: scaling goes on without
    costs); one with the feature off in values, where the ReplicaSet removes the newer, busy pods."""
    release = idle
    rounds = {}
    try:
        release.upgrade({"queues": {"io": {"concurrency": 1}}})
        rounds["on"] = [scale_down_with_busy_and_idle_pods(release, producer) for _ in range(2)]
        release.kubectl("delete", "rolebinding", f"{release.fullname}-reconciler")
        rounds["denied"] = scale_down_with_busy_and_idle_pods(release, producer)
        logs = release.logs("app.kubernetes.io/component=reconciler")  # before the upgrade replaces its pod
        release.upgrade({"queues": {"io": {"concurrency": 1}}, "reconciler": {"deletionCost": {"enabled": False}}})
        rounds["off"] = scale_down_with_busy_and_idle_pods(release, producer)
    finally:
        release.upgrade({})
    print("busy pods removed on scale-down: " + json.dumps(rounds))
    assert all(r["busy_removed"] == 0 and len(r["removed"]) == 2 for r in rounds["on"])
    assert len(rounds["denied"]["removed"]) == 2, "refused patches never block a scale-down"
    assert "could not update pod deletion costs" in logs or "could not set the deletion cost" in logs
    assert rounds["off"]["busy_removed"] >= 1
