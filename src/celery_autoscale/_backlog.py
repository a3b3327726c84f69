"""The true backlog of a queue: every priority list plus the tasks in flight.

Celery's Redis transport (kombu) keeps a queue as Redis lists: the queue name itself for
priority step 0 and ``<queue><sep><step>`` for every other step of ``priority_steps``
(kombu ``redis.Channel._q_for_pri``), each prefixed by ``global_keyprefix``. With kombu's
defaults (``sep`` ``"\\x06\\x16"``, steps ``[0, 3, 6, 9]``) the lists of ``emails`` are
``emails``, ``emails\\x06\\x163``, ``emails\\x06\\x166`` and ``emails\\x06\\x169``: exactly what a
plain Celery producer writes.

A message a worker has taken leaves those lists. The runtime records each running task in a
per-queue sorted set, :func:`in_flight_key` (member: task id, score: start, Unix seconds), with
its worker and deadline (start + its hard time limit) in :func:`owners_key`, and removes both
when the run ends. An entry older than the task time limit plus :data:`STALE_MARGIN` may
belong to a worker that died. :func:`backlog` prunes it once its message has left kombu's hash
of unacknowledged messages (restored to a list, where it counts again): until then the entry
keeps the queue's backlog above zero, so a queue whose only worker died is not scaled to zero
with an unfinished task. The reconciler (:mod:`celery_autoscale.reconciler`) restores such a
message without any worker of the queue, at the task's deadline plus a margin when its worker
does not answer a ping, else at the visibility timeout (kombu's own restore).

A task with an ETA (a countdown, or a retry waiting out its backoff) is held by a worker,
unacknowledged, until it is due: the runtime records it in :func:`reserved_key` from receipt to
start. An entry whose message kombu no longer holds unacknowledged (restored to a list at a warm
shutdown, where it counts again) is pruned; a dead worker's entries stay until its messages are
restored, so they keep a replica for that. Keep ETAs below the visibility timeout (Celery's own
Redis caveat: a later one is redelivered); a reserved task holds a replica until it runs, since
the worker holding it must be alive to run it on time.

KEDA's Redis trigger reads a list with ``LLEN`` and a sorted set with ``ZCARD``, so the chart
points one trigger at each key of :func:`backlog_keys` and sums them.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from ._settings import Settings

__all__ = ["Backlog", "backlog", "backlog_keys", "connect", "in_flight_key", "owners_key", "priority_lists",
           "reserved_key", "run_record_key", "unacked_tags"]

#: Prefix of every Redis key the runtime itself writes (after kombu's ``global_keyprefix``).
KEY_PREFIX = "celery-autoscale"

#: Seconds past the task time limit after which an in-flight entry may be a dead worker's.
STALE_MARGIN = 30


def priority_lists(queue: str, steps: tuple[int, ...], separator: str, prefix: str = "") -> list[str]:
    """Names of the Redis lists that hold ``queue``'s waiting messages, step 0 first."""
    return [f"{prefix}{queue}" if step == 0 else f"{prefix}{queue}{separator}{step}" for step in steps]


def in_flight_key(queue: str, prefix: str = "") -> str:
    """Name of the sorted set of ``queue``'s running tasks (member: task id; score: start)."""
    return f"{prefix}{KEY_PREFIX}:in-flight:{queue}"


def owners_key(queue: str, prefix: str = "") -> str:
    """Name of the hash of ``queue``'s running tasks: task id -> ``{"worker", "deadline"}`` (JSON)."""
    return f"{prefix}{KEY_PREFIX}:in-flight-owner:{queue}"


def reserved_key(queue: str, prefix: str = "") -> str:
    """Name of the sorted set of ``queue``'s tasks held for their ETA (member: task id; score: receipt)."""
    return f"{prefix}{KEY_PREFIX}:reserved:{queue}"


def run_record_key(task_id: str, prefix: str = "") -> str:
    """Name of the string ``"<started>,<finished>"`` (Unix seconds) kept for a finished task."""
    return f"{prefix}{KEY_PREFIX}:run:{task_id}"


def backlog_keys(queue: str, settings: Settings) -> list[str]:
    """Every Redis key whose size counts towards ``queue``'s backlog, as KEDA must name them."""
    return [*priority_lists(queue, settings.priority_steps, settings.separator, settings.key_prefix),
            in_flight_key(queue, settings.key_prefix), reserved_key(queue, settings.key_prefix)]


@dataclass(frozen=True)
class Backlog:
    """One queue's backlog, in tasks."""

    queue: str
    waiting: dict[str, int]  # list name -> LLEN
    in_flight: int
    reserved: int = 0  # held by a worker until their ETA

    @property
    def queued(self) -> int:
        """Tasks waiting in any priority list."""
        return sum(self.waiting.values())

    @property
    def total(self) -> int:
        """Waiting, running and reserved tasks: what an autoscaler must serve."""
        return self.queued + self.in_flight + self.reserved


