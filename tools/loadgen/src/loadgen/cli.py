"""``python -m loadgen PATTERN [options]``: send a shaped load of Celery tasks to any app.

The app comes from ``--app`` (default ``CELERY_AUTOSCALE_APP``; one of them is required, so a
user's broker never gets our sample app's tasks by accident) and its broker from ``CELERY_BROKER_URL`` unless ``--broker`` is given. The
tasks are ``--task`` with ``--args``/``--kwargs`` (routed by the app, or sent to each of
``--queues``), a weighted ``--mix``, or by default the sample app's ``cpu``, ``io`` and
``mixed`` tasks shaped by the profile options. Every input is checked, and the broker pinged,
before anything is sent: an error is one line on stderr.

Exit status: 0 ok; 1 tasks unfinished, lost or failed (with ``--wait``) or the broker went away mid-run
(the summary so far is printed); 2 bad input (nothing sent); 3 broker unreachable (nothing sent).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from celery_autoscale.cli import EXIT_BAD_INPUT, EXIT_BROKER, EXIT_FAILED, Parser, number

from .patterns import ARRIVALS, PATTERNS, PatternError, build, poisson

#: Upper bounds of the shape's numbers: tasks/s, seconds (30 days), tasks; beyond them a run cannot be
#: sent from one process anyway, and the pattern's arithmetic would overflow.
MAX_RATE, MAX_SECONDS, MAX_COUNT = 1e6, 30 * 86400, 10**9
#: What ``--plot`` can write (matplotlib's file formats, by suffix).
PLOT_SUFFIXES = {".png", ".pdf", ".svg", ".jpg", ".jpeg", ".eps", ".ps", ".tif", ".tiff", ".webp"}
#: The sample app, loadgen's default.
DEMO_APP = "tasks.app:app"


class InputError(ValueError):
    """A command-line value is invalid; the message is one line."""


def parse_weights(text: str, what: str, convert=str) -> dict:
    """``"a=2,b=1"`` (or ``"a,b"`` for equal weights) to ``{a: 2.0, b: 1.0}``."""
    weights = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, _, weight = part.partition("=")
        try:
            parsed_key = convert(key.strip())
            value = float(weight) if weight else 1.0
        except ValueError:
            raise InputError(f"--{what}: cannot read {part!r}; use name=weight,...") from None
        if not (math.isfinite(value) and value >= 0):
            raise InputError(f"--{what}: weight of {key!r} must be a finite number >= 0, got {weight!r}")
        weights[parsed_key] = value
    if not weights or not any(weights.values()):
        raise InputError(f"--{what}: give at least one entry with a positive weight")
    return weights


def parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="python -m loadgen",
        description="Send a shaped, open-loop load of Celery tasks to any app and summarize it.",
        epilog="Exit status: 0 ok, 1 tasks unfinished, lost or failed (with --wait) or broker lost mid-run, "
               "2 bad input, 3 broker unreachable.",
    )
    p.add_argument("pattern", help=f"load shape: {', '.join(PATTERNS)}")
    shape = p.add_argument_group("shape")
    shape.add_argument("--rate", type=number(float, 0, MAX_RATE, low_open=True), metavar="TASKS/S",
                       help="tasks/s: steady rate, ramp end rate, oscillate mean")
    shape.add_argument("--duration", type=number(float, 0, MAX_SECONDS, low_open=True), metavar="SECONDS", default=60.0,
                       help="seconds of sending (default 60)")
    shape.add_argument("--count", type=number(int, 1, MAX_COUNT), metavar="N", help="tasks to send: burst size, or a cap for other patterns")
    shape.add_argument("--start-rate", type=number(float, 0, MAX_RATE), metavar="TASKS/S", default=0.0, help="ramp start rate, tasks/s (default 0)")
    shape.add_argument("--amplitude", type=number(float, 0, MAX_RATE), metavar="TASKS/S", help="oscillate amplitude, tasks/s (default rate/2)")
    shape.add_argument("--period", type=number(float, 0, MAX_SECONDS, low_open=True), metavar="SECONDS", default=60.0,
                       help="oscillate period, seconds (default 60)")
    shape.add_argument("--wave", default="sine", metavar="SHAPE", help="oscillate wave: sine or square (default sine)")
    shape.add_argument("--csv", type=Path, metavar="FILE", help="replay: CSV of seconds,tasks_per_second segments")
    shape.add_argument("--arrivals", choices=ARRIVALS, default="uniform",
                       help="uniform: the pattern's exact pacing; poisson: random send times at the same rate, "
                            "seeded by --seed (default uniform)")
    tasks = p.add_argument_group("tasks (default: the sample app's cpu, io and mixed tasks)")
    tasks.add_argument("--app", metavar="MODULE:ATTR",
                       help=f"the producer's Celery app (default: CELERY_AUTOSCALE_APP; one is required; our sample app: {DEMO_APP})")
    tasks.add_argument("--task", metavar="NAME", help="send this task (routed by the app, or to each of --queues)")
    tasks.add_argument("--args", metavar="JSON", help="positional arguments of --task, a JSON list (default [])")
    tasks.add_argument("--kwargs", metavar="JSON", help="keyword arguments of --task, a JSON object (default {})")
    tasks.add_argument("--mix", metavar="JSON|@FILE",
                       help='a weighted mix: a JSON list of {"task", "queue", "args", "kwargs", "weight"}')
    tasks.add_argument("--queues", metavar="Q[=W],...",
                       help="queues and weights, e.g. cpu=2,io=1 (sample app default: cpu,io,mixed equally)")
    tasks.add_argument("--priorities", metavar="P[=W],...",
                       help="Celery priorities 0-9 and weights, e.g. 0=3,9=1 (0 is served first on Redis)")
    tasks.add_argument("--seed", type=int, metavar="N", default=0, help="random seed of the task and priority draws")
    prof = p.add_argument_group("sample app task profile (omitted keys keep the task's default)")
    prof.add_argument("--work-units", type=number(int, 0), metavar="N", help="SHA-256 rounds per task (cpu, mixed)")
    prof.add_argument("--size-bytes", type=number(int, 0), metavar="BYTES", help="bytes written, fsynced and read (io, mixed)")
    prof.add_argument("--wait-seconds", type=number(float, 0, 86400), metavar="SECONDS",
                      help="seconds of simulated network wait (io, mixed)")
    prof.add_argument("--wait-sigma", type=number(float, 0, 5), metavar="S", default=0.0,
                      help="draw each task's --wait-seconds from a log-normal of that mean and log-space "
                           "standard deviation S, seeded by --seed (default 0: every task the same)")
    prof.add_argument("--fail-rate", type=number(float, 0, 1), metavar="P", help="probability 0-1 of a transient fault per attempt")
    out = p.add_argument_group("outcome")
    out.add_argument("--wait", action="store_true", help="wait for every task to end; tasks unfinished (still in Redis at --timeout), lost (nowhere) or "
                          "failed exit 1")
    out.add_argument("--timeout", type=number(float, 0, 7 * 86400, low_open=True), metavar="SECONDS", default=300.0,
                     help="seconds --wait waits (default 300)")
    out.add_argument("--json", action="store_true", help="print the summary as one JSON line, last")
    out.add_argument("--plot", type=Path, metavar="FILE.png", help="write the timeline to this PNG file")
    out.add_argument("--timeline", type=Path, metavar="FILE.json",
                     help="write the samples (backlog per queue, and replicas with --release) to this JSON file")
    out.add_argument("--broker", metavar="URL", help="broker URL, redis:// or rediss:// (default: CELERY_BROKER_URL)")
    kube = p.add_argument_group("cluster: the worker Deployments' replicas, live and in --plot/--timeline "
                                "(needs the kubernetes extra)")
    kube.add_argument("--release", metavar="NAME",
                      help="the chart's Helm release whose worker Deployments to watch (turns the view on)")
    kube.add_argument("--namespace", metavar="NS", default="default", help="the release's namespace (default: default)")
    kube.add_argument("--kubeconfig", metavar="FILE",
                      help="kubeconfig of the cluster (default: KUBECONFIG, ~/.kube/config, or the pod's service account)")
    return p


def _json(text: str, what: str, kind: type):
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"--{what}: cannot read {text[1:]}: {getattr(exc, 'strerror', None) or exc.reason}") from None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise InputError(f"--{what}: not JSON ({exc.msg} at position {exc.pos})") from None
    except RecursionError:
        raise InputError(f"--{what}: JSON nested too deep") from None
    if not isinstance(value, kind):
        raise InputError(f"--{what}: must be a JSON {'list' if kind is list else 'object'}")
    return value


def _plans(args, app):
    """The :class:`~loadgen.run.TaskPlan` mix the options describe."""
    from .run import TaskPlan

    queues = parse_weights(args.queues, "queues") if args.queues else None
    profile = {"work_units": args.work_units, "size_bytes": args.size_bytes,
               "wait_seconds": args.wait_seconds, "fail_rate": args.fail_rate}
    profile = {k: v for k, v in profile.items() if v is not None}
    if (args.task or args.mix) and profile:
        raise InputError(f"--{next(iter(profile)).replace('_', '-')} shapes the sample app's tasks; "
                         "give --kwargs with --task instead")
    if args.task and args.mix:
        raise InputError("give --task or --mix, not both")
    if args.mix:
        plans = []
        for i, item in enumerate(_json(args.mix, "mix", list)):
            if not isinstance(item, dict) or not isinstance(item.get("task"), str) or not item["task"].strip():
                raise InputError(f"--mix: entry {i} needs a \"task\" name")
            if "queue" in item and not (isinstance(item["queue"], str) and item["queue"].strip()):
                raise InputError(f"--mix: entry {i}: \"queue\" must name a queue (leave it out to route by the app)")
            weight = item.get("weight", 1)
            if not isinstance(weight, (int, float)) or not (math.isfinite(weight) and weight >= 0):
                raise InputError(f"--mix: entry {i} has a weight that is not a finite number >= 0")
            if not isinstance(item.get("args", []), list) or not isinstance(item.get("kwargs", {}), dict):
                raise InputError(f"--mix: entry {i}: args must be a list and kwargs an object")
            call = (tuple(item.get("args", [])), item.get("kwargs", {}))
            queue = item.get("queue") or app.amqp.router.route({}, item["task"], *call)["queue"].name
            plans.append(TaskPlan(item["task"], queue, *call, weight))
        return [p for p in plans if p.weight > 0]
    if args.task:
        call = (tuple(_json(args.args, "args", list)) if args.args else (),
                _json(args.kwargs, "kwargs", dict) if args.kwargs else {})
        if queues is None:
            queues = {app.amqp.router.route({}, args.task, *call)["queue"].name: 1.0}
        return [TaskPlan(args.task, q, *call, weight=w) for q, w in queues.items() if w > 0]
    if args.args or args.kwargs:
        raise InputError("--args and --kwargs go with --task")
    if app.main != "tasks":
        raise InputError(f"give --task or --mix: the app {app.main!r} is not the sample app, whose tasks are the default")
    from tasks.work import QUEUE_TASKS  # the sample app's table

    queues = queues or {q: 1.0 for q in QUEUE_TASKS}
    unknown = sorted(set(queues) - set(QUEUE_TASKS))
    if unknown:
        raise InputError(f"--queues: unknown queue {unknown[0]!r}; the sample app has {', '.join(QUEUE_TASKS)} "
                         "(give --task or --mix for other apps)")
    plans = []
    for queue, weight in queues.items():
        name, accepted = QUEUE_TASKS[queue]
        plans.append(TaskPlan(name, queue, (), {k: v for k, v in profile.items() if k in accepted}, weight))
    return [p for p in plans if p.weight > 0]


def build_spec(args: argparse.Namespace, app):
    """A :class:`~loadgen.run.LoadSpec` from parsed arguments, for ``app``.

    Raises:
        InputError, PatternError: an invalid value, in one line.
    """
    from .run import LoadSpec

    plans = _plans(args, app)
    if not plans:
        raise InputError("no task to send: every weight is 0")
    priorities = parse_weights(args.priorities, "priorities", int) if args.priorities else None
    if priorities and not all(0 <= p <= 9 for p in priorities):
        raise InputError("--priorities: priorities are 0 to 9")
    for option in ("plot", "timeline"):
        path = getattr(args, option)
        if path is not None and not (path.resolve().parent.is_dir() and os.access(path.resolve().parent, os.W_OK)):
            raise InputError(f"--{option}: cannot write into {path.resolve().parent}")
        if path is not None and path.is_dir():
            raise InputError(f"--{option}: {path} is a folder; give a file name")
    if args.plot is not None:
        if args.plot.suffix.lower() not in PLOT_SUFFIXES:
            raise InputError(f"--plot: cannot draw a {args.plot.suffix or 'file without a suffix'}; "
                             f"give one of {', '.join(sorted(PLOT_SUFFIXES))}")
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise InputError("--plot needs matplotlib: pip install 'celery-autoscale-loadgen[plot]'") from None
    if (args.kubeconfig or args.namespace != "default") and not args.release:
        raise InputError("--kubeconfig and --namespace go with --release")
    pattern = build(args.pattern, rate=args.rate, duration=args.duration, count=args.count,
                    start_rate=args.start_rate, amplitude=args.amplitude, period=args.period,
                    wave=args.wave, csv_path=args.csv)
    if args.arrivals == "poisson":
        pattern = poisson(pattern, args.seed)
    if args.wait_sigma and args.wait_seconds is None:
        raise InputError("--wait-sigma needs --wait-seconds, the mean run time it spreads")
    if pattern.total() == 0:
        raise InputError("this pattern sends no task; raise --rate or --duration")
    return LoadSpec(pattern, tuple(plans),
                    {p: w for p, w in priorities.items() if w > 0} if priorities else None,
                    args.count, args.seed, args.wait_sigma)


def load(args):
    """The producer app of ``args`` (``--broker`` applied), with the runtime installed.

    Raises:
        InputError: a bad ``--broker`` or ``--app``; celery_autoscale.ConfigError: bad settings.
    """
    from celery_autoscale import AppLoadError, load_app
    from celery_autoscale.cli import check_redis_url

    for option in ("broker", "app", "task", "queues", "priorities", "mix"):
        value = getattr(args, option, None)
        if value is not None and not value.strip():
            raise InputError(f"--{option}: empty; leave the option out for its default")
    if args.broker:
        check_redis_url(args.broker, "--broker")
        os.environ["CELERY_BROKER_URL"] = args.broker  # Celery prefers it to the app's configuration
    path = args.app or os.environ.get("CELERY_AUTOSCALE_APP", "").strip()
    if not path:
        raise InputError(f"--app: no app given: name the producer's app with --app MODULE:ATTR or "
                         f"CELERY_AUTOSCALE_APP (our sample app: --app {DEMO_APP})")
    try:
        return load_app(path)
    except AppLoadError as exc:
        raise InputError(f"--app: {exc}") from None


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from celery_autoscale import ConfigError, connect, redact, settings_of

    try:
        app = load(args)
        settings = settings_of(app)
        spec = build_spec(args, app)
    except (ConfigError, InputError, PatternError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        connect(settings).ping()
    except Exception as exc:
        print(f"error: cannot reach the broker at {redact(settings.broker_url)} ({type(exc).__name__})",
              file=sys.stderr)
        return EXIT_BROKER
    deployments = None
    if args.release:
        from .kube import ClusterError, WorkerDeployments

        try:
            deployments = WorkerDeployments(args.release, args.namespace, args.kubeconfig)
            deployments.check(spec.queues)
        except ClusterError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from . import report
    from .kube import replicas_text
    from .run import run

    console = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[replicas]}"), console=console, transient=args.json) as bar:
        bars = {}
        shown = [""]

        def progress(phase: str, done: int, total: int) -> None:
            if phase not in bars:
                bars[phase] = bar.add_task(f"{phase}ing" if phase == "send" else "waiting", total=total,
                                           replicas=shown[0])
            bar.update(bars[phase], completed=done)

        def live(sample: dict) -> None:  # the replicas beside the bar that is moving
            if "replicas" in sample:
                shown[0] = replicas_text(sample["replicas"])
                for task in bars.values():
                    bar.update(task, replicas=shown[0])

        outcome = run(app, spec, wait=args.wait, timeout=args.timeout, progress=progress,
                      replicas=deployments.read if deployments else None, on_sample=live)
    summary = report.summarize(outcome)
    summary["pattern"] = spec.pattern.name
    if args.plot:
        report.plot(outcome, str(args.plot))
    if args.timeline:
        args.timeline.write_text(json.dumps({"started_at": outcome.started_at, "pattern": spec.pattern.name,
                                             "samples": outcome.timeline}))
    if args.json:
        print(json.dumps(summary))
    else:
        Console(width=max(Console().width, 120)).print(report.table(summary, f"{spec.pattern.name}: {len(outcome.sent)} tasks"))
    if outcome.error:
        print(f"error: {outcome.error}", file=sys.stderr)
    return EXIT_FAILED if outcome.error or summary["lost"] or summary["unfinished"] or (
        args.wait and summary["failed"]) else 0
