"""Configuration, read in one place from the environment.

Every setting has a documented default; :func:`load` is the only function that reads
``os.environ``. A bad value raises :class:`ConfigError` with a one-line message.

=============================  ==========================  ==========================================
Variable                       Default                     Meaning
=============================  ==========================  ==========================================
``CELERY_BROKER_URL``          ``redis://localhost:6379/0`` Broker URL (``redis://`` or ``rediss://``).
``CELERY_RESULT_BACKEND``      the broker URL              Result backend URL.
``REDIS_PASSWORD``             unset                       Password put into URLs that carry none.
``REDIS_PASSWORD_FILE``        unset                       File holding that password instead (the
                                                           chart mounts it from a Secret).
``REDIS_TLS_CA_FILE``          unset                       CA bundle for ``rediss://``; system CAs
                                                           when unset.
``CELERY_VISIBILITY_TIMEOUT``  ``3600`` (seconds)          Redis transport visibility timeout: an
                                                           unacknowledged message is redelivered
                                                           after this long. Must exceed
                                                           ``CELERY_TASK_TIME_LIMIT``.
``CELERY_TASK_TIME_LIMIT``     ``1800`` (seconds)          Hard time limit of one task run.
``CELERY_PRIORITY_STEPS``      ``0,3,6,9``                 kombu's Redis ``priority_steps``; ``0``
                                                           alone disables priority lists.
``CELERY_MAX_RETRIES``         ``5``                       Retries of a transient error before the
                                                           task goes to the dead-letter list.
``CELERY_RETRY_BACKOFF_MAX``   ``60`` (seconds)            Cap of the exponential retry backoff.
``CELERY_SOFT_SHUTDOWN``       ``0`` (seconds)             ``worker_soft_shutdown_timeout``: on a
                                                           cold shutdown (SIGQUIT), time left to
                                                           running tasks before they are requeued.
``CELERY_METRICS_PORT``        ``9808``                    Port of the worker's Prometheus
                                                           ``/metrics``; ``0`` turns it off.
``PROMETHEUS_MULTIPROC_DIR``   a fresh temporary folder    Where prefork children write metrics.
``CELERY_HEARTBEAT_FILE``      ``/tmp/celery-heartbeat``   File the worker touches while its
                                                           consumer loop is alive.
``CELERY_HEARTBEAT_INTERVAL``  ``10`` (seconds)            How often the heartbeat file is touched.
``CELERY_WORK_DIR``            the system temp folder      Where ``io`` tasks write their files.
=============================  ==========================  ==========================================
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit

#: The queues this package routes to, in the order the demo and the chart list them.
QUEUES: tuple[str, ...] = ("cpu", "io", "mixed")

#: Separator between a queue name and its priority step in the Redis list names.
#: kombu's default is ``"\x06\x16"``; a readable ``":"`` lets KEDA's Redis trigger name the
#: lists in plain YAML (``cpu``, ``cpu:3``, ``cpu:6``, ``cpu:9``). Producers and workers must
#: agree on it: both build their transport options from :func:`transport_options`.
PRIORITY_SEPARATOR = ":"

#: Prefix of every Redis key this package itself writes.
KEY_PREFIX = "celery-autoscale"


#: Variables Celery itself reads from the environment in preference to its configuration
#: (``celery.app.utils.Settings.broker_url`` and ``.result_backend``).
CELERY_READS = ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND")
_taken: dict[str, str] = {}  # their values, once load() has taken them out of os.environ


class ConfigError(ValueError):
    """A setting from the environment is malformed; the message is one line."""


@dataclass(frozen=True)
class Settings:
    """The settings of one process. Build it with :func:`load`."""

    broker_url: str
    result_backend: str
    tls_ca_file: str | None
    visibility_timeout: int
    task_time_limit: int
    priority_steps: tuple[int, ...]
    max_retries: int
    retry_backoff_max: int
    soft_shutdown_timeout: float
    metrics_port: int
    heartbeat_file: str
    heartbeat_interval: float
    work_dir: str

    def transport_options(self) -> dict:
        """kombu Redis transport options shared by producers and workers.

        ``visibility_timeout`` (seconds), ``priority_steps`` and ``sep`` are documented in
        Celery's "Using Redis" guide (Visibility timeout; Priorities); ``queue_order_strategy``
        ``priority`` makes a worker drain lower steps (higher priority) first.
        ``unacked_restore_interval`` and ``unacked_restore_throttle`` (kombu's Redis transport
        docs) make workers sweep for messages of dead workers every tenth of the visibility
        timeout (1 to 10 seconds) instead of kombu's effective default of about 100 seconds.
        """
        return {
            "visibility_timeout": self.visibility_timeout,
            "unacked_restore_interval": max(1, min(10, self.visibility_timeout // 10)),
            "unacked_restore_throttle": 1,
            "priority_steps": list(self.priority_steps),
            "sep": PRIORITY_SEPARATOR,
            "queue_order_strategy": "priority",
        }

    def ssl_options(self, url: str) -> dict | None:
        """``broker_use_ssl``/``redis_backend_use_ssl`` for a ``rediss://`` URL, else ``None``."""
        if urlsplit(url).scheme != "rediss":
            return None
        import ssl

        options: dict = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
        if self.tls_ca_file:
            options["ssl_ca_certs"] = self.tls_ca_file
        return options


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***``, safe to print or log."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def with_password(url: str, password: str | None) -> str:
    """``url`` with ``password`` inserted when it has none of its own."""
    parts = urlsplit(url)
    if not password or parts.password is not None:
        return url
    if parts.scheme not in ("redis", "rediss"):
        raise ConfigError(f"unsupported Redis URL scheme {parts.scheme!r} in {redact(url)}")
    user = quote(parts.username or "", safe="")
    return urlunsplit(parts._replace(netloc=f"{user}:{quote(password, safe='')}@{parts.netloc}"))


