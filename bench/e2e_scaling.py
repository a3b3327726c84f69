"""Scaling figures on the real control plane with the real KEDA; prints one JSON line.

    python bench/e2e_scaling.py      # needs tests/e2e/build.sh to have built the binaries

Brings up the same environment as `make e2e` (values/ci.yaml: pollingInterval 2 s,
cooldownPeriod 10 s, scale-down stabilization window 5 s, HPA sync 2 s) and measures on the
`io` queue (concurrency 4, so listLength 4; maxReplicaCount 4):

- ``burst_to_target_s``: from publishing 16 tasks of 20 s to the Deployment asking for
  ceil(16 / 4) = 4 replicas, and ``burst_to_workers_s`` to 4 bridged workers running;
- ``empty_to_min_s``: from the backlog (lists and in-flight) reaching 0 to 0 replicas;
- ``thrash_scale_events``: replica changes during ``python -m loadgen oscillate`` (square wave,
  4 ± 4 tasks/s, 40 s period, 120 s) against ``oscillate_periods`` periods; two changes per
  period is the no-thrash ideal.

Timings are figures for the README, never asserted: they depend on the machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))

from harness import environment, wait_for  # noqa: E402

from celery_autoscale import backlog  # noqa: E402


def main() -> None:
    with environment() as release:
        settings = release.settings()
        client = release.redis.client()
        producer = release.producer()
        wait_for(lambda: release.replicas("io") == 0, 120, "io idle")

        sent = time.monotonic()
        results = [producer.send_task("tasks.io.transfer", kwargs={"size_bytes": 0, "wait_seconds": 20}, queue="io")
                   for _ in range(16)]
        wait_for(lambda: release.replicas("io") == 4, 120, "io at 4 replicas", interval=0.2)
        burst_to_target = time.monotonic() - sent
        wait_for(lambda: sum(1 for p in release.bridge.processes() if "worker-io" in p) == 4, 120,
                 "4 io workers", interval=0.2)
        burst_to_workers = time.monotonic() - sent
        for r in results:
            r.get(timeout=300)
        wait_for(lambda: backlog(client, "io", settings).total == 0, 60, "io backlog empty", interval=0.2)
        emptied = time.monotonic()
        wait_for(lambda: release.replicas("io") == 0, 300, "io back to 0", interval=0.5)
        empty_to_min = time.monotonic() - emptied

        duration, period = 120, 40
        load = subprocess.Popen([sys.executable, "-m", "loadgen", "oscillate", "--queues", "io", "--rate", "4",
                                 "--amplitude", "4", "--period", str(period), "--duration", str(duration),
                                 "--wave", "square", "--size-bytes", "0", "--wait-seconds", "5", "--json"],
                                env=release.redis.process_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True)
        changes, last = 0, release.replicas("io")
        while load.poll() is None:
            now = release.replicas("io")
            changes += now != last
            last = now
            time.sleep(0.5)
        summary = json.loads(load.stdout.read().strip().splitlines()[-1])
    print(json.dumps({
        "benchmark": "e2e_scaling",
        "queue": "io",
        "burst_to_target_s": round(burst_to_target, 1),
        "burst_to_workers_s": round(burst_to_workers, 1),
        "empty_to_min_s": round(empty_to_min, 1),
        "thrash_scale_events": changes,
        "oscillate_periods": duration // period,
        "oscillate_sent": summary["submitted"],
    }))


if __name__ == "__main__":
    main()
