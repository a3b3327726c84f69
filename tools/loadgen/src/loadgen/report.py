"""The summary of a run: counts, rates and latency percentiles per queue, and the timeline plot.

Definitions (all times in seconds, rates in tasks/s):

- ``submitted``: tasks published. ``succeeded`` / ``failed``: ended in SUCCESS / FAILURE.
- ``unfinished``: no outcome when the ``--timeout`` ran out, the task still in Redis (waiting in a
  list, running, or held for its ETA); ``lost``: no outcome and in Redis nowhere (both only with
  ``--wait``).
- ``failures``: the exception type of each failed task, counted (``{"TransientError": 3}``).
- ``unknown``: after the broker went away mid-run, the tasks whose outcome was not seen.
- ``send_rate``: submitted ÷ seconds from the first send to the last.
- ``throughput``: succeeded ÷ seconds from the first send to the last completion.
- ``queue_wait``: the task's start minus its send, from the runtime's run record in Redis
  (absent when the worker does not run :mod:`celery_autoscale`); ``latency``: its finish minus
  its send, the finish being the result's ``date_done`` (which every Celery result carries).
  Both as p50/p95/p99 over succeeded tasks, in seconds.
- ``replicas`` (with ``--release``): per queue, the most replicas its worker Deployment asked
  for (``peak_desired``) and had ready (``peak_ready``) during the run.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from datetime import datetime, timezone

from celery import states

from .run import Outcome


def percentiles(values: list[float]) -> dict[str, float | None]:
    """p50, p95 and p99 of ``values`` (inclusive method); ``None`` without data."""
    if not values:
        return {"p50": None, "p95": None, "p99": None}
    if len(values) == 1:
        return {"p50": values[0], "p95": values[0], "p99": values[0]}
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": cuts[49], "p95": cuts[94], "p99": cuts[98]}


def finished_at(meta: dict, run: tuple[float, float] | None = None) -> float | None:
    """When a task ended (Unix seconds): the result's ``date_done``, else the run record's end."""
    done = meta.get("date_done")
    if isinstance(done, str):
        try:
            done = datetime.fromisoformat(done)
        except ValueError:
            done = None
    if isinstance(done, datetime):
        return (done if done.tzinfo else done.replace(tzinfo=timezone.utc)).timestamp()
    return run[1] if run else None


def failure_type(meta: dict) -> str:
    """The exception type of a failed task's result meta (Celery's ``exc_type``), else its state."""
    result = meta.get("result")
    if isinstance(result, dict) and result.get("exc_type"):
        return str(result["exc_type"])
    if isinstance(result, BaseException):
        return type(result).__name__
    return str(meta.get("status", "FAILURE"))


def _group(outcome: Outcome, queue: str | None) -> dict:
    sent = [s for s in outcome.sent if queue is None or s.queue == queue]
    metas = [(s, outcome.results.get(s.task_id)) for s in sent]
    done = [(s, m) for s, m in metas if m is not None and m["status"] == states.SUCCESS]
    failed = sum(1 for _, m in metas if m is not None and m["status"] != states.SUCCESS)
    ends = {s.task_id: finished_at(m, outcome.runs.get(s.task_id)) for s, m in done}
    waits = [outcome.runs[s.task_id][0] - s.sent_at for s, _ in done if s.task_id in outcome.runs]
    latencies = [ends[s.task_id] - s.sent_at for s, _ in done if ends[s.task_id] is not None]
    open_ = len(sent) - len(done) - failed  # no outcome seen
    unfinished = sum(1 for s, m in metas if m is None and s.task_id in outcome.in_redis)
    counted = outcome.waited and not outcome.error
    group = {
        "submitted": len(sent),
        "succeeded": len(done),
        "failed": failed,
        "failures": dict(sorted(Counter(failure_type(m) for _, m in metas
                                        if m is not None and m["status"] != states.SUCCESS).items())),
        # Not ended when --timeout ran out: still in Redis (unfinished) or nowhere (lost). After a
        # broker outage nobody can tell: unknown.
        "unfinished": unfinished if counted else None,
        "lost": open_ - unfinished if counted else None,
        "unknown": open_ if outcome.error else 0,
        "queue_wait": percentiles(waits),
        "latency": percentiles(latencies),
    }
    known = [end for end in ends.values() if end is not None]
    span = (max(known) - min(s.sent_at for s in sent)) if known else 0
    group["throughput"] = len(done) / span if span > 0 else None
    return group


def summarize(outcome: Outcome) -> dict:
    """One JSON-ready object: totals, then ``queues`` with the same fields per queue."""
    summary = _group(outcome, None)
    summary["send_rate"] = len(outcome.sent) / outcome.send_seconds if outcome.send_seconds > 0 else None
    summary["send_seconds"] = outcome.send_seconds
    summary["queues"] = {q: _group(outcome, q) for q in sorted({s.queue for s in outcome.sent})}
    summary["error"] = outcome.error
    seen = [x["replicas"] for x in outcome.timeline if x.get("replicas")]
    if seen:
        summary["replicas"] = {q: {"peak_desired": max(r[q]["desired"] for r in seen if q in r),
                                   "peak_ready": max(r[q]["ready"] for r in seen if q in r)}
                               for q in sorted({q for r in seen for q in r})}
    return summary


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}"


def table(summary: dict, title: str = "load summary"):
    """A rich Table of ``summary``: one row per queue and a total row."""
    from rich.table import Table

    t = Table(title=title)
    for column in ("queue", "submitted", "succeeded", "failed", "unfinished", "lost", "tasks/s",
                   "wait p50/p95/p99 ms", "latency p50/p95/p99 ms"):
        t.add_column(column, justify="right" if column != "queue" else "left")
    rows = [*summary["queues"].items(), ("total", summary)]
    for name, g in rows:
        t.add_row(name, str(g["submitted"]), str(g["succeeded"]), str(g["failed"]),
                  "-" if g["unfinished"] is None else str(g["unfinished"]),
                  "-" if g["lost"] is None else str(g["lost"]),
                  "-" if g["throughput"] is None else f"{g['throughput']:.1f}",
                  "/".join(_ms(g["queue_wait"][p]) for p in ("p50", "p95", "p99")),
                  "/".join(_ms(g["latency"][p]) for p in ("p50", "p95", "p99")))
    rate = summary["send_rate"]
    caption = [f"sent at {rate:.1f} tasks/s over {summary['send_seconds']:.1f}s"] if rate else []
    caption += [f"{q}: up to {r['peak_ready']} ready of {r['peak_desired']} replicas"
                for q, r in summary.get("replicas", {}).items()]
    caption += [f"failed: {', '.join(f'{n} {kind}' for kind, n in summary['failures'].items())}"] if summary[
        "failures"] else []
    t.caption = "; ".join(caption) or None
    return t


def plot(outcome: Outcome, path: str) -> None:
    """Draw send rate, backlog per queue and completions per second against time to ``path``.

    Raises:
        ImportError: matplotlib is not installed (``pip install celery-autoscale[plot]``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    start = outcome.started_at
    sends, completions = defaultdict(int), defaultdict(int)
    for s in outcome.sent:
        sends[int(s.sent_at - start)] += 1
    for task_id, meta in outcome.results.items():
        end = finished_at(meta, outcome.runs.get(task_id))
        if meta["status"] == states.SUCCESS and end is not None:
            completions[int(max(0.0, end - start))] += 1
    end = max([*sends, *completions, *(int(x["t"]) for x in outcome.timeline), 0]) + 1
    seconds = list(range(end))

    watched = [x for x in outcome.timeline if x.get("replicas")]
    fig, axes = plt.subplots(4 if watched else 3, 1, sharex=True, figsize=(9, 9 if watched else 7))
    ax_send, ax_backlog, ax_done = axes[:3]
    ax_send.bar(seconds, [sends[i] for i in seconds], width=1.0, align="edge")
    ax_send.set_ylabel("sent (tasks/s)")
    samples = [x for x in outcome.timeline if x["backlog"] is not None]
    for queue in sorted({s.queue for s in outcome.sent}):
        ax_backlog.plot([x["t"] for x in samples], [x["backlog"].get(queue, 0) for x in samples], label=queue)
    ax_backlog.set_ylabel("backlog (tasks)")
    ax_backlog.legend(loc="upper right")
    ax_done.bar(seconds, [completions[i] for i in seconds], width=1.0, align="edge", color="tab:green")
    ax_done.set_ylabel("completed (tasks/s)")
    if watched:  # the worker Deployments, as `kubectl get deployment -w` would show them
        ax_replicas = axes[3]
        for i, queue in enumerate(sorted({q for x in watched for q in x["replicas"]})):
            points = [x for x in watched if queue in x["replicas"]]
            color = f"C{i}"
            ax_replicas.step([x["t"] for x in points], [x["replicas"][queue]["ready"] for x in points],
                             where="post", color=color, label=f"{queue} ready")
            ax_replicas.step([x["t"] for x in points], [x["replicas"][queue]["desired"] for x in points],
                             where="post", color=color, linestyle="--", label=f"{queue} desired")
        ax_replicas.set_ylabel("replicas")
        ax_replicas.legend(loc="upper right", fontsize="small")
    axes[-1].set_xlabel("seconds since start")
    fig.suptitle("celery-autoscale load timeline")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
