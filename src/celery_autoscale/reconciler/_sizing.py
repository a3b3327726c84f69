"""Size a queue to a queue-wait target: the processes that keep every task's wait under W seconds.

The chart's default target is one task per process (KEDA's composite metric is the true backlog,
its target the concurrency): any backlog is drained within one run time, whatever wait the user
would accept. With ``autoscaling.targetQueueWaitSeconds`` (W) the queue instead gets the processes
:func:`wanted_processes` computes from what the runtime measures in Redis:

- ``busy`` (``B``): tasks running (the in-flight set), ``queued`` (``Q``): tasks waiting in every
  priority list, ``scheduled``: tasks a worker holds for their ETA;
- the mean run time ``R`` (seconds), an exponentially weighted moving average over the runs the
  workers count in :func:`~celery_autoscale.keys.stats_key` (``runs``, ``run_seconds``), smoothed
  with a time constant of :data:`SMOOTHING_SECONDS`, as the Linux load average smooths, or of
  :data:`SMOOTHING_RUNS` runs, whichever forgets faster: a queue whose tasks got shorter runs many
  of them, and is sized for them after a few dozen (measured by `make report`: with time alone, the
  30 s tasks of one load were still an 11 s mean a minute into a load of 0.3 s tasks, and λ·R held
  the queue at its maximum throughout);
- the arrival rate ``λ`` (tasks/s): runs ended plus the growth of the unfinished tasks, per second,
  smoothed the same way (no producer cooperation needed);
- the queue latency ``A`` (seconds): the age of the oldest waiting task across every priority list
  (kombu pushes on the left and pops on the right, so each list's oldest message is its last,
  ``LINDEX -1``), from the ``published_at`` header that producers with the runtime stamp; for a
  message without it (a plain producer) the time this process first saw it at either end of a list
  is used, a lower bound up to one poll late;
- the worker start time ``S`` (seconds): what the last worker to start measured from its process
  start to ``worker_ready`` (``start_seconds``), else :data:`DEFAULT_START_SECONDS`.

The formula. Little's law (L = λW, Little 1961) gives the processes the arrivals keep busy in
steady state: ``λ·R``. The backlog ``Q`` is ``Q·R`` process-seconds of work; to finish it within the
time that is left, ``T``, takes ``Q·R/T`` processes more — AWS's rule for queue workers ("acceptable
backlog per instance = acceptable latency / average processing time", Application Auto Scaling,
*Scaling policy based on Amazon SQS*) is the same with ``T = W``. A process started now is useful
only after ``S``, and the oldest task has already waited ``A``, so::

    T = W - max(S, A)
    N = max(B, ceil(min(λ·R, B + Q) + min(Q, Q·R/T)))      (T > R; with T <= R, Q·R/T is Q: a process per task)

never fewer than the busy processes (a scale-down must not take a running task's process), never
zero while any task is unfinished (``N >= 1`` with ``Q``, ``B`` or ``scheduled`` above zero), and 0
with none (``λ`` decays slowly; the HPA's scale-down stabilization window and KEDA's
``cooldownPeriod`` already keep replicas between the tasks of a steady stream). The
``min(λ·R, B + Q)`` keeps Little's term to the work that exists: on average the tasks in the queue,
``B + Q``, are ``λ·(wait + R) >= λ·R`` (Little's law again, over the whole queue), so fewer of them
means the smoothed ``λ`` is stale, the load having fallen (measured by `make report`: a trickle of
30 s tasks after a wave of 4 s ones, ``λ`` still decaying from the wave and ``R`` half learnt, held
the queue at 2 replicas with 1-3 tasks running, 154 replica-seconds against the default target's
89). The ``min(Q, ...)`` term is the correction as the oldest wait approaches the target: ``T`` shrinks, and at
``T <= R`` every waiting task gets a process, which is the default target's one task per process.
With no run measured yet (a queue's first tasks), ``R`` is unknown and the queue also gets one
process per waiting task. The averages start from the first runs this process sees end, not from
the counters' lifetime totals (a queue that ran 30 s tasks last week and runs 2 s tasks now would
be sized for the former), and are written beside the counters at each update, so that a restarted
reconciler resumes them (the arrival rate decayed for the time between). Replicas are
``ceil(N / concurrency)``: KEDA divides the metric by its target, the concurrency.

How it fails safe: the chart's formula reads this figure through a ``metrics-api`` trigger named
``wait_target`` and falls back, with KEDA's ``fallback.behavior: scalingModifiers`` and ``??``, to the
true backlog the Redis triggers read (one task per process) when the reconciler cannot be reached.
"""

