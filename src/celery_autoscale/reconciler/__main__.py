"""``python -m celery_autoscale.reconciler``: its command line (see the package's docs, and ``--help``)."""


from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading

from .._loader import AppLoadError, load_app
from .._metrics import BacklogCollector, serve
from .._redis import BrokerRefused, check_credentials, connect
from .._settings import ConfigError, redact, settings_of
from ..cli import EXIT_BAD_INPUT, EXIT_BROKER, Parser, add_app_option, error, port, positive_seconds, queue_names
from .._files import writable
from ..health import heartbeat_file, touch
from ._deletion_cost import DeletionCost, busy_by_pod, kubernetes_api
from ._metrics import BrokerCollector, SizingCollector
from ._round import reconcile


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m celery_autoscale.reconciler",
               description="Give dead workers' unacknowledged tasks back to their queues, with no worker running.",
               epilog="Exit status: 0 done (--once) or stopped by SIGTERM or SIGINT after its round, 2 bad input, "
                      "3 broker unreachable (--once).")
    add_app_option(p)
    p.add_argument("--interval", type=positive_seconds, default=10.0, metavar="SECONDS",
                   help="seconds between rounds (default 10)")
    p.add_argument("--margin", type=positive_seconds, default=30.0, metavar="SECONDS",
                   help="seconds past a task's hard time limit before its worker is pinged (default 30)")
    p.add_argument("--ping-timeout", type=positive_seconds, default=1.0, metavar="SECONDS",
                   help="seconds to wait for workers' ping replies (default 1)")
    p.add_argument("--heartbeat-file", default=None, metavar="PATH",
                   help="touched after each round (default: CELERY_HEARTBEAT_FILE, /tmp/celery-heartbeat)")
    p.add_argument("--once", action="store_true", help="run one round, print it as JSON, and exit")
    p.add_argument("--deletion-cost-selector", metavar="SELECTOR", default=None,
                   help="label selector of the worker pods whose pod-deletion-cost follows their running tasks "
                        "(default: off)")
    p.add_argument("--namespace", default=None,
                   help="namespace of those pods (default: POD_NAMESPACE, else the service account's)")
    p.add_argument("--deletion-cost-min-interval", type=positive_seconds, default=5.0, metavar="SECONDS",
                   help="seconds between two patches of one pod (default 5)")
    p.add_argument("--metrics-port", type=port, default=0, metavar="PORT",
                   help="serve Prometheus /metrics on this port, at CELERY_METRICS_ADDRESS (default 0.0.0.0) (default 0: off)")
    p.add_argument("--queues", default="", metavar="Q,...",
                   help="comma-separated Celery queue names the release serves: the metrics report their backlog, and "
                        "a queue with waiting tasks that is none of them is logged and reported (default: none)")
    p.add_argument("--wait-targets", type=wait_targets, default={}, metavar="Q=SECONDS,...",
                   help="queue-wait targets, seconds, per Celery queue: /metrics then serves each one's "
                        "celery_autoscale_desired_processes, which the chart's KEDA trigger reads "
                        "(needs --metrics-port) (default: none)")
    return p


def wait_targets(text: str) -> dict[str, float]:
    """``emails=10,reports=60`` as ``{"emails": 10.0, "reports": 60.0}``: each a positive number of seconds."""
    out = {}
    for item in queue_names(text):
        queue, sep, value = item.rpartition("=")  # a queue name may hold "=", never a number
        if not sep or not queue.strip():
            raise argparse.ArgumentTypeError(f"each item must be QUEUE=SECONDS, got {item!r}")
        try:
            out[queue.strip()] = positive_seconds(value.strip())
        except argparse.ArgumentTypeError as exc:
            raise argparse.ArgumentTypeError(f"{item}: {exc}") from None
    return out


