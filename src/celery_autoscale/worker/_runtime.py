"""What a worker of an installed app does at run time: the in-flight record, metrics, the stamp.

One :class:`Runtime` per app, made by :func:`runtime_of` and kept on the app. Its signal
handlers are connected by :func:`celery_autoscale.install` and act only on that app's tasks
and workers:

- ``before_task_publish``: stamp each message with a ``published_at`` header (Unix seconds);
- ``task_received`` (worker main process): a task with an ETA (countdown, retry backoff) is
  recorded in its queue's scheduled sorted set until it starts;
- ``task_prerun``: for a task with an ETA (or under a ``broker_transport`` other than kombu's Redis
  one, :data:`KOMBU_REDIS`), record the task in its queue's in-flight sorted set, its worker and
  deadline (start + its hard time limit) in the owners hash, and take it out of the scheduled set;
  any other task was recorded when the worker took its message, in the script that also does
  kombu's delivery (:mod:`~celery_autoscale.worker._delivery`; its restore path uses
  :meth:`Runtime.end_commands`);
- ``task_postrun`` (sent after success, failure and retry alike): for those same tasks, remove it,
  keep ``"<started>,<finished>"`` under :func:`~celery_autoscale.keys.run_record_key` for
  ``autoscale_run_record_ttl`` seconds and add the run to the queue's counters (one pipeline); for
  every task, count the run in Prometheus. The records wait up to a minute for a Redis that is
  restarting (:func:`retrying`): a task that ends in a Redis outage still leaves its run record,
  and no stale in-flight entry;
- ``worker_init`` / ``worker_ready``: prepare the metrics folder, then serve ``/metrics`` and start
  the worker's lease (:mod:`celery_autoscale.worker._lease`); ``worker_shutdown``: end the lease.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

import redis

from .. import keys
from .._files import writable
from .._redis import connect
from .._settings import ConfigError, settings_of
from . import _metrics
from ._lease import Lease, ttl

__all__ = ["LEGACY_ROUNDTRIP_TASK", "ROUNDTRIP_TASK", "Runtime", "own_tasks", "queue_of", "retrying", "runtime_of"]

#: The task of the round trip (``python -m celery_autoscale.roundtrip``: the chart's helm test and
#: canary) that :func:`celery_autoscale.install` registers on every app: it answers at once on any queue.
ROUNDTRIP_TASK = "celery_autoscale.roundtrip"
#: Release 0.2's name of :data:`ROUNDTRIP_TASK`, still registered so that a round trip sent by 0.2
#: during an upgrade is answered, not dropped as unknown.
LEGACY_ROUNDTRIP_TASK = "celery_autoscale.probe"

#: ``broker_transport`` values that leave a ``redis://``, ``rediss://`` or ``sentinel://`` broker URL to
#: kombu's own Redis transport, whose QoS :mod:`~celery_autoscale.worker._delivery` extends.
KOMBU_REDIS = (None, "", "redis", "rediss", "sentinel")

#: Seconds a task's in-flight record and run record wait for an unreachable Redis.
WRITE_RETRY_SECONDS = 60.0

logger = logging.getLogger(__name__)


def queue_of(request) -> str:
    """The queue a task request's message came from (``"unknown"`` when not delivered by a broker)."""
    info = getattr(request, "delivery_info", None) or {}
    return info.get("routing_key") or "unknown"


