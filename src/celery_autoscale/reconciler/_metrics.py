"""The reconciler's metrics: queue-wide state kept in Redis, which exists while a queue has no worker."""

from __future__ import annotations

import logging

from .. import keys
from ..roundtrip import results
from ._unserved import unserved

__all__ = ["BrokerCollector"]

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
