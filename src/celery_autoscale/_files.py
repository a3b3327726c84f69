"""Checks on the files the runtime writes (heartbeat files), shared by the worker and the reconciler."""

from __future__ import annotations

import os

__all__ = ["writable"]


def writable(path: str) -> bool:
    """Whether a file can be written at ``path``: not a folder, in an existing writable folder."""
    folder = os.path.dirname(os.path.abspath(path))
    return not os.path.isdir(path) and os.path.isdir(folder) and os.access(folder, os.W_OK)