from __future__ import annotations

import json
import math
import time
from collections import OrderedDict
from dataclasses import dataclass

from .. import keys
from .._backlog import backlog
from .._redis import as_text

__all__ = ["DEFAULT_START_SECONDS", "SMOOTHING_RUNS", "SMOOTHING_SECONDS", "QueueSizer", "Sizing", "wanted_processes"]

#: Seconds a worker is assumed to take to start when none has measured it.
DEFAULT_START_SECONDS = 10.0
#: Time constant (seconds) of the moving averages of run time and arrival rate.
SMOOTHING_SECONDS = 60.0
#: Runs after which a change of the run time is 63 % learnt, however short the time they took.
SMOOTHING_RUNS = 20.0
#: Tasks whose first sighting each queue's sizer remembers (message ids without ``published_at``).
SEEN_LIMIT = 4096
#: Fields of :func:`~celery_autoscale.keys.stats_key` where the sizer keeps its averages: mean run
#: time (seconds), arrival rate (tasks/s), and when they were written (Unix seconds).
AVERAGES = ("average_run_seconds", "average_arrival_rate", "averaged_at")


def wanted_processes(target: float, busy: int, queued: int, scheduled: int, run_seconds: float | None,
                     arrival_rate: float, oldest_wait: float, start_seconds: float) -> int:
    """The processes a queue needs to keep every task's wait under ``target`` (see the module docs).

    Args:
        target: W, the queue-wait target, seconds (> 0).
        busy: tasks running now.
        queued: tasks waiting in every priority list.
        scheduled: tasks held by workers for their ETA.
        run_seconds: R, the mean run time, seconds; None if none was measured (then every waiting
            task gets a process).
        arrival_rate: λ, tasks/s (>= 0).
        oldest_wait: A, the age of the oldest waiting task, seconds (0 with none).
        start_seconds: S, a new worker's start time, seconds.

    Returns:
        N, processes: >= ``busy``, >= 1 while any task is unfinished, 0 with none.
    """
    if not (queued or busy or scheduled):
        return 0  # nothing unfinished: KEDA's cooldownPeriod and the HPA's stabilization window decide
    if run_seconds is None or run_seconds <= 0:
        drain = float(queued)
    else:
        left = target - max(start_seconds, oldest_wait)
        drain = float(queued) if left <= run_seconds else min(float(queued), queued * run_seconds / left)
    steady = min(arrival_rate * run_seconds, busy + queued) if run_seconds else 0.0
    return max(busy, 1, math.ceil(round(steady + drain, 9)))


@dataclass(frozen=True)
class Sizing:
    """One queue's inputs and its :func:`wanted_processes`, as one read found them."""

    queue: str
    target: float
    busy: int
    queued: int
    scheduled: int
    run_seconds: float | None
    arrival_rate: float
    oldest_wait: float
    start_seconds: float
    processes: int


