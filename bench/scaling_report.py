"""The scaling analysis: this chart against the common alternatives, on the real control plane.

    python -m bench.scaling_report                 # make report: every pattern, every configuration
    python -m bench.scaling_report --patterns burst --configs chart,listlength-5   # a part

Brings up the `make e2e` environment (``e2e_cluster.environment``, tools/e2e-cluster: the control
plane and KEDA built from their Go modules, the chart installed with values/ci.yaml through the
Helm SDK, its pods run by the real node's kubelet from the image `make image` built) and, for each configuration and each load pattern, sends the
same seeded load with ``python -m loadgen``'s own ``run`` to the ``io`` queue (threads,
concurrency 4, 0 to 4 replicas), sampling once a second. Only the scaling design differs
between configurations; the timing knobs are values/ci.yaml's for all (pollingInterval 2 s,
cooldownPeriod 10 s, the HPA behaviour: scale-up window 0 s, scale-down stabilization window
5 s; the HPA controller syncs every 2 s):

- ``chart``: this chart as shipped: one trigger per priority list, plus the tasks running and
  held for an ETA, summed; target 4 tasks per replica (the concurrency).
- ``chart-wait``: this chart with ``targetQueueWaitSeconds`` :data:`WAIT_TARGET` (the reconciler
  sizes the queue to that queue wait; its figure falls back to the true backlog).
- ``listlength-5`` / ``listlength-50``: the ScaledObject everyone copies: one KEDA ``redis``
  trigger on the queue's list (``listName: io``) with ``listLength`` 5 / 50, no formula.
- ``fixed-1`` / ``fixed-4``: no autoscaler, 1 replica (the least that serves a task) and 4
  (``maxReplicaCount``): the latency and cost bounds.
- ``cpu-hpa``: no KEDA; a plain ``autoscaling/v2`` HorizontalPodAutoscaler on the pods' CPU
  utilisation, target :data:`CPU_TARGET` % of their request (the Kubernetes HPA walkthrough's
  ``kubectl autoscale --cpu-percent=50``), 1 to 4 replicas (an HPA cannot go to zero), the same
  behaviour, the pods' CPU request raised to :data:`CPU_HPA_REQUEST`; its metrics come from
  metrics-server scraping the node's kubelet every 10 s.
- ``celery-autoscale``: no KEDA; one fixed replica whose worker runs Celery's own autoscaler
  (``--autoscale=16,1``, the prefork pool: Celery's threads pool cannot grow or shrink), so its
  processes grow with the tasks it holds, up to :data:`AUTOSCALE_MAX` (the other configurations'
  most: 4 replicas of 4). A pod that may hold 16 processes must be sized for them: its request is
  :data:`AUTOSCALE_SIZE` io pods' (CPU and memory), and its replica-seconds count that many.

Writes ``bench/results/scaling.json`` (every figure and sample, the versions, the machine),
``docs/scaling-report.md`` with its plots in ``docs/scaling/``, and prints one JSON line of
headline figures. Figures are defined in :mod:`loadgen.scaling` and in the report; none is
asserted anywhere (they depend on the machine).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path

from e2e_cluster import CI_VALUES, NAMESPACE, RELEASE, environment, wait_for, worker
from loadgen import scaling

ROOT = Path(__file__).resolve().parents[1]

QUEUE = "io"
CONCURRENCY = CI_VALUES["queues"][QUEUE]["concurrency"]
LOW = CI_VALUES["workerDefaults"]["autoscaling"]["minReplicaCount"]
HIGH = CI_VALUES["workerDefaults"]["autoscaling"]["maxReplicaCount"]
TASK = ["--queues", QUEUE, "--size-bytes", "0", "--seed", "7"]

#: name -> (``python -m loadgen`` arguments, seconds per load period for the stability figure, what it is)
PATTERNS = {
    "burst": (["burst", "--count", "32", "--priorities", "0=2,3=1,9=1", "--wait-seconds", "8", *TASK], None,
              "32 tasks of 8 s at once, priorities 0, 3 and 9 (2:1:1)"),
    "ramp": (["ramp", "--start-rate", "0", "--rate", "3", "--duration", "60", "--wait-seconds", "4", *TASK], None,
             "0 → 3 tasks/s over 60 s, tasks of 4 s (90 tasks)"),
    "oscillate": (["oscillate", "--rate", "2", "--amplitude", "2", "--period", "30", "--duration", "90",
                   "--wave", "square", "--wait-seconds", "4", *TASK], 30,
                  "square wave 0 ↔ 4 tasks/s, 30 s period, 90 s, tasks of 4 s"),
    "long-tasks": (["steady", "--rate", "0.1", "--duration", "60", "--wait-seconds", "30", *TASK], None,
                   "1 task every 10 s for 60 s, each 30 s long (longer than the cooldownPeriod)"),
    # Loads like production: short tasks of varying length, arriving at random.
    "burst-short": (["burst", "--count", "400", "--wait-seconds", "0.5", *TASK], None,
                    "400 tasks of 0.5 s at once"),
    "poisson-short": (["steady", "--rate", "6", "--duration", "60", "--arrivals", "poisson", "--wait-seconds", "0.3",
                       "--wait-sigma", "0.8", *TASK], None,
                      "Poisson arrivals at 6 tasks/s for 60 s, log-normal run times of mean 0.3 s (σ 0.8)"),
    "compressed-day": (["replay", "--csv", str(ROOT / "bench" / "loads" / "compressed-day.csv"), "--arrivals", "poisson",
                        "--wait-seconds", "1", "--wait-sigma", "0.5", *TASK], None,
                       "a day in 240 s (bench/loads/compressed-day.csv): a quiet night, a morning peak of 8 tasks/s, "
                       "Poisson arrivals, log-normal run times of mean 1 s"),
}

#: The queue-wait target of the ``chart-wait`` configuration and of the headline, seconds.
WAIT_TARGET = 5

CONFIGS = {
    "chart": "this chart as shipped: every priority list + running + ETA-held, target 4",
    "chart-wait": f"this chart with targetQueueWaitSeconds {WAIT_TARGET}: the reconciler sizes the queue",
    "listlength-5": "one redis trigger on the queue's list, listLength 5",
    "listlength-50": "one redis trigger on the queue's list, listLength 50",
    "fixed-1": "no autoscaler, 1 replica",
    "fixed-4": "no autoscaler, 4 replicas (maxReplicaCount)",
    "cpu-hpa": "a plain HPA on the pods' CPU utilisation (50 % of a 200m request), 1 to 4 replicas",
    "celery-autoscale": "no KEDA; 1 replica of Celery's own --autoscale=16,1 (prefork), sized and counted as 4 pods",
}
#: The cpu-hpa configuration's target, percent of the pods' CPU request: the Kubernetes docs' HPA
#: walkthrough (``kubectl autoscale deployment php-apache --cpu-percent=50 --min=1 --max=10``).
CPU_TARGET = 50
#: The io pods' CPU request under cpu-hpa. At values/ci.yaml's 50m an idle worker alone sat at 40-80 %
#: of it (19-41m in `kubectl top`: its exec probes start a Python process every period), so the HPA
#: held 4 replicas with nothing to run and never came back to one.
CPU_HPA_REQUEST = "200m"

AUTOSCALING = CI_VALUES["workerDefaults"]["autoscaling"]

#: The celery-autoscale configuration: Celery's ``--autoscale`` maximum, processes (the most the
#: other configurations run: ``maxReplicaCount`` × concurrency), and the size of its one pod in io
#: pods (its request, and the weight of its replica-seconds).
AUTOSCALE_MAX = HIGH * CONCURRENCY
AUTOSCALE_SIZE = AUTOSCALE_MAX // CONCURRENCY


def size(config: str) -> int:
    """How many io pods (values/ci.yaml's request) one pod of ``config`` is sized as."""
    return AUTOSCALE_SIZE if config == "celery-autoscale" else 1


def scaled(resources: dict, times: int) -> dict:
    """``resources`` (a pod's ``requests``/``limits``: CPU in m, memory in Mi) ``times`` over."""
    def grow(value: str) -> str:
        number, unit = (value[:-1], "m") if value.endswith("m") else (value[:-2], value[-2:])
        return f"{int(number) * times}{unit}"

    return {part: {name: grow(value) for name, value in values.items()} for part, values in resources.items()}


def list_length_scaledobject(list_length: int) -> dict:
    """The common ScaledObject: one ``redis`` trigger on the main list, on values/ci.yaml's timings."""
    name = worker(QUEUE)
    return {
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
        "metadata": {"name": f"{name}-listlength", "namespace": NAMESPACE},
        "spec": {
            "scaleTargetRef": {"name": name},
            "pollingInterval": AUTOSCALING["pollingInterval"], "cooldownPeriod": AUTOSCALING["cooldownPeriod"],
            "minReplicaCount": LOW, "maxReplicaCount": HIGH,
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": AUTOSCALING["behavior"]}},
            "triggers": [{"type": "redis", "metadata": {
                "address": f"{RELEASE}-celery-autoscale-redis.{NAMESPACE}.svc:6379",  # the chart's own Redis
                "listName": QUEUE, "listLength": str(list_length)},
                "authenticationRef": {"name": f"{RELEASE}-celery-autoscale-redis"}}],
        },
    }


def cpu_hpa() -> dict:
    """A plain HPA on the pods' CPU utilisation (:data:`CPU_TARGET`), on values/ci.yaml's behaviour."""
    name = worker(QUEUE)
    return {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": f"{name}-cpu", "namespace": NAMESPACE},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": 1, "maxReplicas": HIGH, "behavior": AUTOSCALING["behavior"],
            "metrics": [{"type": "Resource", "resource": {
                "name": "cpu", "target": {"type": "Utilization", "averageUtilization": CPU_TARGET}}}],
        },
    }


