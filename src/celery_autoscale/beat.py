"""Celery beat for an app with the runtime: one scheduler, its state in Redis.

    python -m celery_autoscale.beat [--app MODULE:ATTR] [--schedule FILE.json] [--max-interval 5]

Runs Celery's beat with RedBeat's scheduler (``redbeat.RedBeatScheduler``, the
``celery-redbeat`` package: the ``beat`` extra). Each entry's last run time lives in Redis
beside the queues, so a restarted beat neither forgets nor repeats a run, and RedBeat's lock
(held while beat runs, released on a clean stop, expiring after 5 × ``--max-interval`` seconds
after a crash) lets a second beat only wait: two schedulers never fire at once.

The schedule is the app's own ``beat_schedule`` plus ``--schedule``, a JSON object (the
chart's ``beat.schedule``; an entry of the same name replaces the app's)::

    {"cleanup": {"task": "myproject.tasks.cleanup", "schedule": 300},
     "report":  {"task": "myproject.tasks.report", "schedule": "0 6 * * 1-5",
                 "args": [1], "kwargs": {}, "queue": "reports.daily"}}

``schedule`` is seconds (a number) or a 5-field cron expression (Celery's ``crontab``, in the
app's ``timezone``); ``options`` are Celery's ``apply_async`` options (``priority``, ``expires``, ...).
Exit status: 2 bad input (one line), 3 the broker refused the password, else beat's own.

Beat survives a Redis restart or failover as the workers do (:class:`Scheduler`, RedBeat's with
three changes): a tick that cannot reach Redis sends nothing, logs one line per outage and tries
again within a second; a lock that expired or was taken meanwhile is waited for, not assumed,
so two schedulers never fire at once; and a schedule that a Redis without persistence lost is
written again from the app and ``--schedule``.
"""

from __future__ import annotations

import json
import logging
import math
import sys

from . import keys
from ._loader import AppLoadError, load_app
from ._redis import BrokerRefused, check_credentials, connect
from ._settings import ConfigError, settings_of
from .cli import EXIT_BAD_INPUT, EXIT_BROKER, Parser, add_app_option, error, positive_seconds

__all__ = ["SCHEDULER", "entries", "main"]

#: Celery's ``--scheduler`` for :class:`Scheduler`.
SCHEDULER = "celery_autoscale.beat:Scheduler"

KEYS = {"task", "schedule", "args", "kwargs", "queue", "options"}
#: Celery's log levels (``celery beat --loglevel``).
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", "FATAL")

logger = logging.getLogger(__name__)


def _redbeat_scheduler():
    """RedBeat's scheduler class (the ``beat`` extra), imported when beat runs."""
    from redbeat import RedBeatScheduler

    return RedBeatScheduler


def __getattr__(name: str):  # PEP 562: Celery imports "celery_autoscale.beat:Scheduler" only when beat runs
    if name != "Scheduler":
        raise AttributeError(name)
    globals()["Scheduler"] = scheduler = _make_scheduler(_redbeat_scheduler())
    return scheduler


def _make_scheduler(base):
    import redis

    class Scheduler(base):
        """RedBeat's scheduler, surviving a Redis restart (see the module docs)."""

        _outage = False  # a tick failed to reach Redis and has not succeeded since
        _lost_lock = False  # our lock expired or was taken: wait until we hold it again

        def tick(self, *args, **kwargs):
            try:
                if self._lost_lock and not self._reacquire():
                    return self.max_interval
                if self.app.redbeat_conf.schedule and not redis_client(self.app).exists(
                        self.app.redbeat_conf.schedule_key):
                    self.setup_schedule()  # a Redis without persistence came back empty
                next_tick = super().tick(*args, **kwargs)
            except redis.exceptions.LockError:
                logger.warning("beat: lost its lock while Redis was away; sending nothing until it holds it again")
                self._lost_lock = True
                return self.max_interval
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                if not self._outage:
                    logger.warning("beat: Redis unreachable (%s); sending nothing until it is back", type(exc).__name__)
                self._outage = True
                return min(1.0, self.max_interval)
            if self._outage:
                logger.warning("beat: Redis is back")
                self._outage = False
            return next_tick

        def _reacquire(self) -> bool:
            if self.lock is None or not self.lock.acquire(blocking=False):
                return False
            logger.warning("beat: holds its lock again")
            self._lost_lock = False
            return True

        def close(self):
            try:
                super().close()
            except (redis.ConnectionError, redis.TimeoutError, redis.exceptions.LockError, OSError):
                logger.warning("beat: could not release its lock (Redis unreachable); it expires by itself")

    return Scheduler


def redis_client(app):
    """RedBeat's Redis client of ``app`` (ours: :func:`main` sets it)."""
    from redbeat.schedulers import get_redis

    return get_redis(app)


