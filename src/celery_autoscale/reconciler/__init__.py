"""The reconciler: one always-on process that gives dead workers' tasks back to their queues.

It runs apart from the workers, so it works while a queue has none:

    python -m celery_autoscale.reconciler [--app MODULE:ATTR] [--interval 10] [--margin 30]
                                          [--heartbeat-file /tmp/celery-heartbeat] [--once]
                                          [--deletion-cost-selector SELECTOR [--namespace NS]]
                                          [--metrics-port 9809 --queues Q,... [--wait-targets Q=SECONDS,...]]

Each round (every ``--interval`` seconds) restores, without any worker of the queue running:
messages unacknowledged for longer than the visibility timeout (kombu's ``restore_visible``),
and sooner, the message of a task past its hard time limit plus ``--margin`` seconds whose
worker does not answer Celery's ``ping`` (:func:`reconcile`, in ``_round``). It touches
the heartbeat file after each round, for ``python -m celery_autoscale.health``. With
``--deletion-cost-selector`` it also keeps each matching worker pod's
``controller.kubernetes.io/pod-deletion-cost`` equal to the tasks it runs, so a scale-down
removes idle workers first (``_deletion_cost``; needs the ``kubernetes``
extra and RBAC to get, list and patch pods). With ``--metrics-port`` it serves Prometheus
``/metrics`` that exist while a queue has no worker: the backlog of each of ``--queues``, the
parked and dead-letter counts and the canary's results (``_metrics``),
read from Redis at scrape time, and with ``--wait-targets`` each such queue's desired processes
(``celery_autoscale_desired_processes``: :mod:`~celery_autoscale.reconciler._sizing`), which the
chart's KEDA ``metrics-api`` trigger reads. Errors talking
to Redis are logged and retried next round. Exit status (``--once``): 0 done, 2 bad input,
3 the broker cannot be reached.
"""

from ._round import Round, reconcile
from ._unpark import unpark_due

__all__ = ["Round", "reconcile", "unpark_due"]
