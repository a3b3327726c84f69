"""Round trip: send a task to every queue and wait for each result (the chart's ``helm test``).

    python -m tasks.roundtrip --queues cpu,io,mixed --timeout 300

Sends ``tasks.probe.echo`` with an explicit queue, so it works for any queue a worker of this
image consumes, and waits up to ``--timeout`` seconds in all (a queue scaled to zero needs time
for KEDA to start a worker). Exits 0 when every queue answered, 1 with one line per queue that
did not, 2 on bad input.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tasks.roundtrip", description=__doc__.split("\n\n")[0])
    p.add_argument("--queues", required=True, help="comma-separated queue names")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait in all (default 300)")
    args = p.parse_args(argv)
    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    if not queues or args.timeout <= 0:
        print("error: give at least one queue and a positive --timeout", file=sys.stderr)
        return 2

    from . import config

    try:
        from .app import app, settings
    except config.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    token = uuid.uuid4().hex
    try:
        pending = {q: app.send_task("tasks.probe.echo", kwargs={"token": token}, queue=q) for q in queues}
    except Exception as exc:
        print(f"error: cannot publish to {config.redact(settings.broker_url)}: {type(exc).__name__}", file=sys.stderr)
        return 1
    deadline = time.monotonic() + args.timeout
    failed = []
    for queue, result in pending.items():
        try:
            answer = result.get(timeout=max(0.1, deadline - time.monotonic()))
        except Exception as exc:
            failed.append(f"queue {queue}: no answer within {args.timeout:.0f}s ({type(exc).__name__})")
            continue
        if answer.get("token") != token or answer.get("queue") != queue:
            failed.append(f"queue {queue}: wrong answer {answer!r}")
        else:
            print(f"queue {queue}: answered by {answer['worker']}")
    for line in failed:
        print(f"FAILED {line}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
