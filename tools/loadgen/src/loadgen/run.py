"""Send a load open-loop, sample the backlog, and collect the outcomes.

:func:`run` is the whole job of ``python -m loadgen``: it paces sends to the pattern's
``due(t)`` (sending never waits for a result), samples each queue's backlog every
``sample_interval`` seconds while sending and waiting, and, with ``wait``, collects results
from the result backend until all are ready or ``timeout`` seconds have passed.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from celery import states
from kombu.utils.uuid import uuid

from celery_autoscale import backlog, backlog_ids, connect, settings_of
from celery_autoscale.keys import run_record_key

from .patterns import Pattern


@dataclass(frozen=True)
class TaskPlan:
    """One kind of task to send: its name, queue, arguments and relative weight."""

    task: str
    queue: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    weight: float = 1.0


@dataclass(frozen=True)
class LoadSpec:
    """What to send: a pattern, a weighted mix of tasks, and a priority mix."""

    pattern: Pattern
    plans: tuple[TaskPlan, ...]
    priorities: dict[int, float] | None = None  # Celery priority 0-9 -> relative weight
    count: int | None = None  # cap on tasks sent
    seed: int = 0
    wait_sigma: float = 0.0  # > 0: each task's wait_seconds log-normal, its mean the plan's, this log-space sigma

    @property
    def queues(self) -> list[str]:
        return list(dict.fromkeys(p.queue for p in self.plans))

    def total(self) -> int:
        total = self.pattern.total()
        return min(total, self.count) if self.count else total


@dataclass
class Sent:
    task_id: str
    queue: str
    priority: int | None
    sent_at: float  # Unix seconds


@dataclass
class Outcome:
    """Everything a run saw; :mod:`loadgen.report` turns it into a summary."""

    sent: list[Sent]
    send_seconds: float  # from the first send to the last
    results: dict[str, dict]  # task id -> result backend meta, for tasks that ended
    timeline: list[dict]  # samples: {"t", "sent", "backlog": {queue: tasks}[, "replicas": {queue: {"desired", "ready"}}]}
    started_at: float  # Unix seconds; the timeline's "t" counts from here
    waited: bool
    runs: dict[str, tuple[float, float]] = field(default_factory=dict)  # task id -> (started, finished), the runtime's record
    error: str | None = None  # what stopped the run early (the broker went away), else None
    in_redis: set[str] = field(default_factory=set)  # ids of tasks without an outcome still in Redis at the end


def _spread(kwargs: dict, sigma: float, rng: random.Random) -> dict:
    """``kwargs`` with ``wait_seconds`` drawn from a log-normal of mean ``wait_seconds`` and log-space
    standard deviation ``sigma`` (mu = ln(mean) - sigma²/2, so the mean is kept); unchanged at 0."""
    mean = kwargs.get("wait_seconds")
    if not sigma or not mean:
        return kwargs
    return {**kwargs, "wait_seconds": rng.lognormvariate(math.log(mean) - sigma * sigma / 2, sigma)}


def send(app, spec: LoadSpec, on_sent: Callable[[int], None] | None = None,
         sent: list[Sent] | None = None) -> tuple[list[Sent], float]:
    """Publish ``spec``'s tasks on schedule; return them and the seconds sending took.

    Sends are paced so that the count equals ``floor(due(t))`` at every moment ``t``; a
    sender that falls behind catches up at once (open loop). Each message is built and
    published with Celery's own ``app.amqp.as_task_v2`` and ``send_task_message`` (what
    ``send_task`` does, without subscribing to each result), and the messages of one tick go
    to Redis in one pipeline (kombu's ``Producer.batch``).
    """
    rng = random.Random(spec.seed)
    plans, weights = spec.plans, [p.weight for p in spec.plans]
    prios, prio_weights = zip(*spec.priorities.items()) if spec.priorities else ((None,), (1,))
    total = spec.total()
    amqp = app.amqp
    sent = [] if sent is None else sent  # the caller's list keeps what was sent if publishing fails
    with app.producer_or_acquire() as producer:
        for queue in spec.queues:
            producer.maybe_declare(amqp.queues[queue])
        start = time.monotonic()
        while len(sent) < total:
            due = min(total, math.floor(spec.pattern.due(time.monotonic() - start) + 1e-9))
            if due > len(sent):
                with producer.batch():
                    for _ in range(due - len(sent)):
                        plan = rng.choices(plans, weights)[0]
                        priority = rng.choices(prios, prio_weights)[0]
                        task_id = uuid()
                        kwargs = _spread(plan.kwargs, spec.wait_sigma, rng)
                        message = amqp.as_task_v2(task_id, plan.task, args=plan.args, kwargs=kwargs)
                        options = {} if priority is None else {"priority": priority}
                        amqp.send_task_message(producer, plan.task, message, queue=plan.queue, declare=[], **options)
                        sent.append(Sent(task_id, plan.queue, priority, time.time()))
                if on_sent:
                    on_sent(len(sent))
            elif time.monotonic() - start > spec.pattern.duration + 1:
                break  # the pattern ended below the cap
            else:
                time.sleep(0.001)
    return sent, (sent[-1].sent_at - sent[0].sent_at) if sent else 0.0


class Sampler(threading.Thread):
    """Samples the backlog of ``queues`` every ``interval`` seconds until :meth:`stop`; with
    ``replicas`` (e.g. :meth:`loadgen.kube.WorkerDeployments.read`), the worker Deployments'
    replicas too, and hands each sample to ``on_sample``. Call :meth:`take` once before the first
    task is sent and then :meth:`start`: the timeline then begins with the state before the load
    (a first sample taken in the thread raced the sending, and on a busy machine its replicas
    already showed KEDA's answer to the first tasks)."""

    def __init__(self, client, settings, queues, interval: float, count_sent: Callable[[], int],
                 replicas: Callable[[], dict] | None = None, on_sample: Callable[[dict], None] | None = None):
        super().__init__(daemon=True)
        self.client, self.settings, self.queues = client, settings, queues
        self.interval, self.count_sent = interval, count_sent
        self.replicas, self.on_sample = replicas, on_sample
        self.samples: list[dict] = []
        self._stop_event = threading.Event()
        self.start_time = time.time()

    def take(self) -> dict:
        """One sample now, appended to :attr:`samples` and handed to ``on_sample``."""
        sample = {"t": time.time() - self.start_time, "sent": self.count_sent(), "backlog": {}}
        try:
            for queue in self.queues:
                sample["backlog"][queue] = backlog(self.client, queue, self.settings).total
        except Exception:
            sample["backlog"] = None  # Redis blinked; the plot shows a gap
        if self.replicas is not None:
            try:
                sample["replicas"] = {q: {"desired": r.desired, "ready": r.ready}
                                      for q, r in self.replicas().items() if q in self.queues}
            except Exception:
                sample["replicas"] = None  # the API blinked; a gap too
        self.samples.append(sample)
        if self.on_sample is not None:
            self.on_sample(sample)
        return sample

    def run(self):
        while not self._stop_event.wait(self.interval):
            self.take()

    def stop(self) -> list[dict]:
        self._stop_event.set()
        self.join()
        return self.samples


def collect(app, task_ids: list[str], timeout: float,
            on_done: Callable[[int], None] | None = None) -> dict[str, dict]:
    """Result metas of the tasks among ``task_ids`` that end (succeed or fail) within ``timeout`` s.

    Raises:
        redis/kombu connection errors: the result backend went away (``results`` so far is kept
        in the exception's ``partial`` attribute).
    """
    from celery.exceptions import TimeoutError as ResultTimeout

    results: dict[str, dict] = {}
    try:
        for task_id, meta in app.backend.get_many(set(task_ids), timeout=timeout, interval=0.2):
            if meta["status"] in states.READY_STATES:
                results[task_id] = meta
                if on_done:
                    on_done(len(results))
    except (ResultTimeout, TimeoutError):  # Celery's TimeoutError is not the built-in one
        pass
    except Exception as exc:
        exc.partial = results
        raise
    return results


def run_records(client, settings, task_ids: list[str]) -> dict[str, tuple[float, float]]:
    """``task id -> (started, finished)`` (Unix seconds) from the runtime's run records in Redis."""
    records: dict[str, tuple[float, float]] = {}
    for i in range(0, len(task_ids), 1000):
        chunk = task_ids[i:i + 1000]
        for task_id, raw in zip(chunk, client.mget([run_record_key(t, settings.key_prefix) for t in chunk])):
            if raw:
                started, _, finished = raw.decode().partition(",")
                records[task_id] = (float(started), float(finished))
    return records


def run(app, spec: LoadSpec, *, wait: bool, timeout: float, sample_interval: float = 0.5,
        progress: Callable[[str, int, int], None] | None = None, replicas: Callable[[], dict] | None = None,
        on_sample: Callable[[dict], None] | None = None) -> Outcome:
    """Send ``spec`` with ``app``, and with ``wait`` collect outcomes for up to ``timeout`` seconds.

    Every ``sample_interval`` seconds the timeline records each queue's backlog and, with
    ``replicas`` (a callable returning ``{queue: Replicas}``, :mod:`loadgen.kube`), the worker
    Deployments' replicas; ``on_sample`` sees each sample as it is taken (the live view).

    A broker that goes away mid-run ends the run early: the outcome keeps what was sent and
    what ended so far, and says why in ``error``.
    """
    settings = settings_of(app)
    client = connect(settings)
    total = spec.total()
    sent_count = [0]

    def on_sent(n: int) -> None:
        sent_count[0] = n
        if progress:
            progress("send", n, total)

    sampler = Sampler(client, settings, spec.queues, sample_interval, lambda: sent_count[0], replicas, on_sample)
    sampler.take()  # the state before the first task
    sampler.start()
    sent: list[Sent] = []
    results: dict[str, dict] = {}
    runs: dict[str, tuple[float, float]] = {}
    in_redis: set[str] = set()
    error = None
    try:
        send(app, spec, on_sent, sent)
        if wait:
            results = collect(app, [s.task_id for s in sent], timeout,
                              (lambda n: progress("wait", n, len(sent))) if progress else None)
        runs = run_records(client, settings, [s.task_id for s in sent])
        if wait and len(results) < len(sent):  # unfinished (still in Redis) or lost (nowhere)?
            open_ids = {s.task_id for s in sent} - set(results)
            in_redis = backlog_ids(client, list(spec.queues), settings) & open_ids
    except Exception as exc:
        results = getattr(exc, "partial", results)
        error = f"{type(exc).__name__} talking to the broker; the figures are what was seen before it"
    finally:
        timeline = sampler.stop()
    send_seconds = (sent[-1].sent_at - sent[0].sent_at) if sent else 0.0
    return Outcome(sent, send_seconds, results, timeline, sampler.start_time, wait, runs, error, in_redis)
