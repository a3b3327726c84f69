"""The reconciler's half of ETA parking: parked far-future tasks go back to their lists when due.

The worker's half (:mod:`celery_autoscale.worker._parking`) says why tasks are parked and how.
"""

from __future__ import annotations

import json
import time

from .. import keys
from .._redis import KombuPipe, as_text

__all__ = ["unpark_due"]


def unpark_due(client, channel, horizon: float, prefix: str = "", now: float | None = None) -> list[str]:
    """Put every parked message due within ``horizon / 2`` s back on its list; return their ids.

    Args:
        client: a ``redis.Redis`` for the broker (a plain one: the runtime's keys are named in full).
        channel: a kombu Redis channel of the app (``connection.default_channel``): its
            ``_do_restore_message`` picks the list (queue, priority) as kombu's restore does.
    """
    now = time.time() if now is None else now
    due = client.zrangebyscore(keys.parked_eta_key(prefix), "-inf", now + horizon / 2)
    moved = []
    for member in due:
        task_id = as_text(member)

        def restore(pipe, task_id=task_id):
            entry = pipe.hget(keys.parked_key(prefix), task_id)
            pipe.multi()
            pipe.zrem(keys.parked_eta_key(prefix), task_id)
            pipe.hdel(keys.parked_key(prefix), task_id)
            if entry:
                payload, exchange, routing_key = json.loads(entry)
                channel._do_restore_message(payload, exchange, routing_key, KombuPipe(pipe, channel.client))

        client.transaction(restore, keys.parked_key(prefix))
        moved.append(task_id)
    return moved
