"""What a worker of an installed app does at run time: the in-flight record, metrics, the stamp.

One :class:`Runtime` per app, made by :func:`runtime_of` and kept on the app. Its signal
handlers are connected by :func:`celery_autoscale.install` and act only on that app's tasks
and workers:

- ``before_task_publish``: stamp each message with a ``published_at`` header (Unix seconds);
- ``task_received`` (worker main process): a task with an ETA (countdown, retry backoff) is
  recorded in its queue's scheduled sorted set until it starts;
- ``task_prerun``: record the task in its queue's in-flight sorted set, its worker and deadline
  (start + its hard time limit) in the owners hash, and take it out of the scheduled set;
- ``task_postrun`` (sent after success, failure and retry alike): remove it, keep
  ``"<started>,<finished>"`` under :func:`~celery_autoscale.keys.run_record_key` for
  ``autoscale_run_record_ttl`` seconds (one pipeline), and count the run in Prometheus;
- ``worker_init`` / ``worker_ready``: prepare the metrics folder, then serve ``/metrics``.
"""

from __future__ import annotations

import json
import logging
import time

from .. import keys
from .._redis import connect
from .._settings import settings_of
from . import _metrics

__all__ = ["Runtime", "queue_of", "runtime_of"]

logger = logging.getLogger(__name__)


def queue_of(request) -> str:
    """The queue a task request's message came from (``"unknown"`` when not delivered by a broker)."""
    info = getattr(request, "delivery_info", None) or {}
    return info.get("routing_key") or "unknown"


class Runtime:
    """The runtime's state for one app in one process."""

    def __init__(self, app):
        self.app = app
        self._client = None
        self.started: dict[str, tuple[float, float, str]] = {}  # task id -> (time, perf_counter, queue)
        self.metrics = None  # a worker._metrics.Metrics once the worker initialised them

    @property
    def settings(self):
        return settings_of(self.app)

    def client(self):
        """This process's Redis client for the broker (redis-py reopens its pool after a fork)."""
        if self._client is None:
            self._client = connect(self.settings)
        return self._client

    def owns(self, task) -> bool:
        return task is not None and getattr(task, "app", None) is self.app

    def time_limit(self, task) -> float:
        """The hard time limit of this run of ``task``, seconds: the message's ``timelimit``, the
        task's ``time_limit``, else the app's ``task_time_limit`` (Celery's own order)."""
        hard = (getattr(task.request, "timelimit", None) or (None, None))[0]
        return float(hard or getattr(task, "time_limit", None) or self.settings.task_time_limit)

    # -- signal handlers -----------------------------------------------------------------
    def stamp_published_at(self, headers=None, **_):
        """A ``published_at`` header: the worker's queue wait starts here."""
        if headers is not None:
            headers.setdefault("published_at", time.time())

    def task_received(self, request=None, **_):
        if request is None or not self.owns(getattr(request, "task", None)) or request.eta is None:
            return
        try:
            self.client().zadd(keys.scheduled_key(queue_of(request), self.settings.key_prefix),
                               {request.id: time.time()})
        except Exception:
            logger.exception("could not record task %s as scheduled", request.id)

    def task_started(self, task_id=None, task=None, **_):
        if not self.owns(task):
            return
        queue = queue_of(task.request)
        now = time.time()
        self.started[task_id] = (now, time.perf_counter(), queue)
        prefix = self.settings.key_prefix
        try:
            pipe = self.client().pipeline(transaction=False)
            pipe.zadd(keys.in_flight_key(queue, prefix), {task_id: now})
            pipe.hset(keys.owners_key(queue, prefix), task_id,
                      json.dumps({"worker": task.request.hostname, "deadline": now + self.time_limit(task)}))
            pipe.zrem(keys.scheduled_key(queue, prefix), task_id)
            pipe.execute()
        except Exception:  # the record must never fail a task
            logger.exception("could not record task %s as in flight", task_id)
        published = getattr(task.request, "published_at", None)
        if self.metrics is not None and published is not None:
            self.metrics.queue_wait.labels(queue).observe(max(0.0, now - float(published)))

    def task_finished(self, task_id=None, task=None, state=None, **_):
        if not self.owns(task):
            return
        started, began, queue = self.started.pop(task_id, (None, None, queue_of(task.request)))
        settings = self.settings
        try:
            pipe = self.client().pipeline(transaction=False)
            pipe.zrem(keys.in_flight_key(queue, settings.key_prefix), task_id)
            pipe.hdel(keys.owners_key(queue, settings.key_prefix), task_id)
            if started is not None and settings.run_record_ttl:
                pipe.set(keys.run_record_key(task_id, settings.key_prefix), f"{started},{time.time()}",
                         ex=settings.run_record_ttl)
            pipe.execute()
        except Exception:
            logger.exception("could not clear the in-flight entry of task %s", task_id)
        if self.metrics is not None:
            self.metrics.tasks.labels(queue, task.name, (state or "unknown").lower()).inc()
            if began is not None:
                self.metrics.runtime.labels(queue, task.name).observe(time.perf_counter() - began)

    def worker_init(self, sender=None, **_):
        """Before the pool forks: a clean multiprocess folder, and the metrics objects."""
        if getattr(sender, "app", None) is not self.app or not self.settings.metrics_port:
            return
        self.metrics = _metrics.Metrics()

    def worker_ready(self, sender=None, **_):
        """Serve ``/metrics`` for the queues this worker consumes (main process only)."""
        if getattr(sender, "app", None) is not self.app or self.metrics is None:
            return
        consumer = sender.task_consumer
        queues = sorted(q.name for q in consumer.queues) if consumer else []
        self.metrics.serve(self.settings, queues, self.client())


def runtime_of(app) -> Runtime:
    """The :class:`Runtime` of ``app`` (made on first use, kept on the app)."""
    runtime = getattr(app, "_autoscale_runtime", None)
    if runtime is None:
        runtime = app._autoscale_runtime = Runtime(app)
    return runtime
