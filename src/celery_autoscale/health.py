"""A cheap worker probe for Kubernetes: the age of the heartbeat file.

The worker's consumer touches ``CELERY_HEARTBEAT_FILE`` (the app's ``autoscale_heartbeat_file``)
every ``CELERY_HEARTBEAT_INTERVAL`` seconds. A probe runs::

    python -m celery_autoscale.health --max-age 60

and exits 0 when the file is younger than ``--max-age`` seconds, 1 otherwise, with one line
saying why (2 on bad input). Unlike ``celery inspect ping`` it sends nothing to the broker and
wakes no other worker, so it costs the same with one replica or a hundred. It imports neither
Celery nor the app, so it starts fast.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

from ._cli import Parser
from ._health import age


def main(argv: list[str] | None = None) -> int:
    parser = Parser(
        prog="python -m celery_autoscale.health",
        description="Exit 0 when the worker's heartbeat file is fresh, 1 otherwise, 2 on bad input.",
    )
    parser.add_argument("--file", help="heartbeat file (default: CELERY_HEARTBEAT_FILE, /tmp/celery-heartbeat)")
    parser.add_argument("--max-age", type=float, default=60.0, metavar="SECONDS",
                        help="oldest acceptable heartbeat, seconds (default 60)")
    args = parser.parse_args(argv)
    if not (math.isfinite(args.max_age) and args.max_age > 0):
        print(f"error: --max-age must be a positive number of seconds, got {args.max_age}", file=sys.stderr)
        return 2
    path = args.file or os.environ.get("CELERY_HEARTBEAT_FILE") or "/tmp/celery-heartbeat"
    try:
        seconds = age(path)
    except FileNotFoundError:
        print(f"unhealthy: no heartbeat file at {path} yet", file=sys.stderr)
        return 1
    if seconds > args.max_age:
        print(f"unhealthy: last heartbeat {seconds:.0f}s ago (max {args.max_age:.0f}s)", file=sys.stderr)
        return 1
    print(f"healthy: last heartbeat {seconds:.1f}s ago")
    return 0


if __name__ == "__main__":
    sys.exit(main())
