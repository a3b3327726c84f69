"""A cheap worker probe for Kubernetes: the age of the heartbeat file.

The worker's consumer touches ``CELERY_HEARTBEAT_FILE`` every ``CELERY_HEARTBEAT_INTERVAL``
seconds (:class:`tasks.hooks.Heartbeat`). A probe runs::

    python -m tasks.health --max-age 60

and exits 0 when the file is younger than ``--max-age`` seconds, 1 otherwise, with one line
saying why. Unlike ``celery inspect ping`` it sends nothing to the broker and wakes no other
worker, so it costs the same with one replica or a hundred.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def touch(path: str) -> None:
    """Set ``path``'s modification time to now, creating it if needed."""
    Path(path).touch()


def age(path: str, now: float | None = None) -> float:
    """Seconds since ``path`` was last touched.

    Raises:
        FileNotFoundError: the worker has not written its first heartbeat yet.
    """
    return (time.time() if now is None else now) - os.stat(path).st_mtime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tasks.health",
        description="Exit 0 when the worker's heartbeat file is fresh, 1 otherwise.",
    )
    parser.add_argument(
        "--file", help="heartbeat file (default: CELERY_HEARTBEAT_FILE, /tmp/celery-heartbeat)"
    )
    parser.add_argument(
        "--max-age", type=float, default=60.0, help="oldest acceptable heartbeat, seconds (default 60)"
    )
    args = parser.parse_args(argv)
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
