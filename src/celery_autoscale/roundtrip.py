"""Round trip: send the round-trip task to every queue and wait for each answer (the chart's ``helm test`` and canary).

    python -m celery_autoscale.roundtrip --queues cpu,io,mixed --timeout 300 [--record]

Sends :data:`celery_autoscale.ROUNDTRIP_TASK` with an explicit queue, so it works for any app
that uses the runtime, and waits up to ``--timeout`` seconds in all (a queue scaled to zero needs
time for KEDA to start a worker). It prints each queue's round trip in seconds. With ``--record``
(the chart's canary CronJob) each queue's result is also written to Redis (:func:`record`), where
the reconciler's metrics read it. Exit status: 0 every queue answered, 1 with one line per queue
that did not, 2 bad input, 3 the broker cannot be reached.

The results live in the hash :func:`~celery_autoscale.keys.roundtrip_results_key`, one JSON
object per queue::

    {"last_run": 1764100000.0, "success": 1, "round_trip": 2.4, "last_success": 1764100002.4}

``round_trip`` and ``last_success`` are those of the last success (kept across failures). The
result lives beside the queues it tested, so no Pushgateway is needed and a canary that never ran
shows as an old ``last_success``.
"""

from __future__ import annotations

import json
import math
import sys
import time
import uuid

from . import keys
from ._install import ROUNDTRIP_TASK
from ._loader import AppLoadError, load_app
from ._redis import as_text, connect
from ._settings import ConfigError, redact, settings_of
from .cli import (EXIT_BAD_INPUT, EXIT_BROKER, EXIT_FAILED, Parser, add_app_option, error, positive_seconds,
                  queue_names)

__all__ = ["main", "parse", "record", "results"]


def parse(raw) -> dict | None:
    """One stored result, or None when it is not a JSON object."""
    try:
        value = json.loads(raw) if raw is not None else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def results(stored: dict) -> dict[str, dict]:
    """Queue -> result, from the results hash's ``HGETALL`` reply; malformed entries are skipped."""
    return {as_text(queue): value for queue, raw in stored.items() if (value := parse(raw)) is not None}


def record(client, queue: str, started: float, round_trip: float | None, prefix: str = "") -> dict:
    """Store one run's result for ``queue``: ``round_trip`` seconds, or None when it failed."""
    key = keys.roundtrip_results_key(prefix)
    previous = parse(client.hget(key, queue)) or {}
    result = {"last_run": started, "success": int(round_trip is not None),
              "round_trip": previous.get("round_trip"), "last_success": previous.get("last_success")}
    if round_trip is not None:
        result.update(round_trip=round_trip, last_success=started + round_trip)
    client.hset(key, queue, json.dumps(result))
    return result


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="python -m celery_autoscale.roundtrip", description=__doc__.split("\n\n")[0],
               epilog="Exit status: 0 ok, 1 a queue did not answer, 2 bad input, 3 broker unreachable.")
    p.add_argument("--queues", required=True, metavar="Q,...", help="comma-separated Celery queue names")
    p.add_argument("--timeout", type=positive_seconds, default=300.0, metavar="SECONDS",
                   help="seconds to wait in all (default 300)")
    p.add_argument("--record", action="store_true",
                   help="write each queue's result to Redis for the reconciler's canary metrics")
    add_app_option(p)
    args = p.parse_args(argv)
    queues = queue_names(args.queues)
    if not queues:
        return error("--queues: give at least one queue", EXIT_BAD_INPUT)

    try:
        app = load_app(args.app)
    except (AppLoadError, ConfigError) as exc:
        return error(exc, EXIT_BAD_INPUT)
    settings = settings_of(app)
    token = uuid.uuid4().hex
    reply_to = keys.roundtrip_reply_key(token, settings.key_prefix)
    started, begun = time.time(), time.monotonic()
    took: dict[str, float] = {}
    try:
        for queue in queues:
            app.send_task(ROUNDTRIP_TASK, kwargs={"token": token, "reply_to": reply_to}, queue=queue)
    except Exception as exc:
        return error(f"cannot publish to {redact(settings.broker_url)}: {type(exc).__name__}", EXIT_BROKER)
    client = connect(settings)
    deadline = time.monotonic() + args.timeout
    waiting = set(queues)
    try:
        while waiting and (left := deadline - time.monotonic()) > 0:
            popped = client.blpop([reply_to], timeout=max(1, min(2, math.ceil(left))))  # below redis-py's 5 s socket timeout
            if popped is None:
                continue
            answer = json.loads(popped[1])
            if answer.get("token") == token and answer.get("queue") in waiting:
                waiting.discard(answer["queue"])
                took[answer["queue"]] = round(time.monotonic() - begun, 3)
                print(f"queue {answer['queue']}: answered by {answer['worker']} in {took[answer['queue']]:g}s")
        client.delete(reply_to)
        if args.record:
            for queue in queues:
                record(client, queue, started, took.get(queue), settings.key_prefix)
    except Exception as exc:
        return error(f"{type(exc).__name__} waiting for answers from {redact(settings.broker_url)}", EXIT_BROKER)
    failed = [f"queue {q}: no answer within {args.timeout:g}s" for q in queues if q in waiting]
    for line in failed:
        print(f"FAILED {line}", file=sys.stderr)
    return EXIT_FAILED if failed else 0


if __name__ == "__main__":
    sys.exit(main())
