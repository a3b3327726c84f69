"""Prometheus metrics of a worker, correct under the prefork pool.

Task counters and histograms are written by the pool processes in prometheus-client's
multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, see prometheus-client's "Multiprocess Mode"
docs); the worker's main process serves them, summed over its processes, together with a
backlog gauge it computes at scrape time from Redis. This module is imported only by a worker
(from its ``worker_init`` signal, before the pool forks).

Metrics (``queue`` is the Celery queue name):

- ``celery_autoscale_tasks_total{queue,task,state}``: task runs ended, by Celery state
  (``success``, ``failure``, ``retry``).
- ``celery_autoscale_task_runtime_seconds{queue,task}``: histogram of run times.
- ``celery_autoscale_queue_wait_seconds{queue}``: histogram of start minus publish time.
- ``celery_autoscale_backlog_tasks{queue,part}``: the backlog KEDA sees, ``part`` being
  ``queued`` (every priority list) or ``in_flight``.
"""

from __future__ import annotations

import glob
import logging
import os
import tempfile

# prometheus-client picks its value class when it is first imported: the folder must be set now.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="celery-metrics-"))

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server  # noqa: E402
from prometheus_client.core import GaugeMetricFamily  # noqa: E402
from prometheus_client.multiprocess import MultiProcessCollector  # noqa: E402

from . import backlog  # noqa: E402

logger = logging.getLogger(__name__)

#: Buckets (seconds) spanning sub-second I/O tasks to half-hour batch work.
BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 1800)

TASKS = Counter(
    "celery_autoscale_tasks", "Task runs ended, by state.", ["queue", "task", "state"]
)
RUNTIME = Histogram(
    "celery_autoscale_task_runtime_seconds", "Task run time.", ["queue", "task"], buckets=BUCKETS
)
QUEUE_WAIT = Histogram(
    "celery_autoscale_queue_wait_seconds",
    "Time from publish to start of a task run.",
    ["queue"],
    buckets=BUCKETS,
)


def reset() -> None:
    """Create the folder, and delete the files of earlier runs (an emptyDir outlives a restart)."""
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)
    for path in glob.glob(os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], "*.db")):
        os.remove(path)


class BacklogCollector:
    """Reads each queue's backlog from Redis when Prometheus scrapes."""

    def __init__(self, settings, queues, client):
        self.settings, self.queues, self.client = settings, queues, client

    def collect(self):
        family = GaugeMetricFamily(
            "celery_autoscale_backlog_tasks",
            "Tasks waiting in every priority list of a queue, and running.",
            labels=["queue", "part"],
        )
        for queue in self.queues:
            try:
                found = backlog.backlog(self.client, queue, self.settings)
            except Exception as exc:  # a scrape must not fail because Redis blinked
                logger.warning("backlog of %s unavailable: %s", queue, type(exc).__name__)
                continue
            family.add_metric([queue, "queued"], found.queued)
            family.add_metric([queue, "in_flight"], found.in_flight)
        yield family


def serve(settings, queues, client) -> None:
    """Serve ``/metrics`` on ``settings.metrics_port`` (all interfaces) in a daemon thread."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    registry.register(BacklogCollector(settings, queues, client))
    start_http_server(settings.metrics_port, registry=registry)
    logger.info("metrics on port %d for queues %s", settings.metrics_port, ",".join(queues))
