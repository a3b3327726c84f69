"""The real control plane and the real KEDA, as host processes (`make e2e`, `make report`, `make demo-cluster`).

- ``kwokctl --runtime binary`` starts etcd, kube-apiserver, kube-controller-manager,
  kube-scheduler and the KWOK controller from the binaries ``build.sh`` built from their Go
  modules (pointed at through a KwokctlConfiguration file). KWOK's fake nodes stay for pods whose
  running does not matter (a second release's workers, where only its ScaledObject and replicas
  are tested); every other pod runs on the real node (:mod:`node`). KWOK's own ``pod-complete``
  stage is left out: a Job's pod runs on the real node.
- KEDA's operator, metrics adapter and admission webhooks run with the cluster's admin
  kubeconfig and TLS certificates this module generates; KEDA's own
  ValidatingWebhookConfiguration points at the webhooks by URL. ``v1beta1.external.metrics.k8s.io`` points at the
  adapter through an ExternalName Service to ``localhost`` (aggregator routing is off, so the
  apiserver dials the service's DNS name and the ban on loopback endpoint IPs does not apply).
- metrics-server (:meth:`E2ECluster.start_metrics_server`, once the real node has joined) serves
  ``metrics.k8s.io`` from the real node's kubelet the same way, behind an ExternalName Service in
  ``kube-system``: CPU- and memory-utilisation HPAs and KEDA's ``cpu``/``memory`` triggers read it.
- :meth:`E2ECluster.stop` tears down in order: the APIServices first, then KEDA and metrics-server,
  then the cluster.

Every port is on 127.0.0.1 and chosen free at start.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from loadgen.stack import free_port

from .harness import TOOL

CLUSTER_NAME = "celery-e2e"
KEDA_NAMESPACE = "keda"
#: KEDA's host processes, by their names in :attr:`E2ECluster.procs`.
KEDA_PROCESSES = ("keda-operator", "keda-adapter", "keda-webhooks")
#: The real node's address on its bridge (:mod:`node`), where pods reach the API server.
POD_GATEWAY = "10.244.0.1"
#: The ``kubernetes`` Service's ClusterIP: the first of kube-apiserver's default Service range,
#: 10.0.0.0/24 (kwokctl sets none), which pods' in-cluster clients dial.
KUBERNETES_SERVICE_IP = "10.0.0.1"


def versions() -> dict[str, str]:
    """The pinned upstream versions, from versions.env (the one place they are recorded)."""
    pairs = (line.split("=", 1) for line in (TOOL / "versions.env").read_text().splitlines()
             if line and not line.startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


def cache_dir() -> Path:
    return Path(os.environ.get("E2E_CACHE") or Path.home() / ".cache" / "celery-autoscale-e2e")


def binaries() -> dict[str, Path]:
    """Paths of the built binaries; raises FileNotFoundError naming what ``build.sh`` must build."""
    v, bin_dir = versions(), cache_dir() / "bin"
    paths = {
        "kube-apiserver": bin_dir / f"kubernetes-{v['KUBERNETES_VERSION']}" / "kube-apiserver",
        "kube-controller-manager": bin_dir / f"kubernetes-{v['KUBERNETES_VERSION']}" / "kube-controller-manager",
        "kube-scheduler": bin_dir / f"kubernetes-{v['KUBERNETES_VERSION']}" / "kube-scheduler",
        "kubectl": bin_dir / f"kubernetes-{v['KUBERNETES_VERSION']}" / "kubectl",
        "etcd": bin_dir / f"etcd-{v['ETCD_VERSION']}" / "etcd",
        "kwok": bin_dir / f"kwok-{v['KWOK_VERSION']}" / "kwok",
        "kwokctl": bin_dir / f"kwok-{v['KWOK_VERSION']}" / "kwokctl",
        "keda-operator": bin_dir / f"keda-{v['KEDA_VERSION']}" / "keda-operator",
        "keda-adapter": bin_dir / f"keda-{v['KEDA_VERSION']}" / "keda-adapter",
        "keda-webhooks": bin_dir / f"keda-{v['KEDA_VERSION']}" / "keda-webhooks",
        "metrics-server": bin_dir / f"metrics-server-{v['METRICS_SERVER_VERSION']}" / "metrics-server",
    }
    missing = [name for name, path in paths.items() if not path.exists()]
    if missing:
        raise FileNotFoundError(f"not built: {', '.join(missing)}; run tools/e2e-cluster/build.sh (make e2e-build)")
    return paths


def keda_module() -> Path:
    """The KEDA Go module's source folder (downloaded by build.sh)."""
    out = subprocess.run(["go", "mod", "download", "-json", f"github.com/kedacore/keda/v2@{versions()['KEDA_VERSION']}"],
                         capture_output=True, text=True, check=True, cwd=cache_dir())
    return Path(json.loads(out.stdout)["Dir"])


