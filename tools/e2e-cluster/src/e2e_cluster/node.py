"""A real node for the e2e control plane: pods run by the kubelet.

:class:`RealNode` joins one node, ``real-node``, to the control plane of :mod:`cluster`, beside
KWOK's fake ones. Everything on it is real and runs on this machine:

- **containerd** (Debian's 1.6, with runc; its CRI is the kubelet's runtime), configured as the
  spike in the README's e2e section found it must be here: cgroupfs (no systemd), runc without
  systemd cgroups, ``restrict_oom_score_adj`` (lowering ``oom_score_adj`` is refused here), and
  the sandbox image ``images/build.sh`` built from Kubernetes' own ``pause.c``. The images of
  ``make image`` are imported into it; nothing is pulled (no registry is reachable).
- **the kubelet** and **kube-proxy** (iptables mode), built by ``build.sh`` from the control
  plane's own Kubernetes module and version, with the cluster's admin kubeconfig.
- **NetworkPolicies enforced** by kube-router's policy controller alone (``--run-firewall``; its
  router and service proxy stay off), built by ``build.sh`` from its Go module: iptables chains
  and ipsets (Debian's ``ipset``) per pod of this node. As in any kube-router cluster, traffic
  from the node itself (the host: KEDA, the tests, kubelet probes) is always admitted.
  kube-network-policies (sigs.k8s.io) would be the smaller choice, but it hands packets to user
  space with nftables' ``queue`` expression, which this kernel lacks (``CONFIG_NFT_QUEUE`` is not
  set: ``nft add rule ... queue num 100`` fails with "No such file or directory").
- **pod networking**: Debian's CNI ``bridge`` and ``host-local`` plugins on a bridge of the
  harness's own, :data:`BRIDGE`, whose address :data:`GATEWAY` is the node's (the kubelet refuses
  a loopback node address). Pod addresses (:data:`POD_CIDR`) and Service addresses exist only on
  it: a route sends the Service range to the bridge, and an ``unreachable`` route of lower
  priority stays for both ranges, so if the bridge is ever gone a packet for them fails here
  instead of leaving by the default route. Forwarding is on while the node runs, and the FORWARD
  chain drops whatever would cross between the bridge and any other interface.
- **the API server** for pods: the ``kubernetes`` Service's endpoint is :data:`GATEWAY` (the API
  server's advertised address, :mod:`cluster`), where ``socat`` forwards to the API server on loopback.
- **cluster DNS**: CoreDNS (``build.sh``, its ``kubernetes`` plugin only) on :data:`GATEWAY`, the
  kubelet's ``clusterDNS``.
- **storage**: a static ``hostPath`` PersistentVolume per claim the tests need
  (:meth:`RealNode.volume`), deleted with the node.

The node carries the taint :data:`TAINT` and the label ``kubernetes.io/hostname: real-node``: only
pods that select it and tolerate the taint run there (:data:`PLACEMENT`); KWOK's nodes keep the
rest. :meth:`RealNode.stop`, and :meth:`RealNode.start` before anything else, remove what a node
leaves: containers and their shims, mounts, the bridge, routes, iptables chains, ipsets, cgroups.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .cluster import POD_GATEWAY, E2ECluster, cache_dir, free_port, terminate, versions

NAME = "real-node"
BRIDGE = "cae2e0"
POD_CIDR = "10.244.0.0/24"
GATEWAY = POD_GATEWAY
#: What the pod addresses' unreachable route covers (see the module docs); the Service range gets one too.
POD_GUARD = "10.244.0.0/16"
#: The metric of the unreachable routes: below every other route to the same range.
ROUTE_METRIC = 4242
TAINT = {"key": "celery-autoscale.io/real-node", "value": "true", "effect": "NoSchedule"}
#: Values that put a pod on the real node (a chart component's nodeSelector and tolerations).
PLACEMENT = {"nodeSelector": {"kubernetes.io/hostname": NAME},
             "tolerations": [{"key": TAINT["key"], "operator": "Equal", "value": "true", "effect": "NoSchedule"}]}
#: The chart's ``redis.image`` on this node: ``images/build.sh``'s stand-in for the official image.
REDIS_STANDIN = {"repository": "localhost/celery-autoscale/redis-standin", "tag": "bookworm"}
#: The archives ``images/build.sh`` writes, imported into containerd.
IMAGES = ("pause", "redis-standin", "app", "plainapp")
PAUSE_IMAGE = f"localhost/celery-autoscale/pause:{versions()['KUBERNETES_VERSION']}"
CNI_BIN = Path("/usr/lib/cni")
PROCESSES = ("kube-router", "kube-proxy", "kubelet", "coredns", "socat", "containerd")
#: Name prefixes of the ipsets kube-router's policy controller makes (pkg/controllers/netpol, pkg/utils/ipset.go).
IPSET_PREFIXES = ("KUBE-SRC-", "KUBE-DST-", "TMP-", "inet6:KUBE-")
#: Kernel settings the node changes: forwarding (this harness), and those the kubelet sets to its
#: liking at start (``protectKernelDefaults: false``; pkg/kubelet/cm/container_manager_linux.go,
#: setupKernelTunables). Their values before the first start are kept in a file beside the node's
#: folder and written back by :meth:`RealNode.clean`, so not even an interrupted run leaves a
#: machine that panics on an oops.
SYSCTLS = ("net/ipv4/ip_forward", "kernel/panic", "kernel/panic_on_oops", "vm/overcommit_memory", "vm/panic_on_oom",
           "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes")


def node_binaries() -> dict[str, Path]:
    """The node's commands ``build.sh`` built; raises FileNotFoundError naming what is missing."""
    v, bin_dir = versions(), cache_dir() / "bin"
    kube = bin_dir / f"kubernetes-{v['KUBERNETES_VERSION']}"
    paths = {"kubelet": kube / "kubelet", "kube-proxy": kube / "kube-proxy",
             "coredns": bin_dir / f"coredns-{v['COREDNS_VERSION']}" / "coredns",
             "kube-router": bin_dir / f"kube-router-{v['KUBE_ROUTER_VERSION']}" / "kube-router",
             "ipset": Path(shutil.which("ipset") or "/usr/sbin/ipset"),
             "containerd": Path(shutil.which("containerd") or "/usr/bin/containerd"),
             "ctr": Path(shutil.which("ctr") or "/usr/bin/ctr"),
             "socat": Path(shutil.which("socat") or "/usr/bin/socat")}
    missing = [name for name, path in paths.items() if not path.exists()]
    if missing:
        raise FileNotFoundError(f"not built or installed: {', '.join(missing)}; run tools/e2e-cluster/build.sh (make e2e-build) and "
                                "apt-get install containerd containernetworking-plugins conntrack socat ipset")
    return paths


