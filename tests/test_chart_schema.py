"""values.schema.json rejects bad values with readable errors: one test per class of mistake."""

import helm_python as helm
import pytest
from chart import by_kind, render_chart, render_manifests

CRON = {"timezone": "Europe/Berlin", "start": "0 8 * * 1-5", "end": "0 18 * * 1-5", "desiredReplicas": 2}


def rejected(values: dict, name: str = "rel") -> str:
    with pytest.raises(helm.HelmError) as err:
        render_manifests(values, name=name)
    return str(err.value)


def test_unknown_keys():
    assert "additional properties 'replicaCount' not allowed" in rejected({"replicaCount": 3})
    assert "additional properties 'concurency' not allowed" in rejected({"queues": {"cpu": {"concurency": 3}}})


@pytest.mark.parametrize("replicas, message", [(-1, "minimum: got -1, want 0"), (1.5, "got number, want integer"),
                                               ("2", "got string, want integer")])
def test_negative_or_non_integer_replicas(replicas, message):
    assert message in rejected({"queues": {"io": {"autoscaling": {"maxReplicaCount": 4, "minReplicaCount": replicas}}}})


def test_min_replicas_above_max_fails_the_render_naming_the_queue():
    # JSON Schema cannot compare two values, so the ScaledObject template checks it.
    message = rejected({"queues": {"cpu": {"autoscaling": {"minReplicaCount": 5, "maxReplicaCount": 2}}}})
    assert "queues.cpu.autoscaling: minReplicaCount (5) must not exceed maxReplicaCount (2)" in message


def test_a_scaledobject_name_longer_than_63_characters_fails_the_render_as_kedas_webhook_would():
    """KEDA's webhook refuses a ScaledObject name (a label value) over 63 characters."""
    name = "payments-team-eu-west-1"
    message = rejected({"queues": {"notifications-digest": {"concurrency": 2}}}, name=name)
    assert (f"queues.notifications-digest: the ScaledObject name {name}-celery-autoscale-worker-notifications-digest "
            "is longer than 63 characters, which KEDA refuses") in message
    render_manifests({}, name=name)  # the default queues' names still fit


#: Out of each field's range, not a number or name of it, a zero step: what robfig/cron's ParseStandard
#: (KEDA's cron scaler, Kubernetes CronJobs) refuses, and Celery's crontab for beat.
BAD_CRON = ["8am", "0 8 * *", "0 8 * * 1-5 2026", "0 8 * * 1;5", "99 99 * * *", "a b c d e", "60 * * * *",
            "0 24 * * *", "0 0 0 * *", "0 0 * 13 *", "0 0 * * 8", "*/0 * * * *", "@every 5m"]
GOOD_CRON = ["0 8 * * 1-5", "*/5 * * * *", "0 8 * * MON-FRI", "30 2 1,15 * *", "0 0 ? * sun", "0 8-18/2 * JAN-MAR *",
             "59 23 31 12 7", "@hourly"]


@pytest.mark.parametrize("expression", BAD_CRON)
def test_malformed_cron_expressions(expression):
    message = rejected({"queues": {"cpu": {"autoscaling": {"cron": [{**CRON, "start": expression}]}}}})
    assert "/queues/cpu/autoscaling/cron/0/start" in message and "does not match pattern" in message
    assert "/canary/schedule" in rejected({"canary": {"enabled": True, "schedule": expression}})
    assert "/beat/schedule/report/schedule" in rejected(
        {"beat": {"enabled": True, "schedule": {"report": {"task": "tasks.io.transfer", "schedule": expression}}}})


@pytest.mark.parametrize("expression", GOOD_CRON)
def test_every_standard_cron_expression_is_accepted(expression):
    render_manifests({"queues": {"cpu": {"autoscaling": {"cron": [{**CRON, "start": expression}]}}},
                      "canary": {"enabled": True, "schedule": expression},
                      "beat": {"enabled": True, "schedule": {"report": {"task": "tasks.io.transfer",
                                                                         "schedule": expression}}}})


