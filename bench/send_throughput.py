"""Load generator send throughput and rate accuracy; prints one JSON line.

    python bench/send_throughput.py [--count 20000] [--rate 500] [--seconds 10]

On a Redis server of its own with no worker running, it measures in one run:

- ``bare_tasks_per_s``: a bare kombu ``Producer.publish`` loop sending the same Celery
  messages (built beforehand with ``app.amqp.as_task_v2``, so only publishing is timed);
- ``bare_batched_tasks_per_s``: the same loop inside kombu's ``Producer.batch()``;
- ``loadgen_tasks_per_s``: :func:`loadgen.run.send` sending a burst of as many tasks;
- ``ratio``: loadgen ÷ bare (goal >= 0.8);
- ``rate_error``: |achieved − requested| ÷ requested for a steady ``--rate`` over ``--seconds``
  (goal <= 0.02), achieved being (sent − 1) ÷ (last send − first send).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid

from kombu import Connection


def bare_loop(app, url: str, count: int, batched: bool) -> float:
    name, queue = "tasks.cpu.hash_chain", "cpu"
    messages = [app.amqp.as_task_v2(str(uuid.uuid4()), name, kwargs={"work_units": 1}) for _ in range(count)]
    with Connection(url, transport_options=app.conf.broker_transport_options) as conn:
        producer = conn.Producer(serializer="json")
        start = time.perf_counter()
        if batched:
            with producer.batch():
                for headers, properties, body, _ in messages:
                    producer.publish(body, routing_key=queue, headers=headers, **properties)
        else:
            for headers, properties, body, _ in messages:
                producer.publish(body, routing_key=queue, headers=headers, **properties)
        return count / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=20000, help="tasks per throughput run (default 20000)")
    p.add_argument("--rate", type=float, default=500.0, help="requested steady rate, tasks/s (default 500)")
    p.add_argument("--seconds", type=float, default=10.0, help="steady run length, seconds (default 10)")
    args = p.parse_args()

    from loadgen import patterns
    from loadgen.run import LoadSpec, TaskPlan, send
    from loadgen.stack import LocalStack

    with LocalStack(tempfile.mkdtemp(prefix="bench-send-")) as stack:
        stack.start_redis()
        app = stack.producer()
        queues = (TaskPlan("tasks.cpu.hash_chain", "cpu", kwargs={"work_units": 1}),)
        bare = bare_loop(app, stack.broker_url, args.count, batched=False)
        stack.client().flushdb()
        bare_batched = bare_loop(app, stack.broker_url, args.count, batched=True)
        stack.client().flushdb()
        sent, seconds = send(app, LoadSpec(patterns.burst(args.count), queues))
        loadgen = len(sent) / seconds
        stack.client().flushdb()
        sent, seconds = send(app, LoadSpec(patterns.steady(args.rate, args.seconds), queues))
        achieved = (len(sent) - 1) / seconds
    print(json.dumps({
        "benchmark": "send_throughput",
        "count": args.count,
        "bare_tasks_per_s": round(bare, 1),
        "bare_batched_tasks_per_s": round(bare_batched, 1),
        "loadgen_tasks_per_s": round(loadgen, 1),
        "ratio": round(loadgen / bare, 3),
        "ratio_vs_batched": round(loadgen / bare_batched, 3),
        "requested_tasks_per_s": args.rate,
        "achieved_tasks_per_s": round(achieved, 2),
        "rate_error": round(abs(achieved - args.rate) / args.rate, 4),
    }))


if __name__ == "__main__":
    main()
