"""The in-flight record written with kombu's own delivery and acknowledgement: where the worker
takes a message and where it acknowledges it.

kombu's Redis transport sends one ``MULTI``/``EXEC`` when it delivers a message (the message
into its ``unacked`` hash and ``unacked_index``) and one when it acknowledges it (out of both).
For a task without an ETA, :class:`QoS` sends each of the two as one Lua script instead
(``EVALSHA``: :data:`DELIVER`, :data:`ACK`) that writes kombu's keys exactly as kombu does and
the runtime's records with them, atomically, as the transaction did. One command in place of a
transaction of four to nine is what makes the record nearly free: redis-py spends about 11 µs of
Python on each command of a pipeline (measured by ``bench/delivery_cost.py``), and a script costs
the worker less than kombu's own transaction. Scripts need Redis 2.6 and, under ACLs,
``+@scripting`` for the workers' user (kombu's Redis transport runs scripts of its own too).

- at delivery: the task into its queue's in-flight sorted set and its worker and deadline
  (delivery + its hard time limit) into the owners hash, atomically with kombu's ``unacked``
  entry, so the task is never in neither a list nor a key the backlog counts; while Redis cannot
  be reached the script is sent again for up to a minute, for every message (kombu's ``BRPOP``
  has already taken it off its list: kombu alone would lose it);
- at acknowledgement (``acks_late``: after the run, success, failure or retry alike): out of
  both and its run record ``"<delivered>,<acknowledged>"``, in the same script as kombu's ack;
  the run counters (the time from delivery to acknowledgement, seconds) ride with it at most once
  every :data:`COUNT_SECONDS` and with the last acknowledgement before the worker is idle; while
  Redis cannot be reached the acknowledgement is tried again for up to a minute
  (:func:`~celery_autoscale.worker._runtime.retrying`), so a task that ends in a Redis outage is
  not delivered a second time;
- when kombu puts the message back on its list (a reject with requeue, a restore at close): out
  of both, in kombu's restore transaction.

The scripts go through the runtime's own Redis client, with every key named in full
(:mod:`celery_autoscale.keys`, kombu's ``global_keyprefix`` included), not through kombu's client,
which prefixes only some commands' keys (``GlobalKeyPrefixMixin``: the first key of an
``EVALSHA``, the key of a ``ZADD``, not that of an ``HINCRBY``). In kombu's restore transaction
the runtime's keys go without the prefix, which kombu's pipeline adds to ``ZREM`` and ``HDEL``.

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

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.json import dumps

from .. import keys
from ._runtime import queue_of, retrying

__all__ = ["ACK", "COUNT_SECONDS", "DELIVER", "QoS", "record_in"]

logger = logging.getLogger(__name__)

#: Seconds between two updates of the run counters: the acknowledgements in between add their runs
#: to the next (the last one before the worker goes idle sends them at once, and the channel's
#: close sends what is left). The reconciler's averages span 60 s
#: (:mod:`celery_autoscale.reconciler._sizing`).
COUNT_SECONDS = 1.0

#: The delivery of a task: kombu's ``QoS.append`` (``ZADD`` of the tag to ``unacked_index``,
#: ``HSET`` of ``[payload, exchange, routing key]`` in ``unacked``) and the task's in-flight record.
#: KEYS: unacked_index, unacked, in-flight set, owners hash; ARGV: delivery tag, now (Unix
#: seconds), kombu's unacked entry, task id, owner (JSON).
DELIVER = """
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[4])
redis.call('HSET', KEYS[4], ARGV[4], ARGV[5])
return 1
"""

#: The acknowledgement of a task: kombu's ``QoS.ack`` (``ZREM``, ``HDEL`` of the tag), the end of
#: its in-flight record, its run record (when the TTL is not 0) and the run counters of the
#: stats hashes from the sixth key on (two ARGV each: runs, seconds).
#: KEYS: unacked_index, unacked, in-flight set, owners hash, run record, stats hash...; ARGV:
#: delivery tag, task id, run record, its TTL (seconds), then runs and seconds per stats hash.
ACK = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[2])
redis.call('HDEL', KEYS[4], ARGV[2])
if ARGV[4] ~= '0' then
  redis.call('SET', KEYS[5], ARGV[3], 'EX', ARGV[4])
end
for i = 6, #KEYS do
  redis.call('HINCRBY', KEYS[i], 'runs', ARGV[2 * i - 7])
  redis.call('HINCRBYFLOAT', KEYS[i], 'run_seconds', ARGV[2 * i - 6])
end
return 1
"""


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
        qos._runs, qos._lock = {}, threading.Lock()
        qos._counted, qos._count_at = {}, 0.0
    qos.runtime, qos.worker = runtime, worker
    client, prefix = runtime.client(), channel.global_keyprefix
    qos._deliver, qos._ack = client.register_script(DELIVER), client.register_script(ACK)
    qos._unacked = [prefix + qos.unacked_index_key, prefix + qos.unacked_key]


