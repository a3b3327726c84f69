"""The worker's consumer: Celery's own, with its recovery from a lost Redis connection made safe.

Celery 5.7.0's ``Consumer.on_connection_error_after_connected`` calls ``connection.collect()``,
then ``connection.close()``. With Redis down, ``collect()`` cannot close the task channel
(kombu's ``redis.Channel.close`` raises in ``_brpop_read`` and ``Connection.maybe_close_channel``
swallows it) but detaches its transport (``transport.client = None``). ``close()`` then closes
that channel again: ``virtual.Channel.close`` calls ``QoS.restore_unacked_once``, which opens a
client from the detached transport and raises ``AttributeError: 'NoneType' object has no
attribute 'hostname'`` (``redis.Channel._connparams``), which Celery treats as unrecoverable:
the worker exits. Measured with a ``threads`` worker, tasks running, Redis stopped (3 of 3).
A task that ended after the connection was replaced had the same fate: its ack went through
the closed channel.

:class:`Consumer` changes two things around Celery's method, for the lost connection only:

- the messages of tasks still running are not pushed back to the lists while they run (that
  restore either crashes, as above, or hands a running task to a second worker); kombu keeps
  them in its ``unacked`` hash, so a worker that dies later still has them restored after the
  visibility timeout (at least once);
- the closed channel gets its transport back, so when such a task ends its ack (an ``HDEL`` and
  a ``ZREM`` on kombu's ``unacked`` keys, valid from any connection) reaches Redis through a new
  client; if Redis is still down the ack fails like any ack (logged, redelivered later).

It also parks far-future ETA tasks in Redis when the app has an ``autoscale_eta_horizon``
(:mod:`celery_autoscale.worker._parking`), before Celery sees them; and it drops no message it
cannot run. Celery rejects a message whose task the app does not know (``on_unknown_task``: on
Redis a reject without requeue deletes it; "Received unregistered task" is all that is left), or
that is no task message at all (``on_unknown_message``, ``on_invalid_task``). Here each goes to the
dead-letter list first, whole, with the worker and the reason
(:func:`~celery_autoscale.worker._deadletter.record_message`), so ``python -m
celery_autoscale.deadletter requeue`` sends it again once the right worker runs. While Redis
cannot take the entry the message is not rejected: it stays unacknowledged and kombu restores it.

And it takes no message once a shutdown began. On SIGTERM Celery's event loop runs on until its
next wake-up, and a ``BRPOP`` it had sent stays pending: Redis pops the next task for it, and the
worker held it (prefork: received, never started) in kombu's ``unacked`` hash only, in no key the
backlog counts, until the channel closed after the running tasks; a SIGKILL meanwhile (a grace
period running out) left it to the visibility timeout, and the backlog KEDA reads missed it
(measured: 2.6-2.9 s). Here a message that arrives once Celery's shutdown flag is set is given back
at once (kombu's reject with requeue puts it on its list), kombu is told to send no further
``BRPOP`` (``qos.can_consume``), and a ``BRPOP`` still pending when the loop ends is read then,
not at close.

And each time its event loop starts it has kombu write the in-flight record of the tasks it takes
in kombu's own delivery and acknowledgement transactions (:mod:`~celery_autoscale.worker._delivery`).

``install(app)`` selects it through Celery's ``worker_consumer`` setting.
"""

from __future__ import annotations

import logging

from celery.exceptions import WorkerShutdown, WorkerTerminate
from celery.worker import state as worker_state
from celery.worker.consumer import Consumer as CeleryConsumer
from kombu.transport.virtual import Empty
from vine import promise

from .._settings import settings_of
from ._deadletter import record_message
from ._delivery import record_in
from ._parking import park
from ._runtime import runtime_of

__all__ = ["Consumer"]

logger = logging.getLogger(__name__)


def _stopping() -> bool:
    """Whether a warm or cold shutdown began: Celery's signal handler sets an exit code (0 is one)."""
    return any(flag is not None and flag is not False
               for flag in (worker_state.should_stop, worker_state.should_terminate))


def _stop_consuming(channel) -> None:
    """kombu's poller sends a ``BRPOP`` only while ``qos.can_consume()``: from now on, never."""
    channel.qos.can_consume = lambda: False


def _give_back(message) -> None:
    """Put a message taken during shutdown back on its list (kombu's reject with requeue)."""
    _stop_consuming(message.channel)
    message.reject(requeue=True)
    logger.info("shutting down: gave back a message of queue %s", (message.delivery_info or {}).get("routing_key"))


class Consumer(CeleryConsumer):
    """Celery's ``Consumer``; a lost Redis connection no longer ends the worker."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        loop = self.loop  # Celery's asynloop or synloop

        def run_loop(*loop_args):
            runtime = runtime_of(self.app)
            if runtime.records_at_delivery:  # the in-flight record in kombu's transactions
                record_in(self.task_consumer.channel, runtime, self.hostname)
            try:
                return loop(*loop_args)
            except (WorkerShutdown, WorkerTerminate):
                self._read_pending()
                raise

        self.loop = run_loop

    def create_task_handler(self, promise=promise):
        handler = super().create_task_handler(promise)
        settings = settings_of(self.app)
        horizon, prefix = settings.eta_horizon, settings.key_prefix

        def on_task_received(message):
            if _stopping():
                return _give_back(message)
            if horizon and park(message, horizon, prefix):
                return None
            return handler(message)

        return on_task_received

    def _read_pending(self) -> None:
        """At the loop's end: read a pending ``BRPOP`` now, so a message it took goes back at once."""
        channel = getattr(self.task_consumer, "channel", None)
        if not getattr(channel, "_in_poll", None) or not hasattr(channel, "_brpop_read"):
            return  # none pending, or not kombu's Redis transport
        _stop_consuming(channel)
        try:
            channel._brpop_read()  # delivers to on_task_received, which gives the message back
        except Empty:
            pass
        except Exception as exc:  # the connection is gone: a message Redis popped stays in unacked
            logger.warning("could not read the pending BRPOP at shutdown: %s", type(exc).__name__)

    def _dead_letter(self, message, error: str) -> bool:
        if record_message(self.app, message, error, self.hostname):
            logger.error("dead-lettered a message of queue %s: %s (requeue it with python -m "
                         "celery_autoscale.deadletter requeue once a worker that knows it runs)",
                         (message.delivery_info or {}).get("routing_key"), error)
            return True
        logger.error("could not dead-letter a message (%s): left unacknowledged for kombu to restore", error)
        return False

    def on_unknown_task(self, body, message, exc):
        name = (message.headers or {}).get("task") or "?"
        if self._dead_letter(message, f"NotRegistered: {name!r} is not a task of the worker's app {self.app.main!r}"):
            super().on_unknown_task(body, message, exc)

    def on_unknown_message(self, body, message):
        if self._dead_letter(message, "not a Celery task message"):
            super().on_unknown_message(body, message)

    def on_invalid_task(self, body, message, exc):
        if self._dead_letter(message, f"invalid task message: {type(exc).__name__}: {exc}"):
            super().on_invalid_task(body, message, exc)

    def on_connection_error_after_connected(self, exc):
        connection = self.connection
        channel = getattr(connection, "_default_channel", None)
        transport = getattr(connection, "_transport", None)
        qos = getattr(channel, "_qos", None)
        if qos is not None:
            qos.restore_at_shutdown = False  # running tasks keep their messages in kombu's unacked hash
        super().on_connection_error_after_connected(exc)
        if channel is not None and transport is not None:
            transport.client = connection  # the settings _connparams reads; the socket is gone
            channel.connection = transport