def _deletion_cost(args):
    """The :class:`~celery_autoscale.reconciler._deletion_cost.DeletionCost` of the options, or None."""
    if not args.deletion_cost_selector:
        return None

    namespace = args.namespace or os.environ.get("POD_NAMESPACE")
    if not namespace:
        path = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
        namespace = open(path).read().strip() if os.path.exists(path) else "default"
    return DeletionCost(kubernetes_api(), namespace, args.deletion_cost_selector, args.deletion_cost_min_interval)


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.wait_targets and not args.metrics_port:
        p.error("--wait-targets needs --metrics-port: KEDA reads the desired processes from /metrics")

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        app = load_app(args.app)
        settings = settings_of(app)
    except (AppLoadError, ConfigError) as exc:
        return error(exc, EXIT_BAD_INPUT)
    heartbeat = heartbeat_file(args.heartbeat_file)
    if not writable(heartbeat):
        return error(f"--heartbeat-file {heartbeat}: cannot be written (a folder, or its folder is missing or "
                     f"read-only)", EXIT_BAD_INPUT)
    log = logging.getLogger("celery_autoscale.reconciler")
    try:
        costs = _deletion_cost(args)
    except Exception as exc:  # no kubernetes package, no credentials
        return error(f"cannot reach the Kubernetes API for --deletion-cost-selector: {type(exc).__name__}: {exc}",
                     EXIT_BAD_INPUT)
    try:
        check_credentials(settings)
    except BrokerRefused as exc:
        return error(exc, EXIT_BROKER)
    client = connect(settings)
    served = queue_names(args.queues)
    if args.metrics_port:
        try:
            serve(args.metrics_port, BacklogCollector(settings, served, client),
                  BrokerCollector(settings, client, served), SizingCollector(settings, client, args.wait_targets),
                  address=settings.metrics_address)
        except OSError as exc:
            return error(f"--metrics-port {args.metrics_port}: {exc.strerror or exc}", EXIT_BAD_INPUT)
    lost_since: dict[str, float] = {}  # worker -> when its lease was first seen missing (monotonic)
    unserved_before: set[str] = set()
    stopping = _stop_on_signals()
    while True:
        try:
            with app.connection_for_write() as connection:
                done = reconcile(app, connection, client, margin=args.margin, ping_timeout=args.ping_timeout,
                                 lost_since=None if args.once else lost_since, served=served)
            if set(done.unserved) - unserved_before:
                log.warning("tasks wait in queues no worker of this release serves: %s (served: %s); "
                            "name them in the chart's queues, or route the tasks to a served queue",
                            ", ".join(f"{q} ({n})" for q, n in sorted(done.unserved.items())), ", ".join(served))
            unserved_before = set(done.unserved)
            if costs is not None:
                try:
                    done.deletion_costs = costs.update(busy_by_pod(client, done.queues, settings.key_prefix))
                except Exception as exc:  # the API is down: scaling goes on without costs
                    log.warning("could not update pod deletion costs: %s", type(exc).__name__)
        except Exception as exc:  # redis and kombu errors: say which broker, never its password
            message = f"{type(exc).__name__} talking to {redact(settings.broker_url)}"
            if args.once:
                return error(message, EXIT_BROKER)
            log.error("%s; retrying in %.0f s", message, args.interval)
        else:
            touch(heartbeat)
            if args.once:
                print(json.dumps(done.__dict__))
                return 0
        if stopping.wait(args.interval):
            log.info("stopping on a signal, after the round")
            return 0


def _stop_on_signals() -> threading.Event:
    """An event SIGTERM and SIGINT set: the loop ends after its round instead of being killed in one.

    A handler is needed, not Python's default: in a container the reconciler is PID 1, and the
    kernel drops a signal to a PID namespace's init that has no handler for it, so the kubelet's
    SIGTERM would go unheard until its SIGKILL at the end of ``terminationGracePeriodSeconds``
    (30 s by default) (pid_namespaces(7)).
    """
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    return stopping


if __name__ == "__main__":
    sys.exit(main())
