"""Where the runtime's per-task cost goes, in one process; prints one JSON line.

    python -m bench.delivery_cost [--count 5000] [--repeat 5]

``bench/worker_overhead.py`` times whole workers; this one takes them apart. On a Redis server of
its own it takes one real task message of a plain app (Celery's defaults) and, ``--count`` times
in a row, does what a worker's main process does with it on kombu's Redis transport: the
delivery transaction (kombu's ``QoS.append``) and the acknowledgement (``QoS.ack``), and what its
pool does around the run: Celery's ``task_prerun`` and ``task_postrun`` signals sent with the
task's request. Configurations, each timed ``--repeat`` times (the fastest counts; CPU time of
this process, ``time.process_time``):

- ``kombu``: kombu's own Redis QoS, no signal receiver: plain Celery;
- ``runtime``: the runtime's QoS (:mod:`celery_autoscale.worker._delivery`), kombu's delivery
  and acknowledgement with the in-flight record as one script each, and its signal handlers with
  the worker's metrics.

Fields: ``*_delivery_us``: CPU microseconds per task of ``append`` + ``ack``; ``*_signals_us``:
of the two signals; ``*_commands``: Redis commands per task (``INFO commandstats``, which counts
the commands a script runs as well as the ``EVALSHA``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

from celery import Celery, signals
from celery.exceptions import DuplicateTaskNameWarning

from bench.worker_overhead import commandstats

CONFIGURATIONS = ("kombu", "runtime")


def make_app(url: str) -> Celery:
    """A plain app with one no-op task, ``overhead.work``; each configuration makes its own."""
    app = Celery("overhead", broker=url, set_as_current=False)

    @app.task(name="overhead.work")
    def work() -> None:
        return None

    return app


def raw_message(app: Celery, queue: str) -> dict:
    """One task message of ``app`` as kombu's Redis transport keeps it in its list (a dict)."""
    with app.producer_or_acquire() as producer:
        app.amqp.send_task_message(producer, "overhead.work", app.amqp.as_task_v2("t0", "overhead.work"),
                                   queue=queue, declare=[])
    with app.connection_for_write() as connection:
        return json.loads(connection.default_channel.client.rpop(queue))


def delivery_us(channel, raw: dict, count: int) -> float:
    """CPU microseconds per task of ``count`` deliveries and acknowledgements through ``channel.qos``."""
    qos = channel.qos
    started = time.process_time()
    for i in range(count):
        message = channel.Message(raw, channel=channel)
        tag = f"bench-{i}"
        message.delivery_info["delivery_tag"] = message.delivery_tag = tag
        qos.append(message, tag)
        qos.ack(tag)
    return 1e6 * (time.process_time() - started) / count


def signals_us(task, queue: str, count: int) -> float:
    """CPU microseconds per task of sending ``task_prerun`` and ``task_postrun`` as Celery's tracer does."""
    started = time.process_time()
    for i in range(count):
        task_id = f"bench-{i}"
        task.push_request(id=task_id, delivery_info={"routing_key": queue}, eta=None, hostname="bench@host",
                          published_at=time.time())
        signals.task_prerun.send(sender=task, task_id=task_id, task=task, args=(), kwargs={})
        signals.task_postrun.send(sender=task, task_id=task_id, task=task, args=(), kwargs={}, retval=None,
                                  state="SUCCESS")
        task.pop_request()
    return 1e6 * (time.process_time() - started) / count


def measure(configuration: str, url: str, raw: dict, count: int, repeat: int) -> dict:
    from celery_autoscale import install
    from celery_autoscale._install import disconnect
    from celery_autoscale.worker._delivery import record_in
    from celery_autoscale.worker._metrics import Metrics
    from celery_autoscale.worker._runtime import runtime_of

    app = make_app(url)
    queue = "overhead"
    if configuration != "kombu":
        install(app)
        runtime = runtime_of(app)
        runtime.metrics = Metrics()  # what worker_init makes when the metrics port is set (the default)
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        if configuration != "kombu":
            record_in(channel, runtime, "bench@host")
        client = channel.client
        delivery_us(channel, raw, 200)  # warm up: connections, caches
        before = commandstats(client)
        delivery = min(delivery_us(channel, raw, count) for _ in range(repeat))
        after = commandstats(client)
        task = app.tasks["overhead.work"]
        signalling = min(signals_us(task, queue, count) for _ in range(repeat))
    if configuration != "kombu":  # the next configuration starts without this app's receivers
        disconnect(app)
    runs = count * repeat
    calls = {name: round((after[name] - before.get(name, 0)) / runs, 2) for name in after
             if name != "info" and (after[name] - before.get(name, 0)) / runs >= 0.05}
    return {"delivery_us": round(delivery, 1), "signals_us": round(signalling, 1), "commands": calls}



def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.delivery_cost", description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=5000, help="tasks per timed loop (default 5000)")
    p.add_argument("--repeat", type=int, default=5, help="timed loops per configuration; the fastest counts (default 5)")
    args = p.parse_args(argv)
    # Each configuration's app registers the same task name, on purpose (the same message for all).
    warnings.simplefilter("ignore", DuplicateTaskNameWarning)
    if args.count < 1 or args.repeat < 1:
        p.error("--count and --repeat must be at least 1")
    from loadgen.stack import LocalStack

    with tempfile.TemporaryDirectory() as tmp, LocalStack(Path(tmp)) as stack:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(Path(tmp) / "metrics")
        stack.start_redis()
        url = stack.broker_url
        raw = raw_message(make_app(url), "overhead")
        result = {name: measure(name, url, raw, args.count, args.repeat) for name in CONFIGURATIONS}
    out: dict = {"count": args.count, "repeat": args.repeat}
    for name, fields in result.items():
        out.update({f"{name}_{field}": value for field, value in fields.items()})
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
