"""Small helpers the tests share: run the CLIs as real subprocesses, read metrics and results."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def run_module(stack, module: str, *args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    """``python -m module args`` with ``stack``'s broker in the environment."""
    return subprocess.run([sys.executable, "-m", module, *args], env=stack.process_env(**env),
                          capture_output=True, text=True, timeout=timeout)


def loadgen_json(stack, *args: str, **env: str) -> dict:
    """Run ``python -m loadgen ... --json`` and return its summary (the last stdout line)."""
    done = run_module(stack, "loadgen", *args, "--json", **env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """Samples of a /metrics page: ``{(name, sorted label items): value}``."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def succeeded_by_queue(samples: dict) -> dict[str, float]:
    """``celery_autoscale_tasks_total{state="success"}`` summed per queue."""
    out: dict[str, float] = {}
    for (name, labels), value in samples.items():
        labels = dict(labels)
        if name == "celery_autoscale_tasks_total" and labels["state"] == "success":
            out[labels["queue"]] = out.get(labels["queue"], 0) + value
    return out


def result_states(client) -> dict[str, int]:
    """How many task results of each state the Redis result backend holds."""
    counts: dict[str, int] = {}
    for key in client.scan_iter("celery-task-meta-*", count=1000):
        raw = client.get(key)
        if raw:
            state = json.loads(raw)["status"]
            counts[state] = counts.get(state, 0) + 1
    return counts


def eventually(check, timeout: float, what: str, interval: float = 0.2):
    """Poll ``check()`` until it returns a truthy value, which is returned; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what}: still {last!r} after {timeout}s")


def wait_started(app, count: int, timeout: float = 30) -> int:
    """Wait until Celery's ``inspect active`` (through ``app``'s broker) lists at least ``count`` tasks
    started in a pool process; return how many. The in-flight record starts when a worker takes a
    task's message, a moment before its process starts it; a test that stops the worker mid-task
    waits for this."""
    def started():
        active = app.control.inspect(timeout=0.5).active() or {}
        return sum(len(tasks) for tasks in active.values()) >= count and sum(len(t) for t in active.values())

    return eventually(started, timeout, f"{count} tasks started")


def producer(stack, **conf):
    """``stack``'s plain producer app (:meth:`loadgen.stack.LocalStack.producer`)."""
    return stack.producer(**conf)


def settings(stack, **conf):
    """The runtime's settings of a :func:`producer` for ``stack``."""
    import celery_autoscale

    return celery_autoscale.settings_of(stack.producer(**conf))
