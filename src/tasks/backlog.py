"""The true backlog of a queue: every priority list plus the tasks in flight.

Celery's Redis transport (kombu) keeps a queue as Redis lists: the queue name itself for
priority step 0 and ``<queue><sep><step>`` for every other step of ``priority_steps``
(kombu ``redis.Channel._q_for_pri``). With this package's transport options the lists of
``cpu`` are ``cpu``, ``cpu:3``, ``cpu:6`` and ``cpu:9``.

A message a worker has taken leaves those lists. Workers therefore record each running task in
a per-queue sorted set, :func:`in_flight_key`, scored by its start time (Unix seconds), and
remove it when the run ends (success, failure or retry). An entry older than the visibility
timeout belongs to a worker that died: its message is redelivered by then, so
:func:`prune_in_flight` removes it.

KEDA's Redis trigger reads a list with ``LLEN`` and a sorted set with ``ZCARD``, so the chart
points one trigger at each key of :func:`backlog_keys` and sums them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis

from .config import KEY_PREFIX, PRIORITY_SEPARATOR, Settings


def priority_lists(queue: str, steps: tuple[int, ...]) -> list[str]:
    """Names of the Redis lists that hold ``queue``'s waiting messages, step 0 first."""
    return [queue if step == 0 else f"{queue}{PRIORITY_SEPARATOR}{step}" for step in steps]


def in_flight_key(queue: str) -> str:
    """Name of the sorted set of ``queue``'s running tasks (member: task id; score: start)."""
    return f"{KEY_PREFIX}:in-flight:{queue}"


def backlog_keys(queue: str, steps: tuple[int, ...]) -> list[str]:
    """Every Redis key whose size counts towards ``queue``'s backlog."""
    return [*priority_lists(queue, steps), in_flight_key(queue)]


@dataclass(frozen=True)
class Backlog:
    """One queue's backlog, in tasks."""

    queue: str
    waiting: dict[str, int]  # list name -> LLEN
    in_flight: int

    @property
    def queued(self) -> int:
        """Tasks waiting in any priority list."""
        return sum(self.waiting.values())

    @property
    def total(self) -> int:
        """Waiting plus running tasks: what an autoscaler must serve."""
        return self.queued + self.in_flight


def prune_in_flight(client: redis.Redis, queue: str, max_age: float, now: float | None = None) -> int:
    """Remove in-flight entries of ``queue`` older than ``max_age`` seconds; return how many."""
    now = time.time() if now is None else now
    return int(client.zremrangebyscore(in_flight_key(queue), "-inf", now - max_age))


def backlog(client: redis.Redis, queue: str, settings: Settings) -> Backlog:
    """Measure ``queue``'s backlog with one pipeline of ``LLEN`` and ``ZCARD`` calls.

    Stale in-flight entries (older than ``settings.visibility_timeout``) are pruned first,
    so the figure equals what KEDA reads from the same keys.

    Raises:
        redis.RedisError: Redis cannot be reached.
    """
    lists = priority_lists(queue, settings.priority_steps)
    pipe = client.pipeline(transaction=False)
    pipe.zremrangebyscore(in_flight_key(queue), "-inf", time.time() - settings.visibility_timeout)
    for name in lists:
        pipe.llen(name)
    pipe.zcard(in_flight_key(queue))
    _, *lengths, running = pipe.execute()
    return Backlog(queue=queue, waiting=dict(zip(lists, lengths)), in_flight=int(running))


def connect(settings: Settings) -> redis.Redis:
    """A Redis client for the broker of ``settings`` (TLS options included)."""
    ssl = settings.ssl_options(settings.broker_url) or {}
    return redis.Redis.from_url(settings.broker_url, **ssl)
