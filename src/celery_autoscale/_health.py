"""The heartbeat file: written by the worker (:mod:`celery_autoscale._heartbeat`), read by the probe."""

from __future__ import annotations

import os
import time
from pathlib import Path

__all__ = ["age", "touch"]


def touch(path: str) -> None:
    """Set ``path``'s modification time to now, creating it if needed."""
    Path(path).touch()


def age(path: str, now: float | None = None) -> float:
    """Seconds since ``path`` was last touched.

    Raises:
        FileNotFoundError: the worker has not written its first heartbeat yet.
    """
    return (time.time() if now is None else now) - os.stat(path).st_mtime
