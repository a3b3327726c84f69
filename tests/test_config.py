"""Settings come from the environment, in one place, with one-line errors."""

import pytest

from tasks import config


def test_defaults_point_at_local_redis_with_readable_priority_lists():
    settings = config.load({})
    assert settings.broker_url == settings.result_backend == "redis://localhost:6379/0"
    assert settings.priority_steps == (0, 3, 6, 9)
    assert settings.transport_options()["sep"] == ":"
    assert settings.visibility_timeout > settings.task_time_limit


def test_password_from_the_environment_goes_into_the_urls_and_never_into_their_redaction():
    settings = config.load({"CELERY_BROKER_URL": "redis://redis:6379/1", "REDIS_PASSWORD": "s3cr/t"})
    assert settings.broker_url == "redis://:s3cr%2Ft@redis:6379/1"
    assert "s3cr" not in config.redact(settings.broker_url)
    assert config.redact(settings.broker_url) == "redis://:***@redis:6379/1"


def test_tls_urls_verify_certificates():
    import ssl

    settings = config.load({"CELERY_BROKER_URL": "rediss://redis:6380/0", "REDIS_TLS_CA_FILE": "/ca.pem"})
    assert settings.ssl_options(settings.broker_url) == {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": "/ca.pem"}
    assert config.load({}).ssl_options("redis://x") is None


@pytest.mark.parametrize("env, message", [
    ({"CELERY_VISIBILITY_TIMEOUT": "60", "CELERY_TASK_TIME_LIMIT": "60"}, "must exceed"),
    ({"CELERY_VISIBILITY_TIMEOUT": "soon"}, "whole number"),
    ({"CELERY_PRIORITY_STEPS": "3,6"}, "start at 0"),
    ({"CELERY_BROKER_URL": "amqp://guest:pw@rabbit//"}, "only redis"),
])
def test_bad_settings_are_one_line_errors_without_secrets(env, message):
    with pytest.raises(config.ConfigError) as err:
        config.load(env)
    assert message in str(err.value) and "\n" not in str(err.value) and "pw" not in str(err.value)


def test_password_file_is_read_like_a_mounted_secret(tmp_path):
    (tmp_path / "password").write_text("from-a-file\n")
    settings = config.load({"CELERY_BROKER_URL": "redis://redis:6379/0", "REDIS_PASSWORD_FILE": str(tmp_path / "password")})
    assert settings.broker_url == "redis://:from-a-file@redis:6379/0"
    with pytest.raises(config.ConfigError, match="cannot read REDIS_PASSWORD_FILE"):
        config.load({"REDIS_PASSWORD_FILE": str(tmp_path / "missing")})
