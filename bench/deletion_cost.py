"""Which pods a scale-down removes, with and without the reconciler's pod deletion cost; one JSON line.

    python -m bench.deletion_cost      # needs tools/e2e-cluster/build.sh to have built the binaries

Brings up the `make e2e` environment (release ``ci`` of values/ci.yaml on the real node) and runs the same round twice on `io` at
concurrency 1 (e2e_cluster.scenarios, ``scale_down_with_busy_and_idle_pods``): two tasks of 36 s on
two pods, two of 50 s on two newer pods, then the HPA scales 4 -> 2 when the first two end. For
each of ``deletion_cost`` and ``no_deletion_cost``:

- ``busy_removed``: removed pods that were running a task (their warm shutdown keeps it, but the
  pod stays terminating for the rest of it);
- ``pod_seconds``: seconds the io pods' processes ran over the round, terminating ones included
  (what the pods cost); ``terminating_seconds``: the part of it spent after SIGTERM;
- ``first_running_seconds``: from the first task sent to both first tasks running;
  ``dns_retried``: the pods that could not resolve Redis's name, when the round had to be run
  again (see the scenario).

Figures for the README, never asserted.
"""

from __future__ import annotations

import json
import platform

from e2e_cluster import environment, scale_down_with_busy_and_idle_pods, wait_for


def main() -> None:
    with environment() as release:
        producer = release.producer()
        figures = {}
        for mode, enabled in (("deletion_cost", True), ("no_deletion_cost", False)):
            release.upgrade({"queues": {"io": {"concurrency": 1}}, "reconciler": {"deletionCost": {"enabled": enabled}}})
            wait_for(lambda: release.replicas("io") == 0, 120, "io idle")
            figures[mode] = scale_down_with_busy_and_idle_pods(release, producer)
        print(json.dumps({"bench": "deletion_cost", **figures, "machine": platform.machine(),
                          "python": platform.python_version()}))


if __name__ == "__main__":
    main()
