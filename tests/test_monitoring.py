"""Monitoring: the chart's rules pass promtool, and a real Prometheus scraping real workers and the
reconciler under a real load gets series for every recording rule and dashboard panel, while the
"tasks waiting with no worker" and "dead-letter growing" alerts fire when caused and resolve.

Prometheus and promtool are Debian's (`make test` installs the `prometheus` package).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request

import pytest
import yaml
from chart import CHART, ROOT, VALUES_FILES, load_values, render_chart
from helpers import eventually, run_module

from loadgen.stack import LocalStack, WorkerSpec, free_port

RULES = CHART / "files" / "prometheus-rules.yaml"
DASHBOARD = CHART / "files" / "dashboard.json"
NAMESPACE = "celery-autoscale"
#: Short windows so the alerts can be caused and resolved within a test; everything else default.
FAST = {"metrics": {"prometheusRule": {"enabled": True, "rateWindow": "15s", "alerts": {
    "queueWithoutWorker": {"for": "0s"}, "deadLetterGrowing": {"window": "20s", "for": "0s"}}}},
    "canary": {"enabled": True}}

sys.path.insert(0, str(ROOT / "scripts"))
import monitoring  # noqa: E402  (scripts/monitoring.py: the generator of both files)


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([shutil.which("promtool") or "promtool", *args], capture_output=True, text=True, timeout=120)


def rule_spec(values: dict) -> dict:
    [rule] = [o for o in render_chart(values, name=NAMESPACE, namespace=NAMESPACE) if o["kind"] == "PrometheusRule"]
    return rule["spec"]


def test_the_rules_file_and_dashboard_are_the_generators_current_output():
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "monitoring.py"), "--check"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("values", [FAST] + [load_values(p) for p in VALUES_FILES],
                         ids=["fast"] + [p.name for p in VALUES_FILES])
def test_every_rendering_of_the_rules_passes_promtool_check(tmp_path, values):
    values = {**values, "metrics": {**values.get("metrics", {}), "prometheusRule": {
        **values.get("metrics", {}).get("prometheusRule", {}), "enabled": True}}}
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rule_spec(values)))
    done = promtool("check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_has_a_promtool_unit_test_that_passes():
    done = promtool("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    tests = ROOT / "tests" / "prometheus" / "rules_test.yaml"
    done = promtool("test", "rules", str(tests))
    assert done.returncode == 0, done.stdout + done.stderr
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r}
    tested = {t["alertname"] for case in yaml.safe_load(tests.read_text())["tests"]
              for t in case.get("alert_rule_test", []) if t["exp_alerts"]}
    assert alerts == tested and len(alerts) == 9


def test_promtool_unit_tests_can_fail(tmp_path):
    """The unit tests are real: a threshold moved past the tested backlog fails them."""
    broken = tmp_path / "rules.yaml"
    broken.write_text(RULES.read_text().replace("> 4\n", "> 400\n"))
    tests = yaml.safe_load((ROOT / "tests" / "prometheus" / "rules_test.yaml").read_text())
    tests["rule_files"] = [str(broken)]
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(tests))
    done = promtool("test", "rules", str(tmp_path / "t.yaml"))
    assert done.returncode != 0 and "CeleryAutoscaleCapacityExhausted" in done.stdout + done.stderr


def test_the_dashboard_reads_only_the_recording_rules_and_its_own_variables():
    board = json.loads(DASHBOARD.read_text())
    records = {r["record"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "record" in r}
    assert {v["name"] for v in board["templating"]["list"]} == {"datasource", "namespace", "queue"}
    for panel in board["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
            if panel["title"] not in monitoring.EXTERNAL:
                assert any(r in target["expr"] for r in records) or "celery_autoscale_canary" in target["expr"], \
                    target["expr"]


def test_the_dashboard_configmap_carries_the_file_and_the_sidecar_label():
    objects = render_chart({"metrics": {"dashboard": {"enabled": True}}})
    [cm] = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-dashboard")]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["celery-autoscale.json"]) == json.loads(DASHBOARD.read_text())
    assert not [o for o in render_chart({}) if o["metadata"]["name"].endswith("-dashboard")]


# --- a real Prometheus ------------------------------------------------------------------------


class Prometheus:
    """A running Prometheus on loopback and its HTTP API."""

    def __init__(self, url: str):
        self.url = url

    def get(self, path: str, **params) -> dict:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        return self.get("/api/v1/query", query=expr)["result"]

    def alerts(self, name: str) -> dict[str, str]:
        """``{queue label or "": state}`` of the active alerts named ``name``."""
        return {a["labels"].get("queue", ""): a["state"] for a in self.get("/api/v1/alerts")["alerts"]
                if a["labels"]["alertname"] == name}


def panel_queries() -> list[tuple[str, str]]:
    """``(panel title, PromQL)`` of every dashboard query, its variables set to this test's."""
    board = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"].replace("$namespace", NAMESPACE).replace("$queue", ".*"))
            for p in board["panels"] for t in p["targets"]]


