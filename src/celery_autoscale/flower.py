"""``python -m celery_autoscale.flower [FLOWER OPTIONS]``: Flower for the app, with file-based basic auth.

Runs ``celery -A celery_autoscale.worker flower --conf=<this package>/flowerconfig.py`` plus
the given options, so any image with ``celery-autoscale[flower]`` installed serves Flower for
the app in ``CELERY_AUTOSCALE_APP`` (or a bare app on ``CELERY_BROKER_URL``), with the Redis
password the chart mounts.

Before Flower starts, each option is checked with Flower's own definitions (``flower.options``,
parsed by tornado as Flower parses them): Flower drops an option it does not know without a word
and prints a traceback for a malformed value. ``BASIC_AUTH_DIR`` must hold readable ``username``
and ``password`` files. Exit status: 2 bad input (one line, nothing started), 3 the broker refused
the password, else Flower's.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .cli import EXIT_BAD_INPUT, EXIT_BROKER, error

__all__ = ["check_options", "main"]


def check_options(argv: list[str]) -> None:
    """Raise ``ValueError`` (one line) for an option Flower does not know or a value it cannot take.
    The message names the option, never its value (``--basic-auth`` holds a password)."""
    from tornado.options import Error, options

    import flower.options  # noqa: F401  (defines Flower's options on tornado's global parser)

    for arg in argv:
        name = arg[2:].partition("=")[0] if arg.startswith("--") else ""
        if not name:
            raise ValueError("Flower takes options only (--name=value); got an argument that is none")
        if name not in options:
            raise ValueError(f"--{name}: not an option of Flower (see celery flower --help)")
        try:
            options.parse_command_line(["flower", arg], final=False)
        except (Error, ValueError):
            raise ValueError(f"--{name}: a malformed value (see celery flower --help)") from None
    if not 0 < options.port < 65536:
        raise ValueError("--port: must be from 1 to 65535")


def _check_auth_dir() -> None:
    folder = os.environ.get("BASIC_AUTH_DIR")
    for name in ("username", "password") if folder else ():
        path = Path(folder) / name
        try:
            path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ValueError(f"BASIC_AUTH_DIR: cannot read {path}: {why}") from None


def main(argv: list[str] | None = None) -> int:
    from ._loader import AppLoadError, load_app
    from ._redis import BrokerRefused, check_credentials
    from ._settings import ConfigError, settings_of

    argv = sys.argv[1:] if argv is None else argv
    try:
        check_options(argv)
        _check_auth_dir()
        settings = settings_of(load_app())
    except (ValueError, AppLoadError, ConfigError) as exc:
        return error(exc, EXIT_BAD_INPUT)
    try:
        check_credentials(settings)
    except BrokerRefused as exc:
        return error(exc, EXIT_BROKER)
    conf = Path(__file__).with_name("flowerconfig.py")
    os.execv(sys.executable, [sys.executable, "-m", "celery", "-A", "celery_autoscale.worker", "flower",
                              f"--conf={conf}", *argv])


if __name__ == "__main__":
    sys.exit(main())
