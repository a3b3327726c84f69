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
- ``celery_autoscale_worker_heartbeat_timestamp_seconds{queue}``: Unix time of the worker's
  last heartbeat (the file's modification time), one sample per queue it consumes; it stops
  moving when the consumer stalls, while this thread still answers scrapes.

The reconciler (``python -m celery_autoscale.reconciler --metrics-port``) serves the queue-wide
series, which exist while a queue has no worker: the backlog of every queue it is given, and

- ``celery_autoscale_parked_tasks``: far-future ETA tasks parked by the runtime.
- ``celery_autoscale_dead_letter_tasks``: entries in the dead-letter list.
- ``celery_autoscale_canary_last_run_timestamp_seconds{queue}``,
  ``celery_autoscale_canary_last_success_timestamp_seconds{queue}``,
  ``celery_autoscale_canary_success{queue}`` (1 or 0, the last run) and
  ``celery_autoscale_canary_round_trip_seconds{queue}`` (the last success's): what
  ``python -m celery_autoscale.roundtrip --record`` (the chart's canary) wrote to Redis.
"""

from __future__ import annotations

import glob
import logging
import os
import tempfile

from . import _backlog

__all__ = ["BUCKETS", "BacklogCollector", "BrokerCollector", "HeartbeatCollector", "Metrics", "serve"]

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
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = serve(settings.metrics_port, BacklogCollector(settings, queues, client),
                         HeartbeatCollector(settings.heartbeat_file, queues))
        MultiProcessCollector(registry)
        logger.info("metrics on port %d for queues %s", settings.metrics_port, ",".join(queues))


def serve(port: int, *collectors):
    """Serve ``collectors`` on ``/metrics`` at ``port`` (all interfaces) in a daemon thread.

    Returns the registry, to which more collectors may be added. Raises ``OSError`` when the
    port is taken.
    """
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry()
    for collector in collectors:
        registry.register(collector)
    start_http_server(port, registry=registry)
    return registry


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


class BrokerCollector:
    """Queue-wide state kept in Redis: parked ETA tasks, dead letters, the canary's results."""

    def __init__(self, settings, client):
        self.settings, self.client = settings, client

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        from ._canary import KEY as CANARY_KEY
        from ._canary import results
        from ._deadletter import key as dead_letter_key
        from ._parking import PARKED_ETA_KEY

        prefix = self.settings.key_prefix
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.zcard(prefix + PARKED_ETA_KEY)
            pipe.llen(dead_letter_key(self.settings))
            pipe.hgetall(prefix + CANARY_KEY)
            parked, dead, stored = pipe.execute()
        except Exception as exc:  # a scrape must not fail because Redis blinked
            logger.warning("broker state unavailable: %s", type(exc).__name__)
            return
        yield GaugeMetricFamily("celery_autoscale_parked_tasks", "Far-future ETA tasks parked by the runtime.",
                                value=parked)
        yield GaugeMetricFamily("celery_autoscale_dead_letter_tasks", "Entries in the dead-letter list.", value=dead)
        families = {
            "last_run": GaugeMetricFamily("celery_autoscale_canary_last_run_timestamp_seconds",
                                          "Unix time the canary last sent to the queue.", labels=["queue"]),
            "last_success": GaugeMetricFamily("celery_autoscale_canary_last_success_timestamp_seconds",
                                              "Unix time the queue last answered the canary.", labels=["queue"]),
            "success": GaugeMetricFamily("celery_autoscale_canary_success",
                                         "1 if the queue answered the canary's last run, else 0.", labels=["queue"]),
            "round_trip": GaugeMetricFamily("celery_autoscale_canary_round_trip_seconds",
                                            "Seconds from send to answer of the last success.", labels=["queue"]),
        }
        for queue, result in sorted(results(stored).items()):
            for name, family in families.items():
                if result.get(name) is not None:
                    family.add_metric([queue], float(result[name]))
        yield from families.values()
