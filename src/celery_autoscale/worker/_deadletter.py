"""Retries, then the dead-letter list: the opt-in task base class, and what a worker writes.

A task whose class is :class:`DeadLetterTask` retries :data:`RETRIED` errors with exponential
backoff and full jitter (Celery's "Tasks: Automatic retry for known exceptions":
``autoretry_for``, ``retry_backoff``, ``retry_jitter``, ``retry_backoff_max``), and when it
fails for good it is pushed as one JSON object onto the Redis list
``celery-autoscale:dead-letter`` (:func:`~celery_autoscale.keys.dead_letter_key`; newest first,
capped at :data:`MAX_ENTRIES`)::

    {"task_id", "task", "queue", "args", "kwargs", "error", "traceback", "retries", "failed_at"}

``python -m celery_autoscale.deadletter`` reads and requeues them.
"""

from __future__ import annotations

import json
import logging
import time

from celery import Task

from .. import keys
from .._settings import SETTING
from ._runtime import queue_of, runtime_of

__all__ = ["FIELDS", "MAX_ENTRIES", "DeadLetterTask", "TransientError", "record"]

logger = logging.getLogger(__name__)

#: Oldest entries beyond this many are dropped, so a failing flood cannot fill Redis.
MAX_ENTRIES = 10_000
#: Fields every entry has; an entry without them is reported as malformed.
FIELDS = ("task_id", "task", "queue", "args", "kwargs", "error", "retries", "failed_at")


class TransientError(RuntimeError):
    """A failure worth retrying: a timeout, a dropped connection, an injected fault."""


#: What :class:`DeadLetterTask` retries.
RETRIED = (TransientError, ConnectionError, TimeoutError)


class DeadLetterTask(Task):
    """Task base class: retries transient errors, then records the task in the dead-letter list.

    Use it for one task (``@app.task(base=DeadLetterTask)``) or every task
    (``Celery(..., task_cls=DeadLetterTask)``). ``max_retries`` and ``retry_backoff_max``
    come from the app's ``autoscale_max_retries`` (5) and ``autoscale_retry_backoff_max``
    (60 s) unless the task sets them.
    """

    autoretry_for = RETRIED
    retry_backoff = True
    retry_jitter = True

    @property
    def max_retries(self):  # Celery reads this on every retry
        return self.app.conf.get("autoscale_max_retries", SETTING["max_retries"].default)

    @property
    def retry_backoff_max(self):
        return self.app.conf.get("autoscale_retry_backoff_max", SETTING["retry_backoff_max"].default)

    def on_failure(self, exc, task_id, args, kwargs, einfo):  # noqa: D401 - Celery hook
        """Celery calls this once a task has failed for good: record it in the dead-letter list."""
        record(self, exc, task_id, args, kwargs, einfo)


def record(task, exc, task_id, args, kwargs, einfo) -> None:
    """Push one failed task onto the dead-letter list; a Redis error is logged, never raised."""
    runtime = runtime_of(task.app)
    entry = {
        "task_id": task_id,
        "task": task.name,
        "queue": queue_of(task.request),
        "args": list(args or ()),
        "kwargs": dict(kwargs or {}),
        "error": f"{type(exc).__name__}: {exc}",
        "traceback": str(einfo.traceback) if einfo is not None else "",
        "retries": task.request.retries,
        "failed_at": time.time(),
    }
    name = keys.dead_letter_key(runtime.settings.key_prefix)
    try:
        pipe = runtime.client().pipeline()
        pipe.lpush(name, json.dumps(entry, default=repr))
        pipe.ltrim(name, 0, MAX_ENTRIES - 1)
        pipe.execute()
    except Exception:
        logger.exception("could not dead-letter task %s", task_id)