class QueueSizer:
    """Reads one queue's state from Redis and keeps the moving averages between reads.

    One per queue and process; :meth:`read` is called at each scrape (KEDA's poll, Prometheus).
    Reads shorter than a second apart reuse the averages.
    """

    def __init__(self, queue: str, target: float, settings, clock=time.time):
        self.queue, self.target, self.settings, self.clock = queue, float(target), settings, clock
        self.run_seconds: float | None = None
        self.arrival_rate = 0.0
        self._last: tuple[float, int, float, int] | None = None  # (time, runs, run seconds, unfinished)
        self._seen: OrderedDict[str, float] = OrderedDict()  # message id -> first seen (Unix seconds)

    def read(self, client) -> Sizing:
        """The queue's :func:`~celery_autoscale.backlog` (the counts KEDA reads), then one pipeline of
        each list's oldest and newest message and the workers' run counters and start time.

        Raises:
            redis.RedisError: Redis cannot be reached (the averages are kept).
        """
        found = backlog(client, self.queue, self.settings)
        pipe = client.pipeline(transaction=False)
        for name in found.waiting:
            pipe.lindex(name, -1)
            pipe.lindex(name, 0)
        stats = keys.stats_key(self.queue, self.settings.key_prefix)
        pipe.hmget(stats, "runs", "run_seconds", "start_seconds", *AVERAGES)
        *ends, (runs, run_total, start, *averages) = pipe.execute()
        now = self.clock()
        if self._last is None:
            self._resume(now, averages)
        oldest = None
        for tail, head in zip(ends[::2], ends[1::2]):
            self._published(head, now)  # seen at the newest end: a plain message's age counts from here
            published = self._published(tail, now)
            if published is not None:
                oldest = published if oldest is None else min(oldest, published)
        if self._update(now, int(runs or 0), float(run_total or 0.0), found.total) and self.run_seconds is not None:
            client.hset(stats, mapping=dict(zip(AVERAGES, (round(self.run_seconds, 6), round(self.arrival_rate, 6),
                                                            round(now, 3)))))
        wait = max(0.0, now - oldest) if oldest is not None else 0.0
        start_seconds = float(start) if start is not None else DEFAULT_START_SECONDS
        processes = wanted_processes(self.target, found.in_flight, found.queued, found.scheduled, self.run_seconds,
                                     self.arrival_rate, wait, start_seconds)
        return Sizing(self.queue, self.target, found.in_flight, found.queued, found.scheduled, self.run_seconds,
                      self.arrival_rate, wait, start_seconds, processes)

    def _published(self, raw, now: float) -> float | None:
        """When the message ``raw`` was published: its ``published_at`` header, else when first seen."""
        if raw is None:
            return None
        try:
            headers = json.loads(raw)["headers"]
            stamp = headers.get("published_at")
            if stamp is not None:
                return float(stamp)
            task_id = str(headers["id"])
        except (ValueError, TypeError, KeyError, AttributeError):
            task_id = as_text(raw)[:200]  # not a Celery message: remember it by its text
        first = self._seen.get(task_id)
        if first is None:
            first = self._seen[task_id] = now
            while len(self._seen) > SEEN_LIMIT:
                self._seen.popitem(last=False)
        return first

    def _resume(self, now: float, averages) -> None:
        """Start from the averages a previous reconciler wrote (``AVERAGES``), if any: the run time
        as it was, the arrival rate decayed for the time since."""
        try:
            run_seconds, rate, at = (float(value) for value in averages)
        except (TypeError, ValueError):  # none written yet, or not numbers
            return
        if run_seconds > 0:
            self.run_seconds = run_seconds
            self.arrival_rate = max(0.0, rate) * math.exp(-max(0.0, now - at) / SMOOTHING_SECONDS)

    def _update(self, now: float, runs: int, run_total: float, unfinished: int) -> bool:
        """Fold the counters' change since the last read into the moving averages; False if this
        read is less than a second after the last one (the averages are kept as they are)."""
        last = self._last
        if last is not None and now - last[0] < 1.0:
            return False
        self._last = (now, runs, run_total, unfinished)
        if last is None or runs < last[1]:  # the first read, or the counters were reset (Redis lost them)
            return True
        elapsed = now - last[0]
        weight = 1.0 - math.exp(-elapsed / SMOOTHING_SECONDS)
        ended = runs - last[1]
        if ended:
            mean = max(0.0, run_total - last[2]) / ended
            runs_weight = max(weight, 1.0 - math.exp(-ended / SMOOTHING_RUNS))
            self.run_seconds = mean if self.run_seconds is None else self.run_seconds + runs_weight * (mean - self.run_seconds)
        rate = max(0.0, (ended + unfinished - last[3]) / elapsed)
        self.arrival_rate += weight * (rate - self.arrival_rate)
        return True
