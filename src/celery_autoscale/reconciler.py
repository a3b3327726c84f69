"""The reconciler: one always-on process that gives dead workers' tasks back to their queues.

    python -m celery_autoscale.reconciler [--app MODULE:ATTR] [--interval 10] [--margin 30]
                                          [--heartbeat-file /tmp/celery-heartbeat] [--once]
                                          [--deletion-cost-selector SELECTOR [--namespace NS]]
                                          [--metrics-port 9809 --queues Q,...]

Each round (every ``--interval`` seconds) restores, without any worker of the queue running:
messages unacknowledged for longer than the visibility timeout (kombu's ``restore_visible``),
and sooner, the message of a task past its hard time limit plus ``--margin`` seconds whose
worker does not answer Celery's ``ping`` (see :mod:`celery_autoscale._reconcile`). It touches
the heartbeat file after each round, for ``python -m celery_autoscale.health``. With
``--deletion-cost-selector`` it also keeps each matching worker pod's
``controller.kubernetes.io/pod-deletion-cost`` equal to the tasks it runs, so a scale-down
removes idle workers first (:mod:`celery_autoscale._deletion_cost`; needs the ``kubernetes``
extra and RBAC to get, list and patch pods). With ``--metrics-port`` it serves Prometheus
``/metrics`` that exist while a queue has no worker: the backlog of each of ``--queues``, the
parked and dead-letter counts and the canary's results (:mod:`celery_autoscale._metrics`),
read from Redis at scrape time. Errors talking
to Redis are logged and retried next round. Exit status (``--once``): 0 done, 2 bad input,
3 the broker cannot be reached.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time

from ._cli import EXIT_BAD_INPUT, EXIT_BROKER, Parser, add_app_option, app_from, error, queue_names


def seconds(text: str) -> float:
    """argparse type: a positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m celery_autoscale.reconciler",
               description="Give dead workers' unacknowledged tasks back to their queues, with no worker running.",
               epilog="Exit status (--once): 0 done, 2 bad input, 3 broker unreachable.")
    add_app_option(p)
    p.add_argument("--interval", type=seconds, default=10.0, metavar="SECONDS",
                   help="seconds between rounds (default 10)")
    p.add_argument("--margin", type=seconds, default=30.0, metavar="SECONDS",
                   help="seconds past a task's hard time limit before its worker is pinged (default 30)")
    p.add_argument("--ping-timeout", type=seconds, default=1.0, metavar="SECONDS",
                   help="seconds to wait for workers' ping replies (default 1)")
    p.add_argument("--heartbeat-file", default=None, metavar="PATH",
                   help="touched after each round (default: CELERY_HEARTBEAT_FILE, /tmp/celery-heartbeat)")
    p.add_argument("--once", action="store_true", help="run one round, print it as JSON, and exit")
    p.add_argument("--deletion-cost-selector", metavar="SELECTOR", default=None,
                   help="label selector of the worker pods whose pod-deletion-cost follows their running tasks "
                        "(default: off)")
    p.add_argument("--namespace", default=None,
                   help="namespace of those pods (default: POD_NAMESPACE, else the service account's)")
    p.add_argument("--deletion-cost-min-interval", type=seconds, default=5.0, metavar="SECONDS",
                   help="seconds between two patches of one pod (default 5)")
    p.add_argument("--metrics-port", type=port, default=0, metavar="PORT",
                   help="serve Prometheus /metrics on this port, all interfaces (default 0: off)")
    p.add_argument("--queues", default="", metavar="Q,...",
                   help="comma-separated Celery queue names whose backlog the metrics report (default: none)")
    return p


def port(text: str) -> int:
    """argparse type: a TCP port, 0 to 65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port from 0 to 65535, got {value}")
    return value


def _deletion_cost(args):
    """The :class:`~celery_autoscale._deletion_cost.DeletionCost` of the options, or None."""
    if not args.deletion_cost_selector:
        return None
    from ._deletion_cost import DeletionCost, kubernetes_api

    namespace = args.namespace or os.environ.get("POD_NAMESPACE")
    if not namespace:
        path = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
        namespace = open(path).read().strip() if os.path.exists(path) else "default"
    return DeletionCost(kubernetes_api(), namespace, args.deletion_cost_selector, args.deletion_cost_min_interval)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    import json

    from ._backlog import connect
    from ._deletion_cost import busy_by_pod
    from ._health import touch
    from ._loader import AppLoadError
    from ._reconcile import reconcile
    from ._settings import ConfigError, redact, settings_of

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        app = app_from(args)
        settings = settings_of(app)
    except (AppLoadError, ConfigError) as exc:
        return error(exc, EXIT_BAD_INPUT)
    heartbeat = args.heartbeat_file or os.environ.get("CELERY_HEARTBEAT_FILE") or "/tmp/celery-heartbeat"
    log = logging.getLogger("celery_autoscale.reconciler")
    try:
        costs = _deletion_cost(args)
    except Exception as exc:  # no kubernetes package, no credentials
        return error(f"cannot reach the Kubernetes API for --deletion-cost-selector: {type(exc).__name__}: {exc}",
                     EXIT_BAD_INPUT)
    client = connect(settings)
    if args.metrics_port:
        from ._metrics import BacklogCollector, BrokerCollector, serve

        try:
            serve(args.metrics_port, BacklogCollector(settings, queue_names(args.queues), client),
                  BrokerCollector(settings, client))
        except OSError as exc:
            return error(f"--metrics-port {args.metrics_port}: {exc.strerror or exc}", EXIT_BAD_INPUT)
    while True:
        try:
            with app.connection_for_write() as connection:
                done = reconcile(app, connection, client, margin=args.margin, ping_timeout=args.ping_timeout)
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
        time.sleep(args.interval)


if __name__ == "__main__":
    sys.exit(main())
