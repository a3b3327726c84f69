"""The true backlog of a queue: every priority list, the tasks running and the tasks held for an ETA.

Celery's Redis transport (kombu) keeps a queue as one Redis list per priority step
(:func:`celery_autoscale.keys.priority_lists`): exactly what a plain Celery producer writes.

A message a worker has taken leaves those lists. The runtime records each running task in a
per-queue sorted set (:func:`~celery_autoscale.keys.in_flight_key`; member: task id, score:
start) with its worker and deadline (start + its hard time limit) in
:func:`~celery_autoscale.keys.owners_key`, and removes both when the run ends. A task with an ETA
(a countdown, or a retry waiting out its backoff) is held by a worker, unacknowledged, until it is
due; the runtime records it in :func:`~celery_autoscale.keys.scheduled_key` from receipt to start
(Celery calls such tasks *scheduled*: ``celery inspect scheduled``). Keep ETAs below the
visibility timeout (Celery's own Redis caveat: a later one is redelivered); a scheduled task holds
a replica until it runs, since the worker holding it must be alive to run it on time.

:func:`backlog` only reads. Entries of dead workers are removed by :func:`prune`, a separate step
that the reconciler runs each round and each worker runs on its heartbeat: an in-flight entry
older than the task time limit plus :data:`STALE_MARGIN`, or a scheduled entry, whose message has
left kombu's hash of unacknowledged messages (restored to a list, where it counts again). Until
then the entry keeps the queue's backlog above zero, so a queue whose only worker died is not
scaled to zero with an unfinished task. The reconciler (:mod:`celery_autoscale.reconciler`)
restores such a message without any worker of the queue.

KEDA's Redis trigger reads a list with ``LLEN`` and a sorted set with ``ZCARD``, so the chart
points one trigger at each key of :func:`~celery_autoscale.keys.backlog_keys` and sums them.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from . import keys
from ._redis import as_text, unacked_tags
from ._settings import Settings

__all__ = ["STALE_MARGIN", "Backlog", "Pruned", "backlog", "backlog_ids", "backlog_keys", "prune"]

#: Seconds past the task time limit after which an in-flight entry may be a dead worker's.
STALE_MARGIN = 30


def backlog_keys(queue: str, settings: Settings) -> list[str]:
    """Every Redis key whose size counts towards ``queue``'s backlog, as KEDA must name them."""
    return keys.backlog_keys(queue, settings.priority_steps, settings.separator, settings.key_prefix)


@dataclass(frozen=True)
class Backlog:
    """One queue's backlog, in tasks."""

    queue: str
    waiting: dict[str, int]  # list name -> LLEN
    in_flight: int
    scheduled: int = 0  # held by a worker until their ETA

    @property
    def queued(self) -> int:
        """Tasks waiting in any priority list."""
        return sum(self.waiting.values())

    @property
    def total(self) -> int:
        """Waiting, running and scheduled tasks: what an autoscaler must serve."""
        return self.queued + self.in_flight + self.scheduled


def backlog(client, queue: str, settings: Settings) -> Backlog:
    """Measure ``queue``'s backlog with one pipeline of ``LLEN`` and ``ZCARD`` calls; writes nothing.

    The figure equals what KEDA reads from the same keys (plus, while upgrading from 0.2, the
    legacy scheduled set, which :func:`prune` empties).

    Args:
        client: a ``redis.Redis`` for the broker (:func:`~celery_autoscale.connect`).
        queue: the Celery queue name.
        settings: the app's :func:`~celery_autoscale.settings_of`.

    Raises:
        redis.RedisError: Redis cannot be reached.
    """
    prefix = settings.key_prefix
    lists = keys.priority_lists(queue, settings.priority_steps, settings.separator, prefix)
    pipe = client.pipeline(transaction=False)
    for name in lists:
        pipe.llen(name)
    pipe.zcard(keys.in_flight_key(queue, prefix))
    pipe.zcard(keys.scheduled_key(queue, prefix))
    pipe.zcard(keys.legacy_scheduled_key(queue, prefix))
    *lengths, running, scheduled, legacy = pipe.execute()
    return Backlog(queue=queue, waiting=dict(zip(lists, lengths)), in_flight=int(running),
                   scheduled=int(scheduled) + int(legacy))


def backlog_ids(client, queues: list[str], settings: Settings) -> set[str]:
    """The ids of the tasks in the backlog of ``queues`` (Celery queue names): waiting in a priority
    list (``LRANGE``; a message's ``headers.id``), running, scheduled, or held unacknowledged by
    kombu for a worker of any queue (read once). Reads every message of the lists: for a run's
    end, not for each poll.

    Raises:
        redis.RedisError: Redis cannot be reached.
    """
    prefix = settings.key_prefix
    found = set(unacked_tags(client, settings))
    for queue in queues:
        for name in keys.priority_lists(queue, settings.priority_steps, settings.separator, prefix):
            for raw in client.lrange(name, 0, -1):
                try:
                    found.add(json.loads(raw)["headers"]["id"])
                except (ValueError, TypeError, KeyError):
                    continue
        for key in (keys.in_flight_key(queue, prefix), keys.scheduled_key(queue, prefix),
                    keys.legacy_scheduled_key(queue, prefix)):
            found.update(as_text(m) for m in client.zrange(key, 0, -1))
    return found


@dataclass(frozen=True)
class Pruned:
    """What one :func:`prune` removed: task ids."""

    in_flight: tuple[str, ...] = ()
    scheduled: tuple[str, ...] = ()


def prune(client, queue: str, settings: Settings, now: float | None = None) -> Pruned:
    """Remove ``queue``'s entries that no unfinished task stands behind; return what went.

    An in-flight entry older than the task time limit plus :data:`STALE_MARGIN`, and any scheduled
    entry, goes once kombu no longer holds its message unacknowledged (the message was acknowledged,
    or restored to a list where it counts again). While upgrading from 0.2, entries in the legacy
    scheduled set are first moved to the new one. Costs one round trip, and one ``HSCAN`` of kombu's
    hash only when there are candidates.

    Raises:
        redis.RedisError: Redis cannot be reached (nothing is lost: the entries stay).
    """
    prefix = settings.key_prefix
    running, held, legacy = (keys.in_flight_key(queue, prefix), keys.scheduled_key(queue, prefix),
                             keys.legacy_scheduled_key(queue, prefix))
    now = time.time() if now is None else now
    pipe = client.pipeline(transaction=False)
    pipe.zrangebyscore(running, "-inf", now - settings.task_time_limit - STALE_MARGIN)
    pipe.zrange(held, 0, -1)
    pipe.exists(legacy)
    stale, scheduled, has_legacy = pipe.execute()
    if has_legacy:
        moved = client.pipeline()  # MULTI/EXEC: no entry is in neither set
        moved.zunionstore(held, [held, legacy], aggregate="MIN")
        moved.delete(legacy)
        moved.zrange(held, 0, -1)
        scheduled = moved.execute()[-1]
    if not stale and not scheduled:
        return Pruned()
    tags = unacked_tags(client, settings)
    dead_running = [as_text(m) for m in stale if as_text(m) not in tags]
    dead_scheduled = [as_text(m) for m in scheduled if as_text(m) not in tags]
    if dead_running or dead_scheduled:
        pipe = client.pipeline(transaction=False)
        if dead_running:
            pipe.zrem(running, *dead_running)
            pipe.hdel(keys.owners_key(queue, prefix), *dead_running)
        if dead_scheduled:
            pipe.zrem(held, *dead_scheduled)
        pipe.execute()
    return Pruned(tuple(dead_running), tuple(dead_scheduled))
