"""What a user installs: the runtime's wheel holds celery_autoscale only, with no tool's dependency;
the load generator is a distribution of its own; every command has a script; one version everywhere;
the runtime has no import cycle."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ROOT / "src" / "celery_autoscale"


def build_wheel(project: Path, out: Path) -> zipfile.ZipFile:
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                           "--wheel-dir", str(out), str(project)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    [wheel] = out.glob("*.whl")
    return zipfile.ZipFile(wheel)


def metadata(wheel: zipfile.ZipFile):
    name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    return Parser().parsestr(wheel.read(name).decode())


def top_level(wheel: zipfile.ZipFile) -> set[str]:
    return {n.split("/", 1)[0] for n in wheel.namelist() if not n.split("/", 1)[0].endswith(".dist-info")}


def scripts(wheel: zipfile.ZipFile) -> dict[str, str]:
    name = next(n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt"))
    text = wheel.read(name).decode()
    section = text.split("[console_scripts]", 1)[1].split("\n[", 1)[0]
    return dict(line.split(" = ", 1) for line in section.strip().splitlines())


@pytest.fixture(scope="module")
def runtime_wheel(tmp_path_factory):
    return build_wheel(ROOT, tmp_path_factory.mktemp("runtime"))


def test_the_runtime_wheel_holds_celery_autoscale_only_and_needs_no_tool(runtime_wheel):
    assert top_level(runtime_wheel) == {"celery_autoscale"}
    files = runtime_wheel.namelist()
    assert "celery_autoscale/worker/__init__.py" in files and "celery_autoscale/reconciler/__main__.py" in files
    meta = metadata(runtime_wheel)
    base = sorted(r.split(">")[0].split("[")[0] for r in meta.get_all("Requires-Dist") if "extra ==" not in r)
    assert base == ["celery", "kombu", "prometheus-client", "redis"]
    assert not any(word in r for r in meta.get_all("Requires-Dist") for word in ("rich", "matplotlib"))


def test_every_command_has_a_script_that_runs(runtime_wheel):
    found = scripts(runtime_wheel)
    assert set(found) == {f"celery-autoscale-{c}" for c in ("reconciler", "health", "deadletter", "roundtrip",
                                                             "beat", "flower")}
    for target in found.values():  # each names a function that exists
        module, _, function = target.partition(":")
        done = subprocess.run([sys.executable, "-c", f"import {module} as m; assert callable(m.{function})"],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr


def test_the_load_generator_is_its_own_distribution(tmp_path):
    wheel = build_wheel(ROOT / "tools" / "loadgen", tmp_path)
    assert top_level(wheel) == {"loadgen"}
    requires = metadata(wheel).get_all("Requires-Dist")
    assert "celery-autoscale==0.3.0" in requires and any(r.startswith("rich") for r in requires)
    assert scripts(wheel) == {"celery-autoscale-loadgen": "loadgen.cli:main"}


def test_one_version_everywhere():
    import celery_autoscale

    def version_of(pyproject: Path) -> str:
        return re.search(r'^version = "(.*)"', pyproject.read_text(), re.M).group(1)

    chart = yaml.safe_load((ROOT / "charts" / "celery-autoscale" / "Chart.yaml").read_text())
    tools = [ROOT / "tools" / "loadgen" / "pyproject.toml", ROOT / "tools" / "e2e-cluster" / "pyproject.toml"]
    versions = {version_of(ROOT / "pyproject.toml"), *map(version_of, tools),
                celery_autoscale.__version__, chart["version"], chart["appVersion"]}
    assert len(versions) == 1, versions
    for pyproject in tools:
        assert f'celery-autoscale=={celery_autoscale.__version__}"' in pyproject.read_text()


def imports_of(path: Path) -> set[str]:
    """The runtime's own modules that ``path`` imports, at any depth of the file."""
    package = ".".join(path.relative_to(RUNTIME.parent).with_suffix("").parts)
    if path.name == "__init__.py":
        package = package.rsplit(".", 1)[0] + "." if False else package.removesuffix(".__init__")
        base = package
    else:
        base = package.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parent = base.split(".")
                parent = parent[:len(parent) - node.level + 1]
                module = ".".join(parent + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.startswith("celery_autoscale"):
                found.add(module)
                found |= {f"{module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("celery_autoscale")}
    return found


def test_nothing_outside_the_tests_imports_them():
    """The benchmarks, scripts and tools import the e2e cluster by name (``e2e_cluster``), not the tests."""
    offenders = []
    for path in [*ROOT.glob("bench/*.py"), *ROOT.glob("scripts/*.py"), *ROOT.glob("tools/*/src/**/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                     else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n == "tests" or n.startswith("tests.")]
    assert not offenders


def test_the_runtime_has_no_import_cycle():
    modules = {".".join(p.relative_to(RUNTIME.parent).with_suffix("").parts).removesuffix(".__init__"): p
               for p in RUNTIME.rglob("*.py")}
    graph = {name: {m for m in imports_of(path) if m in modules and m != name} for name, path in modules.items()}
    # A package's __init__ re-exporting its own modules is not a cycle of theirs.
    graph = {name: {m for m in deps if not name.startswith(m + ".")} for name, deps in graph.items()}
    state: dict[str, int] = {}

    def visit(name: str, trail: list[str]):
        state[name] = 1
        for dep in sorted(graph[name]):
            if state.get(dep) == 1:
                raise AssertionError("import cycle: " + " -> ".join(trail[trail.index(dep):] + [dep]))
            if dep not in state:
                visit(dep, trail + [dep])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


@pytest.mark.parametrize("command", ["health", "deadletter", "roundtrip", "beat", "reconciler"])
def test_every_command_runs_as_a_module_without_being_imported_first(command):
    """``python -m celery_autoscale.<command>``: importing the package does not import the command
    (runpy would warn, and the command would run as a second copy of itself)."""
    done = subprocess.run([sys.executable, "-W", "error", "-m", f"celery_autoscale.{command}", "--help"],
                          capture_output=True, text=True)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert f"python -m celery_autoscale.{command}" in done.stdout
