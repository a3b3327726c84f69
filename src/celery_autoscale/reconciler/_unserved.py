"""Queues nobody serves: tasks wait in a queue that no worker of the release consumes.

A producer's queue names come from its own app (``task_default_queue``, ``task_routes``); a release
serves the queues its values name. When they differ (``reports`` against ``reports.daily``, or an app
whose default queue is ``default`` against the chart's ``celery``), tasks wait in lists that no
trigger counts and no worker reads, silently. kombu records every queue that was declared, by a
producer sending to it or by a worker consuming it, in its binding sets
(:func:`~celery_autoscale.keys.binding_key`); the lists of each are its priority lists.
"""

from __future__ import annotations

from .. import keys
from .._redis import as_text

__all__ = ["unserved"]

#: Celery's own broadcast and reply exchanges (``celery.pidbox``, ``reply.celery.pidbox``,
#: ``celeryev``): their queues are no task queues.
_CONTROL = (".pidbox", "celeryev")


def declared_queues(client, settings) -> set[str]:
    """Every queue named in kombu's bindings, but Celery's control and event queues (``SCAN``)."""
    head = keys.binding_key("", settings.key_prefix)
    found = set()
    for key in client.scan_iter(match=head + "*", count=500):
        if as_text(key)[len(head):].endswith(_CONTROL):
            continue
        for member in client.smembers(key):
            found.add(as_text(member).split(settings.separator)[-1])
    return {queue for queue in found if queue and not queue.endswith(_CONTROL)}


def unserved(client, served, settings) -> dict[str, int]:
    """Queues with waiting tasks that are not in ``served``: queue name -> tasks in its lists.

    Args:
        client: a ``redis.Redis`` for the app's broker.
        served: the Celery queue names the release's workers consume (the reconciler's ``--queues``).
        settings: :func:`~celery_autoscale.settings_of` the app (key prefix, priority steps, separator).

    Raises:
        redis.RedisError: Redis cannot be reached.
    """
    others = sorted(declared_queues(client, settings) - set(served))
    if not others:
        return {}
    pipe = client.pipeline(transaction=False)
    for queue in others:
        for name in keys.priority_lists(queue, settings.priority_steps, settings.separator, settings.key_prefix):
            pipe.llen(name)
    sizes, steps = pipe.execute(), len(settings.priority_steps)
    waiting = {queue: sum(sizes[i * steps:(i + 1) * steps]) for i, queue in enumerate(others)}
    return {queue: count for queue, count in waiting.items() if count}
