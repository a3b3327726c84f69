"""Inspect and act on the dead-letter list of an app's broker.

    python -m celery_autoscale.deadletter count
    python -m celery_autoscale.deadletter list [--limit N] [--json]
    python -m celery_autoscale.deadletter requeue [--limit N]   # send the tasks again, oldest first
    python -m celery_autoscale.deadletter purge

Tasks of a :class:`~celery_autoscale.DeadLetterTask` that failed for good are kept in the
Redis list ``celery-autoscale:dead-letter``. A malformed entry is reported by its index
(0: newest) and skipped; it never blocks the others. ``requeue`` moves each entry in one Redis
transaction, so neither a Redis crash nor a concurrent ``requeue`` loses or doubles one. Exit status: 0 ok, 1 some entries were
malformed, 2 bad input, 3 the broker cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import redis

from . import keys
from ._loader import AppLoadError, load_app
from ._redis import KombuPipe, connect, unprefixed
from ._settings import ConfigError, redact, settings_of
from .cli import EXIT_BAD_INPUT, EXIT_BROKER, EXIT_FAILED, Parser, add_app_option, error, positive_int
from .worker._deadletter import FIELDS

__all__ = ["Entry", "entries", "main", "parser", "requeue"]


class Entry(dict):
    """One dead-letter entry; ``index`` is its place in the list (0: newest)."""

    index: int


def _parse(raw: bytes, index: int) -> Entry | None:
    """One entry, or None when it is malformed: not a JSON object, a field missing, or a field of the
    wrong type (a task or queue that names nothing, args not a list, kwargs not an object, a
    ``failed_at`` that is not a time). A queue ``unknown`` (a task run outside a broker's delivery)
    names no list a worker consumes: such an entry is reported, never sent there."""
    try:
        entry = Entry(json.loads(raw))
    except (ValueError, TypeError, RecursionError):
        return None
    if not all(field in entry for field in FIELDS):
        return None
    named = all(isinstance(entry[f], str) and entry[f].strip() for f in ("task", "queue"))
    if not (named and entry["queue"] != "unknown" and isinstance(entry["args"], list)
            and isinstance(entry["kwargs"], dict) and isinstance(entry["failed_at"], (int, float))
            and not isinstance(entry["failed_at"], bool) and math.isfinite(entry["failed_at"])):
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
    raws = client.lrange(keys.dead_letter_key(settings.key_prefix), 0, -1 if limit is None else limit - 1)
    good, bad = [], []
    for index, raw in enumerate(raws):
        entry = _parse(raw, index)
        (good.append(entry) if entry is not None else bad.append(index))
    return good, bad


class _Move:
    """One entry's move as a kombu publish batch (kombu >= 5.7: ``Producer.batch`` asks the channel's
    ``create_publish_batch`` for it): kombu routes the task and names its final Redis commands (the
    priority list's ``LPUSH``), which join the entry's ``LREM`` in the pipeline's one MULTI/EXEC."""

    def __init__(self, channel, pipe):
        self.channel, self.pipe = channel, pipe
        self.kombu = KombuPipe(pipe, channel.client)  # kombu's commands get its global_keyprefix

    def publish(self, message, **kwargs):
        return self.channel.basic_publish(message, _publish_batch=self, **kwargs)

    def add(self, name, *args):
        self.kombu.add(name, *args)

    def flush(self):
        self.pipe.execute()  # redis.WatchError: the list changed since WATCH; nothing was applied

    def discard(self):
        self.pipe.reset()

    def close(self):
        pass


def requeue(app, settings, limit: int | None = None, progress: list[int] | None = None) -> tuple[int, list[int]]:
    """Send dead-lettered tasks again to their queue, oldest first; return (sent, malformed indexes).

    Each entry moves atomically: its task's message is pushed onto the queue's list and the entry
    removed in one Redis transaction (MULTI/EXEC under WATCH of the list), so neither a Redis crash
    nor a second ``requeue`` running at the same time loses an entry or sends one twice. A malformed
    entry is left in place, reported, and does not stop the entries behind it.

    ``progress``, when given, is a one-item list holding the count moved so far, so a caller can say
    how many moved when Redis goes away mid-run (the move in flight then may or may not have landed).

    Raises:
        ValueError: ``limit`` is below 1.
        ConfigError: the broker connection retries writes (``retry_on_timeout``): a retried
            transaction could send a task twice.
        redis.RedisError, kombu errors: Redis cannot be reached (what was moved stays moved).
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    progress = [0] if progress is None else progress
    name = keys.dead_letter_key(settings.key_prefix)
    sent, bad, position = 0, [], -1  # position: from the tail (the oldest); malformed entries stay behind it
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        if not channel.supports_batch_publish:
            raise ConfigError("requeue needs a broker connection that does not retry writes "
                              "(retry_on_timeout, retry_on_error): a retried move could send a task twice")
        producer = app.amqp.Producer(channel)
        while limit is None or sent < limit:
            with unprefixed(channel.client).pipeline() as pipe:
                try:
                    pipe.watch(name)
                    raw, length = pipe.lindex(name, position), pipe.llen(name)
                except redis.WatchError:  # redis-py's name for a connection lost while watching
                    continue  # read again: a Redis that is down raises ConnectionError there
                if raw is None:
                    break
                entry = _parse(raw, length + position)
                if entry is None:
                    bad.append(length + position)
                    position -= 1
                    continue
                pipe.multi()
                pipe.lrem(name, -1, raw)  # the nearest copy to the tail: this one (those behind are malformed)
                move = _Move(channel, pipe)
                channel.create_publish_batch = lambda max_size: move
                try:
                    with producer.batch():
                        app.send_task(entry["task"], args=entry["args"], kwargs=entry["kwargs"],
                                      queue=entry["queue"], producer=producer)
                except redis.WatchError:
                    continue  # a worker dead-lettered a task, or another requeue moved this one: read again
            sent += 1
            progress[0] = sent
    return sent, sorted(bad)


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m celery_autoscale.deadletter",
                                description="Inspect the dead-letter list (Redis key celery-autoscale:dead-letter).",
                                epilog="Exit status: 0 ok, 1 malformed entries skipped, 2 bad input, 3 broker unreachable.")
    add_app_option(p)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("count", help="print how many tasks are dead-lettered")
    show = sub.add_parser("list", help="print dead-lettered tasks, newest first")
    show.add_argument("--limit", type=positive_int, default=20, metavar="N", help="at most N, N >= 1 (default 20)")
    show.add_argument("--json", action="store_true", help="one JSON object per line")
    again = sub.add_parser("requeue", help="send dead-lettered tasks again, oldest first")
    again.add_argument("--limit", type=positive_int, default=None, metavar="N", help="at most N, N >= 1 (default all)")
    sub.add_parser("purge", help="delete every dead-lettered task")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        app = load_app(args.app)
        settings = settings_of(app)
    except (AppLoadError, ConfigError) as exc:
        return error(exc, EXIT_BAD_INPUT)
    client = connect(settings)
    bad: list[int] = []
    progress = [0]
    try:
        if args.command == "count":
            print(client.llen(keys.dead_letter_key(settings.key_prefix)))
        elif args.command == "list":
            found, bad = entries(client, settings, args.limit)
            for entry in found:
                if args.json:
                    print(json.dumps(entry))
                else:
                    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(entry["failed_at"])))
                    print(f"{when} {entry['queue']} {entry['task']}[{entry['task_id']}] "
                          f"after {entry['retries']} retries: {entry['error']}")
        elif args.command == "requeue":
            sent, bad = requeue(app, settings, args.limit, progress)
            print(f"requeued {sent}")
        else:
            print(f"purged {client.delete(keys.dead_letter_key(settings.key_prefix)) and 'all' or 'nothing'}")
    except ConfigError as exc:
        return error(exc, EXIT_BAD_INPUT)
    except Exception as exc:  # redis and kombu errors: say which broker, never its password
        moved = f" after requeueing {progress[0]}" if args.command == "requeue" else ""
        return error(f"{type(exc).__name__} talking to {redact(settings.broker_url)}{moved}", EXIT_BROKER)
    if bad:
        return error(f"skipped {len(bad)} malformed entries at index {', '.join(map(str, bad))} (0: newest)",
                     EXIT_FAILED)
    return 0


if __name__ == "__main__":
    sys.exit(main())
