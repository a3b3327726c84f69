"""One round of the reconciler: give the messages of dead workers back to their queues.

kombu restores a message left unacknowledged by a dead worker only from a running worker
(``QoS.restore_visible``, after the visibility timeout), so a queue at zero replicas would keep
its dead worker's tasks until something else started a worker of it. The reconciler is that
something, one small always-on process for all queues. Each round:

1. kombu's own restore (``restore_visible``, under kombu's ``unacked_mutex`` like the workers'
   sweeps): every message unacknowledged for longer than the visibility timeout goes back to
   its list, whichever queue it belongs to;
2. for each queue with in-flight entries: an entry whose worker does not answer Celery's
   ``ping`` and is either past its deadline (start + the run's hard time limit) plus ``margin``, or
   whose worker's lease (:mod:`celery_autoscale.worker._lease`) has been missing for one renewal
   interval in a row (half its lifetime: a live worker would have renewed it; a SIGKILLed,
   OOM-killed or deleted worker did not), is a dead worker's;
   its message, if kombu still holds it unacknowledged, goes back to the head of its list
   (kombu's ``restore_by_tag``, as a warm shutdown does) and the entry is removed unless a
   worker has taken the message again meanwhile (its own entry stays; :func:`_forget`). A worker
   that answers keeps its task: a pool without hard time limits (``threads``) may run past it;
3. :func:`~celery_autoscale.prune` removes the entries whose messages are gone, and the round
   reads each queue's backlog (:func:`~celery_autoscale.backlog`);
4. with an ETA horizon, parked far-future tasks due within half of it go back to their lists
   (:func:`~celery_autoscale.reconciler.unpark_due`);
5. given the queues the release serves, the queues with waiting tasks that none of them is
   (:func:`~celery_autoscale.reconciler._unserved.unserved`).

So a task of a dead worker is back in a list, where KEDA counts it, about one and a half lease
lifetimes after its worker died (measured with the chart's defaults: started again 30 s after a
SIGKILL, 50 s at worst) (or, for a 0.2 worker without a lease, ``margin`` seconds after its time
limit) instead of a visibility timeout later; at no moment does the queue's
backlog read zero while it is unfinished.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field

from .. import keys
from .._backlog import backlog, prune
from .._redis import as_text, unacked_tags
from .._settings import settings_of
from ._unpark import unpark_due
from ._unserved import unserved

__all__ = ["Round", "reconcile"]

logger = logging.getLogger("celery_autoscale.reconciler")


@dataclass
class Round:
    """What one round did."""

    queues: list[str] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)  # task ids given back to their queue
    kept: list[str] = field(default_factory=list)  # suspects (overdue, or lease lost) whose worker answered a ping
    backlog: dict[str, int] = field(default_factory=dict)  # queue -> total after the round
    unparked: list[str] = field(default_factory=list)  # parked ETA tasks put back on their lists
    parked: int = 0  # ETA tasks still parked after the round
    deletion_costs: dict[str, int] = field(default_factory=dict)  # pod -> cost patched this round
    unserved: dict[str, int] = field(default_factory=dict)  # queue no release queue is -> tasks waiting in it


def queues_with_entries(client, prefix: str) -> list[str]:
    """Queues that have an in-flight, owner or scheduled record (``SCAN``; no configuration needed)."""
    found = set()
    for pattern in (keys.in_flight_key("*", prefix), keys.owners_key("*", prefix), keys.scheduled_key("*", prefix),
                    keys.legacy_scheduled_key("*", prefix)):
        head = pattern[:-1]
        for key in client.scan_iter(match=pattern, count=500):
            found.add(as_text(key)[len(head):])
    return sorted(found)


def _owner(raw) -> tuple[str, float, float | None] | None:
    """``(worker, deadline, lease seconds or None)`` of an owners-hash value; None if unreadable."""
    try:
        owner = json.loads(raw)
        lease = owner.get("lease")
        return str(owner["worker"]), float(owner["deadline"]), float(lease) if lease is not None else None
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def _owners(client, queue: str, prefix: str) -> dict[str, tuple[str, float, float | None]]:
    """Task id -> (worker, deadline, lease seconds or None) of ``queue``'s running tasks; unreadable
    entries are skipped. Workers of 0.2 record no lease."""
    found = ((as_text(task_id), _owner(raw)) for task_id, raw in client.hgetall(keys.owners_key(queue, prefix)).items())
    return {task_id: owner for task_id, owner in found if owner is not None}


def _forget(client, queue: str, prefix: str, task_id: str, owner: tuple) -> None:
    """Remove ``task_id``'s in-flight entry and owner if its owner is still ``owner`` (as
    :func:`_owners` read it). A worker that took the restored message meanwhile (it can, within
    milliseconds: its records are written when it takes the message) has written its own
    entry, which must stay. One transaction, watching the owners hash."""
    owners_key = keys.owners_key(queue, prefix)

    def forget(pipe):
        raw = pipe.hget(owners_key, task_id)
        if raw is not None and _owner(raw) != owner:
            return
        pipe.multi()
        pipe.zrem(keys.in_flight_key(queue, prefix), task_id)
        pipe.hdel(owners_key, task_id)

    client.transaction(forget, owners_key)


def _lease_lost(client, owners: dict, prefix: str, lost_since: dict[str, float], clock: float) -> set[str]:
    """Workers whose lease has been missing for one renewal interval (half its lifetime) in a row, by
    this caller's clock. A lease a Redis without persistence lost comes back at its worker's next
    renewal, within that interval; the ping that follows guards a worker that is late.

    ``lost_since`` (worker -> when its lease was first seen missing) is the caller's, kept across
    rounds; a worker seen with its lease again, or owning no task any more, leaves it."""
    leased = {w: lease for found in owners.values() for w, _, lease in found.values() if lease is not None}
    for worker in set(lost_since) - set(leased):
        del lost_since[worker]
    if not leased:
        return set()
    names = sorted(leased)
    pipe = client.pipeline(transaction=False)
    for worker in names:
        pipe.exists(keys.lease_key(worker, prefix))
    gone = set()
    for worker, exists in zip(names, pipe.execute()):
        if exists:
            lost_since.pop(worker, None)
            continue
        first = lost_since.setdefault(worker, clock)
        if clock - first >= leased[worker] / 2:
            gone.add(worker)
    return gone


def reconcile(app, connection, client, margin: float = 30.0, ping_timeout: float = 1.0,
              now: float | None = None, lost_since: dict[str, float] | None = None,
              served: list[str] | None = None) -> Round:
    """Run one round against ``app``'s broker (see the module docstring).

    Args:
        app: a Celery app with the runtime installed (its transport options name the keys).
        connection: a ``kombu.Connection`` to the broker (``app.connection_for_write()``).
        client: a ``redis.Redis`` for the same broker (:func:`~celery_autoscale.connect`), kept
            across rounds by the caller.
        margin: seconds past a task's deadline before its worker is asked if it is alive.
        ping_timeout: seconds to wait for ping replies (Celery's ``app.control.ping``).
        lost_since: kept by the caller across rounds (worker -> when its lease was first seen
            missing); with it, the tasks of a worker whose lease has been missing for half its lifetime
            in a row, and that does not answer a ping, go back to their lists at once, whatever
            their deadline. None (``--once``): deadlines only.
        served: the Celery queues the release's workers consume; with them the round also
            reports the queues with waiting tasks that are none of these (``Round.unserved``).

    Raises:
        redis.RedisError, kombu.exceptions.OperationalError: the broker cannot be reached.
    """
    settings = settings_of(app)
    prefix = settings.key_prefix
    qos = connection.default_channel.qos
    qos.restore_visible(num=1000, interval=1)
    result = Round(queues=queues_with_entries(client, prefix))
    now = time.time() if now is None else now
    owners = {q: _owners(client, q, prefix) for q in result.queues}
    lost = _lease_lost(client, owners, prefix, lost_since, time.monotonic()) if lost_since is not None else set()
    suspects = {q: {t: w for t, (w, deadline, _) in found.items() if deadline + margin < now or w in lost}
                for q, found in owners.items()}
    if any(suspects.values()):
        alive = {name for reply in app.control.ping(timeout=ping_timeout) for name in reply}
        tags = unacked_tags(client, settings)
        for queue, found in suspects.items():
            for task_id, worker in found.items():
                if worker in alive:  # a pool without hard time limits runs on; a lost lease with a live consumer
                    result.kept.append(task_id)
                    continue
                if task_id in tags:
                    qos.restore_by_tag(tags[task_id], leftmost=True)
                    result.restored.append(task_id)
                    why = "its lease expired" if worker in lost else "it is past its time limit"
                    logger.warning("restored task %s of queue %s: its worker %s is gone (%s)", task_id, queue,
                                   worker, why)
                _forget(client, queue, prefix, task_id, owners[queue][task_id])
    for queue in result.queues:
        prune(client, queue, settings)
        result.backlog[queue] = backlog(client, queue, settings).total
    if settings.eta_horizon:
        result.unparked = unpark_due(client, connection.default_channel, settings.eta_horizon, prefix, now)
        result.parked = int(client.zcard(keys.parked_eta_key(prefix)))
    if served:
        result.unserved = unserved(client, served, settings)
    return result
