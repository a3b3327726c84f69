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
