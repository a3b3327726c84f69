"""The sample Celery app: routing by task name, and the runtime installed with one line.

Broker and result backend come from Celery's own ``CELERY_BROKER_URL`` and
``CELERY_RESULT_BACKEND`` (default: Redis on localhost; the backend defaults to the broker).
Everything that makes the workers safe to autoscale comes from :func:`celery_autoscale.install`.
"""

from __future__ import annotations

import os

from celery import Celery

import celery_autoscale

#: The queues this app routes to, in the order the demo and the chart list them.
QUEUES: tuple[str, ...] = ("cpu", "io", "mixed")
_broker = os.environ.get("CELERY_BROKER_URL") or "redis://localhost:6379/0"

app = Celery("tasks", broker=_broker, backend=os.environ.get("CELERY_RESULT_BACKEND") or _broker,
             task_cls=celery_autoscale.DeadLetterTask, include=["tasks.work"])
app.conf.update(
    # Explicit routing: every task name maps to exactly one queue ("Routing Tasks").
    task_routes={f"tasks.{queue}.*": {"queue": queue} for queue in QUEUES},
    task_default_queue="mixed",
    # Task events and results for Flower and the load generator.
    worker_send_task_events=True,
    task_track_started=True,
    result_expires=86400,
    result_extended=True,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    worker_hijack_root_logger=False,
)
celery_autoscale.install(app)
