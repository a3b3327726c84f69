"""Service names for host processes (the e2e cluster): the cluster DNS a pod would use.

On the real node (:mod:`node`) Services have ClusterIPs that kube-proxy routes, the host's
connections included, but the host's resolver does not ask the node's CoreDNS. So the names of a
namespace's Services name their ClusterIPs in ``/etc/hosts`` as a pod resolves them: ``<svc>``,
``<svc>.<ns>``, ``<svc>.<ns>.svc`` and ``<svc>.<ns>.svc.cluster.local``. KEDA, on the host, reaches
a release's Redis and reconciler by the names its triggers carry, and the tests by the names a pod
would use. The block in ``/etc/hosts`` is marked per namespace and removed on :meth:`stop`; without
root (``/etc/hosts`` not writable) the harness fails at start, naming the file.
"""

from __future__ import annotations

import threading
from pathlib import Path

HOSTS = Path("/etc/hosts")
MARK = "# celery-autoscale e2e services of {}: {}\n"
#: The marks of the harness before blocks were per namespace: an interrupted run of it may have left one.
OLD_MARK = "# celery-autoscale e2e services: {}\n"


class ServiceAddresses:
    """The ClusterIPs of the Services of ``namespace`` by name in ``hosts``; :meth:`refresh` after
    an install or upgrade."""

    def __init__(self, api, namespace: str, hosts: Path = HOSTS):
        self.api, self.namespace, self.hosts = api, namespace, Path(hosts)
        self.begin, self.end = MARK.format(namespace, "begin"), MARK.format(namespace, "end")
        self.names: dict[str, str] = {}  # service -> ClusterIP
        self._lock = threading.Lock()
        try:
            self._write()
        except OSError as exc:
            raise RuntimeError(f"the e2e harness names Services in {self.hosts} and cannot write it: {exc}") from exc

    def refresh(self) -> None:
        with self._lock:
            self.names = {svc.metadata.name: svc.spec.cluster_ip
                          for svc in self.api.list_namespaced_service(self.namespace).items
                          if svc.spec.cluster_ip not in (None, "None")}  # a headless Service has none
            self._write()

    def _write(self) -> None:
        text = self.hosts.read_text()
        for begin, end in ((self.begin, self.end), (OLD_MARK.format("begin"), OLD_MARK.format("end"))):
            if begin in text and end in text:
                text = text[:text.index(begin)] + text[text.index(end) + len(end):]
        if text and not text.endswith("\n"):
            text += "\n"
        lines = [f"{address} {name} {name}.{self.namespace} {name}.{self.namespace}.svc "
                 f"{name}.{self.namespace}.svc.cluster.local\n" for name, address in sorted(self.names.items())]
        block = self.begin + "".join(lines) + self.end if lines else ""
        with open(self.hosts, "r+") as f:  # in place: /etc/hosts may be a bind mount
            f.write(text + block)
            f.truncate()

    def stop(self) -> None:
        with self._lock:
            self.names.clear()
            self._write()
