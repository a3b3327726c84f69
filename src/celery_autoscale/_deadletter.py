"""Retries, then the dead-letter list: an opt-in task base class and the list's operations.

A task whose class is :class:`DeadLetterTask` retries :data:`RETRIED` errors with exponential
backoff and full jitter (Celery's "Tasks: Automatic retry for known exceptions":
``autoretry_for``, ``retry_backoff``, ``retry_jitter``, ``retry_backoff_max``), and when it
fails for good it is pushed as one JSON object onto the Redis list
``celery-autoscale:dead-letter`` (newest first, capped at :data:`MAX_ENTRIES`)::

    {"task_id", "task", "queue", "args", "kwargs", "error", "traceback", "retries", "failed_at"}
"""

from __future__ import annotations

import json
import logging
import time

from celery import Task

from ._backlog import KEY_PREFIX

__all__ = ["MAX_ENTRIES", "DeadLetterTask", "Entry", "TransientError", "entries", "key", "record", "requeue"]

logger = logging.getLogger(__name__)

#: Oldest entries beyond this many are dropped, so a failing flood cannot fill Redis.
MAX_ENTRIES = 10_000
#: Fields every entry has; an entry without them is reported as malformed.
FIELDS = ("task_id", "task", "queue", "args", "kwargs", "error", "retries", "failed_at")


class TransientError(RuntimeError):
    """A failure worth retrying: a timeout, a dropped connection, an injected fault."""


#: What :class:`DeadLetterTask` retries.
RETRIED = (TransientError, ConnectionError, TimeoutError)


def key(settings) -> str:
    """The dead-letter list's Redis key (after kombu's ``global_keyprefix``)."""
    return f"{settings.key_prefix}{KEY_PREFIX}:dead-letter"


def queue_of(request) -> str:
    """The queue a task request's message came from (``"unknown"`` when not delivered by a broker)."""
    info = getattr(request, "delivery_info", None) or {}
    return info.get("routing_key") or "unknown"


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
        return self.app.conf.get("autoscale_max_retries", 5)

    @property
    def retry_backoff_max(self):
        return self.app.conf.get("autoscale_retry_backoff_max", 60)

    def on_failure(self, exc, task_id, args, kwargs, einfo):  # noqa: D401 - Celery hook
        """Celery calls this once a task has failed for good: record it in the dead-letter list."""
        record(self, exc, task_id, args, kwargs, einfo)


def record(task, exc, task_id, args, kwargs, einfo) -> None:
    """Push one failed task onto the dead-letter list; a Redis error is logged, never raised."""
    from ._runtime import runtime_of

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
    name = key(runtime.settings)
    try:
        pipe = runtime.client().pipeline()
        pipe.lpush(name, json.dumps(entry, default=repr))
        pipe.ltrim(name, 0, MAX_ENTRIES - 1)
        pipe.execute()
    except Exception:
        logger.exception("could not dead-letter task %s", task_id)


class Entry(dict):
    """One dead-letter entry; ``index`` is its place in the list (0: newest)."""

    index: int


def _parse(raw: bytes, index: int) -> Entry | None:
    try:
        entry = Entry(json.loads(raw))
    except (ValueError, TypeError):
        return None
    if not all(field in entry for field in FIELDS):
        return None
    entry.index = index
    return entry


def entries(client, settings, limit: int | None = None) -> tuple[list[Entry], list[int]]:
    """Dead-lettered tasks, newest first (at most ``limit``), and the indexes of malformed ones.

    Raises:
        ValueError: ``limit`` is below 1.
        redis.RedisError: Redis cannot be reached.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    raws = client.lrange(key(settings), 0, -1 if limit is None else limit - 1)
    good, bad = [], []
    for index, raw in enumerate(raws):
        entry = _parse(raw, index)
        (good.append(entry) if entry is not None else bad.append(index))
    return good, bad


def requeue(client, app, settings, limit: int | None = None) -> tuple[int, list[int]]:
    """Send dead-lettered tasks again to their queue, oldest first; return (sent, malformed indexes).

    Each entry is removed only after its task was published, so an error loses nothing; a
    malformed entry is left in place, reported, and does not stop the entries behind it.

    Raises:
        ValueError: ``limit`` is below 1.
        redis.RedisError, kombu errors: Redis cannot be reached (what was sent stays sent).
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    name = key(settings)
    sent, bad = 0, []
    length = client.llen(name)
    for index in range(length - 1, -1, -1):  # oldest first
        if limit is not None and sent >= limit:
            break
        raw = client.lindex(name, index)
        if raw is None:
            continue
        entry = _parse(raw, index)
        if entry is None:
            bad.append(index)
            continue
        app.send_task(entry["task"], args=entry["args"], kwargs=entry["kwargs"], queue=entry["queue"])
        client.lrem(name, -1, raw)
        sent += 1
    return sent, bad
