"""The Redis schema: the name of every key the runtime reads or writes, and nothing else.

Every name is built the same way: ``prefix`` is kombu's ``global_keyprefix`` (the
``broker_transport_options`` key; empty by default, :attr:`celery_autoscale.Settings.key_prefix`),
prepended to every key, as kombu prepends it to its own. The chart's KEDA triggers name the same
keys (``templates/_redis.tpl``); a test renders the chart and compares.

kombu's own keys, read here, never written:

- a queue's waiting messages: one list per priority step, :func:`priority_lists`;
- its hash of unacknowledged messages, ``unacked`` (kombu's ``unacked_key``).

The runtime's own keys, all under :data:`PREFIX`:

======================================  ============  =================================================
name                                    type          what it holds
======================================  ============  =================================================
``celery-autoscale:in-flight:<q>``      sorted set    running tasks of queue ``q`` (score: start)
``celery-autoscale:in-flight-owner:<q>`` hash         task id -> ``{"worker", "deadline"}`` (JSON)
``celery-autoscale:scheduled:<q>``      sorted set    tasks a worker holds until their ETA (score: receipt)
``celery-autoscale:run:<task id>``      string        ``"<started>,<finished>"`` of a finished run
``celery-autoscale:stats:<q>``          hash          ``runs``, ``run_seconds`` (counters), ``start_seconds``
``celery-autoscale:lease:<worker>``     string        renewed by a live worker's main process (expires)
``celery-autoscale:dead-letter``        list          tasks that failed for good, newest first (JSON)
``celery-autoscale:parked``             hash          task id -> kombu's ``[payload, exchange, routing_key]``
``celery-autoscale:parked-eta``         sorted set    task id -> ETA of a parked message
``celery-autoscale:roundtrip``          hash          queue -> the last round trip's result (JSON)
``celery-autoscale:roundtrip:<token>``  list          answers to one round trip (kept 10 minutes)
``celery-autoscale:beat:``              prefix        RedBeat's schedule state and lock
======================================  ============  =================================================

Release 0.2 named the scheduled set ``celery-autoscale:reserved:<q>`` (:func:`legacy_scheduled_key`);
:func:`celery_autoscale.prune` moves what workers of 0.2 still write there into the new set
during an upgrade. It goes in the next release.
"""

from __future__ import annotations

__all__ = ["binding_key", "PREFIX", "backlog_keys", "beat_prefix", "dead_letter_key", "in_flight_key", "lease_key", "legacy_scheduled_key",
           "owners_key", "parked_eta_key", "parked_key", "priority_lists", "roundtrip_reply_key",
           "roundtrip_results_key", "run_record_key", "scheduled_key", "stats_key", "unacked_key"]

#: The first part of every key the runtime writes (after kombu's ``global_keyprefix``).
PREFIX = "celery-autoscale"


def priority_lists(queue: str, steps: tuple[int, ...], separator: str, prefix: str = "") -> list[str]:
    """The lists of ``queue``'s waiting messages, step 0 first, as kombu names them.

    Step 0 is the queue name itself, every other step ``<queue><separator><step>``
    (kombu ``redis.Channel._q_for_pri``): with kombu's defaults (``sep`` ``"\\x06\\x16"``, steps
    ``[0, 3, 6, 9]``) ``emails``, ``emails\\x06\\x163``, ``emails\\x06\\x166``, ``emails\\x06\\x169``.
    """
    return [f"{prefix}{queue}" if step == 0 else f"{prefix}{queue}{separator}{step}" for step in steps]


def unacked_key(name: str = "unacked", prefix: str = "") -> str:
    """kombu's hash of unacknowledged messages (its ``unacked_key`` transport option is ``name``)."""
    return f"{prefix}{name}"


def binding_key(exchange: str, prefix: str = "") -> str:
    """kombu's set of ``exchange``'s bindings (``Channel.keyprefix_queue``); each member is
    ``<routing key><sep><pattern><sep><queue>``: every queue a producer or worker declared."""
    return f"{prefix}_kombu.binding.{exchange}"


def in_flight_key(queue: str, prefix: str = "") -> str:
    """The sorted set of ``queue``'s running tasks (member: task id; score: start, Unix seconds)."""
    return f"{prefix}{PREFIX}:in-flight:{queue}"


def owners_key(queue: str, prefix: str = "") -> str:
    """The hash of ``queue``'s running tasks: task id -> ``{"worker", "deadline"}`` (JSON)."""
    return f"{prefix}{PREFIX}:in-flight-owner:{queue}"


def scheduled_key(queue: str, prefix: str = "") -> str:
    """The sorted set of ``queue``'s tasks held for their ETA (member: task id; score: receipt)."""
    return f"{prefix}{PREFIX}:scheduled:{queue}"


def legacy_scheduled_key(queue: str, prefix: str = "") -> str:
    """Release 0.2's name of :func:`scheduled_key`, read only while upgrading."""
    return f"{prefix}{PREFIX}:reserved:{queue}"


def run_record_key(task_id: str, prefix: str = "") -> str:
    """The string ``"<started>,<finished>"`` (Unix seconds) kept for a finished task."""
    return f"{prefix}{PREFIX}:run:{task_id}"


def stats_key(queue: str, prefix: str = "") -> str:
    """The hash of ``queue``'s run counters, for sizing to a wait target: ``runs`` (runs ended),
    ``run_seconds`` (their total run time, seconds) and ``start_seconds`` (the last worker's start),
    which the workers write; ``average_run_seconds``, ``average_arrival_rate`` (tasks/s) and
    ``averaged_at`` (Unix seconds), the reconciler's moving averages, kept across its restarts."""
    return f"{prefix}{PREFIX}:stats:{queue}"


def lease_key(worker: str, prefix: str = "") -> str:
    """The string a live worker (its node name, ``queue@pod``) renews; it expires when the worker dies."""
    return f"{prefix}{PREFIX}:lease:{worker}"


def dead_letter_key(prefix: str = "") -> str:
    """The list of tasks that failed for good, newest first (one JSON object each)."""
    return f"{prefix}{PREFIX}:dead-letter"


def parked_key(prefix: str = "") -> str:
    """The hash of parked far-future ETA messages: task id -> ``[payload, exchange, routing_key]``."""
    return f"{prefix}{PREFIX}:parked"


def parked_eta_key(prefix: str = "") -> str:
    """The sorted set of parked messages' ETAs: task id -> ETA (Unix seconds)."""
    return f"{prefix}{PREFIX}:parked-eta"


def roundtrip_results_key(prefix: str = "") -> str:
    """The hash of each queue's last round-trip result: queue -> JSON object."""
    return f"{prefix}{PREFIX}:roundtrip"


def roundtrip_reply_key(token: str, prefix: str = "") -> str:
    """The list the round-trip task's answers for one run (``token``) are pushed onto."""
    return f"{prefix}{PREFIX}:roundtrip:{token}"


def beat_prefix(prefix: str = "") -> str:
    """RedBeat's ``redbeat_key_prefix``: beat's schedule state and lock live under it."""
    return f"{prefix}{PREFIX}:beat:"


def backlog_keys(queue: str, steps: tuple[int, ...], separator: str, prefix: str = "") -> list[str]:
    """Every key whose size counts towards ``queue``'s backlog, as KEDA's triggers name them:
    the priority lists (``LLEN``), the in-flight and the scheduled sets (``ZCARD``)."""
    return [*priority_lists(queue, steps, separator, prefix), in_flight_key(queue, prefix),
            scheduled_key(queue, prefix)]
