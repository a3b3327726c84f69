"""The canary's results in Redis, where the reconciler's metrics read them.

``python -m celery_autoscale.roundtrip --record`` (the chart's canary CronJob) writes one JSON
object per queue into the hash ``celery-autoscale:canary``::

    {"last_run": 1764100000.0, "success": 1, "round_trip": 2.4, "last_success": 1764100002.4}

``round_trip`` and ``last_success`` are those of the last success (kept across failures).
The result lives beside the queues it tested, so no Pushgateway is needed and a Job that never
ran shows as an old ``last_success``.
"""

from __future__ import annotations

import json

from ._backlog import KEY_PREFIX, as_text

__all__ = ["KEY", "parse", "record", "results"]

#: The hash of results, queue -> JSON object (after kombu's ``global_keyprefix``).
KEY = f"{KEY_PREFIX}:canary"


def parse(raw) -> dict | None:
    """One stored result, or None when it is not a JSON object."""
    try:
        value = json.loads(raw) if raw is not None else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def results(stored: dict) -> dict[str, dict]:
    """Queue -> result, from the hash's ``HGETALL`` reply; malformed entries are skipped."""
    return {as_text(queue): value for queue, raw in stored.items() if (value := parse(raw)) is not None}


def record(client, queue: str, started: float, round_trip: float | None, prefix: str = "") -> dict:
    """Store one run's result for ``queue``: ``round_trip`` seconds, or None when it failed."""
    previous = parse(client.hget(prefix + KEY, queue)) or {}
    result = {"last_run": started, "success": int(round_trip is not None),
              "round_trip": previous.get("round_trip"), "last_success": previous.get("last_success")}
    if round_trip is not None:
        result.update(round_trip=round_trip, last_success=started + round_trip)
    client.hset(prefix + KEY, queue, json.dumps(result))
    return result
