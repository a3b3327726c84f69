"""What every command of this project shares, the load generator's too: one parser, number types,
one-line errors and exit codes.

Every command ends with one of the exit codes below and says what went wrong in one line on
stderr (``error: ...``); ``--help`` is its reference.
"""

from __future__ import annotations

import argparse
import math
import sys

from ._settings import check_redis_url

__all__ = ["EXIT_BAD_INPUT", "EXIT_BROKER", "EXIT_FAILED", "Parser", "add_app_option", "check_redis_url", "error",
           "number", "port", "positive_int", "positive_seconds", "queue_names"]

#: Exit codes of every command of this project: 1 the job failed (tasks lost or failed, a queue
#: did not answer), 2 bad input (nothing was done), 3 the broker cannot be reached.
EXIT_FAILED, EXIT_BAD_INPUT, EXIT_BROKER = 1, 2, 3


def error(message: str, code: int, prefix: str = "error: ") -> int:
    """Print ``message`` as one line on stderr (after ``prefix``); return ``code``."""
    print(f"{prefix}{' '.join(str(message).split())}", file=sys.stderr)
    return code


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (``error: ...``, exit 2); ``--help`` is the reference."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"error: {' '.join(message.split())} (see --help)\n")


def number(kind: type = float, low: float = -math.inf, high: float = math.inf, low_open: bool = False):
    """An argparse type: a finite ``kind`` (``int`` or ``float``) within ``[low, high]``
    (``(low, high]`` with ``low_open``); its error says the bound and the text given."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be a {'whole number' if kind is int else 'number'}, got {text!r}") from None
        if not math.isfinite(value) or value < low or value > high or (low_open and value == low):
            lo = f"> {low:g}" if low_open else f">= {low:g}"
            bound = f"{lo} and <= {high:g}" if math.isfinite(high) else lo
            raise argparse.ArgumentTypeError(f"must be finite and {bound}, got {text!r}")
        return value
    return parse


#: A whole number of at least 1 (a count, a limit).
positive_int = number(int, 1)
#: A positive, finite number of seconds.
positive_seconds = number(float, 0, low_open=True)
#: A TCP port, 0 to 65535 (0: off, where an option says so).
port = number(int, 0, 65535)


def queue_names(text: str) -> list[str]:
    """Celery queue names from a comma-separated list (empty items dropped)."""
    return [q.strip() for q in text.split(",") if q.strip()]


def add_app_option(parser: argparse.ArgumentParser) -> None:
    """``--app MODULE:ATTR``, for :func:`celery_autoscale.load_app`."""
    parser.add_argument("--app", metavar="MODULE:ATTR",
                        help="the Celery app (default: CELERY_AUTOSCALE_APP, else a bare app on CELERY_BROKER_URL)")