def run(*argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, timeout=timeout)


@dataclass
class RealNode:
    """Start with :meth:`start` after the cluster's control plane; stop with :meth:`stop`."""

    cluster: E2ECluster
    workdir: Path
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def __post_init__(self):
        self.workdir = Path(self.workdir)
        self.bins = node_binaries()
        self.socket = self.workdir / "containerd" / "containerd.sock"
        self.sysctls = self.workdir.with_name(self.workdir.name + "-sysctls.json")
        self.volumes: list[str] = []

    # -- helpers ------------------------------------------------------------------------------
    def ctr(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        return run(str(self.bins["ctr"]), "--address", str(self.socket), "--namespace", "k8s.io", *args,
                   check=check, timeout=timeout)

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.workdir / f"{name}.log", "ab")
        env = {**os.environ, "KUBECONFIG": str(self.cluster.kubeconfig)}
        self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir, env=env,
                                            start_new_session=True)
        log.close()

    def alive(self) -> None:
        """Raises RuntimeError naming the log of a node process that exited."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited ({proc.returncode}); see {self.workdir / (name + '.log')}")

    def _wait(self, check, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.alive()
            if check():
                return
            time.sleep(0.5)
        raise TimeoutError(f"{what} not ready after {timeout:.0f}s; logs in {self.workdir}")

    # -- start ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Network, containerd with the images, CoreDNS, the kubelet, kube-proxy and kube-router;
        returns once the node is Ready."""
        self.clean()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._network()
        self._apiserver_proxy()
        self._containerd()
        self._coredns()
        self._kubelet()
        self._kube_proxy()
        self._wait(self._ready, 180, f"node {NAME}")
        self._kube_router()

    def _network(self) -> None:
        self.sysctls.write_text(json.dumps({name: (Path("/proc/sys") / name).read_text().strip() for name in SYSCTLS}))
        self.service_cidr = self._service_cidr()
        for cidr in (POD_GUARD, self.service_cidr):
            run("ip", "route", "replace", "unreachable", cidr, "metric", str(ROUTE_METRIC))
        run("ip", "link", "add", BRIDGE, "type", "bridge")
        run("ip", "addr", "add", f"{GATEWAY}/{ipaddress.ip_network(POD_CIDR).prefixlen}", "dev", BRIDGE)
        run("ip", "link", "set", BRIDGE, "up")
        run("ip", "route", "replace", self.service_cidr, "dev", BRIDGE, "src", GATEWAY)
        for rule in self._forward_guard():
            run("iptables", "-t", "mangle", "-I", "FORWARD", "1", *rule)
        Path("/proc/sys/net/ipv4/ip_forward").write_text("1")
        cni = self.workdir / "cni"
        cni.mkdir(parents=True, exist_ok=True)
        (cni / "10-celery-e2e.conflist").write_text(json.dumps({
            "cniVersion": "1.0.0", "name": "celery-e2e", "plugins": [
                {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False, "hairpinMode": True,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_CIDR, "gateway": GATEWAY}]],
                          "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(self.workdir / "cni-ipam")}},
                {"type": "portmap", "capabilities": {"portMappings": True}}]}))

    def _apiserver_proxy(self) -> None:
        """Debian's ``socat`` forwards :data:`GATEWAY` at the API server's port to the API server on
        127.0.0.1, which it advertises as :data:`GATEWAY` (:mod:`cluster`): pods reach it through the
        ``kubernetes`` Service, as in any cluster, and the API server listens on loopback only."""
        port = self.cluster.apiserver_port
        self._spawn("socat", [str(self.bins["socat"]), "-lf", str(self.workdir / "socat.log"),
                              f"TCP-LISTEN:{port},bind={GATEWAY},fork,reuseaddr", f"TCP:127.0.0.1:{port}"])

    def _service_cidr(self) -> str:
        """The Service range, as a /16 around the ``kubernetes`` Service's address."""
        address = json.loads(self.cluster.kubectl("get", "service", "kubernetes", "-n", "default", "-o",
                                                  "json").stdout)["spec"]["clusterIP"]
        return str(ipaddress.ip_network(f"{address}/16", strict=False))

    @staticmethod
    def _forward_guard() -> list[list[str]]:
        """FORWARD rules: nothing crosses between the bridge and another interface. They sit in the
        ``mangle`` table, whose FORWARD hook runs before ``filter``'s: kube-router keeps its own
        jump first in ``filter``'s FORWARD and accepts the traffic its policies admit there."""
        return [["-i", BRIDGE, "!", "-o", BRIDGE, "-j", "DROP", "-m", "comment", "--comment", "celery-e2e-guard"],
                ["!", "-i", BRIDGE, "-o", BRIDGE, "-j", "DROP", "-m", "comment", "--comment", "celery-e2e-guard"]]

    def _containerd(self) -> None:
        root = self.workdir / "containerd"
        root.mkdir(parents=True, exist_ok=True)
        config = root / "config.toml"
        config.write_text(f"""version = 2
root = "{root / 'root'}"
state = "{root / 'state'}"
[grpc]
  address = "{self.socket}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{self.workdir / 'cni'}"
""")
        self._spawn("containerd", [str(self.bins["containerd"]), "--config", str(config)])
        self._wait(lambda: self.socket.exists() and self.ctr("version", check=False).returncode == 0, 60, "containerd")
        archives = cache_dir() / "images"
        for image in IMAGES:
            self.ctr("images", "import", "--no-unpack=false", str(archives / f"{image}.tar"))

    def _coredns(self) -> None:
        corefile = self.workdir / "Corefile"
        corefile.write_text(f""".:53 {{
    bind {GATEWAY}
    errors
    ready 127.0.0.1:{free_port()}
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {self.cluster.kubeconfig}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    loop
}}
""")
        self._spawn("coredns", [str(self.bins["coredns"]), "-conf", str(corefile)])

    def _kubelet(self) -> None:
        kubelet = self.workdir / "kubelet"
        kubelet.mkdir(parents=True, exist_ok=True)
        resolv = self.workdir / "resolv.conf"
        resolv.write_text("")  # pods get the cluster DNS and its search path only
        self.kubelet_port = free_port()
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "failCgroupV1": False, "cgroupDriver": "cgroupfs",
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
            "authorization": {"mode": "AlwaysAllow"},
            "address": GATEWAY, "port": self.kubelet_port, "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1", "healthzPort": free_port(),
            "failSwapOn": False, "cgroupsPerQOS": True, "enforceNodeAllocatable": [],
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
            "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
            "localStorageCapacityIsolation": False, "serializeImagePulls": False,
            "clusterDNS": [GATEWAY], "clusterDomain": "cluster.local", "resolvConf": str(resolv),
            "podCIDR": POD_CIDR, "registerWithTaints": [TAINT], "maxPods": 30,
            "volumePluginDir": str(self.workdir / "volume-plugins"),
            "syncFrequency": "10s", "fileCheckFrequency": "10s",
        }
        path = self.workdir / "kubelet.yaml"
        path.write_text(yaml.safe_dump(config))
        self._spawn("kubelet", [str(self.bins["kubelet"]), "--config", str(path),
                                "--kubeconfig", str(self.cluster.kubeconfig), "--root-dir", str(kubelet),
                                "--cert-dir", str(self.workdir / "kubelet-pki"), "--hostname-override", NAME,
                                "--node-ip", GATEWAY, "--node-labels", "celery-autoscale.io/real-node=true", "--v=1"])

    def _kube_proxy(self) -> None:
        self._spawn("kube-proxy", [str(self.bins["kube-proxy"]), "--kubeconfig", str(self.cluster.kubeconfig),
                                   "--hostname-override", NAME, "--proxy-mode", "iptables",
                                   "--cluster-cidr", POD_CIDR, "--nodeport-addresses", POD_CIDR,
                                   f"--metrics-bind-address=127.0.0.1:{free_port()}",
                                   f"--healthz-bind-address=127.0.0.1:{free_port()}",
                                   "--conntrack-max-per-core", "0", "--v=1"])

    def _kube_router(self) -> None:
        """kube-router's NetworkPolicy controller for this node's pods (see the module docs)."""
        self._spawn("kube-router", [str(self.bins["kube-router"]), "--kubeconfig", str(self.cluster.kubeconfig),
                                    "--hostname-override", NAME, "--run-firewall=true", "--run-router=false",
                                    "--run-service-proxy=false", "--run-loadbalancer=false", "--enable-cni=false",
                                    "--health-port=0", "--metrics-port=0",
                                    "--service-cluster-ip-range", self.service_cidr,
                                    "--iptables-sync-period", "1m", "--v=1"])
        self._wait(lambda: "KUBE-ROUTER-FORWARD" in run("iptables", "-S", "FORWARD", check=False).stdout, 60,
                   "kube-router's policy chains")

    def _ready(self) -> bool:
        done = self.cluster.kubectl("get", "node", NAME, "-o", "json", check=False)
        if done.returncode != 0:
            return False
        conditions = json.loads(done.stdout).get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def volume(self, name: str, size: str = "1Gi") -> None:
        """A ``hostPath`` PersistentVolume ``name`` on this node, of no StorageClass: a claim of
        none (the chart's with ``storageClass: ""`` and no default class) binds it."""
        folder = self.workdir / "volumes" / name
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o777)  # the pod's user writes it; hostPath has no fsGroup
        self.cluster.apply({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
                            "spec": {"capacity": {"storage": size}, "accessModes": ["ReadWriteOnce"],
                                     "persistentVolumeReclaimPolicy": "Retain",
                                     "hostPath": {"path": str(folder), "type": "Directory"},
                                     "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                                         {"key": "kubernetes.io/hostname", "operator": "In", "values": [NAME]}]}]}}}})
        self.volumes.append(name)

    # -- inside a pod ---------------------------------------------------------------------------
    def container_pid(self, pod: str, namespace: str) -> int:
        """The host PID of the first process (the container task's) of ``pod``'s running app container."""
        tasks = {row.split()[0]: int(row.split()[1]) for row in self.ctr("tasks", "list").stdout.splitlines()[1:]
                 if row.split() and row.split()[2] == "RUNNING"}
        for container, pid in tasks.items():
            labels = json.loads(self.ctr("containers", "info", container).stdout).get("Labels", {})
            if (labels.get("io.kubernetes.pod.name") == pod and labels.get("io.kubernetes.pod.namespace") == namespace
                    and labels.get("io.cri-containerd.kind") == "container"):
                return pid
        raise LookupError(f"no running container of pod {namespace}/{pod}")

    # -- stop -------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Every node process; their logs copied to ``<workdir>-logs``; then :meth:`clean`."""
        for name in PROCESSES:
            terminate(self.procs.pop(name, None))
        if self.volumes:
            self.cluster.kubectl("delete", "pv", *self.volumes, "--ignore-not-found", "--wait=false", check=False)
        self.cluster.kubectl("delete", "node", NAME, "--ignore-not-found", "--wait=false", check=False)
        logs = self.workdir.with_name(self.workdir.name + "-logs")  # kept until the next run's stop
        shutil.rmtree(logs, ignore_errors=True)
        logs.mkdir(parents=True)
        for log in self.workdir.glob("*.log"):
            shutil.copy(log, logs)
        self.clean()

    def clean(self) -> None:
        """Remove what a node run leaves, this one's or an interrupted one's: its container processes
        (shims and all), mounts under its folder and pod network namespaces, kube-proxy's and the
        kubelet's iptables chains, the guard rules, routes and bridge, the kubepods cgroups; and
        write back the kernel settings (:data:`SYSCTLS`) as they were before."""
        for line in run("pgrep", "-f", f"containerd-shim.*{self.workdir}", check=False).stdout.split():
            subprocess.run(["pkill", "-KILL", "-P", line], check=False)
            subprocess.run(["kill", "-KILL", line], check=False)
        for name in PROCESSES:  # each names the node's folder or the node in its arguments
            run("pkill", "-KILL", "-f", f"{self.bins[name]} .*({self.workdir}|--hostname-override {NAME})", check=False)
        time.sleep(0.5)
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        for mount in sorted((m for m in mounts if m.startswith(str(self.workdir) + "/")), key=len, reverse=True):
            run("umount", "-l", mount, check=False)
        netns = Path("/var/run/netns")
        for name in (p.name for p in netns.glob("cni-*")) if netns.is_dir() else ():  # containerd's CRI names
            run("ip", "netns", "delete", name, check=False)
        if self.bins["kube-proxy"].exists():
            run(str(self.bins["kube-proxy"]), "--cleanup", check=False)
        for table in ("filter", "nat", "mangle"):
            rules = run("iptables", "-t", table, "-S", check=False).stdout.splitlines()
            for rule in rules:
                if rule.startswith("-A ") and ("celery-e2e-guard" in rule or " -j KUBE-" in rule):
                    run("iptables", "-t", table, "-D", *shlex.split(rule)[1:], check=False)
            for rule in rules:
                if rule.startswith("-N KUBE-"):
                    run("iptables", "-t", table, "-F", rule[3:], check=False)
            for rule in rules:
                if rule.startswith("-N KUBE-"):
                    run("iptables", "-t", table, "-X", rule[3:], check=False)
        for name in run(str(self.bins["ipset"]), "list", "-n", check=False).stdout.split():
            if name.startswith(IPSET_PREFIXES):
                run(str(self.bins["ipset"]), "destroy", name, check=False)
        run("ip", "link", "delete", BRIDGE, check=False)
        for route in json.loads(run("ip", "-j", "route", "show", "type", "unreachable", check=False).stdout or "[]"):
            if route.get("metric") == ROUTE_METRIC:
                run("ip", "route", "delete", "unreachable", route["dst"], "metric", str(ROUTE_METRIC), check=False)
        if self.sysctls.exists():
            for name, value in json.loads(self.sysctls.read_text()).items():
                (Path("/proc/sys") / name).write_text(value)
            self.sysctls.unlink()
        for controller in Path("/sys/fs/cgroup").iterdir():  # the kubelet's, deepest first
            kubepods = controller / "kubepods"
            if kubepods.is_dir():
                for folder in sorted((p for p in kubepods.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                    with contextlib.suppress(OSError):
                        folder.rmdir()
                with contextlib.suppress(OSError):
                    kubepods.rmdir()
        shutil.rmtree(self.workdir, ignore_errors=True)
