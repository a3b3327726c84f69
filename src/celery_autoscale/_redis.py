"""The broker's Redis client, and reading kombu's own keys with it."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import redis
from kombu.transport.redis import GlobalKeyPrefixMixin
from redis.sentinel import Sentinel

from . import keys
from ._settings import Settings

__all__ = ["BrokerRefused", "KombuPipe", "as_text", "check_credentials", "connect", "unacked_tags", "unprefixed"]


class BrokerRefused(Exception):
    """Redis refused the credentials (a wrong or missing password): retrying cannot help."""


def connect(settings: Settings, decode_responses: bool = False) -> redis.Redis:
    """A ``redis.Redis`` client for the broker of ``settings`` (password and TLS included);
    replies are ``str`` with ``decode_responses``, else ``bytes``.

    For ``sentinel://`` URLs, a client of the current master of ``settings.master_name``
    (redis-py's ``Sentinel.master_for``, as kombu's ``SentinelChannel``): after a failover its
    next command reaches the new master. The sentinels are asked without a password, as kombu
    does unless ``sentinel_kwargs`` says otherwise. Nothing is sent until the first command.
    """
    if settings.broker_url.startswith("sentinel://"):
        urls = [urlsplit(u) for u in settings.broker_url.split(";")]
        db = int((urls[0].path or "/0").strip("/") or 0)
        password = settings.password or urls[0].password
        sentinel = Sentinel([(u.hostname, u.port or 26379) for u in urls])
        return sentinel.master_for(settings.master_name, db=db, password=password, decode_responses=decode_responses)
    return redis.Redis.from_url(settings.broker_url, password=settings.password, decode_responses=decode_responses,
                                **(settings.ssl or {}))


def unprefixed(client) -> redis.Redis:
    """``client``, a kombu channel's client, without kombu's key prefixing, on the same connections.

    With a ``global_keyprefix`` kombu's client (``GlobalKeyPrefixMixin``) adds the prefix to the
    key of some commands (``HSET``, ``ZADD``, ``LLEN``, ``WATCH``, ...) and not of others
    (``HINCRBY``, ``LINDEX``, ``LREM``, ...). The runtime names its keys in full
    (:mod:`celery_autoscale.keys`), so it sends them through a plain client. Any other client is
    returned as it is.
    """
    if isinstance(client, GlobalKeyPrefixMixin):
        return redis.Redis(connection_pool=client.connection_pool)
    return client


class KombuPipe:
    """A plain redis-py pipeline (``pipe``: the runtime's keys named in full) as kombu's code must
    see it: kombu names its keys without its ``global_keyprefix`` and leaves the prefix to its
    client. Each command kombu queues here (``lpush``, ``rpush``, ``pexpire``: commands whose
    redis-py method takes the command's arguments in order) gets the prefix by kombu's own rule,
    the ``_prefix_args`` of ``client`` (kombu's channel's client), when that client prefixes."""

    def __init__(self, pipe, client):
        self.pipe, self.client = pipe, client

    def add(self, name: str, *args) -> KombuPipe:
        """Queue command ``name`` (a redis-py method name, e.g. ``"lpush"``) with ``args``."""
        command = [name.upper(), *args]
        if isinstance(self.client, GlobalKeyPrefixMixin):
            command = self.client._prefix_args(command)
        self.pipe.execute_command(*command)
        return self

    def __getattr__(self, name: str):
        return lambda *args: self.add(name, *args)


def check_credentials(settings: Settings) -> None:
    """``PING`` the broker once, before a long-running command starts.

    Returns when Redis answers, and also when it cannot be reached (the caller retries that, as
    workers and beat do while Redis restarts).

    Raises:
        BrokerRefused: Redis refused the password (``WRONGPASS``, ``NOAUTH``, or a password sent to a
            Redis without one); the message names the broker with its password redacted.
    """
    from ._settings import redact

    try:
        connect(settings).ping()
    except (redis.AuthenticationError, redis.ResponseError) as exc:
        text = str(exc)
        if any(sign in text for sign in ("NOAUTH", "required", "HELLO must be")):
            why = "it requires a password, none was given (REDIS_PASSWORD_FILE, REDIS_PASSWORD or the URL)"
        elif isinstance(exc, redis.AuthenticationError) or "WRONGPASS" in text:
            why = "wrong username or password"
        else:
            return
        raise BrokerRefused(f"the broker {redact(settings.broker_url)} refused the credentials: {why}") from None
    except redis.RedisError:
        return


def as_text(value) -> str:
    """A Redis reply (bytes, as redis-py returns them by default) as text."""
    return value.decode() if isinstance(value, bytes) else value


def unacked_tags(client, settings: Settings) -> dict[str, str]:
    """Task id -> kombu delivery tag of the messages in kombu's hash of unacknowledged messages.

    Read with ``HSCAN``; each value is kombu's ``[message, exchange, routing_key]`` and the task
    id is the message's ``headers.id`` (Celery's task protocol 2). Unreadable values are skipped.
    """
    tags = {}
    for tag, raw in client.hscan_iter(keys.unacked_key(settings.unacked_key, settings.key_prefix), count=1000):
        try:
            tags[json.loads(raw)[0]["headers"]["id"]] = as_text(tag)
        except (ValueError, TypeError, KeyError, IndexError):
            continue
    return tags