class Runtime:
    """The runtime's state for one app in one process."""

    def __init__(self, app):
        self.app = app
        self._client = None
        self.started: dict[str, tuple[float, float, str]] = {}  # task id -> (time, perf_counter, queue)
        self.lease = None  # the main process's Lease once the worker is ready
        self.metrics = None  # a worker._metrics.Metrics once the worker initialised them
        self._at_delivery = None  # records_at_delivery, once asked

    @property
    def settings(self):
        return settings_of(self.app)

    def client(self):
        """This process's Redis client for the broker (redis-py reopens its pool after a fork)."""
        if self._client is None:
            self._client = connect(self.settings)
        return self._client

    def write(self, fill) -> None:
        """Send the commands ``fill(pipe)`` queues in one pipeline, waiting for a Redis that cannot
        be reached (:func:`retrying`).

        Raises:
            redis.RedisError: Redis still cannot be reached, or refused a command.
        """
        def send():
            pipe = self.client().pipeline(transaction=False)
            fill(pipe)
            pipe.execute()

        retrying(send)

    def owns(self, task) -> bool:
        return task is not None and getattr(task, "app", None) is self.app

    def time_limit(self, task) -> float:
        """The hard time limit of this run of ``task``, seconds: the message's ``timelimit``, the
        task's ``time_limit``, else the app's ``task_time_limit`` (Celery's own order)."""
        return self.hard_limit(getattr(task.request, "timelimit", None), task)

    def hard_limit(self, timelimit, task) -> float:
        """Seconds: ``timelimit``'s hard part (a message's ``[hard, soft]`` header), else the task's
        ``time_limit``, else the app's ``task_time_limit``."""
        hard = (timelimit or (None, None))[0]
        return float(hard or getattr(task, "time_limit", None) or self.settings.task_time_limit)

    def owner(self, worker: str, now: float, limit: float) -> str:
        """A running task's entry in :func:`~celery_autoscale.keys.owners_key`: JSON of its worker, its
        deadline (``now`` + its hard time limit, Unix seconds) and the worker's lease time, seconds."""
        return json.dumps({"worker": worker, "deadline": now + limit, "lease": ttl(self.settings.heartbeat_interval)})

    def start_commands(self, pipe, queue: str, task_id: str, now: float, owner: str) -> None:
        """Queue on ``pipe`` the in-flight record of a task that starts (a run or a delivery) at ``now``."""
        prefix = self.settings.key_prefix
        pipe.zadd(keys.in_flight_key(queue, prefix), {task_id: now})
        pipe.hset(keys.owners_key(queue, prefix), task_id, owner)

    def end_commands(self, pipe, queue: str, task_id: str, started: float | None = None,
                     finished: float | None = None, took: float | None = None, prefix: str | None = None) -> None:
        """Queue on ``pipe`` the end of a task's in-flight record; with ``finished``, its run record
        (``started``, ``finished``: Unix seconds) and its run counters (``took``: seconds). ``prefix``
        replaces the key prefix of the in-flight record's keys (``""`` on a pipeline of kombu's that
        adds it)."""
        settings = self.settings
        own = settings.key_prefix if prefix is None else prefix
        pipe.zrem(keys.in_flight_key(queue, own), task_id)
        pipe.hdel(keys.owners_key(queue, own), task_id)
        if finished is None:
            return
        if started is not None and settings.run_record_ttl:
            pipe.set(keys.run_record_key(task_id, settings.key_prefix), f"{started},{finished}",
                     ex=settings.run_record_ttl)
        if took is not None:
            self.count_commands(pipe, queue, 1, took)

    def count_commands(self, pipe, queue: str, runs: int, seconds: float) -> None:
        """Queue on ``pipe`` ``runs`` more runs of ``queue`` that took ``seconds`` in all, for sizing
        to a wait target (:mod:`celery_autoscale.reconciler._sizing`)."""
        stats = keys.stats_key(queue, self.settings.key_prefix)
        pipe.hincrby(stats, "runs", runs)
        pipe.hincrbyfloat(stats, "run_seconds", round(seconds, 6))

    @property
    def records_at_delivery(self) -> bool:
        """Whether the worker's consumer writes the in-flight record of a task without an ETA in
        kombu's own delivery and acknowledgement transactions (:mod:`~celery_autoscale.worker._delivery`);
        otherwise the task's own process writes it at ``task_prerun`` and ``task_postrun``."""
        if self._at_delivery is None:
            self._at_delivery = self.app.conf.broker_transport in KOMBU_REDIS
        return self._at_delivery

    # -- signal handlers -----------------------------------------------------------------
    def stamp_published_at(self, headers=None, **_):
        """A ``published_at`` header: the worker's queue wait starts here."""
        if headers is not None:
            headers.setdefault("published_at", time.time())

    def task_received(self, request=None, **_):
        if request is None or not self.owns(getattr(request, "task", None)) or request.eta is None:
            return
        try:
            self.client().zadd(keys.scheduled_key(queue_of(request), self.settings.key_prefix),
                               {request.id: time.time()})
        except Exception:
            logger.exception("could not record task %s as scheduled", request.id)

    def task_started(self, task_id=None, task=None, **_):
        if not self.owns(task):
            return
        queue = queue_of(task.request)
        now = time.time()
        self.started[task_id] = (now, time.perf_counter(), queue)
        if task.request.eta is not None or not self.records_at_delivery:
            owner = self.owner(task.request.hostname, now, self.time_limit(task))
            try:
                self.write(lambda pipe: (self.start_commands(pipe, queue, task_id, now, owner),
                                         pipe.zrem(keys.scheduled_key(queue, self.settings.key_prefix), task_id)))
            except Exception:  # the record must never fail a task
                logger.exception("could not record task %s as in flight", task_id)
        published = getattr(task.request, "published_at", None)
        if self.metrics is not None and published is not None:
            self.metrics.labelled("queue_wait", queue).observe(max(0.0, now - float(published)))

    def task_finished(self, task_id=None, task=None, state=None, **_):
        if not self.owns(task):
            return
        started, began, queue = self.started.pop(task_id, (None, None, queue_of(task.request)))
        finished = time.time()
        took = time.perf_counter() - began if began is not None else None
        if task.request.eta is not None or not self.records_at_delivery:
            try:
                self.write(lambda pipe: self.end_commands(pipe, queue, task_id, started, finished, took))
            except Exception:
                logger.exception("could not clear the in-flight entry of task %s", task_id)
        if self.metrics is not None:
            self.metrics.labelled("tasks", queue, task.name, (state or "unknown").lower()).inc()
            if took is not None:
                self.metrics.labelled("runtime", queue, task.name).observe(took)

    def worker_init(self, sender=None, **_):
        """Before the pool forks: refuse an app without tasks; a clean multiprocess folder and the metrics.

        Sent after Celery imported the app's task modules (``imports``, ``include``,
        ``autodiscover_tasks``). A worker whose app registers no task of its own would take every
        message of its queues only to dead-letter it: it stops with one line and exit status 2.
        """
        if getattr(sender, "app", None) is not self.app:
            return
        if not own_tasks(self.app):
            print(f"error: the app {self.app.main!r} registers no task (is CELERY_AUTOSCALE_APP your app, with its "
                  f"task modules in imports, include or autodiscover_tasks?); a worker would only dead-letter "
                  f"what it takes", file=sys.stderr)
            raise SystemExit(2)
        try:
            check_files(self.settings)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        if self.settings.metrics_port:
            self.metrics = _metrics.Metrics()

    def worker_ready(self, sender=None, **_):
        """Start the lease; serve ``/metrics`` for the queues this worker consumes (main process only)."""
        if getattr(sender, "app", None) is not self.app:
            return
        if self.lease is None:
            self.lease = Lease(self.client(), sender.hostname, self.settings.heartbeat_interval,
                               self.settings.key_prefix)
            self.lease.start()
        consumer = sender.task_consumer
        queues = sorted(q.name for q in consumer.queues) if consumer else []
        self.record_start(queues)
        if self.metrics is not None:
            self.metrics.serve(self.settings, queues, self.client())

    def record_start(self, queues: list[str]) -> None:
        """Record how long this worker took from its process start to ready, for sizing to a wait
        target (``start_seconds`` of each queue's :func:`~celery_autoscale.keys.stats_key`)."""
        took = process_age()
        if took is None or not queues:
            return
        try:
            pipe = self.client().pipeline(transaction=False)
            for queue in queues:
                pipe.hset(keys.stats_key(queue, self.settings.key_prefix), "start_seconds", round(took, 3))
            pipe.execute()
        except redis.RedisError:
            logger.warning("could not record the worker's start time")


    def worker_shutdown(self, sender=None, **_):
        """The worker stopped, its last task done: end the lease."""
        if self.lease is not None and getattr(sender, "app", self.app) is self.app:
            self.lease.stop()
            self.lease = None