def _add(counted: dict, queue: str, runs: int, seconds: float) -> None:
    """Add ``runs`` runs taking ``seconds`` in all to ``counted[queue]`` (``[runs, seconds]``)."""
    entry = counted.setdefault(queue, [0, 0.0])
    entry[0] += runs
    entry[1] += seconds


class QoS(kombu_redis.QoS):
    """kombu's Redis QoS, with the runtime's in-flight record in its delivery and ack, as scripts."""

    runtime = worker = None
    _runs: dict  # delivery tag -> (queue, task id, delivered: Unix seconds, perf_counter)
    _counted: dict  # queue -> [runs, seconds] acknowledged and not yet counted in Redis
    _count_at: float  # monotonic time from which the next acknowledgement sends _counted
    _deliver = _ack = None  # redis-py Scripts of DELIVER and ACK on the runtime's client
    _unacked: list  # kombu's unacked_index and unacked keys, prefixed

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
        """kombu's delivery, with the task's start in the same script (:data:`DELIVER`); sent again
        while Redis cannot be reached (:func:`~celery_autoscale.worker._runtime.retrying`, up to a
        minute). A message that is no task without an ETA takes kombu's own transaction.

        By now kombu's ``BRPOP`` has taken the message off its list: if this delivery failed, as
        kombu's own does (a Redis restart between the two; measured: 1 task in 3,000 lost over
        4 restarts), the message would be in no key at all and lost. The script is idempotent,
        so sending it again once Redis answers records the message as ``unacked`` and in flight.
        """
        start = self._start_of(message) if self.runtime is not None else None
        if start is None:
            return retrying(lambda: super(QoS, self).append(message, delivery_tag))
        queue, task_id, limit = start
        now = time.time()
        prefix = self.runtime.settings.key_prefix
        delivery = message.delivery_info
        self._runs[delivery_tag] = (queue, task_id, now, time.perf_counter())
        script_keys = [*self._unacked, keys.in_flight_key(queue, prefix), keys.owners_key(queue, prefix)]
        args = [delivery_tag, now, dumps([message._raw, delivery["exchange"], delivery["routing_key"]]),
                task_id, self.runtime.owner(self.worker, now, limit)]
        try:
            retrying(lambda: self._deliver(keys=script_keys, args=args))
        except BaseException:
            self._runs.pop(delivery_tag, None)
            raise
        virtual.QoS.append(self, message, delivery_tag)

    def _remove_from_indices(self, delivery_tag, pipe=None):
        pipe = super()._remove_from_indices(delivery_tag, pipe)
        run = self._runs.get(delivery_tag)
        if run is not None:  # back on its list (reject with requeue, restore): not a run
            prefixes = isinstance(pipe, kombu_redis.GlobalKeyPrefixMixin)  # kombu's prefixes ZREM and HDEL
            self.runtime.end_commands(pipe, run[0], run[1], prefix="" if prefixes else None)
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

        settings = self.runtime.settings
        prefix = settings.key_prefix
        script_keys = [*self._unacked, keys.in_flight_key(queue, prefix), keys.owners_key(queue, prefix),
                       keys.run_record_key(task_id, prefix), *(keys.stats_key(name, prefix) for name in counted)]
        args = [delivery_tag, task_id, f"{delivered},{time.time()}", settings.run_record_ttl]
        for runs, seconds in counted.values():
            args += [runs, round(seconds, 6)]
        try:
            retrying(lambda: self._ack(keys=script_keys, args=args))
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
