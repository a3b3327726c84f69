"""Autoscaling on a real control plane with the real KEDA, closed by real workers (`make e2e`).

values/ci.yaml: cpu concurrency 1, io 4, mixed 2 (so listLength 1, 4 and 2); maxReplicaCount 4;
pollingInterval 2 s, cooldownPeriod 10 s, scale-down stabilization window 5 s; HPA sync 2 s.
"""

from __future__ import annotations

import datetime
import json
import time

import pytest
from tests.e2e.harness import (CI_VALUES, KUBECONFIG, NAMESPACE, QUEUES, ROOT, merge, queue_backlog,
                               scale_down_with_busy_and_idle_pods, wait_for, worker)

from celery_autoscale import backlog
from celery_autoscale.keys import in_flight_key

pytestmark = [pytest.mark.e2e, pytest.mark.k8s(provider="external", k8s_kubeconfig=str(KUBECONFIG))]


def condition(obj: dict, kind: str) -> dict:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == kind), {})


def test_install_makes_every_scaledobject_ready_with_one_hpa_each(release, kube):
    for queue in QUEUES:
        scaled = wait_for(lambda: (so := release.get("scaledobject", worker(queue)))
                          and condition(so, "Ready").get("status") == "True" and so, 120, f"{queue} ScaledObject Ready")
        assert scaled["spec"]["scaleTargetRef"]["name"] == worker(queue)
    hpas = kube.kubectl(["get", "hpa", "-n", NAMESPACE])["items"]
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

    # Drain: the bridged workers finish every task, even those on pods removed while busy.
    for r in results:
        assert r.get(timeout=300)["queue"] == "cpu"
    wait_for(lambda: release.replicas("cpu") == 0, 120, "cpu back to minReplicaCount 0 after the cooldown",
             explain=lambda: release.explain("cpu"))
    stopped = [e for e in release.bridge.events if e[1].startswith(worker("cpu")) and e[2] == "sigterm"]
    assert stopped, "pods were removed on scale-down"
    assert all(queue_backlog(release, q) == 0 for q in QUEUES)


def test_running_tasks_keep_a_queue_from_scaling_to_zero(idle, producer):
    release = idle
    results = [producer.send_task("tasks.mixed.pipeline", kwargs={"work_units": 1000, "size_bytes": 0,
                                                                   "wait_seconds": 30}, queue="mixed")
               for _ in range(2)]
    settings = release.settings()
    wait_for(lambda: backlog(release.redis.client(), "mixed", settings).in_flight == 2, 60,
             "both tasks running")
    assert backlog(release.redis.client(), "mixed", settings).queued == 0
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


def test_a_wrong_redis_address_is_a_condition_not_a_crash_and_the_others_keep_scaling(idle, producer):
    """A second release of the chart with a wrong Redis address: KEDA cannot build its scalers and
    says so on the ScaledObject; KEDA keeps running and the first release keeps scaling."""
    release = idle
    values = merge(CI_VALUES, {"redis": {"external": {"port": 1}}, "queues": {"cpu": None, "mixed": None}})
    release.helm.install(release.chart, "broken", values, namespace=NAMESPACE, timeout=120)
    try:
        broken = wait_for(lambda: (so := release.get("scaledobject", "broken-celery-autoscale-worker-io"))
                          and condition(so, "Ready").get("status") == "False" and so, 90, "broken io not Ready")
        ready = condition(broken, "Ready")
        assert ready["reason"] == "ScaledObjectCheckFailed" and "redis" in ready["message"].lower(), ready
        release.cluster.keda_alive()
        results = [producer.send_task("tasks.cpu.hash_chain", kwargs={"work_units": 10_000}, queue="cpu")
                   for _ in range(3)]
        wait_for(lambda: release.replicas("cpu") >= 1, 60, "the healthy release's cpu still scales")
        for r in results:
            r.get(timeout=120)
    finally:
        release.helm.uninstall("broken", timeout=60)


