"""The runtime's Prometheus metrics: every series it serves, and what worker and reconciler share.

Workers: correct under the prefork pool.

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
  ``queued`` (every priority list), ``in_flight`` or ``scheduled`` (held for an ETA; ``reserved``
  until 0.2).
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
- with ``--wait-targets``, per such queue: ``celery_autoscale_desired_processes{queue}`` (what
  KEDA's ``metrics-api`` trigger reads) and its inputs, ``celery_autoscale_queue_wait_target_seconds``,
  ``celery_autoscale_queue_latency_seconds`` (the oldest waiting task's age),
  ``celery_autoscale_task_run_seconds_average``, ``celery_autoscale_arrival_rate_tasks_per_second``
  and ``celery_autoscale_worker_start_seconds`` (:mod:`celery_autoscale.reconciler._sizing`).
"""

from __future__ import annotations

import logging

from ._backlog import backlog

__all__ = ["BUCKETS", "BacklogCollector", "serve"]

logger = logging.getLogger(__name__)

#: Buckets (seconds) spanning sub-second I/O tasks to half-hour batch work.
BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 1800)


def serve(port: int, *collectors, address: str = "0.0.0.0"):
    """Serve ``collectors`` on ``/metrics`` at ``address``:``port`` in a daemon thread.

    Returns the registry, to which more collectors may be added.

    Raises:
        OSError: the port is taken (or the address is not this host's).
    """
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry()
    for collector in collectors:
        registry.register(collector)
    start_http_server(port, addr=address, registry=registry)
    return registry


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
                found = backlog(self.client, queue, self.settings)
            except Exception as exc:  # a scrape must not fail because Redis blinked
                logger.warning("backlog of %s unavailable: %s", queue, type(exc).__name__)
                continue
            family.add_metric([queue, "queued"], found.queued)
            family.add_metric([queue, "in_flight"], found.in_flight)
            family.add_metric([queue, "scheduled"], found.scheduled)
        yield family
