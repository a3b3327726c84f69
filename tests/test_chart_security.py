"""A maintained scanner (checkov) finds nothing outside the skip list; hadolint passes the Dockerfile."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from chart import ROOT, VALUES_FILES, load_values, render_manifests

SKIPS = yaml.safe_load((Path(__file__).parent / "checkov_skips.yaml").read_text())
CASES = [pytest.param({}, id="defaults")] + [pytest.param(load_values(p), id=p.name) for p in VALUES_FILES]


def checkov() -> str:
    """checkov lives in a virtualenv of its own (make test creates .venv-checkov): its pins clash with pytest's."""
    path = os.environ.get("CHECKOV") or shutil.which("checkov") or str(ROOT / ".venv-checkov" / "bin" / "checkov")
    assert Path(path).exists(), "checkov is not installed: run `make test`, or set CHECKOV"
    return path


def test_every_skip_has_a_reason():
    assert 0 < len(SKIPS) <= 5
    assert all(len(reason.split()) >= 10 for reason in SKIPS.values())


@pytest.mark.parametrize("values", CASES)
def test_checkov_finds_nothing_outside_the_skip_list(values, tmp_path):
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text("".join(f"---\n{text}\n" for path, text in sorted(render_manifests(values).items())
                                if not path.endswith(".txt")))
    done = subprocess.run([checkov(), "-f", str(manifest), "--framework", "kubernetes", "--quiet", "--compact",
                           "--skip-download", "--output", "json", "--skip-check", ",".join(SKIPS)],
                          capture_output=True, text=True, env={**os.environ, "BC_SKIP_MAPPING": "TRUE"}, timeout=300)
    report = json.loads(done.stdout)
    report = report[0] if isinstance(report, list) else report
    failed = [f"{r['check_id']} {r['resource']}: {r['check_name']}" for r in report["results"]["failed_checks"]]
    assert report["summary"]["passed"] > 100 and report["summary"]["parsing_errors"] == 0
    assert failed == []


def test_the_scan_would_catch_a_privileged_container(tmp_path):
    """The scanner is really looking: a privileged, root container is reported."""
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bad", "namespace": "x"},
                                        "spec": {"containers": [{"name": "c", "image": "x:1",
                                                                 "securityContext": {"privileged": True}}]}}))
    done = subprocess.run([checkov(), "-f", str(manifest), "--framework", "kubernetes", "--quiet", "--compact",
                           "--skip-download", "--output", "json", "--check", "CKV_K8S_16"],
                          capture_output=True, text=True, env={**os.environ, "BC_SKIP_MAPPING": "TRUE"}, timeout=300)
    assert done.returncode == 1 and "CKV_K8S_16" in done.stdout


def test_dockerfile_passes_hadolint():
    hadolint = Path(sys.executable).parent / "hadolint"
    done = subprocess.run([str(hadolint) if hadolint.exists() else "hadolint", str(ROOT / "Dockerfile")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_installs_the_version_pyproject_declares():
    import tomllib

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert f'"celery-autoscale[flower,kubernetes,beat,gevent]=={version}"' in (ROOT / "Dockerfile").read_text()
