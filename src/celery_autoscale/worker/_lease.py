"""The worker's lease: a Redis key its main process renews for as long as it lives.

A worker's consumer stops answering Celery's ``ping`` the moment its warm shutdown begins, while
its running tasks go on for up to the grace period; so a missed ping does not tell a dead worker
from a draining one. The lease does: a daemon thread of the worker's main process sets
:func:`~celery_autoscale.keys.lease_key` every ``autoscale_heartbeat_interval`` seconds with an
expiry of :func:`ttl`, through warm shutdown, and deletes it once the worker has stopped
(``worker_shutdown``, after its last task). A SIGKILL, an OOM kill or a deleted pod stops the
renewals: the key expires. The reconciler restores the running tasks of a worker whose lease has
been gone for :func:`ttl` seconds in a row (``celery_autoscale.reconciler``), long before their
time limit. A Redis outage stops renewals too; the first renewal after it restores the key, well
within that time.
"""

from __future__ import annotations

import logging
import threading
import time

from .. import keys

__all__ = ["Lease", "ttl"]

logger = logging.getLogger(__name__)


def ttl(interval: float) -> float:
    """Seconds a lease lives without renewal: two renewal intervals, at least 5 s."""
    return max(2 * interval, 5.0)


class Lease:
    """Renews ``worker``'s lease every ``interval`` seconds in a daemon thread until :meth:`stop`."""

    def __init__(self, client, worker: str, interval: float, prefix: str = ""):
        self.client, self.interval = client, interval
        self.key = keys.lease_key(worker, prefix)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="celery-autoscale-lease", daemon=True)

    def renew(self) -> bool:
        try:
            self.client.set(self.key, time.time(), px=int(ttl(self.interval) * 1000))
        except Exception as exc:  # Redis away: the next renewal puts it back
            logger.warning("lease: not renewed (%s)", type(exc).__name__)
            return False
        return True

    def start(self) -> None:
        self.renew()
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped.wait(self.interval):
            self.renew()

    def stop(self) -> None:
        """End the renewals and delete the lease: the worker stopped cleanly."""
        self._stopped.set()
        try:
            self.client.delete(self.key)
        except Exception:  # it expires by itself
            pass