def retrying(send, seconds: float = WRITE_RETRY_SECONDS):
    """``send()``; while Redis cannot be reached, again after 0.5 s, doubling to 5 s, for up to
    ``seconds`` (as Celery's ``result_backend_always_retry`` waits for the result backend in the
    same task). Returns what ``send`` returns.

    Raises:
        redis.ConnectionError, redis.TimeoutError: Redis still cannot be reached.
    """
    delay, deadline = 0.5, time.monotonic() + seconds
    while True:
        try:
            return send()
        except (redis.ConnectionError, redis.TimeoutError):
            if time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(2 * delay, 5.0)


def check_files(settings) -> None:
    """Refuse a heartbeat file the worker cannot write (a folder, or in a missing or read-only folder).

    Raises:
        ConfigError: one line naming the file.
    """
    beat = settings.heartbeat_file
    if not writable(beat):
        raise ConfigError(f"the heartbeat file {beat} (CELERY_HEARTBEAT_FILE) cannot be written: a folder, or its "
                          f"folder is missing or read-only")


def process_age() -> float | None:
    """Seconds since this process started (Linux ``/proc``: ``starttime`` of ``/proc/self/stat``
    after the boot time ``btime`` of ``/proc/stat``), or None where ``/proc`` cannot tell."""
    try:
        with open("/proc/self/stat") as f:
            started = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22, after the command's name
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime "))
        return max(0.0, time.time() - boot - started / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def own_tasks(app) -> list[str]:
    """The app's task names, less Celery's built-ins and the runtime's round-trip task."""
    return sorted(name for name in app.tasks if not name.startswith("celery.")
                  and name not in (ROUNDTRIP_TASK, LEGACY_ROUNDTRIP_TASK))


def runtime_of(app) -> Runtime:
    """The :class:`Runtime` of ``app`` (made on first use, kept on the app)."""
    runtime = getattr(app, "_autoscale_runtime", None)
    if runtime is None:
        runtime = app._autoscale_runtime = Runtime(app)
    return runtime
