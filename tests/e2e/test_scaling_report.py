"""`make report` at CI size: one pattern, two configurations, on the session's real control plane.

Asserts only what must hold whatever the machine: under this chart no task lost, stranded or run
twice; under list length only, no task lost but those it stranded at zero replicas, none run
twice; and a report with a table and a plot. Timings are figures (docs/scaling-report.md),
never assertions here.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench import scaling_report
from e2e_cluster import KUBECONFIG, NAMESPACE, RELEASE, wait_for

pytestmark = pytest.mark.e2e


def test_the_burst_under_this_chart_and_under_list_length_only_loses_nothing_and_is_reported(release, tmp_path):
    result = scaling_report.measure(release, ["burst"], ["chart", "listlength-5"])
    scaling_report.write(result, tmp_path / "scaling.json", tmp_path / "report.md")

    burst = result["figures"]["burst"]
    assert (burst["chart"]["lost"], burst["chart"]["stranded"], burst["chart"]["run_twice"]) == (0, 0, 0)
    # List length only may leave the priority lists' tasks at zero replicas (the report's point);
    # nothing else may go: every task not run is one it stranded, and none ran twice.
    other = burst["listlength-5"]
    assert (other["lost"], other["run_twice"]) == (other["stranded"], 0)
    assert burst["chart"]["sent"] == other["sent"] == 32
    # 32 tasks need the 4 replicas of maxReplicaCount: the chart's ScaledObject asked for them.
    assert max(s["desired"] for s in result["runs"][0]["samples"]) == 4
    report = (tmp_path / "report.md").read_text()
    assert "## burst" in report and "| `chart` | `listlength-5` |" in report
    assert (tmp_path / "scaling" / "burst.png").stat().st_size > 10_000
    saved = json.loads((tmp_path / "scaling.json").read_text())
    assert saved["headline"]["burst"]["p95_wait_ratio"] is not None
    assert release.replicas("io") == 0 and release.get("scaledobject", scaling_report.worker("io"))  # restored


def test_loadgen_shows_the_worker_deployments_replicas_from_the_kubernetes_api(release, tmp_path):
    """What users do with `kubectl get hpa -w` in a second terminal, in `python -m loadgen` itself."""
    wait_for(lambda: release.replicas("io") == 0, 180, "io at rest")
    done = subprocess.run(
        [sys.executable, "-m", "loadgen", "burst", "--count", "16", "--queues", "io", "--size-bytes", "0",
         "--wait-seconds", "6", "--wait", "--json", "--release", RELEASE, "--namespace", NAMESPACE,
         "--kubeconfig", str(KUBECONFIG), "--timeline", str(tmp_path / "t.json"), "--plot", str(tmp_path / "t.png")],
        env=release.process_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.splitlines()[-1])
    assert summary["lost"] == 0
    assert summary["replicas"]["io"]["peak_desired"] == 4  # 16 tasks over listLength 4
    assert summary["replicas"]["io"]["peak_ready"] >= 1
    samples = json.loads((tmp_path / "t.json").read_text())["samples"]
    seen = [x["replicas"]["io"] for x in samples if x.get("replicas")]
    assert seen[0]["desired"] == 0 and max(r["desired"] for r in seen) == 4
    assert (tmp_path / "t.png").stat().st_size > 10_000
