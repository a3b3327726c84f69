"""Render the chart with the real Helm SDK (helm-python-sdk binds Helm's Go SDK) and load the objects.

``render_chart(values)`` is the one way the tests render: no helm binary, no cluster.
"""

from __future__ import annotations

from pathlib import Path

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "celery-autoscale"
VALUES_FILES = sorted((ROOT / "values").glob("*.yaml"))
#: KEDA's CRDs at the version the e2e runs (tools/e2e-cluster/versions.env), kept in the repository.
KEDA_CRDS = ROOT / "tests" / "schemas" / "keda-v2.20.2"
#: The Prometheus Operator's CRDs (PodMonitor, ServiceMonitor, PrometheusRule), kept in the repository.
MONITORING_CRDS = ROOT / "tests" / "schemas" / "prometheus-operator-v0.88.0"
#: The Kubernetes version objects are validated against (the e2e control plane's minor).
KUBE_VERSION = "1.35.0"


def load_values(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


#: What these tests install: the sample app, as every file in values/ names it (the chart has no default).
SAMPLE_APP = {"celery": {"app": "tasks.app:app"}}


def with_app(values: dict | None) -> dict:
    """``values`` naming the sample app unless they name an app (``celery.app``, even empty) themselves."""
    values = dict(values or {})
    if "app" not in (values.get("celery") or {}):
        values["celery"] = {**SAMPLE_APP["celery"], **(values.get("celery") or {})}
    return values


def render_manifests(values: dict | None = None, name: str = "rel", namespace: str = "apps") -> dict[str, str]:
    """Template path -> rendered text, as ``helm template`` would produce (schema checked), for
    ``values`` with the sample app (:func:`with_app`).

    Raises:
        helm_python.HelmError: the values break the schema or a template fails.
    """
    values = with_app(values)
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(values or {})
        return chart.render(values or {}, name=name, namespace=namespace, is_install=True)


def render_chart(values: dict | None = None, name: str = "rel", namespace: str = "apps") -> list[dict]:
    """Every object the chart renders for ``values`` (NOTES.txt excluded), in template order."""
    objects = []
    for path, text in sorted(render_manifests(values, name, namespace).items()):
        if path.endswith(".txt"):
            continue
        objects += [doc for doc in yaml.safe_load_all(text) if doc]
    return objects


def notes(values: dict | None = None) -> str:
    manifests = render_manifests(values)
    return next(text for path, text in manifests.items() if path.endswith("NOTES.txt"))


def by_kind(objects: list[dict], kind: str) -> dict[str, dict]:
    """``{metadata.name: object}`` of one kind."""
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def queue_of(obj: dict) -> str:
    return obj["metadata"]["labels"]["celery-autoscale/queue"]
