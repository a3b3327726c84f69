"""celery-autoscale's runtime: what makes any Celery app on Redis safe to autoscale with KEDA.

Opt in with one line, after the app is configured::

    import celery_autoscale
    celery_autoscale.install(app)

or with none: start the worker as ``celery -A celery_autoscale.worker worker`` with
``CELERY_AUTOSCALE_APP=myproject.celery:app`` (what the chart does). Importing this package
changes nothing: no connection, no environment change, no task registered, no signal
connected; :func:`install` does all of that, for the app it is given only.

What an app calls is exported here. The package is laid out by where its code runs:

- ``worker/``: what :func:`install` adds to a worker (signal handlers, consumer, heartbeat,
  metrics, ETA parking, the dead-letter task base), and the ``-A celery_autoscale.worker`` wrapper;
- ``reconciler/``: the always-on process that restores dead workers' tasks (``python -m
  celery_autoscale.reconciler``);
- the commands ``health``, ``deadletter``, ``roundtrip``, ``beat``, ``flower`` (``python -m
  celery_autoscale.<command>``, or the ``celery-autoscale-<command>`` scripts), with what they
  share in :mod:`celery_autoscale.cli`;
- what every part uses: the settings (``_settings``: one table), the Redis schema
  (:mod:`celery_autoscale.keys`: every key name), the broker client (``_redis``), the backlog
  (``_backlog``), the app loader (``_loader``), :func:`install` (``_install``) and the metrics
  (``_metrics``).
"""

from ._backlog import Backlog, backlog, backlog_ids, backlog_keys, prune
from ._install import REQUIRED, ROUNDTRIP_TASK, install
from ._loader import AppLoadError, load_app
from ._redis import connect
from ._settings import ENVIRONMENT, ConfigError, Settings, redact, settings_of
from .worker._deadletter import DeadLetterTask, TransientError

__version__ = "0.3.0"

__all__ = [
    "ENVIRONMENT", "REQUIRED", "ROUNDTRIP_TASK", "AppLoadError", "Backlog", "ConfigError", "DeadLetterTask",
    "Settings", "TransientError", "backlog", "backlog_ids", "backlog_keys", "connect", "install", "load_app", "prune", "redact",
    "settings_of",
]
