"""The figures the real-cluster benchmarks compute from the pods' events, on known samples."""

from pathlib import Path

from e2e_cluster import pod_seconds


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


# -- loadgen.scaling: the scaling report's figures ------------------------------------------------
from loadgen import scaling  # noqa: E402


def sample(t, ready, queued=0, in_flight=0, pods=None, busy=None, desired=None, scheduled=0):
    return {"t": t, "ready": ready, "desired": ready if desired is None else desired,
            "pods": ready if pods is None else pods, "queued": queued, "in_flight": in_flight,
            "scheduled": scheduled, "busy": in_flight if busy is None else busy}


def test_ideal_is_the_ceiling_of_backlog_over_target_clamped_to_min_and_max():
    assert [scaling.ideal(b, 4, 0, 4) for b in (0, 1, 4, 5, 16, 17, 100)] == [0, 1, 1, 2, 4, 4, 4]
    assert scaling.ideal(0, 4, 1, 4) == 1
    assert scaling.true_backlog(sample(0, 0, queued=3, in_flight=2, scheduled=1)) == 6


def test_reaction_counts_to_the_first_new_ready_worker_and_to_the_ideal_of_the_moment():
    burst = [sample(0, 0, queued=16), sample(1, 0, queued=16), sample(2, 1, queued=12, in_flight=4),
             sample(3, 3, queued=4, in_flight=12), sample(4, 4, in_flight=16), sample(5, 4, in_flight=16)]
    assert scaling.reaction(burst, 4, 0, 4) == {"first_worker_s": 2, "ideal_s": 4}
    # a worker up before the first sample after the first task still counts, against the resting count
    assert scaling.reaction(burst[2:], 4, 0, 4, rest=0) == {"first_worker_s": 2, "ideal_s": 4}
    fixed = [sample(t, 4, in_flight=4) for t in range(5)]
    assert scaling.reaction(fixed, 4, 0, 4) == {"first_worker_s": None, "ideal_s": None}


def test_drain_is_from_the_last_send_to_an_empty_true_backlog():
    samples = [sample(0, 1, queued=2), sample(5, 1, in_flight=1), sample(9, 1), sample(10, 0)]
    assert scaling.drain(samples, last_sent=2) == 7
    assert scaling.drain(samples[:2], last_sent=2) is None


def test_to_rest_is_from_the_drain_to_the_last_change_of_desired_replicas():
    samples = [sample(0, 4), sample(5, 4), sample(10, 2), sample(12, 2), sample(15, 0), sample(20, 0)]
    assert scaling.to_rest(samples, since=5) == 10
    assert scaling.to_rest(samples, since=16) == 4  # already at rest: the next sample
    assert scaling.to_rest(samples, since=None) is None


def test_cost_integrates_pods_and_busy_processes_over_time():
    # 2 pods for 2 s then 1 pod for 2 s (last sample: the median step, 1 s... here 2 s), concurrency 4
    samples = [sample(0, 2, in_flight=8), sample(2, 1, in_flight=2), sample(4, 1, in_flight=0)]
    got = scaling.cost(samples, concurrency=4)
    assert got["replica_seconds"] == 2 * 2 + 1 * 2 + 1 * 2
    assert got["process_seconds"] == 8 * 4
    assert got["busy_seconds"] == 8 * 2 + 2 * 2
    assert got["utilisation"] == 20 / 32
    assert scaling.cost([sample(0, 0), sample(1, 0)], 4)["utilisation"] is None


def test_accuracy_compares_ready_replicas_with_the_clamped_ideal():
    samples = [sample(0, 0, queued=8), sample(1, 2, queued=8), sample(2, 4, queued=8), sample(3, 4, queued=40)]
    # ideals 2, 2, 2, 4 (clamped); errors -2, 0, +2, 0
    assert scaling.accuracy(samples, 4, 0, 4) == {"exact_share": 0.5, "mean_abs_error": 1.0, "under_share": 0.25}


