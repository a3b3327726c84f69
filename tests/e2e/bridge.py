"""Pod bridge (test harness): real Celery workers behind the pods KWOK pretends to run.

KWOK marks pods Running without running anything. For each worker pod it reports Running,
the bridge starts a real process from that pod's own container command, args and env
(ConfigMap ``envFrom``, ``valueFrom`` references, ``$(VAR)`` expansion), with its volumes
(emptyDir, Secret, ConfigMap) as folders on the host. When the pod is deleted the bridge sends
SIGTERM, as the kubelet does, and waits up to the pod's ``terminationGracePeriodSeconds`` before
SIGKILL. So the scaling loop is closed by real workers draining real queues.

Where a host differs from a pod, the bridge translates and says so here:

- a mount path becomes ``<workdir>/<pod>/<volume>``, and env values under a mount path follow it;
- ``%h`` in the args becomes the pod name (a pod's hostname is its name; here all share one host);
- ``CELERY_METRICS_PORT`` and a ``--metrics-port=`` argument become a free port (pods have a
  network namespace each; here they share one), but for a pod behind a Service;
- ``celery`` and ``python`` run with this interpreter, where the package is installed;
- a pod that mounts its service account token (``automountServiceAccountToken: true``) gets a
  token of that service account from the TokenRequest API in a kubeconfig named by
  ``KUBECONFIG`` (a process here cannot read ``/var/run/secrets``), so it acts with exactly that
  account's RBAC, not the test's;
- ``fieldRef`` env values give the pod's ``metadata.namespace`` and ``metadata.name``;
- a mount path inside an argument becomes its folder too; every volume is new with each pod
  (``<workdir>/<pod>-<uid>/<volume>``);
- a pod behind a Service listens on that Service's loopback address (:mod:`services`), which
  ``/etc/hosts`` names as cluster DNS would: the reconciler gets ``CELERY_METRICS_ADDRESS=<address>``;
  any other pod that serves ports behind a Service fails loudly.

The bridge runs only workers and the reconciler of releases with an external Redis. Releases with
the chart's own Redis, Flower and helm test Job run on the real node (:mod:`releases`), and so does
every check of what only a kubelet does (probes, security context, volumes, DNS, preStop hooks).
"""

from __future__ import annotations

import base64
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from kubernetes import client
from loadgen.stack import free_port

from .watching import list_and_watch

logger = logging.getLogger(__name__)
VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


@dataclass
class Running:
    pod: str
    proc: subprocess.Popen
    grace: int
    started: float = field(default_factory=time.time)