def _int(env: dict, name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def _float(env: dict, name: str, default: float) -> float:
    raw = env.get(name, "")
    if raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
    if value < 0:
        raise ConfigError(f"{name} must not be negative, got {value}")
    return value


def _steps(raw: str) -> tuple[int, ...]:
    try:
        steps = tuple(sorted({int(part) for part in raw.split(",") if part.strip()}))
    except ValueError:
        raise ConfigError(f"CELERY_PRIORITY_STEPS must be integers 0-9, got {raw!r}") from None
    if not steps or steps[0] != 0 or steps[-1] > 9:
        raise ConfigError(f"CELERY_PRIORITY_STEPS must start at 0 and stay within 0-9, got {raw!r}")
    return steps


def load(env: dict | None = None) -> Settings:
    """Read :class:`Settings` from ``env`` (default ``os.environ``, see :data:`CELERY_READS`).

    Raises:
        ConfigError: a value is malformed, or the visibility timeout does not exceed the
            task time limit (Celery's "Using Redis" caveats: a task still running when the
            visibility timeout ends is delivered a second time).
    """
    if env is None:
        # Celery would prefer these raw variables to our URLs, which carry the password from
        # REDIS_PASSWORD(_FILE): take them out of the environment, and remember them for later
        # calls in this process.
        for name in CELERY_READS:
            if name in os.environ:
                _taken[name] = os.environ.pop(name)
        env = {**os.environ, **_taken}
    env = dict(env)
    password = env.get("REDIS_PASSWORD") or None
    if env.get("REDIS_PASSWORD_FILE"):
        try:
            password = open(env["REDIS_PASSWORD_FILE"]).read().strip() or None
        except OSError as exc:
            raise ConfigError(f"cannot read REDIS_PASSWORD_FILE {env['REDIS_PASSWORD_FILE']}: {exc.strerror}") from None
    broker = with_password(env.get("CELERY_BROKER_URL") or "redis://localhost:6379/0", password)
    backend = with_password(env.get("CELERY_RESULT_BACKEND") or broker, password)
    for url in (broker, backend):
        if urlsplit(url).scheme not in ("redis", "rediss"):
            raise ConfigError(f"only redis:// and rediss:// URLs are supported, got {redact(url)}")
    settings = Settings(
        broker_url=broker,
        result_backend=backend,
        tls_ca_file=env.get("REDIS_TLS_CA_FILE") or None,
        visibility_timeout=_int(env, "CELERY_VISIBILITY_TIMEOUT", 3600, minimum=1),
        task_time_limit=_int(env, "CELERY_TASK_TIME_LIMIT", 1800, minimum=1),
        priority_steps=_steps(env.get("CELERY_PRIORITY_STEPS") or "0,3,6,9"),
        max_retries=_int(env, "CELERY_MAX_RETRIES", 5),
        retry_backoff_max=_int(env, "CELERY_RETRY_BACKOFF_MAX", 60, minimum=1),
        soft_shutdown_timeout=_float(env, "CELERY_SOFT_SHUTDOWN", 0.0),
        metrics_port=_int(env, "CELERY_METRICS_PORT", 9808),
        heartbeat_file=env.get("CELERY_HEARTBEAT_FILE") or "/tmp/celery-heartbeat",
        heartbeat_interval=_float(env, "CELERY_HEARTBEAT_INTERVAL", 10.0) or 10.0,
        work_dir=env.get("CELERY_WORK_DIR") or tempfile.gettempdir(),
    )
    if settings.visibility_timeout <= settings.task_time_limit:
        raise ConfigError(
            "CELERY_VISIBILITY_TIMEOUT must exceed CELERY_TASK_TIME_LIMIT "
            f"({settings.visibility_timeout} <= {settings.task_time_limit} seconds)"
        )
    return settings