def rest(config: str) -> int:
    """The replicas ``config`` rests at with an empty queue."""
    if config in ("cpu-hpa", "celery-autoscale"):
        return 1
    return int(config.split("-")[1]) if config.startswith("fixed-") else LOW


def configure(release, config: str) -> int:
    """Put ``io`` under ``config``; returns the replicas it rests at."""
    release.cluster.kubectl("delete", "scaledobject", f"{worker(QUEUE)}-listlength", "-n", NAMESPACE,
                            "--ignore-not-found", "--wait=true")
    release.cluster.kubectl("delete", "hpa", f"{worker(QUEUE)}-cpu", "-n", NAMESPACE, "--ignore-not-found",
                            "--wait=true")
    if config == "chart":
        release.upgrade({})
    elif config == "chart-wait":
        release.upgrade({"queues": {QUEUE: {"autoscaling": {"targetQueueWaitSeconds": WAIT_TARGET}}}})
    elif config.startswith("listlength-"):
        release.upgrade({"queues": {QUEUE: {"replicas": 0, "autoscaling": {"enabled": False}}}})
        release.cluster.apply(list_length_scaledobject(int(config.split("-")[1])))
    elif config == "cpu-hpa":
        release.upgrade({"queues": {QUEUE: {"replicas": rest(config), "autoscaling": {"enabled": False},
                                            "resources": {"requests": {"cpu": CPU_HPA_REQUEST}}}}})
        release.cluster.apply(cpu_hpa())
    elif config == "celery-autoscale":
        release.upgrade({"queues": {QUEUE: {
            "replicas": rest(config), "autoscaling": {"enabled": False}, "pool": "prefork",
            "extraArgs": [f"--autoscale={AUTOSCALE_MAX},1"],
            "resources": scaled(CI_VALUES["queues"][QUEUE]["resources"], AUTOSCALE_SIZE)}}})
    else:
        release.upgrade({"queues": {QUEUE: {"replicas": rest(config), "autoscaling": {"enabled": False}}}})
    return rest(config)


