"""Far-future ETA tasks wait in Redis, not in a worker, so they hold no replica.

Celery's Redis transport has no delayed delivery: a worker takes a task with an ETA (a
countdown) off its list at once and holds it, unacknowledged, until it is due. The backlog
must count it (the worker has to stay to run it), so a task due in six hours would keep a
replica for six hours, and a scale-down in between hands it back to the list (kombu restores
a warm shutdown's unacknowledged messages) only for the next worker to hold it again.

With a horizon ``H`` (``autoscale_eta_horizon``, ``CELERY_ETA_HORIZON``; 0 turns parking off):

- the worker's consumer (:mod:`celery_autoscale.worker._consumer`) parks a message whose ETA is
  more than ``H`` seconds away instead of handing it to Celery (:func:`park`): one Redis
  transaction writes kombu's own ``[payload, exchange, routing_key]`` to
  :func:`~celery_autoscale.keys.parked_key` (by task id) and the ETA to
  :func:`~celery_autoscale.keys.parked_eta_key`, then the message is acknowledged. A crash between the two leaves it
  unacknowledged: kombu restores it and it is parked again under the same id (at least once);
- the reconciler (:func:`celery_autoscale.reconciler.unpark_due`) puts each parked message whose ETA is within ``H / 2``
  back on its list with kombu's ``_do_restore_message`` (the list of its priority), in one
  transaction with its removal from the parking keys. The backlog counts it from then on, KEDA
  starts a worker, which holds it (its ETA is now within the horizon) and runs it on time.

Parking needs the reconciler: the chart sets the horizon only when ``reconciler.enabled``.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timezone

from .. import keys
from .._redis import unprefixed

__all__ = ["eta_of", "park"]

logger = logging.getLogger(__name__)


def eta_of(headers: dict | None) -> float | None:
    """The ETA of a Celery (protocol 2) message, Unix seconds, or None (none, or unreadable)."""
    raw = (headers or {}).get("eta")
    if not raw:
        return None
    try:
        when = datetime.fromisoformat(str(raw))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def park(message, horizon: float, prefix: str = "", now: float | None = None) -> bool:
    """Park ``message`` (a kombu Redis message) if its ETA is more than ``horizon`` s away.

    Returns True when parked and acknowledged (Celery must not see it), False otherwise.

    Raises:
        redis.RedisError: Redis cannot be reached (the message stays unacknowledged).
    """
    eta = eta_of(message.headers)
    now = time.time() if now is None else now
    raw = getattr(message, "_raw", None)
    task_id = (message.headers or {}).get("id")
    if not horizon or eta is None or eta - now <= horizon or raw is None or not task_id:
        return False
    info = message.delivery_info or {}
    entry = json.dumps([raw, info.get("exchange", ""), info.get("routing_key", "")])
    with message.channel.conn_or_acquire() as client:
        pipe = unprefixed(client).pipeline()  # MULTI/EXEC; the keys are named in full
        pipe.hset(keys.parked_key(prefix), task_id, entry)
        pipe.zadd(keys.parked_eta_key(prefix), {task_id: eta})
        pipe.execute()
    message.ack()
    logger.info("parked task %s until %.0f s before its ETA (%.0f s away)", task_id, horizon / 2, eta - now)
    return True
