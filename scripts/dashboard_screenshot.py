"""Render the Grafana dashboard's panels from real data into a PNG (the chart README's picture).

    python scripts/dashboard_screenshot.py [docs/dashboard.png] [--seconds 150]

Starts the local stack (Redis, the sample app's cpu/io/mixed workers, the reconciler with its
metrics), Debian's Prometheus with the chart's rules (default values, 30 s rate window), runs
the canary, then an oscillating load with a 5 % fault rate for ``--seconds``; then plots every
panel's queries of charts/celery-autoscale/files/dashboard.json over the run (Prometheus
``query_range``, 5 s steps), in the dashboard's order, with matplotlib.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import monitoring  # noqa: E402

NAMESPACE = monitoring.NAMESPACE


def query_range(url: str, expr: str, start: float, end: float) -> list[dict]:
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": 5})
    with urllib.request.urlopen(f"{url}/api/v1/query_range?{params}", timeout=30) as response:
        return json.load(response)["data"]["result"]


def plot(url: str, start: float, end: float, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    board = json.loads(monitoring.DASHBOARD.read_text())
    panels = board["panels"]
    rows = (len(panels) + 1) // 2
    fig, axes = plt.subplots(rows, 2, figsize=(14, 3.2 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        for target in panel["targets"]:
            expr = target["expr"].replace("$namespace", NAMESPACE).replace("$queue", ".*")
            for series in query_range(url, expr, start, end):
                legend = re.sub(r"\{\{(\w+)\}\}", lambda m: series["metric"].get(m.group(1), ""), target["legendFormat"])
                xs = [float(t) - start for t, _ in series["values"]]
                ys = [float(v) for _, v in series["values"]]
                ax.plot(xs, ys, label=legend, linewidth=1.2)
        ax.set_title(panel["title"], fontsize=9, loc="left")
        ax.set_xlabel("seconds", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.set_ylim(bottom=0)
        if ax.lines:
            ax.legend(fontsize=6, loc="upper right", ncol=2)
        else:
            ax.text(0.5, 0.5, "no series here (needs KEDA and kube-state-metrics)", ha="center", fontsize=8,
                    transform=ax.transAxes)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"{board['title']} — the dashboard's queries on a real Prometheus, local stack", fontsize=11)
    fig.tight_layout()
    fig.savefig(out, dpi=80)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", nargs="?", default=str(ROOT / "docs" / "dashboard.png"))
    p.add_argument("--seconds", type=float, default=150, help="seconds of load (default 150)")
    args = p.parse_args(argv)
    from loadgen.stack import LocalStack, WorkerSpec, free_port

    with tempfile.TemporaryDirectory() as workdir, LocalStack(Path(workdir), env={"CELERY_MAX_RETRIES": "1"}) as stack:
        stack.start_redis()
        for queue, pool in (("cpu", "prefork"), ("io", "threads"), ("mixed", "prefork")):
            stack.start_worker(WorkerSpec(queue, pool, concurrency=2))
        port = free_port()
        stack.start_reconciler("--interval", "1", "--metrics-port", str(port), "--queues", "cpu,io,mixed")
        url = stack.start_prometheus(monitoring.rule_spec({"rateWindow": "30s"}), [*stack.metrics_ports.values(), port],
                                     labels={"namespace": NAMESPACE})
        env = stack.process_env()
        start = time.time()
        subprocess.run([sys.executable, "-m", "celery_autoscale.roundtrip", "--queues", "cpu,io,mixed", "--record",
                        "--app", "tasks.app:app"], env=env, check=True, capture_output=True)
        subprocess.run([sys.executable, "-m", "loadgen", "oscillate", "--rate", "8", "--amplitude", "8", "--period", "60",
                        "--duration", str(args.seconds), "--fail-rate", "0.05", "--work-units", "20000",
                        "--wait-seconds", "0.2"], env=env, capture_output=True)
        time.sleep(20)
        plot(url, start, time.time(), Path(args.out))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