def test_reversals_count_direction_changes_not_steps():
    assert scaling.reversals([0, 1, 2, 4, 4, 4, 0]) == 1          # one up, one down
    assert scaling.reversals([0, 4, 0, 4, 0]) == 3
    assert scaling.reversals([3, 3, 3]) == 0
    assert scaling.reversals([0, 1, 1, 2, 3]) == 0


def test_extend_pads_a_settled_run_with_its_last_state_to_the_common_window():
    samples = [sample(0, 2), sample(1, 1), sample(2, 0)]
    padded = scaling.extend(samples, 5)
    assert [s["t"] for s in padded] == [0, 1, 2, 3, 4, 5]
    assert [s["ready"] for s in padded[2:]] == [0, 0, 0, 0]
    assert [s["t"] for s in scaling.extend(samples, 1)] == [0, 1]


def test_a_pod_terminated_while_running_a_task_counts_as_a_busy_termination():
    events = [(10.0, "w-a", "sigterm"), (12.0, "w-a", "exited 0"), (20.0, "w-b", "sigterm"), (30.0, "w-c", "started")]
    busy = [(9.0, {"w-a": 1, "w-b": 0}), (19.5, {"w-b": 0}), (25.0, {"w-b": 2})]
    assert scaling.busy_terminations(events, busy) == 1


def test_deliveries_read_celery_worker_logs_for_redeliveries_and_second_runs():
    a, b, c = ("%08d-0000-0000-0000-000000000000" % i for i in range(3))
    lines = [f"[INFO/MainProcess] Task tasks.io.transfer[{a}] received",
             f"[INFO/MainProcess] Task tasks.io.transfer[{a}] succeeded in 1.0s: None",
             f"[INFO/MainProcess] Task tasks.io.transfer[{b}] received",
             f"[INFO/MainProcess] Task tasks.io.transfer[{b}] received",           # restored at a warm shutdown
             f"[INFO/MainProcess] Task tasks.io.transfer[{b}] succeeded in 1.0s: None",
             f"[INFO/MainProcess] Task myproject.send[{c}] received",
             f"[INFO/MainProcess] Task myproject.send[{c}] succeeded in 1.0s: None",
             f"[INFO/MainProcess] Task myproject.send[{c}] received",
             f"[INFO/MainProcess] Task myproject.send[{c}] succeeded in 1.0s: None"]
    assert scaling.deliveries(lines, {a, b, c}) == {"redelivered": 2, "run_twice": 1}
    assert scaling.deliveries(lines, {a}) == {"redelivered": 0, "run_twice": 0}


def test_waits_are_nearest_rank_percentiles_and_the_max():
    assert scaling.waits(list(map(float, range(1, 101)))) == {"p50": 50.0, "p95": 95.0, "max": 100.0}
    assert scaling.waits([]) == {"p50": None, "p95": None, "max": None}


def test_the_committed_scaling_report_is_what_its_results_generate():
    """docs/scaling-report.md is `make report`'s output from bench/results/scaling.json, not edited by hand."""
    import json

    from bench import scaling_report

    root = Path(__file__).resolve().parents[1]
    result = json.loads((root / "bench" / "results" / "scaling.json").read_text())
    assert scaling_report.analyse(result["runs"]) == result["figures"]
    plots = {pattern: f"scaling/{pattern}.png" for pattern in result["figures"]}
    assert scaling_report.markdown(result, plots) == (root / "docs" / "scaling-report.md").read_text()
    assert all((root / "docs" / path).exists() for path in plots.values())
    assert set(result["figures"]) <= set(scaling_report.PATTERNS)
    assert all(set(by_config) <= set(scaling_report.CONFIGS) for by_config in result["figures"].values())
    # What a partial run (--keep) left out, the report says: every pattern and configuration not run.
    report = (root / "docs" / "scaling-report.md").read_text()
    for pattern, configs in scaling_report.unmeasured(result).items():
        line = next(x for x in report.splitlines() if x.startswith("Not measured in this report:"))
        assert f"`{pattern}`" in line and (len(configs) == len(scaling_report.CONFIGS)
                                           or all(f"`{c}`" in line.split(f"`{pattern}`")[1] for c in configs))
