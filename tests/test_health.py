"""The probe: fresh heartbeat means healthy; a stopped worker turns unhealthy without any broadcast."""

import signal
import time

from helpers import run_module

from loadgen.stack import WorkerSpec


def test_heartbeat_probe_follows_the_worker(fresh_stack):
    name = fresh_stack.start_worker(WorkerSpec("io", "threads", concurrency=1))
    heartbeat = str(fresh_stack.workdir / f"{name}.heartbeat")
    healthy = run_module(fresh_stack, "celery_autoscale.health", "--file", heartbeat, "--max-age", "5")
    assert healthy.returncode == 0 and healthy.stdout.startswith("healthy")

    fresh_stack.signal(name, signal.SIGSTOP)  # a hung worker: alive, but its loop does not run
    try:
        time.sleep(3)
        stale = run_module(fresh_stack, "celery_autoscale.health", "--file", heartbeat, "--max-age", "2")
        assert stale.returncode == 1 and "last heartbeat" in stale.stderr
    finally:
        fresh_stack.signal(name, signal.SIGCONT)

    missing = run_module(fresh_stack, "celery_autoscale.health", "--file", heartbeat + ".none")
    assert missing.returncode == 1 and "no heartbeat file" in missing.stderr
