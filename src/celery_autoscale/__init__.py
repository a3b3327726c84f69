"""celery-autoscale's runtime: what makes any Celery app on Redis safe to autoscale with KEDA.

Opt in with one line, after the app is configured::

    import celery_autoscale
    celery_autoscale.install(app)

or with none: start the worker as ``celery -A celery_autoscale.worker worker`` with
``CELERY_AUTOSCALE_APP=myproject.celery:app`` (what the chart does). Importing this package
changes nothing: no connection, no environment change, no task registered, no signal
connected; :func:`install` does all of that, for the app it is given only.
"""

from ._backlog import Backlog, backlog, backlog_keys, connect, in_flight_key, priority_lists, run_record_key
from ._deadletter import DeadLetterTask, TransientError
from ._install import PROBE_TASK, REQUIRED, install
from ._loader import AppLoadError, load_app
from ._settings import ENVIRONMENT, ConfigError, Settings, redact, settings_of

__version__ = "0.2.0"

__all__ = [
    "ENVIRONMENT", "PROBE_TASK", "REQUIRED", "AppLoadError", "Backlog", "ConfigError", "DeadLetterTask",
    "Settings", "TransientError", "backlog", "backlog_keys", "connect", "in_flight_key", "install",
    "load_app", "priority_lists", "redact", "run_record_key", "settings_of",
]
