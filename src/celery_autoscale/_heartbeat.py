"""Consumer bootstep: touch the heartbeat file while the consumer loop runs.

The step runs on the consumer's own timer (Celery's ``celery/worker/consumer/heart.py`` is the
model), so the file goes stale when the consumer loop stalls or loses the broker;
``python -m celery_autoscale.health`` turns its age into a probe result. Each beat also prunes
the in-flight entries of dead workers from the worker's queues.
"""

from __future__ import annotations

import logging

from celery import bootsteps

from . import _backlog
from ._health import touch
from ._runtime import runtime_of

__all__ = ["Heartbeat"]

logger = logging.getLogger(__name__)


class Heartbeat(bootsteps.StartStopStep):
    """Touches ``autoscale_heartbeat_file`` every ``autoscale_heartbeat_interval`` seconds."""

    requires = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, parent, **kwargs):
        super().__init__(parent, **kwargs)
        self.tref = None
        self.queues: list[str] = []
        self.runtime = None

    def start(self, c):
        self.runtime = runtime_of(c.app)
        self.queues = [q.name for q in c.task_consumer.queues]
        self.beat()
        self.tref = c.timer.call_repeatedly(self.runtime.settings.heartbeat_interval, self.beat)

    def beat(self):
        settings = self.runtime.settings
        touch(settings.heartbeat_file)
        try:
            for queue in self.queues:
                _backlog.prune_in_flight(self.runtime.client(), queue, settings)
        except Exception:
            logger.exception("could not prune in-flight entries")

    def stop(self, c):
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None

    shutdown = stop