class Recorder(threading.Thread):
    """One sample of ``io`` per second (see :mod:`loadgen.scaling`), plus who runs what."""

    def __init__(self, release, deployments, settings, client, start: float, processes: int = CONCURRENCY):
        super().__init__(daemon=True)
        self.release, self.deployments, self.settings, self.client = release, deployments, settings, client
        self.processes = processes  # the most tasks one pod runs at once
        self.start_time = start
        self.samples: list[dict] = []
        self.owners: list[tuple[float, dict[str, int]]] = []  # (Unix time, {pod: tasks running})
        self._stop_event = threading.Event()

    def run(self) -> None:
        from celery_autoscale import backlog
        from celery_autoscale.keys import owners_key

        prefix = worker(QUEUE)
        while True:
            now = time.time()
            try:
                parts = backlog(self.client, QUEUE, self.settings)
                running = {}
                for raw in self.client.hvals(owners_key(QUEUE, self.settings.key_prefix)):
                    pod = json.loads(raw)["worker"].split("@")[-1]
                    running[pod] = running.get(pod, 0) + 1
                replicas = self.deployments.read()[QUEUE]
                up, terminating = self.release.pod_events.alive(prefix)
                self.owners.append((now, running))
                self.samples.append({
                    "t": round(now - self.start_time, 3), "desired": replicas.desired, "ready_api": replicas.ready,
                    "ready": up, "pods": up + terminating, "queued": parts.queued, "in_flight": parts.in_flight,
                    "scheduled": parts.scheduled, "busy": min(parts.in_flight, (up + terminating) * self.processes)})
            except Exception as exc:  # one missed second is a gap, not the end of the run
                print(f"sample skipped: {type(exc).__name__}: {exc}", file=sys.stderr)
            if self._stop_event.wait(max(0.0, 1.0 - (time.time() - now))):
                return

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