def _schedule(name: str, value):
    from celery.schedules import crontab

    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name}: schedule must be a positive number of seconds, got {value}")
        return float(value)
    if isinstance(value, str) and len(value.split()) == 5:
        minute, hour, day_of_month, month_of_year, day_of_week = value.split()
        try:
            return crontab(minute=minute, hour=hour, day_of_month=day_of_month, month_of_year=month_of_year,
                           day_of_week=day_of_week)
        except ValueError as exc:
            raise ValueError(f"{name}: bad cron expression {value!r}: {exc}") from None
    raise ValueError(f"{name}: schedule must be seconds or a 5-field cron expression, got {value!r}")


def _options(name: str, raw) -> dict:
    """An entry's ``options`` (Celery's ``apply_async`` options): an object; ``queue`` and
    ``routing_key`` non-empty text, ``priority`` a whole number 0-255, ``expires`` and ``countdown``
    seconds (positive, finite)."""
    if not isinstance(raw, dict):
        raise ValueError(f"{name}: options must be an object of apply_async options")
    for key in ("queue", "routing_key", "exchange"):
        if key in raw and not (isinstance(raw[key], str) and raw[key].strip()):
            raise ValueError(f"{name}: options.{key} must be a non-empty name")
    if "priority" in raw and not (type(raw["priority"]) is int and 0 <= raw["priority"] <= 255):
        raise ValueError(f"{name}: options.priority must be a whole number from 0 to 255")
    for key in ("expires", "countdown"):
        value = raw.get(key)
        if key in raw and not (type(value) in (int, float) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name}: options.{key} must be a positive number of seconds")
    return dict(raw)


def entries(raw) -> dict[str, dict]:
    """Celery ``beat_schedule`` entries from the ``--schedule`` JSON object.

    Raises:
        ValueError: one line naming the entry and what is wrong.
    """
    if not isinstance(raw, dict):
        raise ValueError("the schedule must be a JSON object of entries")
    out = {}
    for name, entry in raw.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("task"), str) or not entry["task"].strip() \
                or "schedule" not in entry:
            raise ValueError(f"{name}: an entry needs a task name and a schedule")
        if unknown := set(entry) - KEYS:
            raise ValueError(f"{name}: unknown keys {sorted(unknown)}")
        if not isinstance(entry.get("args", []), list) or not isinstance(entry.get("kwargs", {}), dict):
            raise ValueError(f"{name}: args must be a list and kwargs an object")
        options = _options(name, entry.get("options", {}))
        if "queue" in entry:
            if not (isinstance(entry["queue"], str) and entry["queue"].strip()):
                raise ValueError(f"{name}: queue must be a non-empty name")
            options["queue"] = entry["queue"]
        out[name] = {"task": entry["task"], "schedule": _schedule(name, entry["schedule"]),
                     "args": tuple(entry.get("args", [])), "kwargs": entry.get("kwargs", {}), "options": options}
    return out


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="python -m celery_autoscale.beat", description=__doc__.split("\n\n")[0],
               epilog="Exit status: 2 bad input, 3 the broker refused the password, else Celery beat's.")
    add_app_option(p)
    p.add_argument("--schedule", metavar="FILE.json", default=None,
                   help="more schedule entries, a JSON object (see the module docs)")
    p.add_argument("--max-interval", type=positive_seconds, default=5.0, metavar="SECONDS",
                   help="most seconds between two looks at the schedule; the lock expires after 5 times it (default 5)")
    p.add_argument("--loglevel", default="INFO", type=str.upper, choices=LOG_LEVELS,
                   help=f"beat's log level, one of {', '.join(LOG_LEVELS)} (default INFO)")
    args = p.parse_args(argv)
    try:
        import redbeat  # noqa: F401
    except ImportError:
        return error("Celery beat needs celery-redbeat: pip install 'celery-autoscale[beat]'", EXIT_BAD_INPUT)
    try:
        extra = {}
        if args.schedule:
            with open(args.schedule, encoding="utf-8") as f:
                extra = entries(json.load(f))
        app = load_app(args.app)
        settings = settings_of(app)
    except (OSError, ValueError, AppLoadError, ConfigError) as exc:  # json.JSONDecodeError is a ValueError
        return error(f"{args.schedule}: {exc}" if isinstance(exc, (OSError, json.JSONDecodeError)) else exc,
                     EXIT_BAD_INPUT)
    try:
        check_credentials(settings)
    except BrokerRefused as exc:
        return error(exc, EXIT_BROKER)
    app.conf.beat_schedule = {**(app.conf.beat_schedule or {}), **extra}
    if not app.conf.get("redbeat_key_prefix"):  # an app's own RedBeat keys are kept
        app.conf.redbeat_key_prefix = keys.beat_prefix(settings.key_prefix)
    # RedBeat's own client slot: our client carries the password file, TLS and Sentinel.
    app.conf.setdefault("redbeat_redis_url", settings.broker_url)
    app.conf.setdefault("redbeat_redis_options", {})
    app.redbeat_redis = connect(settings, decode_responses=True)
    app.Beat(scheduler=SCHEDULER, max_interval=args.max_interval, loglevel=args.loglevel).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
