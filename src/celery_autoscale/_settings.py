"""The runtime's settings: ``autoscale_*`` keys of ``app.conf``, and the environment the chart sets.

Two sources, read in this one module:

- ``app.conf`` keys (set them like any Celery setting)::

    autoscale_metrics_port        9808        port of the worker's Prometheus /metrics; 0 turns it off
    autoscale_heartbeat_file      /tmp/celery-heartbeat   touched by the worker's consumer loop
    autoscale_heartbeat_interval  10.0        seconds between touches
    autoscale_max_retries         5           retries of a transient error (DeadLetterTask)
    autoscale_retry_backoff_max   60          cap of the retry backoff, seconds (DeadLetterTask)
    autoscale_run_record_ttl      3600        seconds a task's start/end record is kept (0: none)
    autoscale_stall_seconds       60          the heartbeat stops while tasks wait this long beside idle processes
    autoscale_eta_horizon         0           park tasks whose ETA is further than this many seconds (0: never)
    autoscale_allow_unsafe        False       accept settings that break the no-loss guarantees

- environment variables, which the chart sets and which win over ``app.conf`` so that the
  workers, the KEDA triggers and the grace periods all follow the same values
  (:data:`ENVIRONMENT` lists them with their meaning).

Everything here raises :class:`ConfigError` with a one-line message that never contains a
password.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

__all__ = ["ENVIRONMENT", "ConfigError", "Settings", "check_redis_url", "environ_overrides", "redact", "settings_of"]


class ConfigError(ValueError):
    """A setting is malformed or breaks a guarantee; the message is one line, without secrets."""


#: Environment variables the runtime reads: ``name -> (setting, meaning)``. A setting without
#: a dot is an ``app.conf`` key; ``transport.X`` is ``broker_transport_options["X"]``.
ENVIRONMENT: dict[str, tuple[str, str]] = {
    "CELERY_VISIBILITY_TIMEOUT": ("transport.visibility_timeout", "seconds before an unacknowledged message is redelivered"),
    "CELERY_TASK_TIME_LIMIT": ("task_time_limit", "hard time limit of one task run, seconds"),
    "CELERY_PRIORITY_STEPS": ("transport.priority_steps", "kombu's priority_steps, e.g. 0,3,6,9"),
    "CELERY_PRIORITY_SEPARATOR": ("transport.sep", "kombu's sep between a queue name and its priority step"),
    "CELERY_SOFT_SHUTDOWN": ("worker_soft_shutdown_timeout", "seconds running tasks get on a cold shutdown"),
    "CELERY_MAX_RETRIES": ("autoscale_max_retries", "retries of a transient error before dead-lettering"),
    "CELERY_RETRY_BACKOFF_MAX": ("autoscale_retry_backoff_max", "cap of the retry backoff, seconds"),
    "CELERY_METRICS_PORT": ("autoscale_metrics_port", "port of the worker's /metrics; 0 turns it off"),
    "CELERY_HEARTBEAT_FILE": ("autoscale_heartbeat_file", "file the worker's consumer loop touches"),
    "CELERY_HEARTBEAT_INTERVAL": ("autoscale_heartbeat_interval", "seconds between heartbeats"),
    "CELERY_STALL_SECONDS": ("autoscale_stall_seconds", "tasks waiting this long beside idle processes stop the heartbeat"),
    "CELERY_ETA_HORIZON": ("autoscale_eta_horizon", "tasks due further than this many seconds are parked in Redis until the reconciler brings them back (0: never)"),
    "CELERY_SENTINEL_MASTER": ("transport.master_name", "the Redis Sentinel master name, for sentinel:// URLs"),
    "REDIS_PASSWORD": ("broker_password", "Redis password for URLs that carry none"),
    "REDIS_PASSWORD_FILE": ("broker_password", "a file holding that password (the chart mounts it)"),
    "REDIS_TLS_CA_FILE": ("broker_use_ssl", "CA bundle for rediss:// URLs; certificates are always verified"),
}

#: The runtime's own ``app.conf`` keys and their defaults.
DEFAULTS: dict[str, object] = {
    "autoscale_metrics_port": 9808,
    "autoscale_heartbeat_file": "/tmp/celery-heartbeat",
    "autoscale_heartbeat_interval": 10.0,
    "autoscale_max_retries": 5,
    "autoscale_retry_backoff_max": 60,
    "autoscale_run_record_ttl": 3600,
    "autoscale_stall_seconds": 60.0,
    "autoscale_eta_horizon": 0,
    "autoscale_allow_unsafe": False,
}

#: Time limit of one task run when neither the app nor the environment sets one (seconds);
#: half of kombu's default visibility timeout of 3600 s.
DEFAULT_TASK_TIME_LIMIT = 1800


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***``, safe to print or log."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        if parts.port:
            host = f"{host}:{parts.port}"
    except ValueError:  # a malformed URL: show only its scheme
        return f"{url.split(':', 1)[0]}://***"
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def check_redis_url(url: str, what: str = "the broker URL") -> str:
    """``url`` if it is a well-formed ``redis://``, ``rediss://`` or ``sentinel://`` URL.

    Sentinel URLs name one sentinel each, joined by ``;`` as Celery and kombu take them
    (``sentinel://s1:26379;sentinel://s2:26379``); every part is checked.

    Raises:
        ConfigError: another scheme, a port that is not a number from 1 to 65535, or a broken
            IPv6 address; the message names ``what`` and never the password.
    """
    parts_of = url.split(";") if url.startswith("sentinel://") else [url]
    for part in parts_of:
        try:
            parts = urlsplit(part)
            port = parts.port
        except ValueError as exc:
            raise ConfigError(f"{what} {redact(part)} is malformed: {exc}") from None
        allowed = ("sentinel",) if len(parts_of) > 1 or parts.scheme == "sentinel" else ("redis", "rediss")
        if parts.scheme not in allowed:
            raise ConfigError(f"{what} must be a redis://, rediss:// or sentinel:// URL, got {redact(part)}")
        if port == 0:
            raise ConfigError(f"{what} {redact(part)} has port 0")
    return url


def _number(name: str, raw: str, kind: type, low: float, high: float = math.inf) -> float:
    what = "a whole number" if kind is int else "a number"
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name} must be {what}, got {raw!r}") from None
    if not (math.isfinite(value) and low <= value <= high):
        bound = f"from {low:g} to {high:g}" if math.isfinite(high) else f"at least {low:g}"
        raise ConfigError(f"{name} must be {what} {bound}, got {raw!r}")
    return value


def _steps(name: str, raw: str) -> list[int]:
    try:
        steps = sorted({int(part) for part in raw.split(",") if part.strip()})
    except ValueError:
        raise ConfigError(f"{name} must be integers 0-9, got {raw!r}") from None
    if not steps or steps[0] != 0 or steps[-1] > 9:
        raise ConfigError(f"{name} must start at 0 and stay within 0-9, got {raw!r}")
    return steps


def environ_overrides(env: Mapping[str, str] | None = None) -> dict[str, object]:
    """The settings the environment gives: ``{"task_time_limit": 600, "transport.sep": ":", ...}``.

    Args:
        env: the environment (default ``os.environ``); empty values count as unset.

    Raises:
        ConfigError: a value is malformed or out of range, or the password file cannot be read.
    """
    env = os.environ if env is None else env
    get = lambda name: (env.get(name) or "").strip()  # noqa: E731
    out: dict[str, object] = {}
    if raw := get("CELERY_VISIBILITY_TIMEOUT"):
        out["transport.visibility_timeout"] = _number("CELERY_VISIBILITY_TIMEOUT", raw, int, 1)
    if raw := get("CELERY_TASK_TIME_LIMIT"):
        out["task_time_limit"] = _number("CELERY_TASK_TIME_LIMIT", raw, int, 1)
    if raw := get("CELERY_PRIORITY_STEPS"):
        out["transport.priority_steps"] = _steps("CELERY_PRIORITY_STEPS", raw)
    if "CELERY_PRIORITY_SEPARATOR" in env and env["CELERY_PRIORITY_SEPARATOR"] != "":
        out["transport.sep"] = env["CELERY_PRIORITY_SEPARATOR"]  # may be control characters: not stripped
    if raw := get("CELERY_SOFT_SHUTDOWN"):
        out["worker_soft_shutdown_timeout"] = _number("CELERY_SOFT_SHUTDOWN", raw, float, 0)
    if raw := get("CELERY_MAX_RETRIES"):
        out["autoscale_max_retries"] = _number("CELERY_MAX_RETRIES", raw, int, 0)
    if raw := get("CELERY_RETRY_BACKOFF_MAX"):
        out["autoscale_retry_backoff_max"] = _number("CELERY_RETRY_BACKOFF_MAX", raw, int, 1)
    if raw := get("CELERY_METRICS_PORT"):
        out["autoscale_metrics_port"] = _number("CELERY_METRICS_PORT", raw, int, 0, 65535)
    if raw := get("CELERY_HEARTBEAT_FILE"):
        out["autoscale_heartbeat_file"] = raw
    if raw := get("CELERY_HEARTBEAT_INTERVAL"):
        out["autoscale_heartbeat_interval"] = _number("CELERY_HEARTBEAT_INTERVAL", raw, float, 0.1, 3600)
    if raw := get("CELERY_STALL_SECONDS"):
        out["autoscale_stall_seconds"] = _number("CELERY_STALL_SECONDS", raw, float, 1, 86400)
    if raw := get("CELERY_ETA_HORIZON"):
        out["autoscale_eta_horizon"] = _number("CELERY_ETA_HORIZON", raw, int, 0, 86400)
    password = get("REDIS_PASSWORD") or None
    if path := get("REDIS_PASSWORD_FILE"):
        try:
            with open(path) as handle:
                password = handle.read().strip() or None
        except OSError as exc:
            raise ConfigError(f"cannot read REDIS_PASSWORD_FILE {path}: {exc.strerror}") from None
    if password:
        out["password"] = password
    if raw := get("CELERY_SENTINEL_MASTER"):
        out["transport.master_name"] = raw
    if raw := get("REDIS_TLS_CA_FILE"):
        out["tls_ca_file"] = raw
    return out


@dataclass(frozen=True)
class Settings:
    """What the runtime needs of one app, resolved once by :func:`settings_of`.

    Attributes:
        broker_url: the app's broker URL (``redis://``, ``rediss://``, or ``sentinel://`` URLs
            joined by ``;``); may lack the password.
        master_name: the Sentinel master name (kombu's ``master_name`` transport option), or None.
        password: the Redis password given apart from the URL (``broker_password``), or None.
        ssl: redis-py TLS keyword arguments (``broker_use_ssl``), or None.
        visibility_timeout: seconds (kombu's Redis ``visibility_timeout``).
        task_time_limit: seconds (Celery's ``task_time_limit``).
        priority_steps: kombu's ``priority_steps``.
        separator: kombu's ``sep``.
        key_prefix: kombu's ``global_keyprefix``, prepended to every key in Redis.
        unacked_key: kombu's ``unacked_key``, the hash of unacknowledged messages.
        metrics_port, heartbeat_file, heartbeat_interval, max_retries, retry_backoff_max,
        run_record_ttl, stall_seconds, eta_horizon: the ``autoscale_*`` settings above.
    """

    broker_url: str
    master_name: str | None
    password: str | None
    ssl: dict | None
    visibility_timeout: int
    task_time_limit: int
    priority_steps: tuple[int, ...]
    separator: str
    key_prefix: str
    unacked_key: str
    metrics_port: int
    heartbeat_file: str
    heartbeat_interval: float
    max_retries: int
    retry_backoff_max: int
    run_record_ttl: int
    stall_seconds: float
    eta_horizon: int = 0


def settings_of(app) -> Settings:
    """The :class:`Settings` of ``app``, read from its configuration (cached on the app).

    Call it after :func:`celery_autoscale.install`, which writes the environment's values
    into ``app.conf``; on an app without it, Celery's and kombu's defaults apply.

    Raises:
        ConfigError: the broker is not Redis.
    """
    cached = getattr(app, "_autoscale_settings", None)
    if cached is not None:
        return cached
    from kombu.transport.redis import PRIORITY_STEPS, Channel

    conf = app.conf
    url = conf.broker_write_url or conf.broker_url or "redis://localhost:6379/0"
    if isinstance(url, (list, tuple)):
        url = url[0]
    url = check_redis_url(url if url.startswith("sentinel://") else url.split(";", 1)[0])
    transport = dict(conf.broker_transport_options or {})
    if url.startswith("sentinel://") and not transport.get("master_name"):
        raise ConfigError("a sentinel:// broker URL needs the master name: broker_transport_options"
                          "['master_name'] or CELERY_SENTINEL_MASTER")
    ssl = conf.broker_use_ssl if isinstance(conf.broker_use_ssl, dict) else None
    get = lambda key: conf.get(key, DEFAULTS[key])  # noqa: E731
    settings = Settings(
        broker_url=url,
        master_name=transport.get("master_name"),
        password=conf.broker_password or None,
        ssl=dict(ssl) if ssl else None,
        visibility_timeout=int(transport.get("visibility_timeout", 3600)),
        task_time_limit=int(conf.task_time_limit or DEFAULT_TASK_TIME_LIMIT),
        priority_steps=tuple(transport.get("priority_steps") or PRIORITY_STEPS),
        separator=transport.get("sep", Channel.sep),
        key_prefix=transport.get("global_keyprefix", ""),
        unacked_key=transport.get("unacked_key", "unacked"),
        metrics_port=int(get("autoscale_metrics_port")),
        heartbeat_file=str(get("autoscale_heartbeat_file")),
        heartbeat_interval=float(get("autoscale_heartbeat_interval")),
        max_retries=int(get("autoscale_max_retries")),
        retry_backoff_max=int(get("autoscale_retry_backoff_max")),
        run_record_ttl=int(get("autoscale_run_record_ttl")),
        stall_seconds=float(get("autoscale_stall_seconds")),
        eta_horizon=int(get("autoscale_eta_horizon")),
    )
    app._autoscale_settings = settings
    return settings