#: Seconds a queue may hold tasks with no worker and no replica asked for before its tasks count
#: as stranded (three cooldownPeriods: KEDA would have woken it by then if it ever will).
STRANDED_AFTER = 3 * AUTOSCALING["cooldownPeriod"]


def at_rest(release, client, settings, floor: int) -> bool:
    from celery_autoscale import backlog

    return (backlog(client, QUEUE, settings).total == 0 and release.replicas(QUEUE) == floor
            and release.pod_events.alive(worker(QUEUE)) == (floor, 0))


def finish(release, client, settings, task_ids: list[str], timeout: float = 600) -> int:
    """Wait until every task ran, or until the queue has held tasks with no worker and no replica
    asked for during :data:`STRANDED_AFTER` seconds; then those tasks are stranded: counted,
    removed from the lists (so the next run starts clean) and returned."""
    from celery_autoscale import backlog
    from celery_autoscale.keys import priority_lists

    from loadgen.run import run_records

    deadline, idle_since = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        if len(run_records(client, settings, task_ids)) == len(task_ids):
            return 0
        left = backlog(client, QUEUE, settings).total
        unserved = left > 0 and release.replicas(QUEUE) == 0 and release.pod_events.alive(worker(QUEUE)) == (0, 0)
        idle_since = (idle_since or time.monotonic()) if unserved else None
        if idle_since and time.monotonic() - idle_since >= STRANDED_AFTER:
            client.delete(*priority_lists(QUEUE, settings.priority_steps, settings.separator, settings.key_prefix))
            return left
        time.sleep(0.5)
    raise AssertionError(f"{QUEUE}: {len(task_ids) - len(run_records(client, settings, task_ids))} tasks "
                         f"neither ran nor were stranded within {timeout:.0f}s")


def run_once(release, deployments, config: str, pattern: str, floor: int) -> dict:
    """One pattern under one configuration: the samples, the outcome and the figures."""
    from loadgen import report
    from loadgen.cli import build_spec, load, parser
    from loadgen.run import collect, run, run_records

    settings = release.settings()
    client = release.client()
    wait_for(lambda: at_rest(release, client, settings, floor), 240, f"{QUEUE} at rest at {floor} for {config}")
    time.sleep(2)
    argv, period, _ = PATTERNS[pattern]
    args = parser().parse_args(argv)
    app = load(args)
    spec = build_spec(args, app)
    mark = len(release.events)
    started = time.time()
    recorder = Recorder(release, deployments, settings, client, started, CONCURRENCY * size(config))
    recorder.start()
    try:
        outcome = run(app, spec, wait=False, timeout=1)  # loadgen's own pacing; the waiting is ours
        ids = [s.task_id for s in outcome.sent]
        stranded = finish(release, client, settings, ids)
        # Until the replicas are back at rest too (for the cost of the tail).
        wait_for(lambda: at_rest(release, client, settings, floor), 240, "back at rest", interval=0.5)
        time.sleep(2)  # samples of the state at rest
    finally:
        recorder.stop()
    outcome.results, outcome.runs, outcome.waited = collect(app, ids, timeout=10), run_records(client, settings, ids), True
    summary = report.summarize(outcome)
    first_sent = min(s.sent_at for s in outcome.sent)
    offset = first_sent - started  # samples count from the first task
    samples = [{**s, "t": round(s["t"] - offset, 3)} for s in recorder.samples if s["t"] >= offset - 1e-6]
    events = [e for e in release.events[mark:] if e[1].startswith(worker(QUEUE))]
    logs = release.pod_events.log_lines(f"{worker(QUEUE)}-")
    waits = [outcome.runs[s.task_id][0] - s.sent_at for s in outcome.sent if s.task_id in outcome.runs]
    return {
        "config": config, "pattern": pattern, "samples": samples, "measured": time.strftime("%Y-%m-%d"),
        "last_sent_s": max(s.sent_at for s in outcome.sent) - first_sent,
        "period_s": period, "sent": summary["submitted"], "succeeded": summary["succeeded"],
        "failed": summary["failed"], "lost": summary["lost"], "stranded": stranded,
        "queue_wait_s": scaling.waits(waits),
        "busy_terminated": scaling.busy_terminations(events, recorder.owners),
        **scaling.deliveries(logs, set(ids)),
        "events": [[round(t - first_sent, 3), pod, what] for t, pod, what in events],
        "waits": [[round(outcome.runs[s.task_id][0] - first_sent, 3), round(outcome.runs[s.task_id][0] - s.sent_at, 3)]
                  for s in outcome.sent if s.task_id in outcome.runs],  # [start, queue wait], seconds
    }


