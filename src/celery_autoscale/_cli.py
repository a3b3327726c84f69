"""What the runtime's command lines share: exit codes, one-line errors, the app option."""

from __future__ import annotations

import argparse
import sys

__all__ = ["EXIT_BAD_INPUT", "EXIT_BROKER", "EXIT_FAILED", "Parser", "add_app_option", "app_from", "error",
           "positive_int", "queue_names"]

#: Exit codes of every command of this project: 1 the job failed (tasks lost or failed, a queue
#: did not answer), 2 bad input (nothing was done), 3 the broker cannot be reached.
EXIT_FAILED, EXIT_BAD_INPUT, EXIT_BROKER = 1, 2, 3


def error(message: str, code: int) -> int:
    """Print ``error: message`` as one line on stderr; return ``code``."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    return code


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (``error: ...``, exit 2); ``--help`` is the reference."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"error: {' '.join(message.split())} (see --help)\n")


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def queue_names(text: str) -> list[str]:
    """Celery queue names from a comma-separated list (empty items dropped)."""
    return [q.strip() for q in text.split(",") if q.strip()]


def add_app_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--app", metavar="MODULE:ATTR",
                        help="the Celery app (default: CELERY_AUTOSCALE_APP, else a bare app on CELERY_BROKER_URL)")


def app_from(args):
    """The app of ``--app`` with the runtime installed.

    Raises:
        celery_autoscale.AppLoadError, celery_autoscale.ConfigError: one line each.
    """
    from ._loader import load_app

    return load_app(args.app)
