"""Fixtures of the real-cluster tests (`make e2e`): one environment per session (see
:func:`releases.environment`): the control plane, KEDA, the real node and release ``ci`` on it.

Tests reach the cluster through pytest-kubernetes' ``k8s`` fixture with its ``external``
provider and this cluster's kubeconfig (``pytestmark`` in each module).
"""

from __future__ import annotations

import pytest

from e2e_cluster import QUEUES, environment, queue_backlog, wait_for


@pytest.fixture(scope="session")
def release():
    """Release ``ci`` of values/ci.yaml on the real node: a :class:`releases.CiRelease`."""
    with environment() as running:
        yield running


@pytest.fixture(scope="session")
def real_node(release):
    """The real node (kubelet, containerd, kube-proxy, CoreDNS) the session's pods run on: see :mod:`node`."""
    return release.real_node


@pytest.fixture
def idle(release):
    """Every queue of release ``ci`` empty and at its minimum (0) before a test starts."""
    wait_for(lambda: all(queue_backlog(release, q) == 0 and release.replicas(q) == 0 for q in QUEUES), 180,
             "all queues idle at zero replicas", explain=lambda: "\n".join(release.explain(q) for q in QUEUES))
    return release


@pytest.fixture
def producer(release):
    return release.producer()


@pytest.fixture
def kube(k8s, release):
    """pytest-kubernetes' handle on the running cluster. ``create()`` finds it ready and so marks it
    as not created by pytest-kubernetes, which then leaves it (and its kubeconfig) alone."""
    k8s.create()
    return k8s
