"""Round trip: send the probe task to every queue and wait for each answer (the chart's ``helm test`` and canary).

    python -m celery_autoscale.roundtrip --queues cpu,io,mixed --timeout 300 [--record]

Sends :data:`celery_autoscale.PROBE_TASK` with an explicit queue, so it works for any app that
uses the runtime, and waits up to ``--timeout`` seconds in all (a queue scaled to zero needs
time for KEDA to start a worker). It prints each queue's round trip in seconds. With
``--record`` (the canary) each queue's result is also written to Redis, where the reconciler's
metrics read it (:mod:`celery_autoscale._canary`). Exit status: 0 every queue answered, 1 with one line per
queue that did not, 2 bad input, 3 the broker cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import uuid

from ._cli import EXIT_BAD_INPUT, EXIT_BROKER, EXIT_FAILED, Parser, add_app_option, app_from, error, queue_names


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="python -m celery_autoscale.roundtrip", description=__doc__.split("\n\n")[0],
                                epilog="Exit status: 0 ok, 1 a queue did not answer, 2 bad input, 3 broker unreachable.")
    p.add_argument("--queues", required=True, metavar="Q,...", help="comma-separated Celery queue names")
    p.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS", help="seconds to wait in all (default 300)")
    p.add_argument("--record", action="store_true",
                   help="write each queue's result to Redis for the reconciler's canary metrics")
    add_app_option(p)
    args = p.parse_args(argv)
    queues = queue_names(args.queues)
    if not queues:
        return error("--queues: give at least one queue", EXIT_BAD_INPUT)
    if not (math.isfinite(args.timeout) and args.timeout > 0):
        return error(f"--timeout must be a positive number of seconds, got {args.timeout}", EXIT_BAD_INPUT)

    from ._install import PROBE_TASK
    from ._loader import AppLoadError
    from ._settings import ConfigError, redact

    try:
        app = app_from(args)
    except (AppLoadError, ConfigError) as exc:
        return error(exc, EXIT_BAD_INPUT)
    from ._backlog import KEY_PREFIX, connect
    from ._settings import settings_of

    settings = settings_of(app)
    token = uuid.uuid4().hex
    reply_to = f"{settings.key_prefix}{KEY_PREFIX}:probe:{token}"
    started, begun = time.time(), time.monotonic()
    took: dict[str, float] = {}
    try:
        for queue in queues:
            app.send_task(PROBE_TASK, kwargs={"token": token, "reply_to": reply_to}, queue=queue)
    except Exception as exc:
        return error(f"cannot publish to {redact(settings.broker_url)}: {type(exc).__name__}", EXIT_BROKER)
    client = connect(settings)
    deadline = time.monotonic() + args.timeout
    waiting, failed = set(queues), []
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
            from ._canary import record

            for queue in queues:
                record(client, queue, started, took.get(queue), settings.key_prefix)
    except Exception as exc:
        return error(f"{type(exc).__name__} waiting for answers from {redact(settings.broker_url)}", EXIT_BROKER)
    failed += [f"queue {q}: no answer within {args.timeout:g}s" for q in queues if q in waiting]
    for line in failed:
        print(f"FAILED {line}", file=sys.stderr)
    return EXIT_FAILED if failed else 0


if __name__ == "__main__":
    sys.exit(main())
