"""The tasks: one per queue, each shaped by a profile of keyword arguments.

Profile keywords and their units:

- ``work_units``: SHA-256 rounds of a hash chain (CPU work; about 0.5 µs each in CPython on one x86-64 core).
- ``size_bytes``: bytes written to a file, fsynced and read back (disk I/O).
- ``wait_seconds``: seconds of waiting that stand for a network call (latency-bound I/O).
- ``leak_bytes``: bytes the ``io`` task leaks: kept, every page written, in its process after it
  returns (``0``, the default: none); for a container's memory limit and Celery's
  ``--max-memory-per-child``.
- ``fail_rate``: probability in [0, 1] that an attempt raises :class:`TransientError`; the
  task is retried with backoff and dead-lettered when its retries run out.

Every task returns ``{"queue", "worker", "started_at", "finished_at", ...}`` (Unix seconds),
from which the load generator computes queue wait and end-to-end latency.
"""

from __future__ import annotations

import hashlib
import os
import random
import socket
import tempfile
import time

from celery_autoscale import TransientError

from .app import app


#: Where ``io`` and ``mixed`` tasks write their files (``CELERY_WORK_DIR``, default the temp folder).
WORK_DIR = os.environ.get("CELERY_WORK_DIR") or tempfile.gettempdir()


#: What ``leak_bytes`` leaves behind, for the life of the process.
_LEAKED: list[bytearray] = []


def _maybe_fail(fail_rate: float) -> None:
    if fail_rate and random.random() < fail_rate:
        raise TransientError(f"injected transient fault (fail_rate={fail_rate})")


def _envelope(task, started_at: float, **result) -> dict:
    info = task.request.delivery_info or {}
    return {
        "queue": info.get("routing_key"),
        "worker": task.request.hostname or socket.gethostname(),
        "started_at": started_at,
        "finished_at": time.time(),
        **result,
    }


def hash_chain(work_units: int) -> str:
    """Hex digest after ``work_units`` chained SHA-256 rounds."""
    digest = b"celery-autoscale"
    for _ in range(work_units):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()


def file_roundtrip(size_bytes: int, directory: str) -> int:
    """Write ``size_bytes`` to a new file in ``directory``, fsync, read back; return bytes read.

    Raises:
        OSError: the disk is full or unwritable (not retried: it is not transient).
    """
    payload = os.urandom(min(size_bytes, 1 << 20))
    fd, path = tempfile.mkstemp(prefix="io-task-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as out:
            left = size_bytes
            while left > 0:
                chunk = payload[: min(left, len(payload))]
                out.write(chunk)
                left -= len(chunk)
            out.flush()
            os.fsync(out.fileno())
        read = 0
        with open(path, "rb") as back:
            while block := back.read(1 << 20):
                read += len(block)
        return read
    finally:
        os.unlink(path)


@app.task(bind=True, name="tasks.cpu.hash_chain")
def cpu_hash_chain(self, work_units: int = 200_000, fail_rate: float = 0.0) -> dict:
    """CPU-bound: ``work_units`` SHA-256 rounds (about 0.1 s for the default)."""
    started = time.time()
    _maybe_fail(fail_rate)
    return _envelope(self, started, digest=hash_chain(work_units))


@app.task(bind=True, name="tasks.io.transfer")
def io_transfer(
    self, size_bytes: int = 1 << 20, wait_seconds: float = 0.2, fail_rate: float = 0.0, leak_bytes: int = 0
) -> dict:
    """I/O-bound: write, fsync and read ``size_bytes``, then wait ``wait_seconds``; ``leak_bytes``
    stay behind in the process."""
    started = time.time()
    _maybe_fail(fail_rate)
    if leak_bytes:
        _LEAKED.append(bytearray(b"\x01") * leak_bytes)
    read = file_roundtrip(size_bytes, WORK_DIR) if size_bytes else 0
    if wait_seconds:
        time.sleep(wait_seconds)
    return _envelope(self, started, bytes=read)


@app.task(bind=True, name="tasks.mixed.pipeline")
def mixed_pipeline(
    self,
    work_units: int = 50_000,
    size_bytes: int = 256 << 10,
    wait_seconds: float = 0.1,
    fail_rate: float = 0.0,
) -> dict:
    """Both: a file round trip, a wait, then ``work_units`` hash rounds over the result."""
    started = time.time()
    _maybe_fail(fail_rate)
    read = file_roundtrip(size_bytes, WORK_DIR) if size_bytes else 0
    if wait_seconds:
        time.sleep(wait_seconds)
    return _envelope(self, started, bytes=read, digest=hash_chain(work_units))


#: The task the load generator sends to each queue, and the profile keywords it accepts.
QUEUE_TASKS: dict[str, tuple[str, tuple[str, ...]]] = {
    "cpu": ("tasks.cpu.hash_chain", ("work_units", "fail_rate")),
    "io": ("tasks.io.transfer", ("size_bytes", "wait_seconds", "fail_rate")),
    "mixed": ("tasks.mixed.pipeline", ("work_units", "size_bytes", "wait_seconds", "fail_rate")),
}
