"""Load patterns send exactly the tasks their shape integrates to."""

import math

import pytest

from loadgen import patterns


def test_each_pattern_integrates_its_rate():
    assert patterns.burst(300).total() == 300
    assert patterns.steady(20, 10).total() == 200
    assert patterns.ramp(0, 10, 20).total() == 100  # mean rate 5 tasks/s for 20 s
    sine = patterns.oscillate(10, 5, 30, 60)
    assert sine.total() == 600  # whole periods average to the mean rate
    assert sine.due(7.5) == pytest.approx(75 + 5 * 30 / (2 * math.pi))
    square = patterns.oscillate(10, 5, 10, 10, "square")
    assert square.due(5) == pytest.approx(75) and square.total() == 100


def test_replay_reads_segments_and_skips_a_header(tmp_path):
    path = tmp_path / "rates.csv"
    path.write_text("seconds,tasks_per_second\n10,5\n5,0\n10,2\n")
    pattern = patterns.build("replay", rate=None, duration=1, count=None, csv_path=path)
    assert pattern.duration == 25
    assert pattern.total() == 70
    assert pattern.due(12) == 50


@pytest.mark.parametrize("text", ["10,5\nten,5\n", "", "10\n", "10,-1\n"])
def test_malformed_replay_csv_names_the_problem(tmp_path, text):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(patterns.PatternError):
        patterns.read_replay(path)


def test_poisson_arrivals_keep_the_rate_are_random_in_time_and_repeat_with_their_seed():
    """Exponential gaps (their spread equals their mean) at the pattern's rate, also as it changes."""
    import statistics

    def send_times(pattern) -> list[float]:
        times, sent = [], 0
        for ms in range(int(pattern.duration * 1000) + 1):
            due = int(pattern.due(ms / 1000))
            times += [ms / 1000] * (due - sent)
            sent = due
        return times

    steady = patterns.poisson(patterns.steady(20, 200), seed=3)
    times = send_times(steady)
    assert times == send_times(patterns.poisson(patterns.steady(20, 200), seed=3))
    assert times != send_times(patterns.poisson(patterns.steady(20, 200), seed=4))
    assert abs(len(times) - 4000) < 4 * math.sqrt(4000)  # Poisson: mean 4000, sd 63
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert statistics.mean(gaps) == pytest.approx(0.05, rel=0.05)
    assert statistics.stdev(gaps) / statistics.mean(gaps) == pytest.approx(1, abs=0.1)  # uniform pacing: 0
    ramp = send_times(patterns.poisson(patterns.ramp(0, 40, 100), seed=1))
    assert abs(sum(t < 50 for t in ramp) - 500) < 4 * math.sqrt(500)  # a quarter of the 2000 in the first half
    with pytest.raises(patterns.PatternError, match="needs a pattern that lasts"):
        patterns.poisson(patterns.burst(10), seed=0)


def test_log_normal_run_times_keep_their_mean_and_spread():
    import random
    import statistics

    from loadgen.run import _spread

    rng = random.Random(5)
    drawn = [_spread({"wait_seconds": 0.3, "size_bytes": 1}, 0.8, rng)["wait_seconds"] for _ in range(50_000)]
    assert statistics.mean(drawn) == pytest.approx(0.3, rel=0.03)
    assert statistics.median(drawn) == pytest.approx(0.3 * math.exp(-0.32), rel=0.03)  # exp(mu), mu = ln 0.3 - 0.8²/2
    assert _spread({"wait_seconds": 0.3}, 0, rng) == {"wait_seconds": 0.3}


def test_loadgen_sends_poisson_arrivals_of_log_normal_tasks_to_real_workers(stack):
    from helpers import loadgen_json

    args = ["steady", "--rate", "20", "--duration", "3", "--arrivals", "poisson", "--seed", "11", "--queues", "io",
            "--wait-seconds", "0.05", "--wait-sigma", "0.5", "--size-bytes", "0", "--wait", "--timeout", "60"]
    first, again = loadgen_json(stack, *args), loadgen_json(stack, *args)
    assert first["submitted"] == again["submitted"]  # the same seed, the same arrivals
    assert abs(first["submitted"] - 60) < 4 * math.sqrt(60)
    assert first["succeeded"] == first["submitted"] and first["lost"] == 0
