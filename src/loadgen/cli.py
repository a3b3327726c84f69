"""``python -m loadgen PATTERN [options]``: send a shaped load of Celery tasks.

The broker comes from ``CELERY_BROKER_URL`` (see :mod:`tasks.config`) unless ``--broker`` is
given. Every input is checked, and the broker pinged, before anything is sent: an error is
one line on stderr and exit status 2 (bad input) or 3 (broker unreachable). With ``--wait``
the exit status is 1 when any task was lost.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .patterns import PATTERNS, PatternError, build

EXIT_BAD_INPUT, EXIT_BROKER, EXIT_LOST = 2, 3, 1


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
        if not value >= 0:
            raise InputError(f"--{what}: weight of {key!r} must not be negative")
        weights[parsed_key] = value
    if not weights or not any(weights.values()):
        raise InputError(f"--{what}: give at least one entry with a positive weight")
    return weights


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m loadgen",
        description="Send a shaped, open-loop load of celery-autoscale tasks and summarize it.",
        epilog="Exit status: 0 ok, 1 tasks lost (with --wait), 2 bad input, 3 broker unreachable.",
    )
    p.add_argument("pattern", help=f"load shape: {', '.join(PATTERNS)}")
    shape = p.add_argument_group("shape")
    shape.add_argument("--rate", type=float, metavar="TASKS/S", help="tasks/s: steady rate, ramp end rate, oscillate mean")
    shape.add_argument("--duration", type=float, metavar="SECONDS", default=60.0, help="seconds of sending (default 60)")
    shape.add_argument("--count", type=int, metavar="N", help="tasks to send: burst size, or a cap for other patterns")
    shape.add_argument("--start-rate", type=float, metavar="TASKS/S", default=0.0, help="ramp start rate, tasks/s (default 0)")
    shape.add_argument("--amplitude", type=float, metavar="TASKS/S", help="oscillate amplitude, tasks/s (default rate/2)")
    shape.add_argument("--period", type=float, metavar="SECONDS", default=60.0, help="oscillate period, seconds (default 60)")
    shape.add_argument("--wave", default="sine", metavar="SHAPE", help="oscillate wave: sine or square (default sine)")
    shape.add_argument("--csv", type=Path, metavar="FILE", help="replay: CSV of seconds,tasks_per_second segments")
    mix = p.add_argument_group("mix")
    mix.add_argument("--queues", default="cpu,io,mixed", metavar="Q[=W],...",
                     help="queues and weights, e.g. cpu=2,io=1 (default cpu,io,mixed equally)")
    mix.add_argument("--priorities", metavar="P[=W],...",
                     help="Celery priorities 0-9 and weights, e.g. 0=3,9=1 (0 is served first on Redis)")
    mix.add_argument("--seed", type=int, metavar="N", default=0, help="random seed of the queue and priority draws")
    prof = p.add_argument_group("task profile (omitted keys keep the task's default)")
    prof.add_argument("--work-units", type=int, metavar="N", help="SHA-256 rounds per task (cpu, mixed)")
    prof.add_argument("--size-bytes", type=int, metavar="BYTES", help="bytes written, fsynced and read (io, mixed)")
    prof.add_argument("--wait-seconds", type=float, metavar="SECONDS", help="seconds of simulated network wait (io, mixed)")
    prof.add_argument("--fail-rate", type=float, metavar="P", help="probability 0-1 of a transient fault per attempt")
    out = p.add_argument_group("outcome")
    out.add_argument("--wait", action="store_true", help="wait for every task to finish")
    out.add_argument("--timeout", type=float, metavar="SECONDS", default=300.0, help="seconds --wait waits (default 300)")
    out.add_argument("--json", action="store_true", help="print the summary as one JSON line, last")
    out.add_argument("--plot", type=Path, metavar="FILE.png", help="write the timeline to this PNG file")
    out.add_argument("--broker", metavar="URL", help="broker URL (default: CELERY_BROKER_URL)")
    return p


def build_spec(args: argparse.Namespace):
    """A :class:`~loadgen.run.LoadSpec` from parsed arguments.

    Raises:
        InputError, PatternError: an invalid value, in one line.
    """
    from tasks.work import QUEUE_TASKS

    from .run import LoadSpec

    queues = parse_weights(args.queues, "queues")
    unknown = sorted(set(queues) - set(QUEUE_TASKS))
    if unknown:
        raise InputError(f"--queues: unknown queue {unknown[0]!r}; known: {', '.join(QUEUE_TASKS)}")
    priorities = parse_weights(args.priorities, "priorities", int) if args.priorities else None
    if priorities and not all(0 <= p <= 9 for p in priorities):
        raise InputError("--priorities: priorities are 0 to 9")
    if args.count is not None and args.count <= 0:
        raise InputError(f"--count must be positive, got {args.count}")
    if args.timeout <= 0:
        raise InputError(f"--timeout must be positive seconds, got {args.timeout}")
    profile = {"work_units": args.work_units, "size_bytes": args.size_bytes,
               "wait_seconds": args.wait_seconds, "fail_rate": args.fail_rate}
    for key, value in profile.items():
        if value is not None and value < 0:
            raise InputError(f"--{key.replace('_', '-')} must not be negative, got {value}")
    if args.fail_rate is not None and args.fail_rate > 1:
        raise InputError(f"--fail-rate is a probability from 0 to 1, got {args.fail_rate}")
    pattern = build(args.pattern, rate=args.rate, duration=args.duration, count=args.count,
                    start_rate=args.start_rate, amplitude=args.amplitude, period=args.period,
                    wave=args.wave, csv_path=args.csv)
    if pattern.total() == 0:
        raise InputError("this pattern sends no task; raise --rate or --duration")
    return LoadSpec(pattern, {q: w for q, w in queues.items() if w > 0},
                    {k: v for k, v in profile.items() if v is not None},
                    {p: w for p, w in priorities.items() if w > 0} if priorities else None,
                    args.count, args.seed)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.broker:
        os.environ["CELERY_BROKER_URL"] = args.broker
    from tasks import config

    try:
        settings = config.load()
        spec = build_spec(args)
    except (config.ConfigError, InputError, PatternError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT

    from tasks import backlog

    try:
        backlog.connect(settings).ping()
    except Exception as exc:
        print(f"error: cannot reach the broker at {config.redact(settings.broker_url)} "
              f"({type(exc).__name__})", file=sys.stderr)
        return EXIT_BROKER

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from tasks.app import app

    from . import report
    from .run import run

    console = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=args.json) as bar:
        bars = {}

        def progress(phase: str, done: int, total: int) -> None:
            if phase not in bars:
                bars[phase] = bar.add_task(f"{phase}ing" if phase == "send" else "waiting", total=total)
            bar.update(bars[phase], completed=done)

        outcome = run(app, settings, spec, wait=args.wait, timeout=args.timeout, progress=progress)
    summary = report.summarize(outcome)
    summary["pattern"] = spec.pattern.name
    if args.plot:
        report.plot(outcome, str(args.plot))
    if args.json:
        print(json.dumps(summary))
    else:
        Console(width=max(Console().width, 120)).print(report.table(summary, f"{spec.pattern.name}: {len(outcome.sent)} tasks"))
    return EXIT_LOST if summary["lost"] else 0
