"""The reconciler's metrics: queue-wide state kept in Redis, which exists while a queue has no worker."""

from __future__ import annotations

import logging
import threading

from .. import keys
from ..roundtrip import results
from ._sizing import QueueSizer
from ._unserved import unserved

__all__ = ["BrokerCollector", "SizingCollector"]

logger = logging.getLogger(__name__)


class BrokerCollector:
    """Queue-wide state kept in Redis: parked ETA tasks, dead letters, the canary's results and,
    given the queues the release serves, the tasks waiting in queues it does not."""

    def __init__(self, settings, client, served: list[str] | None = None):
        self.settings, self.client, self.served = settings, client, list(served or [])

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        prefix = self.settings.key_prefix
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.zcard(keys.parked_eta_key(prefix))
            pipe.llen(keys.dead_letter_key(prefix))
            pipe.hgetall(keys.roundtrip_results_key(prefix))
            parked, dead, stored = pipe.execute()
            others = unserved(self.client, self.served, self.settings) if self.served else {}
        except Exception as exc:  # a scrape must not fail because Redis blinked
            logger.warning("broker state unavailable: %s", type(exc).__name__)
            return
        yield GaugeMetricFamily("celery_autoscale_parked_tasks", "Far-future ETA tasks parked by the runtime.",
                                value=parked)
        yield GaugeMetricFamily("celery_autoscale_dead_letter_tasks", "Entries in the dead-letter list.", value=dead)
        waiting = GaugeMetricFamily("celery_autoscale_unserved_queue_tasks",
                                    "Tasks waiting in a queue that no queue of the release is.", labels=["queue"])
        for queue, count in sorted(others.items()):
            waiting.add_metric([queue], count)
        yield waiting
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


class SizingCollector:
    """Each wait-target queue's :func:`~celery_autoscale.reconciler._sizing.wanted_processes` and its
    inputs, read from Redis at each scrape (KEDA's ``metrics-api`` trigger reads the first). While
    Redis cannot be read no series is served, so KEDA's trigger fails and its fallback applies.

    Args:
        settings: the app's settings; client: a ``redis.Redis`` for its broker;
        targets: Celery queue name -> queue-wait target, seconds.
    """

    def __init__(self, settings, client, targets: dict[str, float]):
        self.client = client
        self.sizers = [QueueSizer(queue, target, settings) for queue, target in sorted(targets.items())]
        self._lock = threading.Lock()  # scrapes arrive on several threads; the averages are shared

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        try:
            with self._lock:
                found = [sizer.read(self.client) for sizer in self.sizers]
        except Exception as exc:  # no series: KEDA falls back to the true backlog
            logger.warning("queue sizing unavailable: %s", type(exc).__name__)
            return
        families = [
            ("processes", "celery_autoscale_desired_processes",
             "Processes that keep the queue's wait under its target (reconciler._sizing)."),
            ("target", "celery_autoscale_queue_wait_target_seconds", "The queue-wait target, seconds."),
            ("oldest_wait", "celery_autoscale_queue_latency_seconds",
             "Age of the oldest task waiting in any priority list of the queue, seconds."),
            ("run_seconds", "celery_autoscale_task_run_seconds_average",
             "Moving average of the queue's run times, seconds."),
            ("arrival_rate", "celery_autoscale_arrival_rate_tasks_per_second",
             "Moving average of the tasks arriving on the queue, tasks/s."),
            ("start_seconds", "celery_autoscale_worker_start_seconds",
             "Seconds the queue's last worker took from process start to ready."),
        ]
        for field, name, text in families:
            family = GaugeMetricFamily(name, text, labels=["queue"])
            for sizing in found:
                value = getattr(sizing, field)
                if value is not None:
                    family.add_metric([sizing.queue], float(value))
            yield family
