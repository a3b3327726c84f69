"""Consumer bootstep: touch the heartbeat file while the worker can consume.

The step runs on the consumer's own timer (Celery's ``celery/worker/consumer/heart.py`` is the
model), so the file goes stale when the consumer loop stalls. A loop that runs but no longer
takes messages (a consumer that lost its Redis subscription) is caught too: each beat reads
the worker's queues' backlog, and when tasks have waited in the lists for
``autoscale_stall_seconds`` while some of the worker's processes sat idle, the beat withholds
the touch and logs why, so ``python -m celery_autoscale.health`` fails and Kubernetes restarts
the worker. Redis being unreachable is not the worker's fault and does not withhold it. Each
beat also prunes the entries of dead workers from the worker's queues
(:func:`celery_autoscale.prune`), so a queue without a reconciler is kept clean too.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from celery import bootsteps
from celery.worker import state

from .._backlog import backlog, prune
from ._runtime import runtime_of

__all__ = ["Heartbeat"]

logger = logging.getLogger(__name__)


class Heartbeat(bootsteps.StartStopStep):
    """Touches ``autoscale_heartbeat_file`` every ``autoscale_heartbeat_interval`` seconds."""

    requires = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, parent, **kwargs):
        super().__init__(parent, **kwargs)
        self.tref = None
        self.consumer = None
        self.queues: list[str] = []
        self.runtime = None
        self.stalled_since: float | None = None  # monotonic time since tasks wait beside idle processes

    def start(self, c):
        self.consumer, self.runtime = c, runtime_of(c.app)
        self.queues = [q.name for q in c.task_consumer.queues]
        self.beat()
        self.tref = c.timer.call_repeatedly(self.runtime.settings.heartbeat_interval, self.beat)

    def idle_processes(self) -> int:
        pool = getattr(self.consumer, "pool", None)
        capacity = getattr(pool, "num_processes", None) or 0
        return max(0, capacity - len(state.active_requests))

    def beat(self):
        settings = self.runtime.settings
        try:
            client = self.runtime.client()
            for queue in self.queues:
                prune(client, queue, settings)
            waiting = sum(backlog(client, q, settings).queued for q in self.queues)
        except Exception as exc:  # Redis unreachable: the consumer reconnects by itself
            logger.warning("heartbeat: backlog unavailable (%s)", type(exc).__name__)
            waiting = 0
        now = time.monotonic()
        if waiting and self.idle_processes():
            self.stalled_since = self.stalled_since or now
        else:
            self.stalled_since = None
        if self.stalled_since is not None and now - self.stalled_since >= settings.stall_seconds:
            logger.error("heartbeat withheld: %d tasks have waited in %s for %.0f s while %d processes "
                         "are idle; this worker no longer consumes", waiting, ",".join(self.queues),
                         now - self.stalled_since, self.idle_processes())
            return
        Path(settings.heartbeat_file).touch()  # read by python -m celery_autoscale.health

    def stop(self, c):
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None

    shutdown = stop
