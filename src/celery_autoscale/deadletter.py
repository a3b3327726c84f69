"""Inspect and act on the dead-letter list of an app's broker.

    python -m celery_autoscale.deadletter count
    python -m celery_autoscale.deadletter list [--limit N] [--json]
    python -m celery_autoscale.deadletter requeue [--limit N]   # send the tasks again, oldest first
    python -m celery_autoscale.deadletter purge

Tasks of a :class:`~celery_autoscale.DeadLetterTask` that failed for good are kept in the
Redis list ``celery-autoscale:dead-letter``. A malformed entry is reported by its index
(0: newest) and skipped; it never blocks the others. Exit status: 0 ok, 1 some entries were
malformed, 2 bad input, 3 the broker cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from ._cli import Parser, EXIT_BAD_INPUT, EXIT_BROKER, EXIT_FAILED, add_app_option, app_from, error, positive_int


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
    from . import _deadletter
    from ._backlog import connect
    from ._loader import AppLoadError
    from ._settings import ConfigError, redact, settings_of

    try:
        app = app_from(args)
        settings = settings_of(app)
    except (AppLoadError, ConfigError) as exc:
        return error(exc, EXIT_BAD_INPUT)
    client = connect(settings)
    bad: list[int] = []
    try:
        if args.command == "count":
            print(client.llen(_deadletter.key(settings)))
        elif args.command == "list":
            found, bad = _deadletter.entries(client, settings, args.limit)
            for entry in found:
                if args.json:
                    print(json.dumps(entry))
                else:
                    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(entry["failed_at"])))
                    print(f"{when} {entry['queue']} {entry['task']}[{entry['task_id']}] "
                          f"after {entry['retries']} retries: {entry['error']}")
        elif args.command == "requeue":
            sent, bad = _deadletter.requeue(client, app, settings, args.limit)
            print(f"requeued {sent}")
        else:
            print(f"purged {client.delete(_deadletter.key(settings)) and 'all' or 'nothing'}")
    except Exception as exc:  # redis and kombu errors: say which broker, never its password
        return error(f"{type(exc).__name__} talking to {redact(settings.broker_url)}", EXIT_BROKER)
    if bad:
        return error(f"skipped {len(bad)} malformed entries at index {', '.join(map(str, bad))} (0: newest)",
                     EXIT_FAILED)
    return 0


if __name__ == "__main__":
    sys.exit(main())