def test_a_redis_that_stops_answering_is_reported_and_never_scales_workers_away(idle):
    """A release whose Redis goes away: KEDA reports the failure and the workers keep their
    replicas (never scaled to zero on a backlog nobody can read); KEDA keeps running.

    Measured with KEDA v2.20.2: its Redis scaler pings when it is built, and KEDA rebuilds a
    failing scaler, so while Redis is down the ScaledObject is not Ready and the HPA, without a
    metric, holds the current replica count; `fallback.replicas` did not engage here.
    """
    from loadgen.stack import LocalStack

    release = idle
    with LocalStack(release.redis.workdir.parent / "doomed-redis", redis_password=release.redis.redis_password) as doomed:
        doomed.start_redis()
        values = merge(CI_VALUES, {"redis": {"external": {"port": doomed.redis_port}},
                                   "queues": {"cpu": None, "mixed": None,
                                              "io": {"autoscaling": {"minReplicaCount": 1}}}})
        release.helm.install(release.chart, "doomed", values, namespace=NAMESPACE, timeout=120)
        name = "doomed-celery-autoscale-worker-io"
        try:
            wait_for(lambda: condition(release.get("scaledobject", name), "Ready").get("status") == "True", 90,
                     "doomed io Ready while its Redis answers")
            doomed.stop("redis")
            failing = wait_for(lambda: (so := release.get("scaledobject", name))
                               and (condition(so, "Ready").get("status") == "False"
                                    or condition(so, "Fallback").get("status") == "True") and so,
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
    """A node lost under a busy pod: its process SIGKILLed, the pod deleted. The task's in-flight
    entry keeps the queue at a replica; the reconciler (bridged like the workers) gives its message
    back once the task's own time limit (3 s) plus the margin (1 s) are past and its worker does
    not answer a ping, long before the visibility timeout; the new pod runs it."""
    import os
    import signal

    release = idle
    result = producer.send_task("tasks.io.transfer", kwargs={"size_bytes": 0, "wait_seconds": 8}, queue="io",
                                time_limit=3)  # the threads pool does not enforce it; the record does
    settings = release.settings()
    client = release.redis.client()

    def running_on():  # this task in flight (not another test's leftover entry) and the io pods' processes
        pods = [(p, pid) for p, pid in release.bridge.processes().items() if p.startswith(worker("io"))]
        return pods if client.zscore(in_flight_key("io", settings.key_prefix), result.id) is not None else []

    [(pod, pid)] = wait_for(running_on, 120, "the task running on the only io pod")
    os.killpg(pid, signal.SIGKILL)
    release.cluster.kubectl("delete", "pod", pod, "-n", NAMESPACE, "--grace-period=0", "--force", "--wait=false")
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


def test_a_redis_crash_during_a_burst_loses_nothing_and_keda_and_the_workers_recover(idle, producer):
    """Redis SIGKILLed (its append-only file kept, as on the chart's volume) while io scales up
    under 12 tasks, back 5 s later: every task succeeds, nothing is left unacknowledged, the
    ScaledObject is Ready again and the queue scales back to zero."""
    import signal

    from celery import Celery

    release = idle
    mark = len(release.bridge.events)
    results = [producer.send_task("tasks.io.transfer", kwargs={"size_bytes": 0, "wait_seconds": 6}, queue="io")
               for _ in range(12)]
    wait_for(lambda: release.replicas("io") >= 2, 90, "io scaling up")
    release.redis.restart_redis(5, signal.SIGKILL)
    back = time.monotonic()
    # A fresh client: the producer's result connection died with Redis.
    reader = Celery("reader", broker=release.redis.broker_url, backend=release.redis.broker_url)
    wait_for(lambda: [reader.AsyncResult(r.id).state for r in results] == ["SUCCESS"] * 12, 300,
             "all 12 tasks succeeded", explain=lambda: release.explain("io"))
    print(f"all 12 done {time.monotonic() - back:.1f}s after Redis was back")
    wait_for(lambda: condition(release.get("scaledobject", worker("io")), "Ready").get("status") == "True", 120,
             "io ScaledObject Ready again")
    wait_for(lambda: queue_backlog(release, "io") == 0 and release.replicas("io") == 0, 180, "io idle again",
             explain=lambda: release.explain("io"))
    assert release.redis.client().hlen("unacked") == 0
    assert not [e for e in release.bridge.events[mark:] if e[2].startswith("crashed")], "no worker crashed"


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
        release.helm.install(release.chart, "sentinel", values, namespace=NAMESPACE, timeout=120)
        name = "sentinel-celery-autoscale-worker-io"

        try:
            wait_for(lambda: condition(release.get("scaledobject", name), "Ready").get("status") == "True", 90,
                     "sentinel io ScaledObject Ready")
            wait_for(lambda: release.deployment_replicas(name) == 0, 90, "sentinel io idle at zero")
            producer = Celery("web", broker=cluster.url)
            producer.conf.update(broker_transport_options={"master_name": MASTER}, broker_password=PASSWORD)
            sent = [producer.send_task("tasks.io.transfer", kwargs={"size_bytes": 0, "wait_seconds": 4}, queue="io",
                                       priority=i % 10) for i in range(12)]
            # 12 tasks over kombu's priority lists, listLength 4 (io concurrency): 3 replicas.
            wait_for(lambda: release.deployment_replicas(name) >= 3, 120, "sentinel io scaled up to 3",
                     explain=lambda: json.dumps(release.get("scaledobject", name).get("status", {}), default=str))
            master = cluster.client("primary")
            wait_for(lambda: all(master.exists(run_record_key(r.id)) for r in sent), 180, "all 12 tasks ran",
                     explain=lambda: f"{sum(master.exists(run_record_key(r.id)) for r in sent)} of 12 ran")
            wait_for(lambda: release.deployment_replicas(name) == 0, 120, "sentinel io back to zero")
        finally:
            release.helm.uninstall("sentinel", timeout=60)
            release.cluster.kubectl("delete", "secret", "sentinel-redis", "-n", NAMESPACE)


def test_a_users_own_app_scales_from_zero_on_a_prioritized_burst_and_loses_nothing(idle):
    """tests/plainapp, a Celery project that knows nothing of ours, installed as a user would:
    its app path, a Celery queue name that is not a Kubernetes name, kombu's default priority
    lists, and a producer with Celery's defaults (no runtime)."""
    from celery import Celery

    release = idle
    values = merge(CI_VALUES, {
        "celery": {"app": "myproject.celery:app", "resultBackend": "redis://127.0.0.1:16379/0",
                   # In a cluster the user's image holds this code; the bridged workers run on this host.
                   "extraEnv": [{"name": "PYTHONPATH", "value": str(ROOT / "tests" / "plainapp")}]},
        "queues": {"cpu": None, "io": None, "mixed": None, "reports": {"queue": "reports.daily", "concurrency": 2}},
    })
    release.helm.install(release.chart, "plain", values, namespace=NAMESPACE, timeout=120)
    name = "plain-celery-autoscale-worker-reports"

    try:
        wait_for(lambda: condition(release.get("scaledobject", name), "Ready").get("status") == "True", 90,
                 "plain reports ScaledObject Ready")
        # The Deployment omits spec.replicas (Kubernetes' default is 1); KEDA scales it to zero on a
        # later poll than the one that marks the ScaledObject Ready.
        wait_for(lambda: release.deployment_replicas(name) == 0, 90, "reports idle at zero before the burst")
        producer = Celery("web", broker=release.redis.broker_url, backend=release.redis.broker_url)
        results = [producer.send_task("myproject.daily_report", args=[f"day-{i}"], kwargs={"seconds": 4},
                                      queue="reports.daily", priority=i % 10) for i in range(12)]
        # 12 tasks over four kombu priority lists, listLength 2: 6 replicas, capped at 4.
        wait_for(lambda: release.deployment_replicas(name) == 4, 120, "reports from 0 to maxReplicaCount 4",
                 explain=lambda: json.dumps(release.get("scaledobject", name).get("status", {}), default=str))
        assert sorted(r.get(timeout=240)["day"] for r in results) == sorted(f"day-{i}" for i in range(12))
        client = release.redis.client()
        assert [int(client.get(f"myproject:completed:{r.id}") or 0) for r in results] == [1] * 12  # none lost, none twice
        wait_for(lambda: release.deployment_replicas(name) == 0, 120, "reports back to zero")
    finally:
        release.helm.uninstall("plain", timeout=60)


def test_a_scale_down_removes_idle_workers_first_with_pod_deletion_cost(idle, producer):
    """The reconciler keeps controller.kubernetes.io/pod-deletion-cost = running tasks per worker
    pod, with its own service account (a bridged token: the Role is really applied). Two rounds
    with it; one where it lost its RoleBinding (its patches are refused: scaling goes on without
    costs); one with the feature off in values, where the ReplicaSet removes the newer, busy pods."""
    release = idle
    rounds = {}
    try:
        release.upgrade({"queues": {"io": {"concurrency": 1}}})
        rounds["on"] = [scale_down_with_busy_and_idle_pods(release, producer) for _ in range(2)]
        release.cluster.kubectl("delete", "rolebinding", "ci-celery-autoscale-reconciler", "-n", NAMESPACE)
        rounds["denied"] = scale_down_with_busy_and_idle_pods(release, producer)
        release.upgrade({"queues": {"io": {"concurrency": 1}}, "reconciler": {"deletionCost": {"enabled": False}}})
        rounds["off"] = scale_down_with_busy_and_idle_pods(release, producer)
    finally:
        release.upgrade({})
    print("busy pods removed on scale-down: " + json.dumps(rounds))
    assert all(r["busy_removed"] == 0 and len(r["removed"]) == 2 for r in rounds["on"])
    assert len(rounds["denied"]["removed"]) == 2, "refused patches never block a scale-down"
    logs = "".join(p.read_text() for p in (release.bridge.workdir).glob("ci-celery-autoscale-reconciler-*/container.log"))
    assert "could not update pod deletion costs" in logs or "could not set the deletion cost" in logs
    assert rounds["off"]["busy_removed"] >= 1
