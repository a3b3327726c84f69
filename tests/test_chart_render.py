"""Every values file renders, validates against the real Kubernetes and KEDA schemas, and lints clean."""

import functools

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml
from chart import CHART, KEDA_CRDS, KUBE_VERSION, MONITORING_CRDS, VALUES_FILES, load_values, notes, render_chart, with_app

SENTINEL = {"redis": {"enabled": False, "external": {"sentinel": {
    "enabled": True, "addresses": ["sentinel-0.sentinel:26379", "sentinel-1.sentinel:26379"], "masterName": "mymaster"}}}}
#: A queue sized to a queue-wait target, one with a cron floor too (tests/test_wait_target.py).
WAIT_TARGET = {"queues": {"cpu": {"autoscaling": {"targetQueueWaitSeconds": 30}},
                          "io": {"autoscaling": {"targetQueueWaitSeconds": 2.5, "cron": [
                              {"timezone": "UTC", "start": "0 8 * * 1-5", "end": "0 18 * * 1-5", "desiredReplicas": 2}]}}}}
CASES = ([pytest.param({}, id="defaults")] + [pytest.param(load_values(p), id=p.name) for p in VALUES_FILES]
         + [pytest.param(SENTINEL, id="external-sentinel"), pytest.param(WAIT_TARGET, id="wait-target"),
            pytest.param({"queues": {"io": {"autoscaling": {"cpuUtilization": 70, "memoryUtilization": 80}}}},
                         id="cpu-and-memory-triggers")])


@functools.cache
def crd_schemas() -> dict[tuple[str, str], dict]:
    """``{(apiVersion, kind): openAPIV3Schema}`` from KEDA v2.20.2's and the Prometheus Operator
    v0.88.0's CRDs kept in tests/schemas/."""
    schemas = {}
    for path in sorted([*KEDA_CRDS.glob("*.yaml"), *MONITORING_CRDS.glob("*.yaml")]):
        crd = yaml.safe_load(path.read_text())
        for version in crd["spec"]["versions"]:
            api = f"{crd['spec']['group']}/{version['name']}"
            schemas[(api, crd["spec"]["names"]["kind"])] = version["schema"]["openAPIV3Schema"]
    assert {api.split("/")[0] for api, _ in schemas} == {"keda.sh", "monitoring.coreos.com"}, \
        f"CRDs missing from {KEDA_CRDS} or {MONITORING_CRDS}"
    return schemas


def validate_object(obj: dict) -> None:
    if obj["apiVersion"].startswith(("keda.sh/", "monitoring.coreos.com/")):
        jsonschema.Draft4Validator(crd_schemas()[(obj["apiVersion"], obj["kind"])]).validate(obj)
    else:
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


@pytest.mark.parametrize("values", CASES)
def test_renders_and_every_object_validates(values):
    objects = render_chart(values)
    assert {"Deployment", "ScaledObject", "ConfigMap"} <= {o["kind"] for o in objects}
    for obj in objects:
        validate_object(obj)


@pytest.mark.parametrize("values", CASES)
def test_helm_lint_strict_is_clean(values):
    report = helm.lint(str(CHART), with_app(values), strict=True, kube_version=f"v{KUBE_VERSION}")
    assert report["errors"] == [] and report["messages"] == [], report


def test_keda_schema_validation_catches_a_broken_scaledobject():
    """The KEDA check is real: a ScaledObject without scaleTargetRef is rejected."""
    scaled = next(o for o in render_chart({}) if o["kind"] == "ScaledObject")
    del scaled["spec"]["scaleTargetRef"]
    with pytest.raises(jsonschema.ValidationError, match="scaleTargetRef"):
        validate_object(scaled)


def test_kubernetes_validation_catches_an_unknown_field():
    deployment = next(o for o in render_chart({}) if o["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["autoscale"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_object(deployment)


@pytest.mark.parametrize("values", CASES)
def test_notes_tell_how_to_watch_scaling_and_never_print_a_secret(values):
    text = notes(values)
    assert "kubectl get scaledobject,hpa,deployment" in text and "helm test" in text
    secrets = [o for o in render_chart(values) if o["kind"] == "Secret"]
    for secret in secrets:
        for encoded in secret.get("data", {}).values():
            import base64

            assert base64.b64decode(encoded).decode() not in text


def test_chart_lock_matches_the_declared_dependencies_and_needs_no_download(tmp_path):
    """The chart declares no dependency (Redis is templated in the chart, so it renders offline);
    Helm's own `dependency build` checks Chart.lock's digest against Chart.yaml."""
    import shutil

    copy = tmp_path / "chart"
    shutil.copytree(CHART, copy)
    helm.dependency_build(str(copy))
    (copy / "Chart.yaml").write_text((copy / "Chart.yaml").read_text()
                                     + "dependencies:\n  - {name: redis, version: 1.0.0, repository: \"oci://registry.invalid/charts\"}\n")
    with pytest.raises(helm.HelmError, match="out of sync"):
        helm.dependency_build(str(copy))


def test_the_chart_tests_need_nothing_beside_the_clone(tmp_path):
    """A user's clone has nothing beside it: the schemas the tests need are in the repository."""
    import shutil
    import subprocess
    import sys

    from chart import ROOT

    clone = tmp_path / "lonely" / "clone"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for name in filter(None, tracked.split("\0")):
        if (ROOT / name).is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, clone / name)
    assert [p.name for p in clone.parent.iterdir()] == ["clone"]
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_chart_render.py",
                           "-k", "every_object_validates or broken_scaledobject"], cwd=clone, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:]
    assert " passed" in done.stdout and "failed" not in done.stdout


def test_a_render_without_an_app_says_so_in_one_line():
    """The chart has no default app: an image would otherwise run one that is not its own."""
    with pytest.raises(helm.HelmError) as raised:
        render_chart({"celery": {"app": ""}})
    message = str(raised.value)
    assert "celery.app is required: your Celery app as module:attribute" in message
    assert message.strip().count("\n") <= 2, message  # Helm's location line, then ours
