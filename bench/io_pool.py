"""``io`` worker throughput against its ideal; prints one JSON line.

    python bench/io_pool.py [--concurrency 16] [--latency 0.5] [--rounds 10]

Starts a real Redis and one real ``io`` worker (threads pool, ``--concurrency`` threads), sends
``concurrency × rounds`` latency-bound tasks (``wait_seconds = --latency``, no file I/O), and
compares the throughput, tasks ÷ (last finish − first start), with the ideal
``concurrency ÷ latency`` tasks/s. Goal: ``ratio`` >= 0.9.
"""

from __future__ import annotations

import argparse
import json
import tempfile


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--concurrency", type=int, default=16, help="worker threads (default 16)")
    p.add_argument("--latency", type=float, default=0.5, help="seconds each task waits (default 0.5)")
    p.add_argument("--rounds", type=int, default=10, help="tasks per thread (default 10)")
    args = p.parse_args()

    from loadgen import patterns
    from loadgen.run import LoadSpec, collect, send
    from loadgen.stack import LocalStack, WorkerSpec
    from tasks import config
    from tasks.app import create_app

    with LocalStack(tempfile.mkdtemp(prefix="bench-io-")) as stack:
        stack.start_redis()
        stack.start_worker(WorkerSpec("io", "threads", concurrency=args.concurrency))
        app = create_app(config.load({"CELERY_BROKER_URL": stack.broker_url}))
        count = args.concurrency * args.rounds
        spec = LoadSpec(patterns.burst(count), {"io": 1.0}, {"size_bytes": 0, "wait_seconds": args.latency})
        sent, _ = send(app, spec)
        results = collect(app, [s.task_id for s in sent], timeout=count * args.latency + 60)
    done = [m["result"] for m in results.values() if m["status"] == "SUCCESS"]
    span = max(r["finished_at"] for r in done) - min(r["started_at"] for r in done)
    throughput = len(done) / span
    ideal = args.concurrency / args.latency
    print(json.dumps({
        "benchmark": "io_pool",
        "concurrency": args.concurrency,
        "latency_s": args.latency,
        "tasks": count,
        "succeeded": len(done),
        "throughput_tasks_per_s": round(throughput, 2),
        "ideal_tasks_per_s": round(ideal, 2),
        "ratio": round(throughput / ideal, 3),
    }))


if __name__ == "__main__":
    main()
