"""``bench/overhead_app.py``'s plain app with only the settings the runtime's guarantees require
(:data:`celery_autoscale._install.REQUIRED`: ``acks_late``, reject on worker lost, no prefetch) and
none of its code: ``bench/worker_overhead.py`` runs it to tell what those settings cost Celery by
themselves from what the runtime's code costs.
"""

from celery_autoscale._install import REQUIRED

from bench.overhead_app import app

app.conf.update({setting: value for setting, (value, _) in REQUIRED.items()})
