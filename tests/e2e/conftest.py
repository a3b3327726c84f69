"""Fixtures of the real-cluster tests (`make e2e`): one environment (see :mod:`harness`) per session.

Tests reach the cluster through pytest-kubernetes' ``k8s`` fixture with its ``external``
provider and this cluster's kubeconfig (``pytestmark`` in each module).
"""

from __future__ import annotations

import pytest

from tests.e2e.harness import QUEUES, environment, queue_backlog, wait_for


@pytest.fixture(scope="session")
def release():
    with environment() as running:
        yield running


@pytest.fixture(scope="module")
def real_node(release):
    """A real node (kubelet, containerd, kube-proxy, CoreDNS) joined to the cluster for one module's
    tests (its processes would otherwise compete with the scaling tests' for the CPU): see :mod:`node`."""
    from tests.e2e.harness import RUN_DIR
    from tests.e2e.node import RealNode

    node = RealNode(release.cluster, RUN_DIR / "node")
    try:
        node.start()
        yield node
    finally:
        node.stop()


@pytest.fixture
def producer(release):
    return release.producer()


@pytest.fixture
def kube(k8s, release):
    """pytest-kubernetes' handle on the running cluster. ``create()`` finds it ready and so marks it
    as not created by pytest-kubernetes, which then leaves it (and its kubeconfig) alone."""
    k8s.create()
    return k8s


@pytest.fixture
def idle(release):
    """Every queue empty and at its minimum (0) before a test starts."""
    wait_for(lambda: all(queue_backlog(release, q) == 0 and release.replicas(q) == 0 for q in QUEUES), 180,
             "all queues idle at zero replicas", explain=lambda: "\n".join(release.explain(q) for q in QUEUES))
    return release
