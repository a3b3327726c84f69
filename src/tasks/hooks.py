"""Signal handlers and a worker bootstep that make a worker observable to an autoscaler.

- Producers stamp every message with a ``published_at`` header (Unix seconds).
- Each task run is recorded in its queue's in-flight sorted set from ``task_prerun`` until
  ``task_postrun`` (which Celery sends after success, failure and retry alike).
- Task counts, runtimes and queue waits go to Prometheus (:mod:`tasks.metrics`).
- :class:`Heartbeat` touches the heartbeat file from the consumer's timer and prunes stale
  in-flight entries of the worker's queues.
"""

from __future__ import annotations

import logging
import time

from celery import bootsteps, signals

from . import backlog, health

logger = logging.getLogger(__name__)

_client = None  # one Redis client per process; redis-py resets its pool after fork
_started: dict[str, tuple[float, str]] = {}  # task id -> (perf_counter at start, queue)


def redis_client():
    """This process's Redis client for the broker (created on first use)."""
    global _client
    if _client is None:
        from .app import settings

        _client = backlog.connect(settings)
    return _client


def queue_of(task) -> str:
    """The queue the running task's message came from."""
    info = task.request.delivery_info or {}
    return info.get("routing_key") or "unknown"


@signals.before_task_publish.connect
def stamp_published_at(headers=None, **_):
    """Record when the message was published; the worker's queue wait starts here."""
    if headers is not None:
        headers["published_at"] = time.time()


@signals.task_prerun.connect
def task_started(task_id=None, task=None, **_):
    queue = queue_of(task)
    now = time.time()
    _started[task_id] = (time.perf_counter(), queue)
    try:
        redis_client().zadd(backlog.in_flight_key(queue), {task_id: now})
    except Exception:  # metrics must never fail a task
        logger.exception("could not record task %s as in flight", task_id)
    from . import metrics

    published = getattr(task.request, "published_at", None)
    if published is not None:
        metrics.QUEUE_WAIT.labels(queue).observe(max(0.0, now - float(published)))


@signals.task_postrun.connect
def task_finished(task_id=None, task=None, state=None, **_):
    began, queue = _started.pop(task_id, (None, queue_of(task)))
    try:
        redis_client().zrem(backlog.in_flight_key(queue), task_id)
    except Exception:
        logger.exception("could not clear in-flight entry of task %s", task_id)
    from . import metrics

    metrics.TASKS.labels(queue, task.name, (state or "unknown").lower()).inc()
    if began is not None:
        metrics.RUNTIME.labels(queue, task.name).observe(time.perf_counter() - began)


@signals.worker_init.connect
def prepare_metrics(**_):
    """Before the pool forks: give the worker's processes a clean multiprocess folder."""
    from . import metrics

    metrics.reset()


@signals.worker_ready.connect
def serve_metrics(sender=None, **_):
    """Serve ``/metrics`` for the queues this worker consumes (main process only)."""
    from . import metrics
    from .app import settings

    queues = sorted(q.name for q in sender.task_consumer.queues) if sender.task_consumer else []
    if settings.metrics_port:
        metrics.serve(settings, queues, redis_client())


class Heartbeat(bootsteps.StartStopStep):
    """Consumer step: touch the heartbeat file every ``CELERY_HEARTBEAT_INTERVAL`` seconds.

    It runs on the consumer's own timer, so the file goes stale when the consumer loop stalls
    or loses the broker; ``python -m tasks.health`` turns its age into a probe result.
    """

    requires = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, parent, **kwargs):
        super().__init__(parent, **kwargs)
        self.tref = None

    def start(self, c):
        from .app import settings

        self.queues = [q.name for q in c.task_consumer.queues]
        self.settings = settings
        self.beat()
        self.tref = c.timer.call_repeatedly(settings.heartbeat_interval, self.beat)

    def beat(self):
        health.touch(self.settings.heartbeat_file)
        try:
            for queue in self.queues:
                backlog.prune_in_flight(redis_client(), queue, self.settings.visibility_timeout)
        except Exception:
            logger.exception("could not prune in-flight entries")

    def stop(self, c):
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None