def unacked_tags(client, settings: Settings) -> dict[str, str]:
    """Task id -> kombu delivery tag of the messages in kombu's hash of unacknowledged messages.

    Read with ``HSCAN``; each value is kombu's ``[message, exchange, routing_key]`` and the task
    id is the message's ``headers.id`` (Celery's task protocol 2). Unreadable values are skipped.
    """
    tags = {}
    for tag, raw in client.hscan_iter(settings.key_prefix + settings.unacked_key, count=1000):
        try:
            tags[json.loads(raw)[0]["headers"]["id"]] = as_text(tag)
        except (ValueError, TypeError, KeyError, IndexError):
            continue
    return tags


def _prune(client, queue: str, settings: Settings, stale: list, reserved: list) -> tuple[int, int]:
    """Remove the dead entries among ``stale`` in-flight and ``reserved`` members of ``queue``:
    those whose messages kombu no longer holds unacknowledged. Returns how many of each went."""
    if not stale and not reserved:
        return 0, 0
    held = unacked_tags(client, settings)
    prefix = settings.key_prefix
    dead_running = [m for m in stale if as_text(m) not in held]
    dead_reserved = [m for m in reserved if as_text(m) not in held]
    pipe = client.pipeline(transaction=False)
    if dead_running:
        pipe.zrem(in_flight_key(queue, prefix), *dead_running)
        pipe.hdel(owners_key(queue, prefix), *dead_running)
    if dead_reserved:
        pipe.zrem(reserved_key(queue, prefix), *dead_reserved)
    done = pipe.execute()
    return (int(done[0]) if dead_running else 0), (int(done[-1]) if dead_reserved else 0)


def as_text(value) -> str:
    """A Redis reply (bytes, as redis-py returns them by default) as text."""
    return value.decode() if isinstance(value, bytes) else value


def backlog(client, queue: str, settings: Settings) -> Backlog:
    """Measure ``queue``'s backlog with one pipeline of ``LLEN`` and ``ZCARD`` calls.

    In-flight entries older than the task time limit plus :data:`STALE_MARGIN` (dead workers')
    and reserved entries are pruned once kombu no longer holds their messages unacknowledged (one more round trip, only
    when there are any), so the figure equals what KEDA reads from the same keys.

    Args:
        client: a ``redis.Redis`` for the broker (:func:`connect`).
        queue: the Celery queue name.
        settings: the app's :func:`~celery_autoscale.settings_of`.

    Raises:
        redis.RedisError: Redis cannot be reached.
    """
    lists = priority_lists(queue, settings.priority_steps, settings.separator, settings.key_prefix)
    key, held_key = in_flight_key(queue, settings.key_prefix), reserved_key(queue, settings.key_prefix)
    pipe = client.pipeline(transaction=False)
    pipe.zrangebyscore(key, "-inf", time.time() - settings.task_time_limit - STALE_MARGIN)
    pipe.zrange(held_key, 0, -1)
    for name in lists:
        pipe.llen(name)
    pipe.zcard(key)
    pipe.zcard(held_key)
    stale, reserved, *lengths, running, waiting_eta = pipe.execute()
    dead_running, dead_reserved = _prune(client, queue, settings, stale, reserved)
    return Backlog(queue=queue, waiting=dict(zip(lists, lengths)), in_flight=int(running) - dead_running,
                   reserved=int(waiting_eta) - dead_reserved)


def connect(settings: Settings, decode_responses: bool = False):
    """A ``redis.Redis`` client for the broker of ``settings`` (password and TLS included);
    replies are ``str`` with ``decode_responses``, else ``bytes``.

    For ``sentinel://`` URLs, a client of the current master of ``settings.master_name``
    (redis-py's ``Sentinel.master_for``, as kombu's ``SentinelChannel``): after a failover its
    next command reaches the new master. The sentinels are asked without a password, as kombu
    does unless ``sentinel_kwargs`` says otherwise.
    """
    import redis

    if settings.broker_url.startswith("sentinel://"):
        from urllib.parse import urlsplit

        from redis.sentinel import Sentinel

        urls = [urlsplit(u) for u in settings.broker_url.split(";")]
        db = int((urls[0].path or "/0").strip("/") or 0)
        password = settings.password or urls[0].password
        sentinel = Sentinel([(u.hostname, u.port or 26379) for u in urls])
        return sentinel.master_for(settings.master_name, db=db, password=password, decode_responses=decode_responses)
    return redis.Redis.from_url(settings.broker_url, password=settings.password, decode_responses=decode_responses,
                                **(settings.ssl or {}))
