"""tools/e2e-cluster/build.sh is safe to run twice at once: the second run waits for the first's lock."""

import os
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "tools" / "e2e-cluster" / "build.sh"


def etcd_version() -> str:
    for line in (BUILD.parent / "versions.env").read_text().splitlines():
        if line.startswith("ETCD_VERSION="):
            return line.split("=", 1)[1]
    raise AssertionError("no ETCD_VERSION")


def test_a_second_build_waits_for_the_first_and_then_finds_its_binaries(tmp_path):
    cache = tmp_path / "cache"
    binary = cache / "bin" / f"etcd-{etcd_version()}" / "etcd"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    env = {**os.environ, "E2E_CACHE": str(cache)}
    holder = subprocess.Popen(["flock", str(cache / ".build.lock"), "sleep", "3"])  # a build in progress
    try:
        time.sleep(0.5)
        started = time.monotonic()
        second = subprocess.run(["bash", str(BUILD), "etcd"], env=env, capture_output=True, text=True, timeout=60)
        waited = time.monotonic() - started
    finally:
        holder.wait()
    assert second.returncode == 0, second.stderr
    assert "another build holds" in second.stdout and "cached" in second.stdout
    assert waited >= 2  # it did not touch the cache while the lock was held