def keda_crds() -> list[Path]:
    """All of KEDA's CRDs from the KEDA Go module itself (config/crd/bases): keda.sh and
    eventing.keda.sh (the operator stops when its CloudEventSource informers cannot sync)."""
    return sorted((keda_module() / "config" / "crd" / "bases").glob("*.yaml"))


def kwok_stages() -> list[dict]:
    """KWOK's default stages for ``--runtime binary`` (its ``fast`` node and pod stages, the
    heartbeat with leases) except ``pod-complete``, which would mark a Job's pod Succeeded the
    moment it runs: Job pods (the helm test's) run on the real node, and one on KWOK's nodes would
    stay Running rather than pass without having run."""
    out = subprocess.run(["go", "mod", "download", "-json", f"sigs.k8s.io/kwok@{versions()['KWOK_VERSION']}"],
                         capture_output=True, text=True, check=True, cwd=cache_dir())
    stage = Path(json.loads(out.stdout)["Dir"]) / "kustomize" / "stage"
    files = [stage / "node" / "fast" / "node-initialize.yaml",
             stage / "node" / "heartbeat-with-lease" / "node-heartbeat-with-lease.yaml",
             stage / "pod" / "fast" / "pod-ready.yaml", stage / "pod" / "fast" / "pod-delete.yaml"]
    return [yaml.safe_load(f.read_text()) for f in files]


def keda_webhook_configuration(port: int, ca_bundle: str) -> dict:
    """KEDA's own ValidatingWebhookConfiguration (config/webhooks/validation_webhooks.yaml in the
    module), each webhook pointed at the host process by URL and set to ``failurePolicy: Fail``
    (KEDA's chart says Ignore): an object the webhook cannot judge is refused, not let through."""
    config = yaml.safe_load((keda_module() / "config" / "webhooks" / "validation_webhooks.yaml").read_text())
    for hook in config["webhooks"]:
        path = hook["clientConfig"]["service"]["path"]
        hook["clientConfig"] = {"url": f"https://127.0.0.1:{port}{path}", "caBundle": ca_bundle}
        hook["failurePolicy"] = "Fail"
    return config


def terminate(proc: subprocess.Popen | None, grace: float = 20) -> None:
    """SIGTERM to ``proc``'s process group, SIGKILL after ``grace`` seconds; None or ended: nothing."""
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def write_certificates(folder: Path, names: list[str]) -> dict[str, Path]:
    """A self-signed CA and a server certificate for ``names`` (DNS names or IPs), PEM files.

    Stands in for KEDA's own certificate rotation, which expects to run in-cluster.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "celery-autoscale e2e CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    sans = []
    for name in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    files = {"ca.crt": ca.public_bytes(pem), "tls.crt": cert.public_bytes(pem),
             "tls.key": key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return {name: folder / name for name in files}


class KubectlError(subprocess.CalledProcessError):
    """A kubectl that exited non-zero; its message ends with kubectl's stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}: {(self.stderr or '').strip()}"