def test_unknown_time_zone():
    message = rejected({"queues": {"cpu": {"autoscaling": {"cron": [{**CRON, "timezone": "Europe/Atlantis"}]}}}})
    assert "/queues/cpu/autoscaling/cron/0/timezone" in message and "an IANA time zone name" in message
    assert len(message) < 400  # one readable line, not the whole tz database


@pytest.mark.parametrize("name", ["CPU", "io_bound", "-io", "a" * 21])
def test_queue_names_that_are_not_kubernetes_names(name):
    assert f"invalid propertyName '{name}'" in rejected({"queues": {name: {}}})


def test_missing_flower_auth_in_prod():
    assert "/flower/auth/enabled': value must be true" in rejected({"environment": "prod"})
    render_manifests({"environment": "prod", "flower": {"auth": {"enabled": True}}})
    render_manifests({"environment": "prod", "flower": {"enabled": False}})


def test_timing_rules_that_would_lose_or_repeat_tasks():
    assert "must exceed its taskTimeLimit" in rejected({"queues": {"cpu": {"taskTimeLimit": 600, "terminationGracePeriodSeconds": 300}}})
    assert "must be below celery.visibilityTimeout" in rejected({"celery": {"visibilityTimeout": 300}})


def test_fallback_to_zero_replicas_is_refused():
    """Zero fallback replicas would scale a queue whose backlog is unknown to zero: tasks stranded."""
    message = rejected({"queues": {"io": {"autoscaling": {"fallback": {"replicas": 0}}}}})
    assert "/queues/io/autoscaling/fallback/replicas" in message and "minimum: got 0, want 1" in message


def test_fallback_keeps_the_current_replicas_when_higher_and_refuses_unknown_behaviors():
    """currentReplicasIfHigher: the cron floor or a scale-up reached before Redis failed is kept."""
    scaled = by_kind(render_chart({}), "ScaledObject")["rel-celery-autoscale-worker-io"]
    assert scaled["spec"]["fallback"] == {"failureThreshold": 3, "replicas": 1, "behavior": "currentReplicasIfHigher"}
    message = rejected({"workerDefaults": {"autoscaling": {"fallback": {"behavior": "max"}}}})
    assert "/workerDefaults/autoscaling/fallback/behavior" in message


def test_sentinel_needs_an_address_and_no_tls():
    message = rejected({"redis": {"enabled": False, "external": {"sentinel": {"enabled": True}}}})
    assert "/redis/external/sentinel/addresses" in message and "minItems" in message
    with pytest.raises(Exception, match="TLS to Sentinel is not supported"):
        render_chart({"redis": {"enabled": False, "external": {"tls": {"enabled": True},
                                                               "sentinel": {"enabled": True, "addresses": ["s:26379"]}}}})


@pytest.mark.parametrize("values, message", [
    ({"reconciler": {"enabled": True, "etaHorizon": 3600}},
     "reconciler.etaHorizon (3600 s) must be below celery.visibilityTimeout (3600 s)"),
    ({"reconciler": {"enabled": False}, "celery": {"retryBackoffMax": 4000}},
     "celery.retryBackoffMax (4000 s) must be below celery.visibilityTimeout (3600 s) unless the reconciler parks"),
    ({"queues": {"io": {"probes": {"liveness": {"maxAge": 5}}}}},
     "queues.io.probes.liveness.maxAge (5 s) must exceed probes.heartbeatInterval (10 s)"),
    ({"queues": {"cpu": {"autoscaling": {"maxReplicaCount": 3, "cron": [{**CRON, "desiredReplicas": 4}]}}}},
     "queues.cpu.autoscaling.cron[0].desiredReplicas (4) must not exceed maxReplicaCount (3)"),
])
def test_settings_that_break_a_guarantee_fail_the_render_naming_them(values, message):
    assert message in rejected(values)
