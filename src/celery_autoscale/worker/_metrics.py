"""The worker's own metrics: task counters and histograms written by every pool process, and its heartbeat.

Task counters and histograms are written by the pool processes in prometheus-client's
multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``; prometheus-client docs, "Multiprocess Mode");
the worker's main process serves them, summed over its processes, beside the backlog of its
queues (:mod:`celery_autoscale._metrics` lists every series). :class:`Metrics` is made by the
worker's ``worker_init`` handler, before the pool forks; importing this module imports nothing of
prometheus-client.
"""

from __future__ import annotations

import glob
import logging
import os
import tempfile

from .._metrics import BUCKETS, BacklogCollector, serve

__all__ = ["HeartbeatCollector", "Metrics"]

logger = logging.getLogger(__name__)


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
        self._children: dict[tuple, object] = {}

    def labelled(self, metric: str, *values: str):
        """``getattr(self, metric).labels(*values)``, kept per label values: prometheus-client
        validates the values and takes a lock on every ``labels`` call, twice or thrice per task.
        The label sets are the app's queues, tasks and states: few."""
        key = (metric, values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = getattr(self, metric).labels(*values)
        return child

    def serve(self, settings, queues: list[str], client) -> None:
        """Serve ``/metrics`` on ``settings.metrics_address``:``settings.metrics_port`` in a daemon thread.

        A port already taken (a second worker on the same host with the same port) is one logged
        line; the worker runs on and serves no ``/metrics``: give each worker its own
        ``CELERY_METRICS_PORT``.
        """
        from prometheus_client.multiprocess import MultiProcessCollector

        try:
            registry = serve(settings.metrics_port, BacklogCollector(settings, queues, client),
                             HeartbeatCollector(settings.heartbeat_file, queues), address=settings.metrics_address)
        except OSError as exc:
            logger.error("metrics: cannot listen on %s:%d (%s); this worker serves no /metrics (give each worker "
                         "its own CELERY_METRICS_PORT)", settings.metrics_address, settings.metrics_port,
                         exc.strerror or type(exc).__name__)
            return
        MultiProcessCollector(registry)
        logger.info("metrics on %s:%d for queues %s", settings.metrics_address, settings.metrics_port,
                    ",".join(queues))


class HeartbeatCollector:
    """The heartbeat file's modification time, per queue, read at scrape time."""

    def __init__(self, path: str, queues: list[str]):
        self.path, self.queues = path, queues

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        family = GaugeMetricFamily("celery_autoscale_worker_heartbeat_timestamp_seconds",
                                   "Unix time of the worker's last heartbeat.", labels=["queue"])
        try:
            beat = os.stat(self.path).st_mtime
        except OSError:  # no beat yet: no sample, rather than a misleading 0
            beat = None
        if beat is not None:
            for queue in self.queues:
                family.add_metric([queue], beat)
        yield family
