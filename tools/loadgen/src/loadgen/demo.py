"""``make demo``: the main job on the embedded local stack, no cluster needed.

Starts a real Redis server, one worker per queue (``cpu``: prefork with Celery's
``--autoscale``; ``io``: threads; ``mixed``: prefork) and Flower on ``localhost:5555``, sends a
burst and then a ramp with the load generator, prints both summaries, writes their timeline
plots, and stops everything it started. Exits 1 if any task was lost.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rich.console import Console

from .stack import DEFAULT_WORKERS, LocalStack

#: The two runs, as ``python -m loadgen`` arguments; one task profile serves all queues.
PROFILE = ["--work-units", "60000", "--size-bytes", "262144", "--wait-seconds", "0.2"]
RUNS = {
    "burst": ["burst", "--count", "300", "--priorities", "0=2,3=1,9=1", *PROFILE],
    "ramp": ["ramp", "--start-rate", "5", "--rate", "25", "--duration", "20", *PROFILE],
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadgen.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", type=Path, default=Path(".demo"), help="logs, plots, data (default .demo)")
    p.add_argument("--flower-port", type=int, default=5555, help="Flower's port (default 5555)")
    args = p.parse_args(argv)
    console = Console(width=max(Console().width, 120))
    lost = 0
    with LocalStack(args.workdir.resolve()) as stack:
        stack.start_redis()
        console.print(f"redis: {stack.broker_url}")
        for spec in DEFAULT_WORKERS:
            stack.start_worker(spec)
            console.print(f"worker {spec.queue}: pool {spec.pool}, metrics on :{stack.metrics_ports['worker-' + spec.queue]}")
        console.print(f"flower: {stack.start_flower(args.flower_port)}")

        os.environ.update(CELERY_BROKER_URL=stack.broker_url, CELERY_RESULT_BACKEND=stack.broker_url,
                          CELERY_AUTOSCALE_APP=stack.process_env()["CELERY_AUTOSCALE_APP"])
        from . import report
        from .cli import build_spec, load, parser
        from .run import run

        for name, cli_args in RUNS.items():
            parsed = parser().parse_args(cli_args)
            app = load(parsed)
            spec = build_spec(parsed, app)
            console.print(f"\n[bold]{name}[/bold]: python -m loadgen {' '.join(cli_args)} --wait")
            outcome = run(app, spec, wait=True, timeout=180)
            summary = report.summarize(outcome)
            console.print(report.table(summary, f"{name}: {summary['submitted']} tasks"))
            plot = args.workdir / f"{name}.png"
            report.plot(outcome, str(plot))
            console.print(f"timeline: {plot}")
            lost += summary["lost"] + summary["unfinished"]
    console.print(f"\n{'[red]' if lost else '[green]'}{lost} tasks lost or unfinished[/]; every process stopped.")
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
