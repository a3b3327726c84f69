"""Scaling figures from a timeline of samples: reaction, cost, accuracy, stability, safety.

A sample is one second of one queue, as ``bench/scaling_report.py`` records it::

    {"t": seconds since the first task, "desired": spec.replicas, "ready": status.readyReplicas,
     "pods": worker processes alive (terminating ones included: what is paid for),
     "queued": tasks in the priority lists, "in_flight": tasks running, "scheduled": tasks held
     for an ETA, "busy": processes running a task}

The true backlog is ``queued + in_flight + scheduled`` and the *ideal* replica count is
``ceil(true backlog / target)`` clamped to ``[low, high]`` (the ScaledObject's
``minReplicaCount`` and ``maxReplicaCount``; target = tasks per replica, the worker's
concurrency): what an autoscaler that saw the whole backlog at once would ask for. Every
function here is pure, so the definitions are tested on samples with known answers.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable


def true_backlog(sample: dict) -> int:
    """Tasks an autoscaler must serve: waiting in any list, running, or held for an ETA."""
    return sample["queued"] + sample["in_flight"] + sample.get("scheduled", sample.get("reserved", 0))  # 0.2's name


def ideal(backlog: int, target: int, low: int, high: int) -> int:
    """``ceil(backlog / target)`` clamped to ``[low, high]`` replicas."""
    return max(low, min(high, math.ceil(backlog / target)))


def durations(samples: list[dict]) -> list[float]:
    """Seconds each sample stands for: until the next one (the last: the median step)."""
    ts = [s["t"] for s in samples]
    steps = [b - a for a, b in zip(ts, ts[1:])]
    last = sorted(steps)[len(steps) // 2] if steps else 0.0
    return [*steps, last]


def reaction(samples: list[dict], target: int, low: int, high: int, rest: int | None = None) -> dict:
    """From the first task (``t`` = 0): ``first_worker_s``, seconds to the first sample with more
    ready replicas than at rest (``rest``; default: the first sample's), and ``ideal_s``, to the
    first sample whose ready replicas meet the ideal of that moment while that ideal is above
    ``rest``. ``None`` when it never happens (e.g. fixed replicas)."""
    start = rest if rest is not None else (samples[0]["ready"] if samples else 0)
    first = next((s["t"] for s in samples if s["ready"] > start), None)
    met = next((s["t"] for s in samples
                if (want := ideal(true_backlog(s), target, low, high)) > start and s["ready"] >= want), None)
    return {"first_worker_s": first, "ideal_s": met}


def drain(samples: list[dict], last_sent: float) -> float | None:
    """Seconds from the last task sent (``last_sent``, same clock as ``t``) to the first sample
    after it with a true backlog of 0; ``None`` if it never empties."""
    return next((s["t"] - last_sent for s in samples if s["t"] >= last_sent and true_backlog(s) == 0), None)


def to_rest(samples: list[dict], since: float | None) -> float | None:
    """Seconds from ``since`` (e.g. the drain) to the first later sample whose desired replicas
    are the run's last (its resting count) and stay so; ``None`` without ``since``."""
    if since is None or not samples:
        return None
    rest = samples[-1]["desired"]
    moved = [s["t"] for s in samples if s["desired"] != rest]
    after = [s["t"] for s in samples if s["t"] >= since and (not moved or s["t"] > moved[-1])]
    return after[0] - since if after else None


def cost(samples: list[dict], concurrency: int) -> dict:
    """``replica_seconds`` (pods alive × seconds), ``process_seconds`` (× concurrency),
    ``busy_seconds`` (processes running a task × seconds) and ``utilisation`` = busy ÷ provisioned
    process-seconds (``None`` when nothing was provisioned)."""
    dts = durations(samples)
    replica = sum(s["pods"] * dt for s, dt in zip(samples, dts))
    busy = sum(s["busy"] * dt for s, dt in zip(samples, dts))
    process = replica * concurrency
    return {"replica_seconds": replica, "process_seconds": process, "busy_seconds": busy,
            "utilisation": busy / process if process else None}


def accuracy(samples: list[dict], target: int, low: int, high: int) -> dict:
    """``exact_share``: share of samples whose ready replicas equal the ideal; ``mean_abs_error``:
    the mean of |ready − ideal| in replicas; ``under_share``: share with fewer ready than ideal."""
    if not samples:
        return {"exact_share": None, "mean_abs_error": None, "under_share": None}
    errors = [s["ready"] - ideal(true_backlog(s), target, low, high) for s in samples]
    return {"exact_share": sum(e == 0 for e in errors) / len(errors),
            "mean_abs_error": sum(abs(e) for e in errors) / len(errors),
            "under_share": sum(e < 0 for e in errors) / len(errors)}


def reversals(values: Iterable[int]) -> int:
    """Direction changes of a series (up then down, or down then up), flat steps ignored."""
    last_direction, count, previous = 0, 0, None
    for value in values:
        if previous is not None and value != previous:
            direction = 1 if value > previous else -1
            count += last_direction != 0 and direction != last_direction
            last_direction = direction
        previous = value
    return count


def extend(samples: list[dict], until: float) -> list[dict]:
    """The samples padded to ``until`` seconds with the last one's state (a run that settled
    early, so that every configuration of a pattern is costed over the same window)."""
    if not samples or samples[-1]["t"] >= until:
        return [s for s in samples if s["t"] <= until]
    step = durations(samples)[-1] or 1.0
    last, out, t = samples[-1], list(samples), samples[-1]["t"] + step
    while t <= until + 1e-9:
        out.append({**last, "t": t})
        t += step
    return out


def busy_terminations(events: list[tuple[float, str, str]], busy: list[tuple[float, dict[str, int]]]) -> int:
    """Pods sent SIGTERM while running a task: ``events`` are ``(time, pod, "sigterm" | ...)``,
    ``busy`` are ``(time, {pod: tasks running})`` samples; a pod counts when the last sample
    at or before its SIGTERM has it running one."""
    count = 0
    for when, pod, what in events:
        if what != "sigterm":
            continue
        before = [owners for t, owners in busy if t <= when]
        count += bool(before and before[-1].get(pod, 0) > 0)
    return count


TASK_LINE = re.compile(r"Task [^\s\[]+\[([0-9a-fA-F-]{36})\] (received|succeeded)")


def deliveries(log_lines: Iterable[str], task_ids: set[str]) -> dict:
    """From Celery workers' INFO logs (``Task name[id] received`` / ``succeeded``), among
    ``task_ids``: ``redelivered`` (tasks received more than once) and ``run_twice`` (tasks that
    succeeded more than once)."""
    received, succeeded = Counter(), Counter()
    for line in log_lines:
        for task_id, what in TASK_LINE.findall(line):
            if task_id in task_ids:
                (received if what == "received" else succeeded)[task_id] += 1
    return {"redelivered": sum(n > 1 for n in received.values()),
            "run_twice": sum(n > 1 for n in succeeded.values())}


def waits(values: list[float]) -> dict:
    """Queue wait p50, p95 and max in seconds (nearest-rank), ``None`` without data."""
    if not values:
        return {"p50": None, "p95": None, "max": None}
    ordered = sorted(values)

    def rank(p: float) -> float:
        return ordered[max(0, math.ceil(p * len(ordered)) - 1)]

    return {"p50": rank(0.50), "p95": rank(0.95), "max": ordered[-1]}
