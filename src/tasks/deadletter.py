"""The dead-letter list: tasks that failed for good, with their payload and error.

A task that raises a non-transient error, or exhausts its retries of a transient one, is
pushed as one JSON object onto the Redis list ``celery-autoscale:dead-letter`` (newest first,
capped at :data:`MAX_ENTRIES`)::

    {"task_id", "task", "queue", "args", "kwargs", "error", "traceback", "retries", "failed_at"}

Inspect and act on it from the CLI::

    python -m tasks.deadletter count
    python -m tasks.deadletter list --limit 20 [--json]
    python -m tasks.deadletter requeue [--limit N]   # send the tasks again, oldest first
    python -m tasks.deadletter purge
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

from .config import KEY_PREFIX

logger = logging.getLogger(__name__)

KEY = f"{KEY_PREFIX}:dead-letter"
#: Oldest entries beyond this many are dropped, so a failing flood cannot fill Redis.
MAX_ENTRIES = 10_000


def record(task, exc, task_id, args, kwargs, einfo) -> None:
    """Push one failed task onto the dead-letter list (called from ``Task.on_failure``)."""
    from .hooks import queue_of, redis_client

    entry = {
        "task_id": task_id,
        "task": task.name,
        "queue": queue_of(task),
        "args": list(args or ()),
        "kwargs": dict(kwargs or {}),
        "error": f"{type(exc).__name__}: {exc}",
        "traceback": str(einfo.traceback) if einfo is not None else "",
        "retries": task.request.retries,
        "failed_at": time.time(),
    }
    try:
        pipe = redis_client().pipeline()
        pipe.lpush(KEY, json.dumps(entry, default=repr))
        pipe.ltrim(KEY, 0, MAX_ENTRIES - 1)
        pipe.execute()
    except Exception:
        logger.exception("could not dead-letter task %s", task_id)


def entries(client, limit: int | None = None) -> list[dict]:
    """Dead-lettered tasks, newest first (at most ``limit``)."""
    end = -1 if limit is None else limit - 1
    return [json.loads(raw) for raw in client.lrange(KEY, 0, end)]


def requeue(client, app, limit: int | None = None) -> int:
    """Send dead-lettered tasks again to their queue, oldest first; return how many.

    Each entry is removed only after its task was published, so an error loses nothing.
    """
    sent = 0
    while limit is None or sent < limit:
        raw = client.lindex(KEY, -1)
        if raw is None:
            break
        entry = json.loads(raw)
        app.send_task(entry["task"], args=entry["args"], kwargs=entry["kwargs"], queue=entry["queue"])
        client.lrem(KEY, -1, raw)
        sent += 1
    return sent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tasks.deadletter",
        description=f"Inspect the dead-letter list (Redis key {KEY}) of the broker in CELERY_BROKER_URL.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("count", help="print how many tasks are dead-lettered")
    show = sub.add_parser("list", help="print dead-lettered tasks, newest first")
    show.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")
    show.add_argument("--json", action="store_true", help="one JSON object per line")
    again = sub.add_parser("requeue", help="send dead-lettered tasks again, oldest first")
    again.add_argument("--limit", type=int, default=None, help="at most this many (default all)")
    sub.add_parser("purge", help="delete every dead-lettered task")
    args = parser.parse_args(argv)

    from . import backlog, config

    try:
        settings = config.load()
        client = backlog.connect(settings)
        if args.command == "count":
            print(client.llen(KEY))
        elif args.command == "list":
            for entry in entries(client, args.limit):
                if args.json:
                    print(json.dumps(entry))
                else:
                    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(entry["failed_at"]))
                    print(f"{when} {entry['queue']} {entry['task']}[{entry['task_id']}] "
                          f"after {entry['retries']} retries: {entry['error']}")
        elif args.command == "requeue":
            from .app import app

            print(f"requeued {requeue(client, app, args.limit)}")
        else:
            print(f"purged {client.delete(KEY) and 'all' or 'nothing'}")
    except config.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # redis errors: say which broker, never its password
        print(f"error: {type(exc).__name__} talking to {config.redact(settings.broker_url)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
