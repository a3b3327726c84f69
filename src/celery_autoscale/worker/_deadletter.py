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
from .._settings import SETTING, settings_of
from ._runtime import queue_of, runtime_of

__all__ = ["FIELDS", "MAX_ENTRIES", "DeadLetterTask", "TransientError", "record", "record_message"]

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
        """``autoscale_retry_backoff_max``, kept below half the visibility timeout unless an ETA horizon
        parks long waits: a worker holds a retry unacknowledged for its whole backoff, and one held
        past the visibility timeout is delivered a second time (Celery's Redis caveat)."""
        cap = self.app.conf.get("autoscale_retry_backoff_max", SETTING["retry_backoff_max"].default)
        settings = settings_of(self.app)
        return cap if settings.eta_horizon else min(cap, max(1, settings.visibility_timeout // 2))

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
    if not _push(runtime, entry):
        logger.exception("could not dead-letter task %s", task_id)


def _push(runtime, entry: dict) -> bool:
    """LPUSH one entry (and LTRIM to :data:`MAX_ENTRIES`); False when Redis cannot be reached."""
    name = keys.dead_letter_key(runtime.settings.key_prefix)
    try:
        pipe = runtime.client().pipeline()
        pipe.lpush(name, json.dumps(entry, default=repr))
        pipe.ltrim(name, 0, MAX_ENTRIES - 1)
        pipe.execute()
    except Exception:
        return False
    return True


def _arguments(message) -> tuple[list, dict] | None:
    """The args and kwargs of a Celery message (protocol 2 body ``[args, kwargs, embed]``, or
    protocol 1's payload), or None when the body cannot be decoded."""
    try:
        body = message.decode()
    except Exception:
        return None
    if isinstance(body, dict):  # protocol 1
        return list(body.get("args") or ()), dict(body.get("kwargs") or {})
    if isinstance(body, (list, tuple)) and len(body) >= 2 and isinstance(body[1], dict):
        return list(body[0] or ()), dict(body[1])
    return None


def record_message(app, message, error: str, worker: str) -> bool:
    """Dead-letter a message the worker cannot run (a task its app does not know, or no task at all).

    The entry has the fields of :func:`record` plus ``worker`` and ``reason``, so ``python -m
    celery_autoscale.deadletter requeue`` sends it again once a worker that knows the task runs. A
    body that cannot be decoded is kept as ``body`` without ``args``: listed and reported as
    malformed, never sent again blindly. Returns False when Redis cannot be reached; the caller then
    leaves the message unacknowledged, for kombu to restore.
    """
    headers = message.headers or {}
    payload = getattr(message, "payload", None) if not headers.get("task") else None
    payload = payload if isinstance(payload, dict) else {}
    entry = {
        "task_id": headers.get("id") or payload.get("id") or "",
        "task": headers.get("task") or payload.get("task") or "",
        "queue": (message.delivery_info or {}).get("routing_key") or "",
        "error": error,
        "traceback": "",
        "retries": headers.get("retries") or payload.get("retries") or 0,
        "failed_at": time.time(),
        "worker": worker,
        "reason": "unregistered" if (headers.get("task") or payload.get("task")) else "not a task",
    }
    arguments = _arguments(message)
    if arguments is not None and entry["task"]:
        entry["args"], entry["kwargs"] = arguments
    else:
        raw = message.body
        entry["body"] = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    runtime = runtime_of(app)
    if not _push(runtime, entry):
        return False
    if runtime.metrics is not None:
        runtime.metrics.tasks.labels(entry["queue"] or "unknown", entry["task"] or "unknown", "unregistered").inc()
    return True
