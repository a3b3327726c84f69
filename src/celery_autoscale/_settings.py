"""The runtime's settings, declared once in :data:`SETTINGS`.

Each :class:`Setting` names its ``app.conf`` key (``transport.X`` is
``broker_transport_options["X"]``), the environment variable the chart sets (which wins over
``app.conf``, so that workers, KEDA's triggers and grace periods follow the same values), its
default, its parser and its one-line meaning. :data:`DEFAULTS`, :data:`ENVIRONMENT`,
:func:`environ_overrides`, the fields of :class:`Settings` and the README's configuration table
(:func:`markdown_table`) are all derived from it.

Everything here raises :class:`ConfigError` with a one-line message that never contains a
password. Importing this module imports neither Celery nor kombu (the health probe reads it).
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, make_dataclass
from functools import partial
from urllib.parse import urlsplit

from redis.connection import URL_QUERY_ARGUMENT_PARSERS
from redis.connection import parse_url as redis_url_parts

__all__ = ["DEFAULTS", "ENVIRONMENT", "SETTINGS", "ConfigError", "Setting", "Settings", "check_redis_url",
           "environ_overrides", "markdown_table", "redact", "settings_of"]


class ConfigError(ValueError):
    """A setting is malformed or breaks a guarantee; the message is one line, without secrets."""


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def redact(url: str) -> str:
    """``url`` with the password of every URL in it replaced by ``***``, safe to print or log.

    It reads the text, before and independent of any URL parsing: after each ``scheme://``, the
    text up to the last ``@`` before the next ``scheme://`` (URLs joined by ``;``, as Sentinel
    lists are) is the userinfo, whatever characters the password holds (``#``, ``/``, ``?``,
    ``@``, ``%``, ``;``, spaces, non-ASCII: ``urlsplit`` would end the host part early at some of
    them). A user name before a ``:`` is kept; userinfo without ``:`` is hidden whole.
    """
    text = str(url)
    found = list(_SCHEME.finditer(text))
    if not found:
        return text
    out = [text[:found[0].start()]]
    for k, match in enumerate(found):
        end = found[k + 1].start() if k + 1 < len(found) else len(text)
        segment = text[match.end():end]
        at = segment.rfind("@")
        if at >= 0:
            userinfo = segment[:at]
            user = f"{userinfo.split(':', 1)[0]}:***" if ":" in userinfo else "***"
            segment = user + segment[at:]
        out.append(match.group(0) + segment)
    return "".join(out)


def check_redis_url(url: str, what: str = "the broker URL", context: str | None = None) -> str:
    """``url`` if it is a well-formed ``redis://``, ``rediss://`` or ``sentinel://`` URL.

    Sentinel URLs name one sentinel each, joined by ``;`` as Celery and kombu take them
    (``sentinel://s1:26379;sentinel://s2:26379``); every part is checked.

    Args:
        url: the URL.
        what: how the message names it.
        context: the whole text ``url`` was cut from (Celery's ``;``-separated failover list), so a
            part cut inside a password is shown only as the whole text redacted.

    Raises:
        ConfigError: another scheme, a port that is not a number from 1 to 65535, or a broken
            IPv6 address; the message names ``what`` and never the password.
    """
    parts_of = url.split(";") if url.startswith("sentinel://") else [url]
    whole = redact(url if context is None else context)

    def shown(part: str) -> str:  # a part cut inside a password (one holding ";") shows as the whole URL
        return redact(part) if redact(part) in whole else whole

    for part in parts_of:
        try:
            parts = urlsplit(part)
            port = parts.port
        except ValueError as exc:  # its text may quote part of a password: never shown
            why = "its port is not a number from 0 to 65535" if "port" in str(exc).lower() else "a broken address"
            raise ConfigError(f"{what} {shown(part)} is malformed ({why}; percent-encode any # / ? @ "
                              f"in its password)") from None
        allowed = ("sentinel",) if len(parts_of) > 1 or parts.scheme == "sentinel" else ("redis", "rediss")
        if parts.scheme not in allowed:
            raise ConfigError(f"{what} must be a redis://, rediss:// or sentinel:// URL, got {shown(part)}")
        if port == 0:
            raise ConfigError(f"{what} {shown(part)} has port 0")
        if parts.path.strip("/") and not parts.path.strip("/").isdigit():
            raise ConfigError(f"{what} {shown(part)} names no database: its path must be /0, /1, ... "
                              f"(percent-encode any / in its password)")
        if parts.scheme != "sentinel" and parts.query:
            try:
                redis_url_parts(part)  # redis-py's own reading of the query values
            except ValueError as exc:  # the message names a known option, never the URL
                known = [o for o in URL_QUERY_ARGUMENT_PARSERS if f"'{o}'" in str(exc)]
                option = f" {known[0]}" if known else ""
                raise ConfigError(f"{what} {shown(part)} has an invalid query value{option}") from None
    return url


def _number(name: str, raw: str, *, kind: type, low: float, high: float = math.inf) -> float:
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


def _text(name: str, raw: str) -> str:
    return raw


def _readable_file(name: str, raw: str) -> str:
    if not (os.path.isfile(raw) and os.access(raw, os.R_OK)):
        raise ConfigError(f"{name} {raw}: no readable file there")
    return raw


def _address(name: str, raw: str) -> str:
    try:
        return str(ipaddress.ip_address(raw))
    except ValueError:
        raise ConfigError(f"{name} must be an IP address to listen on (0.0.0.0, ::, 127.0.0.1), got {raw!r}") from None


@dataclass(frozen=True)
class Setting:
    """One runtime setting.

    Attributes:
        attr: its :class:`Settings` attribute.
        conf: its ``app.conf`` key; ``transport.X`` is ``broker_transport_options["X"]``.
        env: the environment variable that sets it (the chart's), or None.
        default: the value when neither sets it; None: Celery's or kombu's own default.
        parse: ``(variable, raw text) -> value``; raises :class:`ConfigError`.
        doc: one line: what it means (the README's table shows it).
        shown_default: the default as the README's table shows it.
        strip: whether surrounding white space is dropped from the variable's value.
    """

    attr: str
    conf: str
    env: str | None
    default: object
    parse: Callable[[str, str], object]
    doc: str
    shown_default: str = ""
    strip: bool = True


#: Every setting of the runtime: the one table the rest of this module is derived from.
SETTINGS: tuple[Setting, ...] = (
    Setting("visibility_timeout", "transport.visibility_timeout", "CELERY_VISIBILITY_TIMEOUT", 3600,
            partial(_number, kind=int, low=1), "redelivery delay of an unacknowledged message, seconds (kombu's "
            "Redis `visibility_timeout`); must exceed the task time limit", "`3600` s"),
    Setting("task_time_limit", "task_time_limit", "CELERY_TASK_TIME_LIMIT", 1800,
            partial(_number, kind=int, low=1), "hard time limit of one task run, seconds (half of kombu's "
            "default visibility timeout)", "`1800` s"),
    Setting("priority_steps", "transport.priority_steps", "CELERY_PRIORITY_STEPS", None, _steps,
            "kombu's `priority_steps`; must equal the app's; `0` alone means one list per queue", "kombu's `0,3,6,9`"),
    Setting("separator", "transport.sep", "CELERY_PRIORITY_SEPARATOR", None, _text,
            "kombu's `sep` between a queue name and its priority step; must equal the app's",
            'kombu\'s `"\\x06\\x16"`', strip=False),  # may be control characters
    Setting("key_prefix", "transport.global_keyprefix", "CELERY_KEY_PREFIX", "", _text,
            "kombu's `global_keyprefix`, prepended to every Redis key (the chart's `celery.keyPrefix`); must "
            "equal the app's", "none", strip=False),
    Setting("soft_shutdown", "worker_soft_shutdown_timeout", "CELERY_SOFT_SHUTDOWN", 0.0,
            partial(_number, kind=float, low=0), "`worker_soft_shutdown_timeout`: seconds running tasks get on a "
            "cold shutdown (SIGQUIT) before they are requeued", "`0` s"),
    Setting("max_retries", "autoscale_max_retries", "CELERY_MAX_RETRIES", 5, partial(_number, kind=int, low=0),
            "retries of a transient error before dead-lettering (`DeadLetterTask`)", "`5`"),
    Setting("retry_backoff_max", "autoscale_retry_backoff_max", "CELERY_RETRY_BACKOFF_MAX", 60,
            partial(_number, kind=int, low=1), "cap of the exponential retry backoff, seconds", "`60` s"),
    Setting("metrics_port", "autoscale_metrics_port", "CELERY_METRICS_PORT", 9808,
            partial(_number, kind=int, low=0, high=65535), "port of the worker's Prometheus `/metrics`, 0-65535; "
            "`0` turns it off", "`9808`"),
    Setting("metrics_address", "autoscale_metrics_address", "CELERY_METRICS_ADDRESS", "0.0.0.0", _address,
            "address `/metrics` listens on (the worker's and the reconciler's): `0.0.0.0` every IPv4 interface "
            "(what a pod needs for Prometheus), `::` every interface, `127.0.0.1` loopback only", "`0.0.0.0`"),
    Setting("heartbeat_file", "autoscale_heartbeat_file", "CELERY_HEARTBEAT_FILE", "/tmp/celery-heartbeat", _text,
            "file the worker's consumer loop touches; `python -m celery_autoscale.health` reads it",
            "`/tmp/celery-heartbeat`"),
    Setting("heartbeat_interval", "autoscale_heartbeat_interval", "CELERY_HEARTBEAT_INTERVAL", 10.0,
            partial(_number, kind=float, low=0.1, high=3600), "seconds between heartbeats (0.1-3600)", "`10` s"),
    Setting("stall_seconds", "autoscale_stall_seconds", "CELERY_STALL_SECONDS", 60.0,
            partial(_number, kind=float, low=1, high=86400), "tasks waiting this long in the worker's queues while "
            "some of its processes are idle withhold the heartbeat: the probe fails and Kubernetes restarts a "
            "worker that no longer consumes", "`60` s"),
    Setting("eta_horizon", "autoscale_eta_horizon", "CELERY_ETA_HORIZON", 0,
            partial(_number, kind=int, low=0, high=86400), "tasks whose ETA is further away, seconds, are parked in "
            "Redis until the reconciler puts them back, half the horizon before their ETA; needs the reconciler "
            "(`0`: never)", "`0` s (the chart: 300 with the reconciler)"),
    Setting("run_record_ttl", "autoscale_run_record_ttl", None, 3600, partial(_number, kind=int, low=0),
            "seconds a finished task's start/end record is kept (`0`: none)", "`3600` s"),
    Setting("allow_unsafe", "autoscale_allow_unsafe", None, False, _text,
            "accept app settings that break the no-loss guarantees", "`False`"),
    Setting("master_name", "transport.master_name", "CELERY_SENTINEL_MASTER", None, _text,
            "the Redis Sentinel master name (kombu's `master_name`) for `sentinel://` broker and result backend "
            "URLs; required with them", "unset"),
    Setting("password", "broker_password", "REDIS_PASSWORD", None, _text,
            "`broker_password`/`redis_password` for URLs that carry none", "unset"),
    Setting("password_file", "broker_password", "REDIS_PASSWORD_FILE", None, _text,
            "a file holding that password (the chart mounts it from a Secret)", "unset"),
    Setting("tls_ca_file", "broker_use_ssl", "REDIS_TLS_CA_FILE", None, _readable_file,
            "CA bundle for `rediss://`; certificates are always verified", "system CAs"),
)

#: The runtime's own ``app.conf`` keys (``autoscale_*``) and their defaults.
DEFAULTS: dict[str, object] = {s.conf: s.default for s in SETTINGS if s.conf.startswith("autoscale_")}

#: Environment variables the runtime reads: ``name -> (setting, meaning)``.
ENVIRONMENT: dict[str, tuple[str, str]] = {s.env: (s.conf, s.doc) for s in SETTINGS if s.env}

#: Settings by :attr:`Setting.attr`.
SETTING: dict[str, Setting] = {s.attr: s for s in SETTINGS}


def markdown_table() -> str:
    """The README's configuration rows, one per environment variable, as Markdown table rows."""
    return "\n".join(f"| `{s.env}` | {s.shown_default} | {s.doc} |" for s in SETTINGS if s.env) + "\n"


def environ_overrides(env: Mapping[str, str] | None = None) -> dict[str, object]:
    """The settings the environment gives, by :attr:`Setting.attr`: ``{"task_time_limit": 600, ...}``.

    ``REDIS_PASSWORD_FILE`` is read and given as ``password`` (it wins over ``REDIS_PASSWORD``).

    Args:
        env: the environment (default ``os.environ``); empty values count as unset.

    Raises:
        ConfigError: a value is malformed or out of range, or the password file cannot be read.
    """
    env = os.environ if env is None else env
    out: dict[str, object] = {}
    for setting in SETTINGS:
        raw = env.get(setting.env or "") or ""
        raw = raw.strip() if setting.strip else raw
        if raw:
            out[setting.attr] = setting.parse(setting.env, raw)
    if path := out.pop("password_file", None):
        try:
            with open(path, encoding="utf-8") as handle:
                out["password"] = handle.read().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read REDIS_PASSWORD_FILE {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"REDIS_PASSWORD_FILE {path} is not UTF-8 text") from None
    if not out.get("password"):
        out.pop("password", None)
    return out


#: What the runtime needs of one app, resolved once by :func:`settings_of`.
Settings = make_dataclass("Settings", [
    ("broker_url", str), ("ssl", "dict | None"), ("unacked_key", str),
    *((s.attr, object, field(default=s.default, repr=s.attr != "password")) for s in SETTINGS if s.attr not in ("password_file", "tls_ca_file")),
], frozen=True)
Settings.__module__ = __name__
Settings.__doc__ = """What the runtime needs of one app, resolved once by :func:`settings_of`.

Attributes:
    broker_url: the app's broker URL (``redis://``, ``rediss://``, or ``sentinel://`` URLs joined
        by ``;``); may lack the password.
    ssl: redis-py TLS keyword arguments (``broker_use_ssl``), or None.
    unacked_key: kombu's ``unacked_key``, the hash of unacknowledged messages.
    and one attribute per :data:`SETTINGS` entry (``Setting.attr``), as the app's configuration has it.
"""


def _conf_value(conf, transport: dict, setting: Setting):
    if setting.conf.startswith("transport."):
        return transport.get(setting.conf.removeprefix("transport."))
    return conf.get(setting.conf)


def settings_of(app) -> Settings:
    """The :class:`Settings` of ``app``, read from its configuration (cached on the app).

    Call it after :func:`celery_autoscale.install`, which writes the environment's values
    into ``app.conf``; on an app without it, Celery's and kombu's defaults apply.

    Raises:
        ConfigError: the broker is not Redis, or a sentinel:// URL lacks its master name.
    """
    cached = getattr(app, "_autoscale_settings", None)
    if cached is not None:
        return cached
    from kombu.transport.redis import PRIORITY_STEPS, Channel

    conf = app.conf
    url = conf.broker_write_url or conf.broker_url or "redis://localhost:6379/0"
    if isinstance(url, (list, tuple)):
        url = url[0]
    url = check_redis_url(url if url.startswith("sentinel://") else url.split(";", 1)[0], context=url)
    transport = dict(conf.broker_transport_options or {})
    if url.startswith("sentinel://") and not transport.get("master_name"):
        raise ConfigError("a sentinel:// broker URL needs the master name: broker_transport_options"
                          "['master_name'] or CELERY_SENTINEL_MASTER")
    kombu_defaults = {"priority_steps": PRIORITY_STEPS, "separator": Channel.sep}
    values = {}
    for setting in SETTINGS:
        if setting.attr in ("password_file", "tls_ca_file"):
            continue
        value = _conf_value(conf, transport, setting)
        if value is None or value == "":
            value = kombu_defaults.get(setting.attr, setting.default)
        values[setting.attr] = type(setting.default)(value) if setting.default is not None else value
    values["priority_steps"] = tuple(values["priority_steps"])
    values["password"] = values["password"] or None
    ssl = conf.broker_use_ssl if isinstance(conf.broker_use_ssl, dict) else None
    settings = Settings(broker_url=url, ssl=dict(ssl) if ssl else None,
                        unacked_key=transport.get("unacked_key", "unacked"), **values)
    app._autoscale_settings = settings
    return settings
