"""Each setting is declared once (SETTINGS): the environment, the defaults, Settings and the README follow it."""

import dataclasses
import re
from pathlib import Path

from celery import Celery
from celery_autoscale import ENVIRONMENT, Settings, install, settings_of
from celery_autoscale._settings import DEFAULTS, SETTINGS, environ_overrides, markdown_table

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_configuration_rows_are_the_settings_table():
    block = re.search(r"<!-- settings-table -->\n(.*?)<!-- /settings-table -->", README.read_text(), re.S).group(1)
    assert block == markdown_table()


def test_environment_defaults_and_settings_are_derived_from_the_table():
    assert set(ENVIRONMENT) == {s.env for s in SETTINGS if s.env}
    assert DEFAULTS == {s.conf: s.default for s in SETTINGS if s.conf.startswith("autoscale_")}
    fields = {f.name for f in dataclasses.fields(Settings)}
    assert fields >= {s.attr for s in SETTINGS if s.attr not in ("password_file", "tls_ca_file")}


def test_every_variable_reaches_the_settings_of_an_installed_app(tmp_path):
    password = tmp_path / "password"
    password.write_text("s3cret\n")
    env = {"CELERY_VISIBILITY_TIMEOUT": "700", "CELERY_TASK_TIME_LIMIT": "600", "CELERY_PRIORITY_STEPS": "0,5",
           "CELERY_PRIORITY_SEPARATOR": ":", "CELERY_SOFT_SHUTDOWN": "3", "CELERY_MAX_RETRIES": "2",
           "CELERY_RETRY_BACKOFF_MAX": "9", "CELERY_METRICS_PORT": "0", "CELERY_HEARTBEAT_FILE": "/x/beat",
           "CELERY_HEARTBEAT_INTERVAL": "2.5", "CELERY_STALL_SECONDS": "30", "CELERY_ETA_HORIZON": "120",
           "REDIS_PASSWORD_FILE": str(password)}
    assert environ_overrides(env)["password"] == "s3cret"
    app = install(Celery("user", broker="redis://redis:6379/0"), environ=env)
    got = settings_of(app)
    assert (got.visibility_timeout, got.task_time_limit, got.priority_steps, got.separator) == (700, 600, (0, 5), ":")
    assert (got.soft_shutdown, got.max_retries, got.retry_backoff_max, got.metrics_port) == (3.0, 2, 9, 0)
    assert (got.heartbeat_file, got.heartbeat_interval, got.stall_seconds, got.eta_horizon) == ("/x/beat", 2.5, 30.0, 120)
    assert got.password == "s3cret" and "s3cret" not in repr(got)