def figures(run: dict, window: float) -> dict:
    """The run's figures, its cost over the pattern's common ``window`` (seconds from the first task)."""
    samples = run["samples"]
    costed = scaling.extend(samples, window)
    reaction = scaling.reaction(samples, CONCURRENCY, LOW, HIGH, rest(run["config"]))
    # A queue that stranded tasks never drained: its lists were emptied by the harness.
    drained = None if run["stranded"] else scaling.drain(samples, run["last_sent_s"])
    periods = max(1.0, run["last_sent_s"] / run["period_s"]) if run["period_s"] else 1.0
    return {
        "reaction_first_worker_s": reaction["first_worker_s"], "reaction_ideal_s": reaction["ideal_s"],
        "drain_s": drained,
        "to_rest_s": scaling.to_rest(samples, None if drained is None else run["last_sent_s"] + drained),
        "queue_wait_s": run["queue_wait_s"],
        **weighted(scaling.cost(costed, CONCURRENCY * size(run["config"])), size(run["config"])),
        **scaling.accuracy(samples, CONCURRENCY, LOW, HIGH),
        "reversals_per_period": scaling.reversals(s["desired"] for s in samples) / periods,
        "busy_terminated": run["busy_terminated"], "redelivered": run["redelivered"],
        "lost": run["lost"], "stranded": run["stranded"], "run_twice": run["run_twice"], "sent": run["sent"],
        "window_s": window,
    }


def weighted(spent: dict, times: int) -> dict:
    """:func:`loadgen.scaling.cost`'s figures with each pod counted as ``times`` io pods."""
    return {**spent, "replica_seconds": spent["replica_seconds"] * times}


def analyse(runs: list[dict]) -> dict:
    """``{pattern: {config: figures}}``, each pattern costed over the same window: from the first
    task until its slowest configuration was back at rest."""
    out: dict[str, dict] = {}
    for pattern in dict.fromkeys(r["pattern"] for r in runs):
        mine = [r for r in runs if r["pattern"] == pattern]
        window = max(r["samples"][-1]["t"] for r in mine if r["samples"])
        out[pattern] = {r["config"]: figures(r, window) for r in mine}
    return out


def versions() -> dict:
    import celery
    import kombu

    from e2e_cluster.cluster import versions as pinned

    return {"celery": celery.__version__, "kombu": kombu.__version__, "python": platform.python_version(),
            **{k.lower(): v for k, v in pinned().items()}}


def machine() -> dict:
    return {"machine": platform.machine(), "system": platform.system(), "cpus": os.cpu_count(),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}


# -- the report ------------------------------------------------------------------------------------
def _n(value, digits: int = 1, suffix: str = "") -> str:
    if value is None:
        return "—"
    return f"{value:.{digits}f}{suffix}" if isinstance(value, float) else f"{value}{suffix}"


ROWS = [
    ("reaction: first new worker (s)", lambda f: _n(f["reaction_first_worker_s"])),
    ("reaction: ready = ideal (s)", lambda f: _n(f["reaction_ideal_s"])),
    ("drain after the last task (s)", lambda f: _n(f["drain_s"])),
    ("drained → replicas at rest (s)", lambda f: _n(f["to_rest_s"])),
    ("queue wait p50 / p95 / max (s)", lambda f: " / ".join(_n(f["queue_wait_s"][k]) for k in ("p50", "p95", "max"))),
    ("replica-seconds", lambda f: _n(f["replica_seconds"], 0)),
    ("process-seconds", lambda f: _n(f["process_seconds"], 0)),
    ("utilisation (busy ÷ provisioned)", lambda f: _n(None if f["utilisation"] is None else 100 * f["utilisation"], 0, " %")),
    ("ready = ideal (share of samples)", lambda f: _n(None if f["exact_share"] is None else 100 * f["exact_share"], 0, " %")),
    ("mean abs. error (replicas)", lambda f: _n(f["mean_abs_error"], 2)),
    ("under-provisioned (share)", lambda f: _n(None if f["under_share"] is None else 100 * f["under_share"], 0, " %")),
    ("reversals of desired per period", lambda f: _n(f["reversals_per_period"])),
    ("busy workers terminated", lambda f: _n(f["busy_terminated"])),
    ("tasks redelivered", lambda f: _n(f["redelivered"])),
    ("tasks stranded at zero replicas", lambda f: _n(f["stranded"])),
    ("tasks not run / run twice (of sent)", lambda f: f"{_n(f['lost'])} / {_n(f['run_twice'])} (of {f['sent']})"),
]


