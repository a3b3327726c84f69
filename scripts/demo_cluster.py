"""``make demo-cluster``: the demo's burst and ramp on a real control plane with the real KEDA.

Brings up the `make e2e` environment (``e2e_cluster.environment``: the control plane and KEDA built
from their Go modules by tools/e2e-cluster/build.sh, cached; the chart installed with values/ci.yaml
through the Helm SDK; its pods run by the real node's kubelet), then runs ``python -m loadgen`` with the demo's burst and ramp
(:data:`loadgen.demo.RUNS`) and ``--release``, so the worker Deployments' replicas show live
beside the progress bar and in the plots. Writes ``<workdir>/{burst,ramp}.png`` and
``.json`` timelines, and tears everything down. Exits 1 if a task was lost.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from e2e_cluster import NAMESPACE, RELEASE, environment, wait_for
from loadgen.demo import RUNS

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.demo_cluster", description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", type=Path, default=ROOT / ".demo-cluster", help="plots and timelines (default .demo-cluster)")
    args = p.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    failed = 0
    with environment() as release:
        wait_for(lambda: all(release.replicas(q) == 0 for q in ("cpu", "io", "mixed")), 180, "workers at rest")
        for name, load in RUNS.items():
            cmd = [sys.executable, "-m", "loadgen", *load, "--wait", "--timeout", "300",
                   "--release", RELEASE, "--namespace", NAMESPACE, "--kubeconfig", str(release.cluster.kubeconfig),
                   "--plot", str(args.workdir / f"{name}.png"), "--timeline", str(args.workdir / f"{name}.json")]
            print(f"\n{name}: python -m loadgen {' '.join(load)} --wait --release {RELEASE} ...", flush=True)
            failed |= subprocess.run(cmd, env=release.process_env()).returncode != 0
            print(f"timeline: {args.workdir / (name + '.png')}", flush=True)
    print("every process stopped; the cluster is gone.")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
