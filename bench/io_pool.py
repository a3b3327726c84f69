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

import celery_autoscale


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--concurrency", type=int, default=16, help="worker threads (default 16)")
    p.add_argument("--latency", type=float, default=0.5, help="seconds each task waits (default 0.5)")
    p.add_argument("--rounds", type=int, default=10, help="tasks per thread (default 10)")
    args = p.parse_args()

    from loadgen import patterns
    from loadgen.run import LoadSpec, TaskPlan, collect, run_records, send
    from loadgen.stack import LocalStack, WorkerSpec

    with LocalStack(tempfile.mkdtemp(prefix="bench-io-")) as stack:
        stack.start_redis()
        stack.start_worker(WorkerSpec("io", "threads", concurrency=args.concurrency))
        app = stack.producer()
        count = args.concurrency * args.rounds
        plan = TaskPlan("tasks.io.transfer", "io", kwargs={"size_bytes": 0, "wait_seconds": args.latency})
        sent, _ = send(app, LoadSpec(patterns.burst(count), (plan,)))
        ids = [s.task_id for s in sent]
        results = collect(app, ids, timeout=count * args.latency + 60)
        runs = run_records(stack.client(), celery_autoscale.settings_of(app), ids)
    done = [runs[t] for t, m in results.items() if m["status"] == "SUCCESS" and t in runs]
    span = max(end for _, end in done) - min(start for start, _ in done)
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
