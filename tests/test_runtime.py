"""The runtime as a library: importing it does nothing; install(app) changes only what the guarantees need."""

import ssl
import subprocess
import sys

import pytest
from celery import Celery
from celery_autoscale import ROUNDTRIP_TASK, ConfigError, install, settings_of

IMPORT_EVERYTHING = """
import os, sys, json
from celery import Celery, signals
before_env = dict(os.environ)
app = Celery("bystander", broker="redis://127.0.0.1:1/0")
receivers = {name: len(getattr(signals, name).receivers) for name in
             ("before_task_publish", "task_received", "task_prerun", "task_postrun", "worker_init", "worker_ready")}
import celery_autoscale, celery_autoscale.worker, celery_autoscale.health, celery_autoscale.deadletter
import celery_autoscale.roundtrip, celery_autoscale.flower, celery_autoscale.beat, celery_autoscale.reconciler
import celery_autoscale.reconciler.__main__
from celery_autoscale import _backlog, _files, _install, _loader, _metrics, _redis, _settings, cli, keys
from celery_autoscale.worker import _consumer, _deadletter, _delivery, _heartbeat, _metrics, _parking, _runtime
from celery_autoscale.reconciler import _deletion_cost, _metrics, _round, _unpark, _unserved
def link(fd):
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except FileNotFoundError:  # the descriptor of the listing itself
        return ""
sockets = [fd for fd in os.listdir("/proc/self/fd") if link(fd).startswith("socket:")]
print(json.dumps({
    "env_changed": sorted(set(os.environ.items()) ^ set(before_env.items())),
    "receivers_added": {n: len(getattr(signals, n).receivers) - c for n, c in receivers.items()},
    "tasks": sorted(t for t in app.tasks if not t.startswith("celery.")),
    "prometheus_imported": "prometheus_client" in sys.modules,
    "sockets": len(sockets),
    "steps": [s for s in app.steps["consumer"]],
}))
"""


def test_importing_the_runtime_changes_no_environment_registers_nothing_and_connects_nowhere():
    import json

    done = subprocess.run([sys.executable, "-c", IMPORT_EVERYTHING], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "CELERY_BROKER_URL": "redis://127.0.0.1:1/0"})
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["env_changed"] == []
    assert seen["receivers_added"] == dict.fromkeys(seen["receivers_added"], 0)
    assert seen["tasks"] == [] and seen["steps"] == []
    assert seen["prometheus_imported"] is False and seen["sockets"] == 0


def test_install_sets_only_what_the_guarantees_need_and_leaves_the_app_alone():
    app = Celery("user", broker="redis://redis:6379/0")
    app.conf.update(task_routes={"a.*": {"queue": "emails"}}, task_serializer="pickle", worker_concurrency=7)
    install(app, environ={})
    conf = app.conf
    assert (conf.task_acks_late, conf.task_reject_on_worker_lost) == (True, True)
    assert (conf.worker_prefetch_multiplier, conf.worker_disable_prefetch) == (1, True)
    assert conf.broker_transport_options == {"visibility_timeout": 3600, "unacked_restore_interval": 10,
                                             "unacked_restore_throttle": 1}
    assert conf.task_time_limit == 1800
    assert conf.task_routes == {"a.*": {"queue": "emails"}} and conf.task_serializer == "pickle"
    assert conf.worker_concurrency == 7
    assert conf.worker_consumer == "celery_autoscale.worker._consumer:Consumer"  # Celery's, surviving a lost Redis
    assert ROUNDTRIP_TASK in app.tasks
    settings = settings_of(app)
    assert settings.separator == "\x06\x16" and settings.priority_steps == (0, 3, 6, 9)  # kombu's own
    assert install(app) is app  # a second call changes nothing


def install_with(environ=None, **conf):
    app = Celery("user", broker="redis://redis:6379/0")
    app.conf.update(conf)
    return install(app, environ=environ or {})


