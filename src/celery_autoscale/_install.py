"""``install(app)``: the one line that makes a Celery app safe to autoscale.

It changes only what the guarantees need and leaves the app's routes, queues, serializers and
tasks alone. Each setting below cites the Celery documentation
(https://docs.celeryq.dev/en/stable/userguide/configuration.html) for why an autoscaled worker
needs it. A value the app itself set that breaks a guarantee is refused with a one-line
:class:`~celery_autoscale.ConfigError`, unless ``autoscale_allow_unsafe`` (or
``install(app, allow_unsafe=True)``) accepts it.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Mapping
from urllib.parse import urlsplit

from celery import signals

from ._settings import SETTING, SETTINGS, ConfigError, environ_overrides, settings_of
from .worker._heartbeat import Heartbeat
from .worker._runtime import LEGACY_ROUNDTRIP_TASK, ROUNDTRIP_TASK, queue_of, runtime_of

__all__ = ["REQUIRED", "ROUNDTRIP_TASK", "install"]

#: Worker settings the guarantees need: ``setting -> (value, what breaks without it)``.
REQUIRED: dict[str, tuple[object, str]] = {
    # Acknowledge after the task ran, so a worker removed mid-task does not lose it
    # (task_acks_late; "Should I use retry or acks_late?" in the FAQ) ...
    "task_acks_late": (True, "a task running on a worker that is scaled down or killed would be lost"),
    # ... and requeue it when the worker process is killed (task_reject_on_worker_lost).
    "task_reject_on_worker_lost": (True, "a task whose worker process is killed would be acknowledged and lost"),
    # Reserve one message per process at most (worker_prefetch_multiplier, "Prefetch Limits") ...
    "worker_prefetch_multiplier": (1, "workers would hold waiting tasks outside the Redis lists KEDA counts"),
    # ... and none beyond the free processes (worker_disable_prefetch, Redis, Celery >= 5.6).
    "worker_disable_prefetch": (True, "workers would hold waiting tasks outside the Redis lists KEDA counts"),
}

#: Celery's default consumer class, which install replaces by :class:`~celery_autoscale.worker._consumer.Consumer`.
DEFAULT_CONSUMER = "celery.worker.consumer:Consumer"
CONSUMER = "celery_autoscale.worker._consumer:Consumer"
#: Earlier releases' name of :data:`CONSUMER`, accepted in an app's configuration.
LEGACY_CONSUMER = "celery_autoscale._consumer:Consumer"



def _explicit(conf, key: str) -> bool:
    """Did the app set ``key`` itself (rather than inherit Celery's default)?"""
    conf.get(key)  # loads a pending configuration
    return any(key in layer for layer in conf.maps[:-1])


def _tls(url: str | None, current, ca_file: str | None):
    """``broker_use_ssl``/``redis_backend_use_ssl`` for a ``rediss://`` URL: verified certificates."""
    if not url or urlsplit(str(url)).scheme != "rediss" or isinstance(current, dict):
        return current
    options: dict = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    if ca_file:
        options["ssl_ca_certs"] = ca_file
    return options


#: The Celery signals :func:`install` connects, each to the runtime's method of that name.
_RECEIVERS = (
    (signals.before_task_publish, "publish", "stamp_published_at"),
    (signals.task_received, "received", "task_received"),
    (signals.task_prerun, "prerun", "task_started"),
    (signals.task_postrun, "postrun", "task_finished"),
    (signals.worker_init, "init", "worker_init"),
    (signals.worker_ready, "ready", "worker_ready"),
    (signals.worker_shutdown, "shutdown", "worker_shutdown"),
)


def _uid(app, name: str) -> str:
    return f"celery_autoscale.{id(app)}.{name}"


def disconnect(app) -> None:
    """Disconnect the signal receivers :func:`install` connected for ``app`` (its settings stay):
    for a process that installs several apps one after another, as the benchmarks do."""
    for signal, name, _ in _RECEIVERS:
        signal.disconnect(dispatch_uid=_uid(app, name))


def install(app, *, allow_unsafe: bool | None = None, environ: Mapping[str, str] | None = None):
    """Make ``app`` safe to autoscale; return it. Calling it again does nothing.

    Sets :data:`REQUIRED`; kombu's Redis ``visibility_timeout`` (default 3600 s, "Using Redis:
    Visibility timeout") with a sweep for unacknowledged messages of dead workers every tenth
    of it (``unacked_restore_interval``, 1-10 s, and ``unacked_restore_throttle`` 1, kombu's
    Redis transport docs); ``task_time_limit`` (default 1800 s) below the visibility timeout;
    ``broker_connection_retry_on_startup``; ``result_backend_always_retry`` (a result is stored
    once an unreachable backend is back); the Redis password and verified TLS from the
    environment; then connects the in-flight and scheduled records, metrics and heartbeat
    (worker side) and registers :data:`ROUNDTRIP_TASK`.

    The environment (:data:`celery_autoscale.ENVIRONMENT`, set by the chart) wins over
    ``app.conf``, except that its priority steps, separator and key prefix must equal the app's
    own ``broker_transport_options``: producers write the lists those name.

    Args:
        app: a ``celery.Celery`` app whose broker is Redis.
        allow_unsafe: accept app settings that break a guarantee (default: the app's
            ``autoscale_allow_unsafe``, else False).
        environ: the environment to read (default ``os.environ``).

    Raises:
        ConfigError: a malformed environment value, a non-Redis broker, a visibility timeout
            not above the task time limit, or an app setting that breaks a guarantee.
    """
    if getattr(app, "_autoscale_installed", False):
        return app
    conf = app.conf
    env = environ_overrides(environ)
    allow = conf.get("autoscale_allow_unsafe", False) if allow_unsafe is None else allow_unsafe

    updates: dict[str, object] = {}
    for key, (value, why) in REQUIRED.items():
        if _explicit(conf, key) and conf.get(key) != value:
            if not allow:
                raise ConfigError(f"{key}={conf.get(key)!r} is refused: {why} "
                                  f"(set autoscale_allow_unsafe=True to accept it)")
            continue
        updates[key] = value

    transport = dict(conf.broker_transport_options or {})
    for attr in ("priority_steps", "separator", "key_prefix"):
        wanted, setting = env.get(attr), SETTING[attr]
        name = setting.conf.removeprefix("transport.")
        if wanted is None:
            continue
        current = transport.get(name)
        if attr == "key_prefix":  # no prefix is a value: the app's producers write unprefixed keys
            current = current or ""
        if current is not None and (list(current) if attr == "priority_steps" else current) != wanted:
            raise ConfigError(f"{setting.env} ({wanted!r}) differs from the app's broker_transport_options"
                              f"[{name!r}] ({current!r}): producers and KEDA would name other keys")
        transport[name] = wanted
    if "visibility_timeout" in env:
        transport["visibility_timeout"] = env["visibility_timeout"]
    if "master_name" in env:  # Redis Sentinel: broker and a sentinel:// result backend alike
        transport["master_name"] = env["master_name"]
        if str(conf.result_backend or "").startswith("sentinel://"):
            updates["result_backend_transport_options"] = {
                **(conf.result_backend_transport_options or {}), "master_name": env["master_name"]}
    visibility = int(transport.setdefault("visibility_timeout", SETTING["visibility_timeout"].default))
    transport.setdefault("unacked_restore_interval", max(1, min(10, visibility // 10)))
    transport.setdefault("unacked_restore_throttle", 1)
    updates["broker_transport_options"] = transport

    limit = env.get("task_time_limit") or conf.get("task_time_limit") or SETTING["task_time_limit"].default
    if limit >= visibility and not allow:
        raise ConfigError(f"the task time limit ({limit:g} s) must stay below the visibility timeout "
                          f"({visibility} s), or a running task is delivered a second time")
    updates["task_time_limit"] = limit
    # A worker holds a task with an ETA (a countdown, a retry's backoff) unacknowledged until it is
    # due; held past the visibility timeout, kombu delivers it a second time (Celery's Redis caveat).
    # (DeadLetterTask's retry backoff is kept below it: worker/_deadletter.py.)
    horizon = env.get("eta_horizon", conf.get("autoscale_eta_horizon", SETTING["eta_horizon"].default))
    if horizon and horizon >= visibility and not allow:
        raise ConfigError(f"the ETA horizon ({horizon} s) must stay below the visibility timeout ({visibility} s): "
                          f"a task held that long is delivered a second time")
    if "soft_shutdown" in env:
        updates["worker_soft_shutdown_timeout"] = env["soft_shutdown"]
        updates["worker_enable_soft_shutdown_on_idle"] = env["soft_shutdown"] > 0
    # Celery's consumer, with its recovery from a lost Redis connection made safe (worker/_consumer.py).
    if conf.get("worker_consumer") in (DEFAULT_CONSUMER, CONSUMER, LEGACY_CONSUMER):
        updates["worker_consumer"] = CONSUMER
    elif not allow:
        raise ConfigError(f"worker_consumer={conf.get('worker_consumer')!r} is refused: a worker would exit when "
                          f"its Redis connection is lost with tasks running (set autoscale_allow_unsafe=True "
                          f"to accept it, or derive it from {CONSUMER})")
    if not _explicit(conf, "broker_connection_retry_on_startup"):
        updates["broker_connection_retry_on_startup"] = True
    # A task that ends while the result backend cannot be reached retries storing its result,
    # with exponential backoff, until the backend is back (result_backend_always_retry,
    # result_backend_max_retries: inf by default; "Result backend settings") instead of ending
    # FAILURE; with acks_late its message is acknowledged only after that.
    if not _explicit(conf, "result_backend_always_retry"):
        updates["result_backend_always_retry"] = True
    for setting in SETTINGS:  # the runtime's own autoscale_* keys, as the environment gives them
        if setting.conf.startswith("autoscale_") and setting.attr in env:
            updates[setting.conf] = env[setting.attr]
    if "password" in env:  # kombu and the Redis result backend prefer a password in the URL
        updates["broker_password"] = updates["redis_password"] = env["password"]
    ca_file = env.get("tls_ca_file")
    updates["broker_use_ssl"] = _tls(conf.broker_url, conf.broker_use_ssl, ca_file)
    updates["redis_backend_use_ssl"] = _tls(conf.result_backend, conf.redis_backend_use_ssl, ca_file)
    conf.update(updates)
    app._autoscale_settings = None
    settings_of(app)  # the broker must be Redis

    runtime = runtime_of(app)
    for signal, name, handler in _RECEIVERS:
        signal.connect(getattr(runtime, handler), weak=False, dispatch_uid=_uid(app, name))
    app.steps["consumer"].add(Heartbeat)

    def roundtrip(self, token: str = "", reply_to: str = "") -> dict:
        """Any queue: answer at once with ``token``, the queue and the worker (the round trip).

        The answer is pushed onto the Redis list ``reply_to``
        (:func:`~celery_autoscale.keys.roundtrip_reply_key`, kept 10 minutes), so the round trip
        needs no result backend.
        """
        answer = {"token": token, "queue": queue_of(self.request), "worker": self.request.hostname}
        if reply_to:
            client = runtime.client()
            client.rpush(reply_to, json.dumps(answer))
            client.expire(reply_to, 600)
        return answer

    for name in (ROUNDTRIP_TASK, LEGACY_ROUNDTRIP_TASK):
        app.task(name=name, bind=True, shared=False, ignore_result=True)(roundtrip)

    app._autoscale_installed = True
    return app
