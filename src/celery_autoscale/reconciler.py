"""The reconciler: one always-on process that gives dead workers' tasks back to their queues.

    python -m celery_autoscale.reconciler [--app MODULE:ATTR] [--interval 10] [--margin 30]
                                          [--heartbeat-file /tmp/celery-heartbeat] [--once]

Each round (every ``--interval`` seconds) restores, without any worker of the queue running:
messages unacknowledged for longer than the visibility timeout (kombu's ``restore_visible``),
and sooner, the message of a task past its hard time limit plus ``--margin`` seconds whose
worker does not answer Celery's ``ping`` (see :mod:`celery_autoscale._reconcile`). It touches
the heartbeat file after each round, for ``python -m celery_autoscale.health``. Errors talking
to Redis are logged and retried next round. Exit status (``--once``): 0 done, 2 bad input,
3 the broker cannot be reached.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time

from ._cli import EXIT_BAD_INPUT, EXIT_BROKER, Parser, add_app_option, app_from, error


def seconds(text: str) -> float:
    """argparse type: a positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m celery_autoscale.reconciler",
               description="Give dead workers' unacknowledged tasks back to their queues, with no worker running.",
               epilog="Exit status (--once): 0 done, 2 bad input, 3 broker unreachable.")
    add_app_option(p)
    p.add_argument("--interval", type=seconds, default=10.0, metavar="SECONDS",
                   help="seconds between rounds (default 10)")
    p.add_argument("--margin", type=seconds, default=30.0, metavar="SECONDS",
                   help="seconds past a task's hard time limit before its worker is pinged (default 30)")
    p.add_argument("--ping-timeout", type=seconds, default=1.0, metavar="SECONDS",
                   help="seconds to wait for workers' ping replies (default 1)")
    p.add_argument("--heartbeat-file", default=None, metavar="PATH",
                   help="touched after each round (default: CELERY_HEARTBEAT_FILE, /tmp/celery-heartbeat)")
    p.add_argument("--once", action="store_true", help="run one round, print it as JSON, and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    import json

    from ._health import touch
    from ._loader import AppLoadError
    from ._reconcile import reconcile
    from ._settings import ConfigError, redact, settings_of

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        app = app_from(args)
        settings = settings_of(app)
    except (AppLoadError, ConfigError) as exc:
        return error(exc, EXIT_BAD_INPUT)
    heartbeat = args.heartbeat_file or os.environ.get("CELERY_HEARTBEAT_FILE") or "/tmp/celery-heartbeat"
    log = logging.getLogger("celery_autoscale.reconciler")
    while True:
        try:
            with app.connection_for_write() as connection:
                done = reconcile(app, connection, margin=args.margin, ping_timeout=args.ping_timeout)
        except Exception as exc:  # redis and kombu errors: say which broker, never its password
            message = f"{type(exc).__name__} talking to {redact(settings.broker_url)}"
            if args.once:
                return error(message, EXIT_BROKER)
            log.error("%s; retrying in %.0f s", message, args.interval)
        else:
            touch(heartbeat)
            if args.once:
                print(json.dumps(done.__dict__))
                return 0
        time.sleep(args.interval)


if __name__ == "__main__":
    sys.exit(main())
