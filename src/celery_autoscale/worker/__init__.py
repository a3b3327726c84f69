"""Code that runs inside a Celery worker; and ``celery -A celery_autoscale.worker worker``: the user's
app, with the runtime, and no code change.

The app comes from ``CELERY_AUTOSCALE_APP`` (``module:attribute``, e.g.
``myproject.celery:app``). Importing this module does nothing; Celery's ``-A`` lookup reads its
``app`` attribute, which imports the user's app and calls :func:`celery_autoscale.install` on
it (PEP 562 module ``__getattr__``). An app that already called ``install`` is not changed twice. A bad setting or app path stops
the process with one line on stderr and exit status 2; a broker that refuses the password, with
exit status 3 (Redis merely down is waited for, as Celery does).

Why a wrapper module: Celery resolves ``-A`` to an attribute of a module and offers no hook that
runs before the worker reads the configuration for an app it did not create; a preload option
would need the user's app to declare it. The wrapper needs nothing of the app.

The modules beside it are what :func:`celery_autoscale.install` adds to a worker: the signal
handlers that keep the in-flight and scheduled records (``_runtime``), the consumer that survives a
lost Redis connection and parks far-future ETA tasks (``_consumer``, ``_parking``), the heartbeat
bootstep (``_heartbeat``), the worker's metrics (``_metrics``) and the dead-letter task base
(``_deadletter``).
"""

from __future__ import annotations

__all__ = ["app"]


def __getattr__(name: str):
    if name != "app":
        raise AttributeError(name)
    import sys

    from .._loader import AppLoadError, load_app
    from .._redis import BrokerRefused, check_credentials
    from .._settings import ConfigError, settings_of
    from ._runtime import check_files

    try:
        loaded = load_app()
        if _celery_command(sys.argv[1:]) == "worker":  # before Celery prints anything of its own
            check_files(settings_of(loaded))
            check_credentials(settings_of(loaded))
    except (AppLoadError, ConfigError) as exc:
        # Celery would print a traceback for any error here: a process that cannot start says
        # why in one line and exits 2, as every command of this project does on bad input.
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except BrokerRefused as exc:  # Celery would retry a refused password 100 times
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(3)
    globals()["app"] = loaded
    return loaded


#: Celery's global options that take a value (``celery --help``).
_VALUE_OPTIONS = {"-A", "--app", "-b", "--broker", "--result-backend", "--loader", "--config", "--workdir"}


def _celery_command(argv: list[str]) -> str | None:
    """The ``celery`` subcommand in ``argv`` (``worker``, ``flower``, ...), or None."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in _VALUE_OPTIONS:
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None