def test_a_real_prometheus_gets_every_series_and_fires_and_resolves_alerts(tmp_path):
    with LocalStack(tmp_path, env={"CELERY_MAX_RETRIES": "0"}) as stack:
        stack.start_redis()
        for queue, pool in (("cpu", "prefork"), ("io", "threads"), ("mixed", "prefork")):
            stack.start_worker(WorkerSpec(queue, pool, concurrency=2))
        reconciler_port = free_port()
        stack.start_reconciler("--interval", "1", "--metrics-port", str(reconciler_port), "--queues", "cpu,io,mixed")
        canary = run_module(stack, "celery_autoscale.roundtrip", "--queues", "cpu,io,mixed", "--timeout", "60",
                            "--record", "--app", "tasks.app:app")
        assert canary.returncode == 0, canary.stderr
        url = stack.start_prometheus(rule_spec(FAST), [*stack.metrics_ports.values(), reconciler_port],
                                     labels={"namespace": NAMESPACE})
        prom = Prometheus(url)
        # A real load with failures: one in five attempts fails and, with no retries, is dead-lettered.
        load = run_module(stack, "loadgen", "steady", "--rate", "20", "--duration", "20", "--fail-rate", "0.2",
                          "--work-units", "2000", "--wait-seconds", "0.05", "--wait", "--timeout", "120", "--json")
        summary = json.loads(load.stdout.strip().splitlines()[-1])
        assert summary["submitted"] == 400 and summary["lost"] == 0, summary
        assert summary["failed"] > 0, summary
        eventually(lambda: prom.alerts("CeleryAutoscaleDeadLetterGrowing").get("") == "firing", 60,
                   "the dead-letter alert firing")

        records = [r["record"] for g in rule_spec(FAST)["groups"] for r in g["rules"] if "record" in r]
        empty = [r for r in records if not prom.query(r)]
        assert not empty, f"recording rules without series: {empty}"
        for title, expr in panel_queries():
            result = prom.query(expr)  # a query Prometheus refuses fails here
            assert result or title in monitoring.EXTERNAL, f"panel {title!r}: no series for {expr}"

        # No new failures for the 20 s window: the dead-letter alert resolves.
        eventually(lambda: "" not in prom.alerts("CeleryAutoscaleDeadLetterGrowing"), 90,
                   "the dead-letter alert resolved")

        # Tasks wait in io and its only worker is gone: the alert fires for io alone, then
        # resolves once a worker is back and drains them.
        stack.stop("worker-io")
        sent = run_module(stack, "loadgen", "burst", "--count", "3", "--queues", "io", "--wait-seconds", "0.05")
        assert sent.returncode == 0, sent.stderr
        eventually(lambda: prom.alerts("CeleryAutoscaleQueueWithoutWorker") == {"io": "firing"}, 90,
                   "the no-worker alert firing for io")
        # The canary cannot get an answer from io within its timeout: a clear failure, recorded.
        canary = run_module(stack, "celery_autoscale.roundtrip", "--queues", "cpu,io", "--timeout", "3",
                            "--record", "--app", "tasks.app:app")
        assert canary.returncode == 1 and canary.stderr.strip() == "FAILED queue io: no answer within 3s", canary
        eventually(lambda: prom.alerts("CeleryAutoscaleCanaryFailing") == {"io": "firing"}, 60,
                   "the canary alert firing for io")
        stack.start_worker(WorkerSpec("io", "threads", concurrency=2))
        eventually(lambda: not prom.alerts("CeleryAutoscaleQueueWithoutWorker"), 90, "the no-worker alert resolved")
        canary = run_module(stack, "celery_autoscale.roundtrip", "--queues", "cpu,io", "--timeout", "60",
                            "--record", "--app", "tasks.app:app")
        assert canary.returncode == 0, canary.stderr
        eventually(lambda: not prom.alerts("CeleryAutoscaleCanaryFailing"), 60, "the canary alert resolved")
        [round_trip] = prom.query('celery_autoscale_canary_round_trip_seconds{queue="io"}')
        assert 0 < float(round_trip["value"][1]) < 60
