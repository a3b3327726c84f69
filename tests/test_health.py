"""The probe: fresh heartbeat means healthy; a stopped worker turns unhealthy without any broadcast."""

import signal
import socket
import time

from helpers import eventually, run_module

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


def test_a_worker_that_stops_consuming_fails_its_probe_while_its_loop_still_runs(fresh_stack):
    """Tasks waiting beside idle processes for CELERY_STALL_SECONDS withhold the heartbeat."""
    name = fresh_stack.start_worker(WorkerSpec("io", "threads", concurrency=2), CELERY_STALL_SECONDS="3")
    heartbeat = str(fresh_stack.workdir / f"{name}.heartbeat")
    app = fresh_stack.producer()
    # What a consumer that lost its subscription looks like from outside: alive, timer running,
    # no longer taking messages (Celery's remote control cancels its consumer of "io").
    app.control.cancel_consumer("io", destination=[f"{name}@{socket.gethostname()}"], reply=True, timeout=5)
    app.send_task("tasks.io.transfer", kwargs={"size_bytes": 0, "wait_seconds": 0}, queue="io")
    eventually(lambda: run_module(fresh_stack, "celery_autoscale.health", "--file", heartbeat,
                                  "--max-age", "2").returncode == 1, 30, "probe failing")
    assert "heartbeat withheld: 1 tasks have waited in io" in (fresh_stack.workdir / f"{name}.log").read_text()
    assert fresh_stack.procs[name].poll() is None  # alive: only the probe can tell
