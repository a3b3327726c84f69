"""A cheap worker probe for Kubernetes: the age of the heartbeat file.

The worker's consumer touches ``CELERY_HEARTBEAT_FILE`` (the app's ``autoscale_heartbeat_file``)
every ``CELERY_HEARTBEAT_INTERVAL`` seconds. A probe runs::

    python -m celery_autoscale.health --max-age 60

and exits 0 when the file is younger than ``--max-age`` seconds, 1 otherwise, with one line
saying why (2 on bad input). Unlike ``celery inspect ping`` it sends nothing to the broker and
wakes no other worker, so it costs the same with one replica or a hundred. It never imports
the app.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from ._settings import SETTING
from .cli import EXIT_BAD_INPUT, EXIT_FAILED, Parser, error, positive_seconds

__all__ = ["age", "main", "touch"]


def touch(path: str) -> None:
    """Set ``path``'s modification time to now, creating it if needed (the worker's heartbeat)."""
    Path(path).touch()


def age(path: str, now: float | None = None) -> float:
    """Seconds since ``path`` was last touched.

    Raises:
        FileNotFoundError: the worker has not written its first heartbeat yet.
    """
    return (time.time() if now is None else now) - os.stat(path).st_mtime


def heartbeat_file(given: str | None = None) -> str:
    """The heartbeat file: ``given``, else ``CELERY_HEARTBEAT_FILE``, else its default."""
    heartbeat = SETTING["heartbeat_file"]
    return given or os.environ.get(heartbeat.env, "").strip() or heartbeat.default


def main(argv: list[str] | None = None) -> int:
    heartbeat = SETTING["heartbeat_file"]
    parser = Parser(
        prog="python -m celery_autoscale.health",
        description="Exit 0 when the worker's heartbeat file is fresh, 1 otherwise, 2 on bad input.",
    )
    parser.add_argument("--file", help=f"heartbeat file (default: {heartbeat.env}, {heartbeat.default})")
    parser.add_argument("--max-age", type=positive_seconds, default=60.0, metavar="SECONDS",
                        help="oldest acceptable heartbeat, seconds (default 60)")
    args = parser.parse_args(argv)
    path = heartbeat_file(args.file)
    if os.path.isdir(path):
        return error(f"--file {path} is a folder, not the heartbeat file", EXIT_BAD_INPUT)
    try:
        seconds = age(path)
    except FileNotFoundError:
        return error(f"unhealthy: no heartbeat file at {path} yet", EXIT_FAILED, prefix="")
    except OSError as exc:  # a path through a regular file, no permission: no heartbeat can be there
        return error(f"unhealthy: cannot read the heartbeat file {path}: {exc.strerror}", EXIT_FAILED, prefix="")
    if seconds > args.max_age:
        return error(f"unhealthy: last heartbeat {seconds:.0f}s ago (max {args.max_age:.0f}s)", EXIT_FAILED, prefix="")
    print(f"healthy: last heartbeat {seconds:.1f}s ago")
    return 0


if __name__ == "__main__":
    sys.exit(main())
