"""Prometheus metrics of a worker, correct under the prefork pool.

Task counters and histograms are written by the pool processes in prometheus-client's
multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``; prometheus-client docs, "Multiprocess Mode");
the worker's main process serves them, summed over its processes, with a backlog gauge read
from Redis at scrape time. :class:`Metrics` is made by the worker's ``worker_init`` handler,
before the pool forks; importing this module changes nothing.

Metrics (``queue`` is the Celery queue name):

- ``celery_autoscale_tasks_total{queue,task,state}``: task runs ended, by Celery state
  (``success``, ``failure``, ``retry``).
- ``celery_autoscale_task_runtime_seconds{queue,task}``: histogram of run times.
- ``celery_autoscale_queue_wait_seconds{queue}``: histogram of start minus publish time (for
  messages that carry the ``published_at`` header the runtime stamps).
- ``celery_autoscale_backlog_tasks{queue,part}``: the backlog KEDA sees, ``part`` being
  ``queued`` (every priority list), ``in_flight`` or ``reserved`` (held for an ETA).
"""

from __future__ import annotations

import glob
import logging
import os
import tempfile

from . import _backlog

__all__ = ["BUCKETS", "Metrics"]

logger = logging.getLogger(__name__)

#: Buckets (seconds) spanning sub-second I/O tasks to half-hour batch work.
BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 1800)


class Metrics:
    """The worker's metric objects, in multiprocess mode.

    Uses ``PROMETHEUS_MULTIPROC_DIR`` when set (the chart sets it), else a new temporary
    folder; the folder's ``*.db`` files of an earlier run are deleted (an emptyDir outlives
    a container restart).
    """

    def __init__(self):
        folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(prefix="celery-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder  # read by prometheus-client in every process
        os.makedirs(folder, exist_ok=True)
        for path in glob.glob(os.path.join(folder, "*.db")):
            os.remove(path)
        from prometheus_client import Counter, Histogram, values

        # prometheus-client picks its value class when first imported, perhaps by the user's
        # app before the folder was known: pick it again now.
        values.ValueClass = values.get_value_class()
        self.tasks = Counter("celery_autoscale_tasks", "Task runs ended, by state.",
                             ["queue", "task", "state"], registry=None)
        self.runtime = Histogram("celery_autoscale_task_runtime_seconds", "Task run time.",
                                 ["queue", "task"], buckets=BUCKETS, registry=None)
        self.queue_wait = Histogram("celery_autoscale_queue_wait_seconds",
                                    "Time from publish to start of a task run.", ["queue"],
                                    buckets=BUCKETS, registry=None)

    def serve(self, settings, queues: list[str], client) -> None:
        """Serve ``/metrics`` on ``settings.metrics_port`` (all interfaces) in a daemon thread."""
        from prometheus_client import CollectorRegistry, start_http_server
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        registry.register(BacklogCollector(settings, queues, client))
        start_http_server(settings.metrics_port, registry=registry)
        logger.info("metrics on port %d for queues %s", settings.metrics_port, ",".join(queues))


class BacklogCollector:
    """Reads each queue's backlog from Redis when Prometheus scrapes."""

    def __init__(self, settings, queues, client):
        self.settings, self.queues, self.client = settings, queues, client

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        family = GaugeMetricFamily("celery_autoscale_backlog_tasks",
                                   "Tasks waiting in every priority list of a queue, and running.",
                                   labels=["queue", "part"])
        for queue in self.queues:
            try:
                found = _backlog.backlog(self.client, queue, self.settings)
            except Exception as exc:  # a scrape must not fail because Redis blinked
                logger.warning("backlog of %s unavailable: %s", queue, type(exc).__name__)
                continue
            family.add_metric([queue, "queued"], found.queued)
            family.add_metric([queue, "in_flight"], found.in_flight)
            family.add_metric([queue, "reserved"], found.reserved)
        yield family
