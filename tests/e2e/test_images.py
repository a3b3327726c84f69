"""The images `make image` builds run the chart's own commands under the chart's own security
context, as real containers (podman with runc): the app image as a worker, as uid 10001 with a
read-only root filesystem and no capabilities, against the Redis stand-in running the chart's Redis
command with its password from a mounted file. Tasks are counted; SIGTERM is a warm shutdown.

The kubelet's part (probes, Secrets, DNS, grace periods) is issue 18's real node; this is the
image's contract, which holds whatever runs it.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
import uuid

import pytest
import redis
from celery import Celery
from loadgen.stack import free_port

from tests.chart import by_kind, render_chart

pytestmark = pytest.mark.e2e

PODMAN = ["podman", "--runtime", "runc"]
# This machine's hard limits are below podman's defaults (images/build.sh).
LIMITS = ["--ulimit", "nofile=16384:16384", "--ulimit", "nproc=16384:16384"]
REDIS_STANDIN = "localhost/celery-autoscale/redis-standin:bookworm"


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    done = subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: {done.stderr.strip()}")
    return done


def security_flags(pod: dict, container: dict) -> list[str]:
    """podman flags for the chart's pod and container securityContext (the parts a runtime applies)."""
    pod_sc, sc = pod.get("securityContext", {}), container.get("securityContext", {})
    flags = ["--user", f"{pod_sc['runAsUser']}:{pod_sc['runAsGroup']}", "--group-add", str(pod_sc["fsGroup"])]
    if sc.get("readOnlyRootFilesystem"):
        flags.append("--read-only")
    flags += [f"--cap-drop={c}" for c in sc.get("capabilities", {}).get("drop", [])]
    if sc.get("allowPrivilegeEscalation") is False:
        flags += ["--security-opt", "no-new-privileges"]
    assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault"  # podman's default profile
    return flags


@pytest.fixture
def network():
    name = f"ca-images-{uuid.uuid4().hex[:8]}"
    for attempt in range(5):
        # podman picks a free subnet from the host's routes and looks up each route's interface: a pod's
        # veth that the real node removes meanwhile fails that ("route ip+net: no such network interface").
        done = podman("network", "create", name, check=attempt == 4)
        if done.returncode == 0:
            break
        print(f"podman network create: {done.stderr.strip()}; again")
        time.sleep(2)
    containers: list[str] = []
    try:
        yield name, containers
    finally:
        for c in containers:
            podman("rm", "-f", "-t", "0", c, check=False)
        podman("network", "rm", "-f", name, check=False)


@pytest.mark.parametrize("auth", [True, False], ids=["password", "no-password"])
def test_the_app_image_runs_the_charts_worker_as_10001_read_only_against_the_redis_stand_in(network, tmp_path, auth):
    """Without a password, the chart's Redis command still serves clients that are not on its
    loopback (Debian's redis-server keeps protected mode on; the official image builds it off)."""
    net, containers = network
    objects = render_chart({"redis": {"image": {"repository": REDIS_STANDIN.rsplit(":", 1)[0], "tag": "bookworm"},
                                      "auth": {"enabled": auth}}})
    redis_set = next(iter(by_kind(objects, "StatefulSet").values()))
    worker = next(d for n, d in by_kind(objects, "Deployment").items() if n.endswith("worker-io"))
    config = next(iter(by_kind(objects, "ConfigMap").values()))["data"]
    for ref in {c["image"] for o in (redis_set, worker) for c in o["spec"]["template"]["spec"]["containers"]}:
        assert podman("image", "exists", ref, check=False).returncode == 0, f"{ref} is missing: run `make image`"

    # The Secret's file, as the kubelet mounts it: mode 0440 (defaultMode 288), group fsGroup.
    password = secrets.token_urlsafe(12) + "$'\"`!"
    secret = tmp_path / "password"
    secret.write_text(password)
    secret.chmod(0o440)
    os.chown(secret, 0, redis_set["spec"]["template"]["spec"]["securityContext"]["fsGroup"])

    pod, [rc] = redis_set["spec"]["template"]["spec"], redis_set["spec"]["template"]["spec"]["containers"]
    port = free_port()
    host = config["CELERY_BROKER_URL"].split("//", 1)[1].split(":", 1)[0]  # the Service name the workers use
    redis_name = f"{net}-redis"
    podman("run", "-d", "--name", redis_name, "--network", net, "--network-alias", host, *LIMITS,
           *security_flags(pod, rc), "--tmpfs", "/data:rw,mode=1777", "--tmpfs", "/tmp:rw,mode=1777",
           "-v", f"{secret}:/etc/redis-auth/password:ro", "-p", f"127.0.0.1:{port}:{rc['ports'][0]['containerPort']}",
           rc["image"], *rc["command"], *rc["args"])
    containers.append(redis_name)
    client = redis.Redis(port=port, password=password if auth else None)
    deadline = time.monotonic() + 30
    while True:
        try:
            if client.ping():
                break
        except redis.RedisError:
            if time.monotonic() > deadline:
                raise AssertionError(podman("logs", redis_name, check=False).stderr)
            time.sleep(0.3)
    # The chart's readiness probe passes inside the container.
    probe = rc["readinessProbe"]["exec"]["command"]
    assert podman("exec", redis_name, *probe, check=False).returncode == 0

    wpod, [wc] = worker["spec"]["template"]["spec"], worker["spec"]["template"]["spec"]["containers"]
    env = {**config, **{e["name"]: e["value"] for e in wc["env"] if "value" in e}}
    worker_name = f"{net}-worker"
    podman("run", "-d", "--name", worker_name, "--network", net, *LIMITS, *security_flags(wpod, wc),
           "--tmpfs", "/tmp:rw,mode=1777", "-v", f"{secret}:/etc/celery-autoscale/redis-auth/password:ro",
           *[f"--env={k}={v}" for k, v in env.items()], wc["image"], *wc["command"], *wc["args"])
    containers.append(worker_name)

    producer = Celery("images", broker=f"redis://:{password}@127.0.0.1:{port}/0" if auth else f"redis://127.0.0.1:{port}/0")
    sent = [producer.send_task("tasks.io.transfer", kwargs={"size_bytes": 0, "wait_seconds": 0.1}, queue="io")
            for _ in range(20)]
    probe = wc["readinessProbe"]["exec"]["command"]
    deadline = time.monotonic() + 60
    while podman("exec", worker_name, *probe, check=False).returncode != 0:
        assert time.monotonic() < deadline, podman("logs", worker_name, check=False).stderr[-3000:]
        time.sleep(1)
    deadline = time.monotonic() + 60
    while client.llen("io") or client.hlen("unacked"):
        assert time.monotonic() < deadline, podman("logs", worker_name, check=False).stderr[-3000:]
        time.sleep(0.5)
    logs = podman("logs", worker_name).stderr
    succeeded = [r.id for r in sent if f"[{r.id}] succeeded" in logs]
    assert len(succeeded) == 20, logs[-3000:]

    # The kubelet's SIGTERM: a warm shutdown, exit 0, well within the grace period.
    podman("stop", "-t", str(wpod["terminationGracePeriodSeconds"]), worker_name)
    state = json.loads(podman("inspect", worker_name).stdout)[0]["State"]
    assert state["ExitCode"] == 0, podman("logs", worker_name, check=False).stderr[-3000:]
