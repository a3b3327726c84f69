"""celery-autoscale's sample app: ``cpu``, ``io`` and ``mixed`` tasks on the runtime.

``celery -A tasks.app worker -Q cpu`` runs it; it opts into :mod:`celery_autoscale` with one
line, as any user's app does. The modules:

- :mod:`tasks.app`: the Celery app, its routing and settings.
- :mod:`tasks.work`: the ``cpu``, ``io`` and ``mixed`` tasks, and :data:`tasks.work.QUEUE_TASKS`.
"""