class PodBridge:
    """Watch the pods matching ``selector`` in ``namespace`` and mirror them as processes."""

    def __init__(self, api: client.CoreV1Api, namespace: str, selector: str, workdir: Path, services=None):
        self.api, self.namespace, self.selector = api, namespace, selector
        self.services = services  # services.ServiceAddresses, or None: no pod serves behind a Service
        self.exiting: dict[str, subprocess.Popen] = {}  # pod name -> process sent SIGTERM
        self.workdir = Path(workdir)
        self.running: dict[str, Running] = {}  # pod uid -> process
        self.events: list[tuple[float, str, str]] = []  # (time, pod, "started" | "sigterm" | "exited N")
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="pod-bridge")
        self._reapers: list[threading.Thread] = []

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop watching, then stop every process as a pod deletion would."""
        self._stop.set()
        self._thread.join(timeout=15)
        for uid in list(self.running):
            self._terminate(uid)
        for reaper in self._reapers:
            reaper.join()

    def _loop(self) -> None:
        list_and_watch(self.api, self.namespace, self.selector, self._reconcile, self._handle, self._stop,
                       after_round=self._after_round)

    def _after_round(self) -> None:
        self._reap_exited()
        if self.services is not None:  # names for KEDA before any pod of a new Service runs
            try:
                self.services.refresh()
            except Exception:
                logger.exception("could not refresh the Service names")

    def _reconcile(self, pods: list[client.V1Pod]) -> None:
        """Every listed pod handled; the process of a pod no longer listed stopped (without it, a
        scale-down between two watches left a process running for good)."""
        for pod in pods:
            self._handle("ADDED", pod)
        present = {pod.metadata.uid for pod in pods}
        for uid in [uid for uid in list(self.running) if uid not in present]:
            self._terminate(uid)

    def _handle(self, kind: str, pod: client.V1Pod) -> None:
        uid = pod.metadata.uid
        if kind == "DELETED" or pod.metadata.deletion_timestamp is not None:
            if uid in self.running:
                self._terminate(uid)
        elif pod.status.phase == "Running" and uid not in self.running:
            self._launch(pod)

    # -- one pod ------------------------------------------------------------------------------
    def _launch(self, pod: client.V1Pod) -> None:
        name = pod.metadata.name
        home = self.workdir / f"{name}-{pod.metadata.uid[:8]}"
        mounts = self._materialize_volumes(pod, home)
        container = pod.spec.containers[0]
        env = self._container_env(container, pod)
        for key, value in env.items():
            for mount_path, local in sorted(mounts.items(), key=lambda m: -len(m[0])):
                if value == mount_path or value.startswith(mount_path.rstrip("/") + "/"):
                    env[key] = str(local) + value[len(mount_path.rstrip("/")):]
                    break
        if pod.spec.automount_service_account_token:  # after the mount paths: a host path of its own
            env["KUBECONFIG"] = str(self._service_account_kubeconfig(pod, home))
        if "CELERY_METRICS_PORT" in env and env["CELERY_METRICS_PORT"] != "0":
            env["CELERY_METRICS_PORT"] = str(free_port())
        argv = [a.replace("%h", name) for a in [*(container.command or []), *(container.args or [])]]
        argv = self._localize(argv, env, mounts)
        address = self.services.for_pod(pod) if self.services else None
        if address:
            argv = self._bind(pod, argv, address, env)
        else:
            argv = [f"--metrics-port={free_port()}" if a.startswith("--metrics-port=") and a != "--metrics-port=0"
                    else a for a in argv]
        if argv and argv[0] == "celery":
            argv = [sys.executable, "-m", "celery", *argv[1:]]
        elif argv and argv[0] == "python":
            argv = [sys.executable, *argv[1:]]
        process_env = {"PATH": os.environ.get("PATH", ""), "PYTHONUNBUFFERED": "1", **env}
        log = open(home / "container.log", "ab")
        proc = subprocess.Popen(argv, env=process_env, cwd=home, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        log.close()
        with self._lock:
            self.running[pod.metadata.uid] = Running(name, proc, pod.spec.termination_grace_period_seconds or 30)
            self.events.append((time.time(), name, "started"))
        logger.info("pod %s: started pid %d: %s", name, proc.pid, " ".join(argv))

    @classmethod
    def _localize(cls, argv: list[str], env: dict[str, str], mounts: dict[str, Path]) -> list[str]:
        """``argv`` as it runs here: ``$(VAR)`` from the container's ``env``, mount paths as their folders."""
        return [cls._host_paths(VAR.sub(lambda m: env.get(m.group(1), m.group(0)), a), mounts) for a in argv]

    @staticmethod
    def _host_paths(arg: str, mounts: dict[str, Path]) -> str:
        """``arg`` with each mount path in it (a word of a script) replaced by its folder."""
        if not mounts:
            return arg
        # One pass, longest path first: a folder put in must not be translated again.
        paths = {m.rstrip("/"): str(local) for m, local in mounts.items()}
        pattern = "|".join(re.escape(p) for p in sorted(paths, key=len, reverse=True))
        return re.sub(r"(?<![\w./-])(" + pattern + r")(?=[/\s\"')]|$)", lambda m: paths[m.group(1)], arg)

    @staticmethod
    def _bind(pod: client.V1Pod, argv: list[str], address: str, env: dict[str, str]) -> list[str]:
        """``argv`` (and ``env``) listening on ``address``, the pod's Service address (see the module docs)."""
        if "celery_autoscale.reconciler" in argv:  # its /metrics, on the Service's port
            env["CELERY_METRICS_ADDRESS"] = address
            return argv
        raise ValueError(f"the bridge cannot make pod {pod.metadata.name} listen on its Service address: {argv}")

    def _materialize_volumes(self, pod: client.V1Pod, home: Path) -> dict[str, Path]:
        """Each volume as a folder under ``home``; returns ``{mountPath: folder}``."""
        home.mkdir(parents=True, exist_ok=True)
        folders: dict[str, Path] = {}
        for volume in pod.spec.volumes or []:
            if volume.persistent_volume_claim is not None:
                raise ValueError(f"the bridge runs no pod with a claim ({pod.metadata.name}): place it on the real node")
            folder = home / volume.name
            folder.mkdir(parents=True, exist_ok=True)
            if volume.secret is not None:
                data = self.api.read_namespaced_secret(volume.secret.secret_name, self.namespace).data or {}
                self._write_items(folder, {k: base64.b64decode(v) for k, v in data.items()}, volume.secret.items)
            elif volume.config_map is not None:
                data = self.api.read_namespaced_config_map(volume.config_map.name, self.namespace).data or {}
                self._write_items(folder, {k: v.encode() for k, v in data.items()}, volume.config_map.items)
            folders[volume.name] = folder
        return {m.mount_path: folders[m.name] for m in pod.spec.containers[0].volume_mounts or []}

    @staticmethod
    def _write_items(folder: Path, data: dict[str, bytes], items) -> None:
        paths = {item.key: item.path for item in items} if items else {key: key for key in data}
        for key, path in paths.items():
            (folder / path).write_bytes(data[key])
            (folder / path).chmod(0o400)

    def _service_account_kubeconfig(self, pod: client.V1Pod, home: Path) -> Path:
        """A kubeconfig with a fresh token of the pod's service account (TokenRequest, 1 h)."""
        import yaml

        account = pod.spec.service_account_name or "default"
        request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[],
                                                                                       expiration_seconds=3600))
        token = self.api.create_namespaced_service_account_token(account, self.namespace, request).status.token
        conf = self.api.api_client.configuration
        cluster = {"server": conf.host}
        if conf.ssl_ca_cert:
            cluster["certificate-authority"] = conf.ssl_ca_cert
        path = home / "kubeconfig"
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "pod",
            "clusters": [{"name": "cluster", "cluster": cluster}],
            "users": [{"name": account, "user": {"token": token}}],
            "contexts": [{"name": "pod", "context": {"cluster": "cluster", "user": account,
                                                     "namespace": self.namespace}}]}))
        path.chmod(0o600)
        return path

    def _container_env(self, container: client.V1Container, pod: client.V1Pod) -> dict[str, str]:
        env: dict[str, str] = {}
        for source in container.env_from or []:
            if source.config_map_ref is not None:
                env.update(self.api.read_namespaced_config_map(source.config_map_ref.name, self.namespace).data or {})
        for item in container.env or []:
            if item.value is not None:
                env[item.name] = VAR.sub(lambda m: env.get(m.group(1), m.group(0)), item.value)
            elif item.value_from and item.value_from.secret_key_ref:
                ref = item.value_from.secret_key_ref
                secret = self.api.read_namespaced_secret(ref.name, self.namespace)
                env[item.name] = base64.b64decode(secret.data[ref.key]).decode()
            elif item.value_from and item.value_from.field_ref:
                path = item.value_from.field_ref.field_path
                fields = {"metadata.namespace": pod.metadata.namespace, "metadata.name": pod.metadata.name}
                if path not in fields:
                    raise ValueError(f"the bridge cannot give fieldRef {path} to pod {pod.metadata.name}")
                env[item.name] = fields[path]
            elif item.value_from and item.value_from.config_map_key_ref:
                ref = item.value_from.config_map_key_ref
                env[item.name] = self.api.read_namespaced_config_map(ref.name, self.namespace).data[ref.key]
        return env

    def _terminate(self, uid: str) -> None:
        """SIGTERM now; SIGKILL the process group if it outlives the grace period (the kubelet's way)."""
        with self._lock:
            running = self.running.pop(uid, None)
            if running is None:
                return
            self.events.append((time.time(), running.pod, "sigterm"))
        if running.proc.poll() is None:
            self.exiting[running.pod] = running.proc

        def reap():  # the kubelet's way: SIGTERM, then SIGKILL at the end of the grace period
            deadline = time.monotonic() + running.grace
            if running.proc.poll() is None:
                running.proc.send_signal(signal.SIGTERM)
            try:
                code = running.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(running.proc.pid, signal.SIGKILL)
                code = running.proc.wait()
            with self._lock:
                self.events.append((time.time(), running.pod, f"exited {code}"))

        reaper = threading.Thread(target=reap, daemon=True)
        reaper.start()
        self._reapers.append(reaper)

    def _reap_exited(self) -> None:
        """A process that died on its own is recorded as crashed (a real pod would restart it)."""
        with self._lock:
            for running in self.running.values():
                if running.proc.poll() is not None and not any(
                        e[1] == running.pod and e[2].startswith("crashed") for e in self.events):
                    self.events.append((time.time(), running.pod, f"crashed {running.proc.returncode}"))

    def alive(self, prefix: str) -> tuple[int, int]:
        """Processes of pods named ``prefix*`` alive now: (running, terminating)."""
        with self._lock:
            running = sum(1 for r in self.running.values() if r.pod.startswith(prefix) and r.proc.poll() is None)
            terminating = sum(1 for pod, proc in self.exiting.items() if pod.startswith(prefix) and proc.poll() is None)
        return running, terminating

    def processes(self) -> dict[str, int]:
        """Live processes by pod name."""
        with self._lock:
            return {r.pod: r.proc.pid for r in self.running.values() if r.proc.poll() is None}
