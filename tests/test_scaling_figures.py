"""The figures the real-cluster benchmarks compute from the pod bridge's events, on known samples."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "e2e"))

from harness import pod_seconds  # noqa: E402


def test_pod_seconds_count_running_and_terminating_time_within_the_window():
    events = [
        (100.0, "w-a", "started"), (160.0, "w-a", "sigterm"), (190.0, "w-a", "exited 0"),  # 90 s, 30 terminating
        (110.0, "w-b", "started"), (150.0, "w-b", "sigterm"), (151.0, "w-b", "exited 0"),  # 41 s, 1 terminating
        (120.0, "w-c", "started"),                                                           # running: 80 s to 200
        (90.0, "other", "started"),                                                          # another prefix
    ]
    total, terminating = pod_seconds(events, "w-", since=100.0, until=200.0)
    assert (total, terminating) == (90 + 41 + 80, 30 + 1)
    assert pod_seconds(events, "w-", since=155.0, until=170.0) == (15 + 15, 10)  # a: 155-170, c: 155-170
