"""The e2e cluster: a real control plane, the real KEDA and a real node, with the chart installed.

What ``make e2e``'s tests, ``make report`` (bench/scaling_report.py), ``make bench-e2e`` and
``make demo-cluster`` stand on, imported by name (``from e2e_cluster import environment``); it is
installed editable from tools/e2e-cluster into the project's venv and never published.

- :func:`environment`: the control plane and KEDA (:mod:`.cluster`), the real node (:mod:`.node`)
  and release :data:`RELEASE` of values/ci.yaml on it, as a context manager yielding a
  :class:`CiRelease`.
- :func:`placed`: another release of the chart on the same node, in a namespace of its own.
- :func:`wait_for` and the other helpers of :mod:`.harness`: tests wait on observable state.

The binaries come from ``tools/e2e-cluster/build.sh`` (``make e2e-build``), the images from
``images/build.sh`` (``make image``).
"""

from .cluster import KubectlError
from .harness import (CI_VALUES, KUBECONFIG, NAMESPACE, QUEUES, RELEASE, ROOT, RUN_DIR, condition, merge,
                      pod_seconds, queue_backlog, wait_for, worker)
from .node import GATEWAY, PLACEMENT
from .releases import CiRelease, PlacedRelease, PodEvents, environment, placed
from .scenarios import scale_down_with_busy_and_idle_pods

__all__ = [
    "CI_VALUES", "GATEWAY", "KUBECONFIG", "NAMESPACE", "PLACEMENT", "QUEUES", "RELEASE", "ROOT", "RUN_DIR",
    "CiRelease", "KubectlError", "PlacedRelease", "PodEvents", "condition", "environment", "merge", "placed",
    "pod_seconds", "queue_backlog", "scale_down_with_busy_and_idle_pods", "wait_for", "worker",
]
