"""Service names for host processes (test harness for `make e2e`): the cluster DNS a pod would use.

KWOK runs no kube-proxy and no cluster DNS, and every bridged pod and KEDA itself are processes
on this host. So each Service of the namespace with a pod selector gets a loopback address of
its own (``127.77.0.N``; Services with the same selector share one, as the Redis Service and its
headless twin do), and ``/etc/hosts`` names it as a pod resolves it: ``<svc>``, ``<svc>.<ns>``,
``<svc>.<ns>.svc`` and ``<svc>.<ns>.svc.cluster.local``. A bridged server pod binds that address
(see :mod:`bridge`), so ports never collide and clients, KEDA's Go resolver included, reach the
pod by its Service's name. The block in ``/etc/hosts`` is marked and removed on :meth:`stop`;
without root (``/etc/hosts`` not writable) the harness fails at start, naming the file.

On the real node (:mod:`node`) Services have ClusterIPs that kube-proxy routes, the host's
connections included, but the host's resolver does not ask the node's CoreDNS; with
``cluster_ips=True`` the names of a namespace whose pods run there name those ClusterIPs, so
KEDA, on the host, reaches that release's Redis and reconciler by the names its triggers carry.
"""

from __future__ import annotations

import ipaddress
import threading
from pathlib import Path

HOSTS = Path("/etc/hosts")
MARK = "# celery-autoscale e2e services of {}: {}\n"
#: The marks of the harness before blocks were per namespace: an interrupted run of it may have left one.
OLD_MARK = "# celery-autoscale e2e services: {}\n"
FIRST = ipaddress.ip_address("127.77.0.1")


class ServiceAddresses:
    """Loopback addresses of the Services of ``namespace``; :meth:`refresh` before each launch."""

    def __init__(self, api, namespace: str, hosts: Path = HOSTS, cluster_ips: bool = False):
        self.api, self.namespace, self.hosts, self.cluster_ips = api, namespace, Path(hosts), cluster_ips
        self.begin, self.end = MARK.format(namespace, "begin"), MARK.format(namespace, "end")
        self.by_selector: dict[frozenset, str] = {}
        self.names: dict[str, str] = {}  # service -> address
        self._lock = threading.Lock()
        try:
            self._write()
        except OSError as exc:
            raise RuntimeError(f"the e2e harness names Services in {self.hosts} and cannot write it: {exc}") from exc

    def refresh(self) -> None:
        with self._lock:
            self.names = {}  # a deleted Service loses its name; an address stays with its selector
            for svc in self.api.list_namespaced_service(self.namespace).items:
                selector = frozenset((svc.spec.selector or {}).items())
                if not selector or svc.spec.type == "ExternalName":
                    continue
                if self.cluster_ips:
                    if svc.spec.cluster_ip not in (None, "None"):  # a headless Service has none
                        self.names[svc.metadata.name] = svc.spec.cluster_ip
                    continue
                if selector not in self.by_selector:
                    self.by_selector[selector] = str(FIRST + len(self.by_selector))
                self.names[svc.metadata.name] = self.by_selector[selector]
            self._write()

    def for_pod(self, pod) -> str | None:
        """The address of the Services selecting ``pod``, or None."""
        self.refresh()
        labels = set((pod.metadata.labels or {}).items())
        found = {address for selector, address in self.by_selector.items() if selector <= labels}
        if len(found) > 1:
            raise ValueError(f"pod {pod.metadata.name} is selected by Services of different selectors; "
                             "the bridge gives a pod one address")
        return found.pop() if found else None

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