@dataclass
class E2ECluster:
    """Start with :meth:`start`; the kubeconfig is :attr:`kubeconfig`."""

    workdir: Path
    hpa_sync_seconds: int = 2
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def __post_init__(self):
        self.workdir = Path(self.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.bins = binaries()
        self.kubeconfig = self.workdir / "kubeconfig"
        self.env = {**os.environ, "KWOK_WORKDIR": str(self.workdir / "kwok"), "KUBECONFIG": str(self.kubeconfig),
                    "PATH": f"{self.bins['kubectl'].parent}{os.pathsep}{os.environ.get('PATH', '')}"}

    # -- helpers --------------------------------------------------------------------------
    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        """``kubectl args`` on this cluster; with ``check``, a non-zero exit raises :class:`KubectlError`."""
        done = subprocess.run([str(self.bins["kubectl"]), "--kubeconfig", str(self.kubeconfig), *args],
                              input=input, capture_output=True, text=True, env=self.env, timeout=120)
        if check and done.returncode != 0:
            raise KubectlError(done.returncode, done.args, done.stdout, done.stderr)
        return done

    def apply(self, *objects: dict, server_side: bool = False) -> None:
        args = ["apply", "-f", "-"] + (["--server-side", "--force-conflicts"] if server_side else [])
        self.kubectl(*args, input="\n---\n".join(yaml.safe_dump(o) for o in objects))

    def _spawn(self, name: str, argv: list[str], env: dict | None = None) -> None:
        log = open(self.workdir / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env or self.env,
                                            cwd=self.workdir, start_new_session=True)
        log.close()

    def _wait(self, check, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(1)
        raise TimeoutError(f"{what} not ready after {timeout:.0f}s; logs in {self.workdir}")

    # -- the control plane ----------------------------------------------------------------
    def start(self) -> None:
        """The control plane, one KWOK node, then KEDA."""
        self.start_control_plane()
        self.start_keda()

    def start_control_plane(self) -> None:
        b, v = self.bins, versions()
        self.apiserver_port = free_port()  # on 127.0.0.1; the real node forwards its gateway to it
        config = {
            "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
            "kind": "KwokctlConfiguration",
            "options": {
                "runtime": "binary",
                "bindAddress": "127.0.0.1",
                "kubeVersion": v["KUBERNETES_VERSION"],
                "kubeApiserverBinary": str(b["kube-apiserver"]),
                "kubeControllerManagerBinary": str(b["kube-controller-manager"]),
                "kubeSchedulerBinary": str(b["kube-scheduler"]),
                "kubectlBinary": str(b["kubectl"]),
                "etcdBinary": str(b["etcd"]),
                "kwokControllerBinary": str(b["kwok"]),
                "kubeApiserverPort": self.apiserver_port,
                "etcdPort": free_port(),
                "etcdPeerPort": free_port(),
                "kubeControllerManagerPort": free_port(),
                "kubeSchedulerPort": free_port(),
                "kwokControllerPort": free_port(),
                "securePort": True,
                "kubeAuthorization": True,
                "disableQPSLimits": True,
                # A pod's in-cluster client checks the certificate against the Service's address.
                "kubeApiserverCertSANs": [KUBERNETES_SERVICE_IP, POD_GATEWAY],
            },
            "componentsPatches": [{
                "name": "kube-controller-manager",
                "extraArgs": [{"key": "horizontal-pod-autoscaler-sync-period", "value": f"{self.hpa_sync_seconds}s"}],
            }, {
                # kwokctl's binary runtime has KWOK manage every node; it would then run its stages on
                # the real node (node.py) too: its daemon port in the Node's status and its
                # pods marked Ready before, or instead of, the kubelet's own status. Only the nodes
                # `kwokctl scale node` makes (annotated so, kustomize/kwokctl/resource/node.yaml) are KWOK's.
                "name": "kwok-controller",
                "extraArgs": [{"key": "manage-all-nodes", "value": "false"},
                              {"key": "manage-nodes-with-annotation-selector", "value": "kwok.x-k8s.io/node=fake"}],
            }, {
                # The real node's kubelet (node.py) is reached at its address, not its name.
                "name": "kube-apiserver",
                # It advertises the real node's gateway, where node.py forwards to it, so
                # the `kubernetes` Service's endpoint is one that pods reach; it listens on loopback only.
                "extraArgs": [{"key": "kubelet-preferred-address-types", "value": "InternalIP"},
                              {"key": "advertise-address", "value": POD_GATEWAY}],
            }],
        }
        path = self.workdir / "kwokctl.yaml"
        path.write_text(yaml.safe_dump_all([config, *kwok_stages()]))
        # `kwokctl create cluster` resumes a cluster of the same name that a killed run left in the
        # workdir (kwok pkg/kwokctl/cmd/create/cluster: "Cluster already exists"), its etcd and all.
        self._delete_cluster()
        subprocess.run([str(b["kwokctl"]), "create", "cluster", "--name", CLUSTER_NAME, "--config", str(path),
                        "--kubeconfig", str(self.kubeconfig), "--wait", "120s"],
                       check=True, env=self.env, capture_output=True, text=True, timeout=300)
        subprocess.run([str(b["kwokctl"]), "scale", "node", "--name", CLUSTER_NAME, "--replicas", "1"],
                       check=True, env=self.env, capture_output=True, text=True, timeout=120)
        self._wait(lambda: self.kubectl("get", "serviceaccount", "default", check=False).returncode == 0, 60,
                   "default service account")

    # -- KEDA -------------------------------------------------------------------------------
    def start_keda(self) -> None:
        # The aggregator checks the adapter's certificate against the Service's DNS name; the
        # operator and the adapter reach each other on localhost.
        service = f"keda-metrics-apiserver.{KEDA_NAMESPACE}.svc"
        certs = write_certificates(self.workdir / "keda-certs", [service, f"{service}.cluster.local", "localhost", "127.0.0.1"])
        self.keda_ports = {name: free_port() for name in ("grpc", "adapter", "metrics", "probe", "adapter-metrics",
                                                          "pprof", "webhooks", "webhooks-metrics", "webhooks-probe")}
        self.kubectl("create", "namespace", KEDA_NAMESPACE)
        for crd in keda_crds():
            self.kubectl("apply", "--server-side", "-f", str(crd))
        keda_env = {**self.env, "WATCH_NAMESPACE": "", "KEDA_CLUSTER_OBJECT_NAMESPACE": KEDA_NAMESPACE,
                    "POD_NAMESPACE": KEDA_NAMESPACE, "POD_NAME": "keda-operator-e2e", "OPERATOR_NAME": "keda-operator",
                    "KEDA_HTTP_DEFAULT_TIMEOUT": "3000"}
        cert_dir = str(certs["ca.crt"].parent)
        self._spawn("keda-operator", [
            str(self.bins["keda-operator"]), "--kubeconfig", str(self.kubeconfig),
            f"--metrics-bind-address=127.0.0.1:{self.keda_ports['metrics']}",
            f"--health-probe-bind-address=127.0.0.1:{self.keda_ports['probe']}",
            f"--metrics-service-bind-address=127.0.0.1:{self.keda_ports['grpc']}",
            f"--cert-dir={cert_dir}", "--enable-cert-rotation=false", "--enable-webhook-patching=false",
            "--enable-apiservice-patching=false", "--zap-log-level=info",
            f"--profiling-bind-address=127.0.0.1:{self.keda_ports['pprof']}",
        ], keda_env)
        self._spawn("keda-adapter", [
            str(self.bins["keda-adapter"]), "--kubeconfig", str(self.kubeconfig),
            "--lister-kubeconfig", str(self.kubeconfig),
            "--authentication-kubeconfig", str(self.kubeconfig), "--authorization-kubeconfig", str(self.kubeconfig),
            f"--secure-port={self.keda_ports['adapter']}", "--bind-address=127.0.0.1",
            f"--tls-cert-file={certs['tls.crt']}", f"--tls-private-key-file={certs['tls.key']}",
            f"--cert-dir={cert_dir}", f"--port={self.keda_ports['adapter-metrics']}",
            f"--metrics-service-address=localhost:{self.keda_ports['grpc']}",
        ], keda_env)
        # KEDA's admission webhooks, as KEDA's chart installs them: every ScaledObject is judged.
        self._spawn("keda-webhooks", [
            str(self.bins["keda-webhooks"]), "--kubeconfig", str(self.kubeconfig),
            f"--port={self.keda_ports['webhooks']}", f"--cert-dir={cert_dir}",
            f"--metrics-bind-address=127.0.0.1:{self.keda_ports['webhooks-metrics']}",
            f"--health-probe-bind-address=127.0.0.1:{self.keda_ports['webhooks-probe']}", "--zap-log-level=info",
        ], keda_env)
        ca_bundle = base64.b64encode(certs["ca.crt"].read_bytes()).decode()
        self._wait(lambda: self._listening(self.keda_ports["webhooks"]), 120, "KEDA admission webhooks")
        self.apply(keda_webhook_configuration(self.keda_ports["webhooks"], ca_bundle))
        self._serve_api("external.metrics.k8s.io", "keda-metrics-apiserver", KEDA_NAMESPACE, self.keda_ports["adapter"],
                        ca_bundle, KEDA_PROCESSES)

    def _serve_api(self, group: str, service: str, namespace: str, port: int, ca_bundle: str,
                   processes: tuple[str, ...]) -> None:
        """``v1beta1.<group>`` served by a host process on ``port`` behind the aggregator, through an
        ExternalName Service ``service`` to ``localhost``; waits until it is Available (180 s), failing
        at once if one of ``processes`` exited."""
        self.apply(
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": service, "namespace": namespace},
             "spec": {"type": "ExternalName", "externalName": "localhost",
                      "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}},
            {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService", "metadata": {"name": f"v1beta1.{group}"},
             "spec": {"group": group, "version": "v1beta1", "groupPriorityMinimum": 100, "versionPriority": 100,
                      "caBundle": ca_bundle, "service": {"name": service, "namespace": namespace, "port": port}}},
        )

        def available() -> bool:
            self.alive(*processes)
            done = self.kubectl("get", "apiservice", f"v1beta1.{group}", "-o", "json", check=False)
            conditions = json.loads(done.stdout).get("status", {}).get("conditions", []) if done.returncode == 0 else []
            return any(c["type"] == "Available" and c["status"] == "True" for c in conditions)

        self._wait(available, 180, f"{' and '.join(processes)} behind the aggregator (v1beta1.{group})")

    def _listening(self, port: int) -> bool:
        import socket

        self.keda_alive()
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return True
        except OSError:
            return False

    def keda_alive(self) -> None:
        """Raises RuntimeError naming a KEDA process that exited (see :meth:`alive`)."""
        self.alive(*KEDA_PROCESSES)

    def alive(self, *names: str) -> None:
        """Raises RuntimeError naming a process of ``names`` that exited, with its exit code and the end
        of its log (CI keeps only the test output, not the workdir)."""
        for name in names:
            code = self.procs[name].poll()
            if code is not None:
                log = self.workdir / f"{name}.log"
                tail = log.read_text(errors="replace").splitlines()[-15:] if log.exists() else []
                raise RuntimeError(f"{name} exited with {code}; the end of {log}:\n" + "\n".join(tail))

    # -- resource metrics ---------------------------------------------------------------------
    def start_metrics_server(self, node: str, resolution_seconds: int = 10) -> None:
        """metrics-server on the host, behind the aggregator as ``v1beta1.metrics.k8s.io``, scraping
        the kubelet of ``node`` (a Node's name; KWOK's fake nodes have none) every
        ``resolution_seconds`` (metrics-server's least: 10 s). What a CPU- or memory-utilisation HPA and
        KEDA's ``cpu`` and ``memory`` triggers read. The kubelet's serving certificate is self-signed:
        ``--kubelet-insecure-tls``, as metrics-server's own docs say for kind and minikube."""
        service = "metrics-server.kube-system.svc"
        certs = write_certificates(self.workdir / "metrics-server-certs", [service, "localhost", "127.0.0.1"])
        self.metrics_server_port = port = free_port()
        self._spawn("metrics-server", [
            str(self.bins["metrics-server"]), "--kubeconfig", str(self.kubeconfig),
            "--authentication-kubeconfig", str(self.kubeconfig), "--authorization-kubeconfig", str(self.kubeconfig),
            f"--secure-port={port}", "--bind-address=127.0.0.1",
            f"--tls-cert-file={certs['tls.crt']}", f"--tls-private-key-file={certs['tls.key']}",
            "--kubelet-insecure-tls", "--kubelet-preferred-address-types=InternalIP",
            "--kubelet-use-node-status-port", f"--node-selector=kubernetes.io/hostname={node}",
            # metrics-server refuses a resolution not above the kubelet request timeout (10 s by default).
            f"--metric-resolution={resolution_seconds}s", f"--kubelet-request-timeout={resolution_seconds // 2}s",
        ])
        self._serve_api("metrics.k8s.io", "metrics-server", "kube-system", port,
                        base64.b64encode(certs["ca.crt"].read_bytes()).decode(), ("metrics-server",))
        # Its first node metrics come after two scrapes (a rate needs two samples).
        self._wait(lambda: self.kubectl("top", "node", node, check=False).returncode == 0,
                   4 * resolution_seconds + 60, f"metrics of node {node}")

    # -- teardown ---------------------------------------------------------------------------
    def stop(self) -> None:
        """APIServices first (the aggregator stops calling them), then KEDA and metrics-server, then the cluster."""
        if self.kubeconfig.exists():
            for api in ("v1beta1.external.metrics.k8s.io", "v1beta1.metrics.k8s.io"):
                self.kubectl("delete", "apiservice", api, "--ignore-not-found", "--wait=false", check=False)
            self.kubectl("delete", "validatingwebhookconfiguration", "keda-admission", "--ignore-not-found",
                         "--wait=false", check=False)
        for name in ("metrics-server", "keda-webhooks", "keda-adapter", "keda-operator"):
            terminate(self.procs.pop(name, None))
        self._delete_cluster()

    def _delete_cluster(self) -> None:
        subprocess.run([str(self.bins["kwokctl"]), "delete", "cluster", "--name", CLUSTER_NAME],
                       env=self.env, capture_output=True, text=True, timeout=120)
        shutil.rmtree(self.workdir / "kwok", ignore_errors=True)