@pytest.mark.parametrize("conf, message", [
    ({"task_acks_late": False}, "task_acks_late=False is refused: a task running on a worker that is scaled down"),
    ({"task_reject_on_worker_lost": False}, "task_reject_on_worker_lost=False is refused"),
    ({"worker_prefetch_multiplier": 4}, "worker_prefetch_multiplier=4 is refused: workers would hold waiting tasks"),
    ({"task_time_limit": 7200}, "task time limit (7200 s) must stay below the visibility timeout (3600 s)"),
    ({"worker_consumer": "myproject.consumer:Consumer"},
     "worker_consumer='myproject.consumer:Consumer' is refused: a worker would exit when its Redis connection"),
    ({"broker_url": "sentinel://s1:26379;sentinel://s2:26379"}, "a sentinel:// broker URL needs the master name"),
    ({"broker_url": "sentinel://s1:26379;redis://s2:6379"}, "must be a redis://, rediss:// or sentinel:// URL, got redis://s2"),
    ({"broker_url": "amqp://guest:pw@rabbit//"}, "the broker URL must be a redis://, rediss:// or sentinel:// URL"),
])
def test_settings_that_break_a_guarantee_are_refused_in_one_line(conf, message):
    with pytest.raises(ConfigError) as err:
        install_with(**conf)
    assert message in str(err.value) and "\n" not in str(err.value) and "pw" not in str(err.value)


def test_a_refused_setting_is_kept_when_explicitly_allowed():
    app = install_with(task_acks_late=False, autoscale_allow_unsafe=True)
    assert app.conf.task_acks_late is False and app.conf.task_reject_on_worker_lost is True


def test_the_charts_priority_lists_must_match_the_apps_own():
    with pytest.raises(ConfigError, match="CELERY_PRIORITY_SEPARATOR .* differs from the app's broker_transport_options"):
        install_with({"CELERY_PRIORITY_SEPARATOR": "\x06\x16"}, broker_transport_options={"sep": ":"})
    app = install_with({"CELERY_PRIORITY_SEPARATOR": ":", "CELERY_PRIORITY_STEPS": "0,5"})
    assert settings_of(app).separator == ":" and settings_of(app).priority_steps == (0, 5)


def test_the_charts_key_prefix_must_be_the_apps_own_none_included():
    """Workers of an app whose producers write unprefixed keys must not take the chart's prefix:
    they would consume, and KEDA count, lists nobody writes."""
    with pytest.raises(ConfigError, match=r"CELERY_KEY_PREFIX \('shop:'\) differs .*\['global_keyprefix'\] \(''\)"):
        install_with({"CELERY_KEY_PREFIX": "shop:"})
    with pytest.raises(ConfigError, match="CELERY_KEY_PREFIX .* differs"):
        install_with({"CELERY_KEY_PREFIX": "shop:"}, broker_transport_options={"global_keyprefix": "web:"})
    app = install_with({"CELERY_KEY_PREFIX": "shop:"}, broker_transport_options={"global_keyprefix": "shop:"})
    assert settings_of(app).key_prefix == "shop:"
    assert settings_of(install_with({}, broker_transport_options={"global_keyprefix": "shop:"})).key_prefix == "shop:"


def test_a_sentinel_master_name_reaches_the_broker_and_a_sentinel_result_backend():
    app = install_with({"CELERY_SENTINEL_MASTER": "mymaster"}, broker_url="sentinel://s1:26379;sentinel://s2:26380/0",
                       result_backend="sentinel://s1:26379;sentinel://s2:26380/1")
    assert app.conf.broker_transport_options["master_name"] == "mymaster"
    assert app.conf.result_backend_transport_options == {"master_name": "mymaster"}
    assert settings_of(app).master_name == "mymaster"


def test_the_mounted_password_reaches_broker_and_result_backend_but_no_url(tmp_path):
    (tmp_path / "password").write_text("from-a-secret\n")
    app = install_with({"REDIS_PASSWORD_FILE": str(tmp_path / "password")},
                       result_backend="redis://redis:6379/1")
    assert app.conf.broker_password == app.conf.redis_password == "from-a-secret"
    assert "from-a-secret" not in app.conf.broker_url + app.conf.result_backend
    with app.connection_for_write() as connection:
        assert connection.password == "from-a-secret"
    assert app.backend.connparams["password"] == "from-a-secret"


def test_tls_urls_verify_certificates_with_the_mounted_ca(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    app = install_with({"REDIS_TLS_CA_FILE": str(ca)}, broker_url="rediss://redis:6380/0")
    assert app.conf.broker_use_ssl == {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": str(ca)}
    assert settings_of(app).ssl == app.conf.broker_use_ssl
