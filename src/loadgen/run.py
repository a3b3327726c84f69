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

from tasks import backlog
from tasks.work import QUEUE_TASKS

from .patterns import Pattern

#: Profile keywords the tasks accept, with their units (see :mod:`tasks.work`).
PROFILE_KEYS = ("work_units", "size_bytes", "wait_seconds", "fail_rate")


@dataclass(frozen=True)
class LoadSpec:
    """What to send: a pattern, a queue mix, a task profile and a priority mix."""

    pattern: Pattern
    queues: dict[str, float]  # queue -> relative weight
    profile: dict[str, float] = field(default_factory=dict)  # PROFILE_KEYS -> value
    priorities: dict[int, float] | None = None  # Celery priority 0-9 -> relative weight
    count: int | None = None  # cap on tasks sent
    seed: int = 0

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
    timeline: list[dict]  # samples: {"t", "sent", "backlog": {queue: tasks}}
    started_at: float  # Unix seconds; the timeline's "t" counts from here
    waited: bool


def task_kwargs(queue: str, profile: dict[str, float]) -> tuple[str, dict]:
    """The task name for ``queue`` and the profile keywords that task accepts."""
    name, accepted = QUEUE_TASKS[queue]
    return name, {k: v for k, v in profile.items() if k in accepted and v is not None}


def send(app, spec: LoadSpec, on_sent: Callable[[int], None] | None = None) -> tuple[list[Sent], float]:
    """Publish ``spec``'s tasks on schedule; return them and the seconds sending took.

    Sends are paced so that the count equals ``floor(due(t))`` at every moment ``t``; a
    sender that falls behind catches up at once (open loop). Each message is built and
    published with Celery's own ``app.amqp.as_task_v2`` and ``send_task_message`` (what
    ``send_task`` does, without subscribing to each result), and the messages of one tick go
    to Redis in one pipeline (kombu's ``Producer.batch``).
    """
    rng = random.Random(spec.seed)
    queues, weights = zip(*spec.queues.items())
    prios, prio_weights = zip(*spec.priorities.items()) if spec.priorities else ((None,), (1,))
    total = spec.total()
    plans = {q: task_kwargs(q, spec.profile) for q in queues}
    amqp = app.amqp
    sent: list[Sent] = []
    with app.producer_or_acquire() as producer:
        for queue in queues:
            producer.maybe_declare(amqp.queues[queue])
        start = time.monotonic()
        while len(sent) < total:
            due = min(total, math.floor(spec.pattern.due(time.monotonic() - start) + 1e-9))
            if due > len(sent):
                with producer.batch():
                    for _ in range(due - len(sent)):
                        queue = rng.choices(queues, weights)[0]
                        priority = rng.choices(prios, prio_weights)[0]
                        name, kwargs = plans[queue]
                        task_id = uuid()
                        message = amqp.as_task_v2(task_id, name, kwargs=kwargs)
                        options = {} if priority is None else {"priority": priority}
                        amqp.send_task_message(producer, name, message, queue=queue, declare=[], **options)
                        sent.append(Sent(task_id, queue, priority, time.time()))
                if on_sent:
                    on_sent(len(sent))
            elif time.monotonic() - start > spec.pattern.duration + 1:
                break  # the pattern ended below the cap
            else:
                time.sleep(0.001)
    return sent, (sent[-1].sent_at - sent[0].sent_at) if sent else 0.0


class Sampler(threading.Thread):
    """Samples the backlog of ``queues`` every ``interval`` seconds until :meth:`stop`."""

    def __init__(self, client, settings, queues, interval: float, count_sent: Callable[[], int]):
        super().__init__(daemon=True)
        self.client, self.settings, self.queues = client, settings, queues
        self.interval, self.count_sent = interval, count_sent
        self.samples: list[dict] = []
        self._stop_event = threading.Event()
        self.start_time = time.time()

    def run(self):
        while True:
            sample = {"t": time.time() - self.start_time, "sent": self.count_sent(), "backlog": {}}
            try:
                for queue in self.queues:
                    sample["backlog"][queue] = backlog.backlog(self.client, queue, self.settings).total
            except Exception:
                sample["backlog"] = None  # Redis blinked; the plot shows a gap
            self.samples.append(sample)
            if self._stop_event.wait(self.interval):
                return

    def stop(self) -> list[dict]:
        self._stop_event.set()
        self.join()
        return self.samples


def collect(app, task_ids: list[str], timeout: float,
            on_done: Callable[[int], None] | None = None) -> dict[str, dict]:
    """Result metas of the tasks among ``task_ids`` that end (succeed or fail) within ``timeout`` s."""
    results: dict[str, dict] = {}
    try:
        for task_id, meta in app.backend.get_many(set(task_ids), timeout=timeout, interval=0.2):
            if meta["status"] in states.READY_STATES:
                results[task_id] = meta
                if on_done:
                    on_done(len(results))
    except TimeoutError:
        pass
    return results


def run(app, settings, spec: LoadSpec, *, wait: bool, timeout: float, sample_interval: float = 0.5,
        progress: Callable[[str, int, int], None] | None = None) -> Outcome:
    """Send ``spec``, and with ``wait`` collect outcomes for up to ``timeout`` seconds."""
    total = spec.total()
    sent_count = [0]

    def on_sent(n: int) -> None:
        sent_count[0] = n
        if progress:
            progress("send", n, total)

    sampler = Sampler(backlog.connect(settings), settings, list(spec.queues), sample_interval,
                      lambda: sent_count[0])
    sampler.start()
    try:
        sent, send_seconds = send(app, spec, on_sent)
        results = {}
        if wait:
            results = collect(app, [s.task_id for s in sent], timeout,
                              (lambda n: progress("wait", n, len(sent))) if progress else None)
    finally:
        timeline = sampler.stop()
    return Outcome(sent, send_seconds, results, timeline, sampler.start_time, wait)
