"""celery-autoscale's Celery app and tasks.

``celery -A tasks worker -Q cpu`` finds :data:`app` here. The modules:

- :mod:`tasks.config`: settings from the environment (the only reader of ``os.environ``).
- :mod:`tasks.app`: the Celery app, its worker settings and the task base class.
- :mod:`tasks.work`: the ``cpu``, ``io`` and ``mixed`` tasks.
- :mod:`tasks.backlog`: a queue's true backlog (priority lists plus tasks in flight).
- :mod:`tasks.hooks`, :mod:`tasks.metrics`, :mod:`tasks.health`: what makes a worker observable.
- :mod:`tasks.deadletter`: tasks that failed for good, and its CLI.
"""

from .app import TransientError, app, settings

__all__ = ["TransientError", "app", "settings"]
