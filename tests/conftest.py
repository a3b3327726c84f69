"""Shared fixtures: real Redis servers and real Celery workers, started by the tests themselves.

- ``stack``: one local stack for the session (Redis, the three default workers), for tests
  that only send work and observe it.
- ``fresh_stack``: a stack of its own (own Redis, no workers yet) for tests that stop, kill or
  reconfigure workers.
- ``artifacts``: the folder for screenshots and plots (``artifacts/`` at the repository root).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts"
#: Where the sample app (``tasks``) lives: it is never installed, so the tests and every worker,
#: producer and pod they start import it from here, as the image does from /app.
SAMPLE_APP = ROOT / "src"

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(SAMPLE_APP))
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SAMPLE_APP), os.environ.get("PYTHONPATH")]))


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    from loadgen.stack import DEFAULT_WORKERS, LocalStack

    with LocalStack(tmp_path_factory.mktemp("stack")) as s:
        s.start_redis()
        for spec in DEFAULT_WORKERS:
            s.start_worker(spec)
        yield s


@pytest.fixture
def fresh_stack(tmp_path):
    from loadgen.stack import LocalStack

    with LocalStack(tmp_path) as s:
        s.start_redis()
        yield s


@pytest.fixture(scope="session")
def celery_app(stack):
    """A producer app for the session stack's broker."""
    from helpers import producer

    return producer(stack)


CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def chromium():
    """Debian's real chromium, driven by Playwright (Flower is checked in it)."""
    path = shutil.which("chromium")
    assert path, "Debian's chromium is needed: apt-get install chromium (make test does it as root)"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
