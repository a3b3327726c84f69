"""The Celery app: configuration for autoscaled workers, routing and the task base class.

Run a worker for one queue with ``celery -A tasks worker -Q cpu``. Each setting below cites
the Celery documentation (https://docs.celeryq.dev/en/stable/userguide/configuration.html)
for why an autoscaled worker needs it.
"""

from __future__ import annotations

import logging

from celery import Celery, Task

from . import config, deadletter

logger = logging.getLogger(__name__)

settings = config.load()


class TransientError(RuntimeError):
    """A failure worth retrying: a timeout, a dropped connection, an injected fault."""


class AutoscaleTask(Task):
    """Base of every task here: retries transient errors, then dead-letters the task.

    Retries use exponential backoff with full jitter (``retry_backoff``, ``retry_jitter``,
    ``retry_backoff_max``; Celery's "Tasks: Automatic retry for known exceptions").
    """

    autoretry_for = (TransientError, ConnectionError, TimeoutError)
    retry_backoff = True
    retry_backoff_max = settings.retry_backoff_max
    retry_jitter = True
    max_retries = settings.max_retries

    def on_failure(self, exc, task_id, args, kwargs, einfo):  # noqa: D401 - Celery hook
        """Celery calls this once a task has failed for good: record it in the dead-letter list."""
        deadletter.record(self, exc, task_id, args, kwargs, einfo)


def create_app(settings: config.Settings) -> Celery:
    """A Celery app for ``settings``: the worker's app, or a producer's for another broker."""
    app = Celery(
        "tasks", broker=settings.broker_url, backend=settings.result_backend, task_cls=AutoscaleTask
    )
    app.conf.update(
        # Explicit routing: every task name maps to exactly one queue ("Routing Tasks").
        task_routes={f"tasks.{queue}.*": {"queue": queue} for queue in config.QUEUES},
        task_default_queue="mixed",
        # Acknowledge after the task ran, so a worker removed mid-task does not lose it
        # (task_acks_late; "Should I use retry or acks_late?" in the FAQ) ...
        task_acks_late=True,
        # ... and requeue it when the worker process is killed (task_reject_on_worker_lost).
        task_reject_on_worker_lost=True,
        # Reserve one message per process at most (worker_prefetch_multiplier, "Prefetch Limits"),
        worker_prefetch_multiplier=1,
        # and none beyond the free processes (worker_disable_prefetch, Redis only, Celery >= 5.6):
        # waiting messages stay in the Redis lists, where KEDA counts them.
        worker_disable_prefetch=True,
        # Redelivery after this many seconds of an unacknowledged message (broker_transport_options,
        # "Using Redis: Visibility timeout"); with priority lists named "<queue>:<step>".
        broker_transport_options=settings.transport_options(),
        result_backend_transport_options={"visibility_timeout": settings.visibility_timeout},
        broker_use_ssl=settings.ssl_options(settings.broker_url),
        redis_backend_use_ssl=settings.ssl_options(settings.result_backend),
        broker_connection_retry_on_startup=True,
        # A task must end before its message could be redelivered (task_time_limit).
        task_time_limit=settings.task_time_limit,
        # SIGTERM is a warm shutdown (running tasks finish). On a cold shutdown (SIGQUIT) running
        # tasks get this many seconds before they are cancelled and requeued
        # (worker_soft_shutdown_timeout, "Workers Guide: Soft Shutdown", Celery >= 5.5).
        worker_soft_shutdown_timeout=settings.soft_shutdown_timeout,
        worker_enable_soft_shutdown_on_idle=settings.soft_shutdown_timeout > 0,
        # Task events for Flower (worker_send_task_events).
        worker_send_task_events=True,
        task_track_started=True,
        result_expires=86400,
        result_extended=True,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        worker_hijack_root_logger=False,
    )
    return app


app = create_app(settings)

# The in-flight, metrics and heartbeat hooks, then the tasks themselves.
from . import hooks, work  # noqa: E402,F401

app.steps["consumer"].add(hooks.Heartbeat)
