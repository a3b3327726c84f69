"""Bad input to ``python -m loadgen``: a one-line error, a non-zero exit, and nothing sent."""

import pytest
from helpers import run_module

from tasks import config
from tasks.work import QUEUE_TASKS


@pytest.fixture(scope="module")
def idle_stack(tmp_path_factory):
    """A Redis with no worker, so anything sent would stay visible."""
    from loadgen.stack import LocalStack

    with LocalStack(tmp_path_factory.mktemp("idle")) as s:
        s.start_redis()
        yield s


def queued(stack) -> int:
    from tasks import backlog

    settings = config.load({"CELERY_BROKER_URL": stack.broker_url})
    return sum(backlog.backlog(stack.client(), q, settings).total for q in QUEUE_TASKS)


@pytest.mark.parametrize("args, message", [
    (["sawtooth", "--rate", "5"], "unknown pattern 'sawtooth'"),
    (["steady", "--rate", "5", "--queues", "cpu,gpu"], "unknown queue 'gpu'"),
    (["steady", "--rate", "-3"], "--rate must be a positive"),
    (["steady", "--rate", "0"], "--rate must be a positive"),
    (["ramp", "--rate", "5", "--duration", "0"], "--duration must be positive"),
    (["burst"], "burst needs --count"),
    (["burst", "--count", "5", "--fail-rate", "2"], "--fail-rate is a probability"),
    (["steady", "--rate", "5", "--priorities", "0=1,12=1"], "priorities are 0 to 9"),
    (["replay", "--csv", "MALFORMED"], "expected 'seconds,tasks_per_second'"),
    (["replay", "--csv", "/nonexistent.csv"], "cannot read replay CSV"),
])
def test_bad_input_exits_2_with_one_line_and_sends_nothing(idle_stack, tmp_path, args, message):
    if "MALFORMED" in args:
        bad = tmp_path / "rates.csv"
        bad.write_text("seconds,tasks_per_second\n10,5\n10,lots\n")
        args = [a if a != "MALFORMED" else str(bad) for a in args]
    done = run_module(idle_stack, "loadgen", *args)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr
    assert queued(idle_stack) == 0


def test_an_unreachable_broker_exits_3_and_never_shows_the_password(idle_stack):
    done = run_module(idle_stack, "loadgen", "burst", "--count", "5",
                      "--broker", "redis://:hunter2@127.0.0.1:1/0")
    assert done.returncode == 3
    assert done.stderr.count("\n") == 1 and "cannot reach the broker" in done.stderr
    assert "redis://:***@127.0.0.1:1/0" in done.stderr and "hunter2" not in done.stderr


def test_help_is_the_reference():
    import subprocess
    import sys

    text = subprocess.run([sys.executable, "-m", "loadgen", "--help"], capture_output=True, text=True).stdout
    for option in ("--rate", "--duration", "--count", "--queues", "--priorities", "--seed", "--wait",
                   "--timeout", "--json", "--plot", "--csv", "tasks/s", "seconds"):
        assert option in text