def plot(pattern: str, runs: list[dict], path: Path, window: float) -> None:
    """Ready replicas against each run's ideal, the true backlog, and each task's queue wait at
    its start, over the pattern's common ``window`` (a run at rest early stays at rest)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_rep, ax_backlog, ax_wait) = plt.subplots(3, 1, sharex=True, figsize=(10, 9))
    for i, run in enumerate(runs):
        s, color = scaling.extend(run["samples"], window), f"C{i}"
        ts = [x["t"] for x in s]
        ax_rep.step(ts, [x["ready"] for x in s], where="post", color=color, label=f"{run['config']} ready")
        ax_rep.step(ts, [scaling.ideal(scaling.true_backlog(x), CONCURRENCY, LOW, HIGH) for x in s], where="post",
                    color=color, linestyle=":", alpha=0.7)
        ax_backlog.plot(ts, [scaling.true_backlog(x) for x in s], color=color, label=run["config"])
        ax_wait.scatter([w[0] for w in run["waits"]], [w[1] for w in run["waits"]], s=6, color=color,
                        label=run["config"])
    ax_rep.set_ylabel("replicas (dotted: ideal)")
    ax_rep.legend(loc="upper right", fontsize="small", ncol=2)
    ax_backlog.set_ylabel("true backlog (tasks)")
    ax_wait.set_ylabel("queue wait (s), at its start")
    ax_wait.set_xlabel("seconds since the first task")
    fig.suptitle(f"{pattern}: {PATTERNS[pattern][2]}", fontsize="medium")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def unmeasured(result: dict) -> dict[str, list[str]]:
    """Pattern -> the configurations this result has no run of (every one, for a pattern not run)."""
    return {pattern: missing for pattern in PATTERNS
            if (missing := [c for c in CONFIGS if c not in result["figures"].get(pattern, {})])}


def markdown(result: dict, plots: dict[str, str]) -> str:
    configs = list(dict.fromkeys(c for p in result["figures"].values() for c in p))
    missing = unmeasured(result)
    lines = [
        "# Scaling report",
        "",
        "Generated by `make report` (`python -m bench.scaling_report`); do not edit by hand. Every figure",
        "comes from a real control plane (kube-apiserver, controller-manager with the HPA controller,",
        "the scheduler) with the real KEDA built from its Go modules, and the worker pods run by a real",
        "kubelet and containerd on the same 2-core machine from the image `make image` built (tools/e2e-cluster).",
        "Raw figures and samples: `bench/results/scaling.json`.",
        "",
        f"Queue `{QUEUE}`: threads, concurrency {CONCURRENCY}, {LOW} to {HIGH} replicas; the same seeded load"
        " from `python -m loadgen` for every configuration. Timing knobs shared by all: pollingInterval "
        f"{AUTOSCALING['pollingInterval']} s, cooldownPeriod {AUTOSCALING['cooldownPeriod']} s, HPA sync 2 s,"
        " scale-up stabilization window 0 s, scale-down stabilization window "
        f"{AUTOSCALING['behavior']['scaleDown']['stabilizationWindowSeconds']} s.",
        "",
        "| configuration | what it is |",
        "| --- | --- |",
        *[f"| `{c}` | {CONFIGS[c]} |" for c in configs],
        "",
        f"Versions: {', '.join(f'{k} {v}' for k, v in result['versions'].items())}. Machine: "
        f"{result['machine']['cpus']} CPUs, {result['machine']['memory_gib']} GiB, {result['machine']['machine']}.",
        "",
    ]
    if missing:
        lines += ["Not measured in this report: " + "; ".join(
            f"`{pattern}` ({'every configuration' if len(cs) == len(CONFIGS) else ', '.join(f'`{c}`' for c in cs)})"
            for pattern, cs in missing.items()) + ".", ""]
    for pattern, by_config in result["figures"].items():
        verdict = result["headline"].get(pattern, {}).get("wait_target") or meets_wait_target(by_config)
        within = [f"`{c}`" for c, ok in verdict["met"].items() if ok]
        judged = ""
        if "chart-wait" in verdict["met"]:
            other = verdict["cheapest_other"]
            if not verdict["met"]["chart-wait"]:
                judged = " `chart-wait` did not meet it" + ("" if within else "; no configuration could, at maxReplicaCount") + "."
            elif other is None:
                judged = " `chart-wait` met it and no other configuration did."
            else:
                judged = (f" `chart-wait` met it at {'no more' if verdict['chart_wait_cheapest'] else 'more'} replica-seconds"
                          f" than the cheapest other that did (`{other}`).")
        dates = sorted({r["measured"] for r in result["runs"] if r["pattern"] == pattern and r.get("measured")})
        measured = f" Measured {' and '.join(dates)}." if dates else ""
        lines += [f"## {pattern}", "", PATTERNS[pattern][2] + "." + measured, "",
                  f"p95 queue wait within {verdict['target_s']} s: {', '.join(within) or 'none'}.{judged}", "",
                  "| figure | " + " | ".join(f"`{c}`" for c in by_config) + " |",
                  "| --- |" + " ---: |" * len(by_config)]
        lines += [f"| {name} | " + " | ".join(cell(f) for f in by_config.values()) + " |" for name, cell in ROWS]
        lines += ["", f"![{pattern}]({plots[pattern]})", ""]
    lines += [
        "## Definitions",
        "",
        "- Each figure is from one run. Reaction times vary by up to a pollingInterval (2 s) with the",
        "  phase of KEDA's poll against the first task; the cost and safety figures are the robust ones.",
        "- **—**: it never happened within the run: a fixed configuration does not scale, a queue that",
        "  stranded tasks never drained, an under-provisioned one never met the ideal.",
        "- **ideal** replicas: `ceil(true backlog / target)` clamped to [minReplicaCount, maxReplicaCount],",
        f"  with target {CONCURRENCY} (the concurrency) and the true backlog = tasks in every priority list +",
        "  running + held for an ETA, sampled once a second. Dotted in the plots.",
        "- **ready**: worker pods whose container runs and that are not being deleted (a Celery worker",
        "  takes a few seconds more to consume). **replica-seconds**: worker pods alive × seconds, terminating ones",
        "  included (a draining pod still costs); **process-seconds**: × concurrency; **utilisation**:",
        "  tasks running × seconds ÷ process-seconds. Costed for every configuration of a pattern over",
        "  the same window: from the first task until the slowest configuration was back at rest.",
        "- **reaction**: from the first task to the first sample with more ready workers than at rest, and",
        "  to the first sample where ready workers meet the ideal of that moment. **drain**: from the last",
        "  task sent to an empty true backlog; **at rest**: from then to the last change of desired replicas.",
        "- **queue wait**: a task's start (the runtime's run record, written by the worker) minus its send.",
        "- **accuracy**: share of samples with ready = ideal, mean |ready − ideal|, share below the ideal.",
        "- **reversals**: direction changes of the Deployment's desired replicas, per load period (the",
        "  whole run for patterns without one).",
        "- **safety**: busy workers terminated (a pod sent SIGTERM while running a task: the warm shutdown",
        "  finishes it within terminationGracePeriodSeconds, but the pod costs until then and a task",
        "  longer than the grace period would be killed), tasks redelivered and run twice (Celery's own",
        "  `received` / `succeeded` log lines per task id). **Stranded**: tasks still in a list while the",
        "  queue had no worker and no replica asked for during three cooldownPeriods; the run then ends and",
        "  they are removed, so they also count as **not run** (what a user would call lost).",
        "",
    ]
    return "\n".join(lines)


def meets_wait_target(by_config: dict, target: float = WAIT_TARGET) -> dict:
    """Per pattern and wait target W: which configurations kept the p95 queue wait within W, the
    cheapest of the others that did (replica-seconds), and whether ``chart-wait`` met W at no more
    replica-seconds than it, within one replica-second (the table's resolution) (None when
    ``chart-wait`` did not run)."""
    met = {c: f["queue_wait_s"]["p95"] is not None and f["queue_wait_s"]["p95"] <= target and not f["lost"]
           for c, f in by_config.items()}
    others = [c for c in by_config if c != "chart-wait" and met[c]]
    cheapest = min(others, key=lambda c: by_config[c]["replica_seconds"], default=None)
    wait = by_config.get("chart-wait")
    verdict = None
    if wait is not None:
        verdict = met["chart-wait"] and (cheapest is None or
                                         wait["replica_seconds"] <= by_config[cheapest]["replica_seconds"] + 1)
    return {"target_s": target, "met": met, "cheapest_other": cheapest, "chart_wait_cheapest": verdict}


def headline(result: dict) -> dict:
    """Ratios of this chart to list length only (listLength 5), over every pattern both ran, and
    the wait-target verdict (:func:`meets_wait_target`) of every pattern."""
    out = {}
    for pattern, by_config in result["figures"].items():
        out[pattern] = {"wait_target": meets_wait_target(by_config)}
        chart, other = by_config.get("chart"), by_config.get("listlength-5")
        if not chart or not other:
            continue
        p95 = (chart["queue_wait_s"]["p95"], other["queue_wait_s"]["p95"])
        out[pattern].update({
            "p95_wait_ratio": round(p95[0] / p95[1], 2) if p95[1] else None,
            "replica_seconds_ratio": round(chart["replica_seconds"] / other["replica_seconds"], 2)
            if other["replica_seconds"] else None,
            "busy_terminated": [chart["busy_terminated"], other["busy_terminated"]],
        })
    return out


def write(result: dict, results_path: Path, report_path: Path) -> None:
    plots_dir = report_path.parent / "scaling"
    plots_dir.mkdir(parents=True, exist_ok=True)
    plots = {}
    for pattern in result["figures"]:
        path = plots_dir / f"{pattern}.png"
        plot(pattern, [r for r in result["runs"] if r["pattern"] == pattern], path,
             next(iter(result["figures"][pattern].values()))["window_s"])
        plots[pattern] = os.path.relpath(path, report_path.parent)
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results_path.write_text(json.dumps(result, separators=(",", ":")) + "\n")  # samples included: compact
    report_path.write_text(markdown(result, plots))


def measure(release, patterns: list[str], configs: list[str]) -> dict:
    """Run every pattern under every configuration on ``release`` (restored to the chart after)."""
    from loadgen.kube import WorkerDeployments

    app_env = {name: release.process_env()[name]
               for name in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "CELERY_AUTOSCALE_APP")}
    saved = {name: os.environ.get(name) for name in app_env}
    os.environ.update(app_env)  # the sample app's producer reads them; restored below (Celery's
    # Settings.broker_url prefers CELERY_BROKER_URL to any app's own broker, so a leftover one
    # would send a later producer's tasks here)
    deployments = WorkerDeployments(RELEASE, NAMESPACE, str(release.cluster.kubeconfig))
    runs = []
    began = time.time()
    try:
        for config in configs:
            floor = configure(release, config)
            for pattern in patterns:
                runs.append(run_once(release, deployments, config, pattern, floor))
                print(f"{config} {pattern}: {runs[-1]['succeeded']}/{runs[-1]['sent']} succeeded", file=sys.stderr)
    finally:
        configure(release, "chart")
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name)
            else:
                os.environ[name] = value
    result = {"benchmark": "scaling_report", "queue": QUEUE, "concurrency": CONCURRENCY, "min": LOW, "max": HIGH,
              "timing": {k: AUTOSCALING[k] for k in ("pollingInterval", "cooldownPeriod", "behavior")},
              "versions": versions(), "machine": machine(), "seconds": round(time.time() - began),
              "runs": runs}
    result["figures"] = analyse(runs)
    result["headline"] = headline(result)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scaling_report", description=__doc__.split("\n\n")[0])
    p.add_argument("--patterns", default=",".join(PATTERNS), help=f"comma-separated, of {', '.join(PATTERNS)}")
    p.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated, of {', '.join(CONFIGS)}")
    p.add_argument("--results", type=Path, default=ROOT / "bench" / "results" / "scaling.json",
                   help="the JSON of every figure and sample (default bench/results/scaling.json)")
    p.add_argument("--report", type=Path, default=ROOT / "docs" / "scaling-report.md",
                   help="the Markdown report; plots go to scaling/ beside it (default docs/scaling-report.md)")
    p.add_argument("--rewrite", action="store_true",
                   help="no cluster: recompute the figures and rewrite the report from --results")
    p.add_argument("--keep", action="store_true",
                   help="keep the runs of --results of every pattern and configuration pair not measured now (the "
                        "report says when each was measured)")
    args = p.parse_args(argv)
    if args.rewrite:
        result = json.loads(args.results.read_text())
        result["figures"] = analyse(result["runs"])
        result["headline"] = headline(result)
        write(result, args.results, args.report)
        return 0
    patterns = [x.strip() for x in args.patterns.split(",") if x.strip()]
    configs = [x.strip() for x in args.configs.split(",") if x.strip()]
    for given, known, what in ((patterns, PATTERNS, "pattern"), (configs, CONFIGS, "configuration")):
        unknown = [x for x in given if x not in known]
        if unknown or not given:
            p.error(f"unknown {what} {unknown[0]!r}; choose from {', '.join(known)}" if unknown else f"no {what} given")
    kept = []
    if args.keep and args.results.exists():
        kept = [r for r in json.loads(args.results.read_text())["runs"]
                if r["pattern"] not in patterns or r["config"] not in configs]
    with environment() as release:
        result = measure(release, patterns, configs)
    if kept:
        result["runs"] = kept + result["runs"]
        result["figures"] = analyse(result["runs"])
        result["headline"] = headline(result)
    write(result, args.results, args.report)
    print(json.dumps({"benchmark": "scaling_report", "headline": result["headline"], "seconds": result["seconds"],
                      "report": str(args.report)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
