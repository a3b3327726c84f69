"""Celery beat (python -m celery_autoscale.beat, RedBeat): a scheduled task fires once per period,
never twice across a restart (clean or SIGKILL) or with a second beat started beside the first.

Real Redis, real beat processes. Each fire is a message on a queue nobody consumes; its runtime
``published_at`` header says when beat sent it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
from helpers import run_module

from loadgen.stack import LocalStack

PERIOD = 2.0
QUEUE = "beat-fires"
SCHEDULE = {"tick": {"task": "celery_autoscale.roundtrip", "schedule": PERIOD, "queue": QUEUE,
                     "kwargs": {"token": "beat", "reply_to": "beat-replies"}}}


def start_beat(stack, tmp_path, name: str) -> subprocess.Popen:
    schedule = tmp_path / "schedule.json"
    schedule.write_text(json.dumps(SCHEDULE))
    return subprocess.Popen([sys.executable, "-m", "celery_autoscale.beat", "--app", "tasks.app:app",
                             "--schedule", str(schedule), "--max-interval", "1"],
                            env=stack.process_env(), stdout=open(tmp_path / f"{name}.log", "w"), stderr=subprocess.STDOUT)


def fires(stack) -> list[float]:
    """When each scheduled run was sent, in order."""
    return sorted(json.loads(m)["headers"]["published_at"] for m in stack.client().lrange(QUEUE, 0, -1))


def assert_once_per_period(times: list[float], seconds: float) -> None:
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert all(g > PERIOD * 0.9 for g in gaps), f"fired twice within a period: gaps {gaps}"
    assert len(times) >= seconds / PERIOD - 3, f"too few runs: {len(times)} in {seconds:.0f}s"


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    proc.send_signal(sig)
    proc.wait(30)


def test_fires_once_per_period(tmp_path):
    with LocalStack(tmp_path) as stack:
        stack.start_redis()
        beat = start_beat(stack, tmp_path, "beat")
        began = time.time()
        time.sleep(12)
        stop(beat)
        assert_once_per_period(fires(stack), time.time() - began)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_restart_neither_repeats_nor_forgets_a_run(tmp_path, sig):
    """The last run time is in Redis: the new beat continues the schedule. After SIGKILL the lock
    left behind expires (5 × --max-interval) before the new beat fires: late, never twice."""
    with LocalStack(tmp_path) as stack:
        stack.start_redis()
        began = time.time()
        first = start_beat(stack, tmp_path, "first")
        time.sleep(7)
        stop(first, sig)
        second = start_beat(stack, tmp_path, "second")
        time.sleep(12)
        stop(second)
        times = fires(stack)
        assert_once_per_period(times, time.time() - began - (6 if sig == signal.SIGKILL else 0))
        assert any(t > began + 8 for t in times), "the restarted beat never fired"


def test_a_second_beat_waits_for_the_lock_instead_of_firing(tmp_path):
    with LocalStack(tmp_path) as stack:
        stack.start_redis()
        began = time.time()
        beats = [start_beat(stack, tmp_path, "one"), start_beat(stack, tmp_path, "two")]
        time.sleep(12)
        for beat in beats:
            stop(beat)
        assert_once_per_period(fires(stack), time.time() - began)


@pytest.mark.parametrize("schedule, message", [
    ("[]", "the schedule must be a JSON object of entries"),
    ('{"x": {"schedule": 5}}', "x: an entry needs a task name and a schedule"),
    ('{"x": {"task": "t", "schedule": -1}}', "x: schedule must be a positive number of seconds, got -1"),
    ('{"x": {"task": "t", "schedule": "0 25 * * *"}}', "x: bad cron expression"),
    ('{"x": {"task": "t", "schedule": 5, "every": 1}}', "x: unknown keys ['every']"),
    ("{not json", "Expecting property name"),
])
def test_a_bad_schedule_is_one_line_and_exit_2(tmp_path, schedule, message):
    path = tmp_path / "schedule.json"
    path.write_text(schedule)
    with LocalStack(tmp_path) as stack:
        done = run_module(stack, "celery_autoscale.beat", "--app", "tasks.app:app", "--schedule", str(path), timeout=60)
    assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done


@pytest.mark.parametrize("persist", [True, False], ids=["append-only file", "no persistence"])
def test_beat_survives_a_redis_restart_and_fires_again_once_per_period(tmp_path, persist):
    """Redis SIGKILLed for 4 s under a running beat: beat logs the outage in a line, sends nothing
    meanwhile, and once Redis is back fires once per period again (its schedule written anew when
    a Redis without persistence lost it)."""
    with LocalStack(tmp_path) as stack:
        stack.start_redis(persist=persist)
        beat = start_beat(stack, tmp_path, "beat")
        time.sleep(6)
        proc = stack.procs.pop("redis")
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        time.sleep(4)
        stack.start_redis(persist=persist)
        back = time.time()
        time.sleep(10)
        assert beat.poll() is None, (tmp_path / "beat.log").read_text()[-3000:]
        stop(beat)
        after = [t for t in fires(stack) if t >= back]
        assert_once_per_period(after, time.time() - back)
        log = (tmp_path / "beat.log").read_text()
        assert "Traceback" not in log and log.count("Redis unreachable") == 1, log[-3000:]
