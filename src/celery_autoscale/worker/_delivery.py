"""The in-flight record written in kombu's own transactions: where the worker takes a message and
where it acknowledges it.

kombu's Redis transport already sends one ``MULTI``/``EXEC`` when it delivers a message (the
message into its ``unacked`` hash and ``unacked_index``) and one when it acknowledges it (out of
both). :class:`QoS` adds the runtime's records to those two transactions, so a task without an
ETA costs the worker no Redis round trip of its own (measured by ``bench/worker_overhead.py``):

- at delivery: the task into its queue's in-flight sorted set and its worker and deadline
  (delivery + its hard time limit) into the owners hash, atomically with kombu's ``unacked``
  entry, so the task is never in neither a list nor a key the backlog counts; while Redis cannot
  be reached the transaction is sent again for up to a minute, for every message (kombu's
  ``BRPOP`` has already taken it off its list: kombu alone would lose it);
- at acknowledgement (``acks_late``: after the run, success, failure or retry alike): out of
  both and its run record ``"<delivered>,<acknowledged>"``, in the same transaction as kombu's;
  the run counters (the time from delivery to acknowledgement, seconds) ride with it at most once
  every :data:`COUNT_SECONDS` and with the last acknowledgement before the worker is idle; while Redis cannot
  be reached the acknowledgement is tried again for up to a minute
  (:func:`~celery_autoscale.worker._runtime.retrying`), so a task that ends in a Redis outage is
  not delivered a second time;
- when kombu puts the message back on its list (a reject with requeue, a restore at close): out
  of both, in kombu's restore transaction.

A worker takes a message only when a process is free (``worker_disable_prefetch``), so delivery
is when the task starts, within the hand-over to its process. A task with an ETA is held long
before it runs: its records stay with the task's own process (``task_prerun``,
``task_postrun``; :mod:`~celery_autoscale.worker._runtime`), as they do for any transport other
than kombu's Redis one (:data:`~celery_autoscale.worker._runtime.KOMBU_REDIS`).

The worker's consumer (:mod:`~celery_autoscale.worker._consumer`) makes its task channel's QoS
one of these each time its event loop starts (:func:`record_in`).
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual

from ._runtime import queue_of, retrying

__all__ = ["COUNT_SECONDS", "QoS", "record_in"]

logger = logging.getLogger(__name__)

#: Seconds between two updates of the run counters: the acknowledgements in between add their runs
#: to the next (the last one before the worker goes idle sends them at once, and the channel's
#: close sends what is left). The reconciler's averages span 60 s
#: (:mod:`celery_autoscale.reconciler._sizing`).
COUNT_SECONDS = 1.0


def record_in(channel, runtime, worker: str) -> None:
    """Make ``channel``'s QoS (kombu's Redis ``QoS``) write ``runtime``'s records for ``worker``
    (its node name).

    Raises:
        TypeError: the channel's QoS is not kombu's Redis QoS.
    """
    qos = channel.qos
    if not isinstance(qos, QoS):
        if type(qos) is not kombu_redis.QoS:
            raise TypeError(f"the worker's task channel has {type(qos).__name__}, not kombu's Redis QoS")
        qos.__class__ = QoS
        qos._runs, qos._local, qos._lock = {}, threading.local(), threading.Lock()
        qos._counted, qos._count_at = {}, 0.0
    qos.runtime, qos.worker = runtime, worker


def _add(counted: dict, queue: str, runs: int, seconds: float) -> None:
    """Add ``runs`` runs taking ``seconds`` in all to ``counted[queue]`` (``[runs, seconds]``)."""
    entry = counted.setdefault(queue, [0, 0.0])
    entry[0] += runs
    entry[1] += seconds


class QoS(kombu_redis.QoS):
    """kombu's Redis QoS, with the runtime's in-flight record in its delivery and ack transactions."""

    runtime = worker = None
    _runs: dict  # delivery tag -> (queue, task id, delivered: Unix seconds, perf_counter)
    _local: threading.local  # .pending: the start to add to the delivery transaction of this thread
    _counted: dict  # queue -> [runs, seconds] acknowledged and not yet counted in Redis
    _count_at: float  # monotonic time from which the next acknowledgement sends _counted

    def _start_of(self, message):
        """``(queue, task id, hard time limit)`` of a task message without an ETA, else None."""
        headers = message.headers or {}
        if "task" not in headers:  # Celery's task protocol 1 carries them in the body
            try:
                headers = message.decode()
            except Exception:
                return None
            if not isinstance(headers, dict) or "task" not in headers:
                return None
        if headers.get("eta") is not None or not headers.get("id"):
            return None
        task = self.runtime.app.tasks.get(headers["task"])
        return queue_of(message), headers["id"], self.runtime.hard_limit(headers.get("timelimit"), task)

    def append(self, message, delivery_tag):
        """kombu's delivery transaction, with the task's start in it; sent again while Redis cannot
        be reached (:func:`~celery_autoscale.worker._runtime.retrying`, up to a minute).

        By now kombu's ``BRPOP`` has taken the message off its list: if this transaction failed,
        as kombu's own does (a Redis restart between the two; measured: 1 task in 3,000 lost over
        4 restarts), the message would be in no key at all and lost. The transaction is idempotent,
        so sending it again once Redis answers records the message as ``unacked`` and in flight.
        """
        start = self._start_of(message) if self.runtime is not None else None
        if start is not None:
            queue, task_id, limit = start
            now = time.time()
            self._runs[delivery_tag] = (queue, task_id, now, time.perf_counter())
            self._local.pending = (queue, task_id, now, self.runtime.owner(self.worker, now, limit))
        try:
            retrying(lambda: super(QoS, self).append(message, delivery_tag))
        except BaseException:
            self._runs.pop(delivery_tag, None)
            raise
        finally:
            self._local.pending = None

    @contextmanager
    def pipe_or_acquire(self, pipe=None, client=None):
        with super().pipe_or_acquire(pipe, client) as p:
            pending = getattr(self._local, "pending", None) if pipe is None else None
            if pending is not None:  # the delivery transaction of append() (each try of it)
                self.runtime.start_commands(p, *pending)
            yield p

    def _remove_from_indices(self, delivery_tag, pipe=None):
        pipe = super()._remove_from_indices(delivery_tag, pipe)
        run = self._runs.get(delivery_tag)
        if run is not None:  # back on its list (reject with requeue, restore): not a run
            self.runtime.end_commands(pipe, run[0], run[1])
        return pipe

    def ack(self, delivery_tag):
        run = self._runs.get(delivery_tag)
        if run is None:
            return super().ack(delivery_tag)
        queue, task_id, delivered, began = run

        took = time.perf_counter() - began
        with self._lock:  # the last of concurrent acknowledgements (greenlets, threads) sees none running
            self._runs.pop(delivery_tag, None)
            _add(self._counted, queue, 1, took)
            due = not self._runs or time.monotonic() >= self._count_at
            counted = self._counted if due else {}
            if due:
                self._counted, self._count_at = {}, time.monotonic() + COUNT_SECONDS

        def send():  # kombu's ack (redis.QoS.ack), with the run's end in the same transaction
            pipe = super(QoS, self)._remove_from_indices(delivery_tag)
            self.runtime.end_commands(pipe, queue, task_id, delivered, time.time())
            for name, (runs, seconds) in counted.items():
                self.runtime.count_commands(pipe, name, runs, seconds)
            pipe.execute()

        try:
            retrying(send)
        except BaseException:
            with self._lock:  # still unacknowledged; counted again with a later acknowledgement
                self._runs[delivery_tag] = run
                for name, (runs, seconds) in counted.items():
                    _add(self._counted, name, runs, seconds)
            raise
        virtual.QoS.ack(self, delivery_tag)

    def reject(self, delivery_tag, requeue=False):
        super().reject(delivery_tag, requeue)
        self._runs.pop(delivery_tag, None)

    def restore_unacked(self, client=None):
        super().restore_unacked(client)
        self._runs.clear()

    def restore_unacked_once(self, stderr=None):
        """kombu's, at the channel's close (a warm shutdown), then :meth:`flush_counts`. kombu calls
        :meth:`restore_unacked` from here only when a message is still unacknowledged, so the
        counters are sent here, not there."""
        try:
            return super().restore_unacked_once(stderr)
        finally:
            self.flush_counts()

    def flush_counts(self) -> None:
        """Send the run counters :meth:`ack` batched and has not sent yet: without this, the runs
        acknowledged in the last second before a warm shutdown were never counted."""
        with self._lock:
            counted, self._counted = self._counted, {}
        if not counted:
            return
        try:
            self.runtime.write(lambda pipe: [self.runtime.count_commands(pipe, name, runs, seconds)
                                             for name, (runs, seconds) in counted.items()])
        except Exception:  # counters for sizing only: never a reason to fail a shutdown
            logger.warning("could not send the last run counters of %s", ", ".join(sorted(counted)))
