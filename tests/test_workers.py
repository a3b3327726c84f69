"""Real workers on a real Redis: routing, a 300-task burst with nothing lost, and the metrics."""

from celery_autoscale import backlog
from helpers import eventually, loadgen_json, producer, result_states, scrape, settings, succeeded_by_queue

from tasks.work import QUEUE_TASKS


def test_each_queue_is_consumed_by_its_own_worker_only(stack, celery_app):
    sent = {queue: [celery_app.send_task(name, kwargs={"fail_rate": 0.0}, queue=queue) for _ in range(6)]
            for queue, (name, _) in QUEUE_TASKS.items()}
    for queue, results in sent.items():
        workers = {r.get(timeout=60)["worker"].split("@")[0] for r in results}
        assert workers == {f"worker-{queue}"}


def test_a_burst_of_300_completes_with_none_lost_and_everyone_agrees(stack):
    client = stack.client()
    before_states = result_states(client)
    before_metrics = {name: succeeded_by_queue(scrape(port)) for name, port in stack.metrics_ports.items()}

    summary = loadgen_json(stack, "burst", "--count", "300", "--wait", "--timeout", "180",
                           "--work-units", "5000", "--size-bytes", "4096", "--wait-seconds", "0.02",
                           "--priorities", "0=1,4=1,9=1")

    assert summary["submitted"] == 300 and summary["succeeded"] == 300
    assert summary["failed"] == 0 and summary["lost"] == 0
    assert sum(q["submitted"] for q in summary["queues"].values()) == 300
    assert set(summary["queues"]) == {"cpu", "io", "mixed"}
    # The result backend saw 300 more successes ...
    after_states = result_states(client)
    assert after_states.get("SUCCESS", 0) - before_states.get("SUCCESS", 0) == 300
    # ... Redis holds no waiting or running task of any queue ...
    for queue in QUEUE_TASKS:  # (a result is stored a moment before its message is acknowledged)
        eventually(lambda: backlog(client, queue, settings(stack)).total == 0, 10, f"{queue} acknowledged")
    # ... and each worker's /metrics counted exactly its queue's tasks, summed over processes.
    for name, port in stack.metrics_ports.items():
        queue = name.removeprefix("worker-")
        ran = succeeded_by_queue(scrape(port)).get(queue, 0) - before_metrics[name].get(queue, 0)
        assert ran == summary["queues"][queue]["succeeded"], name


def test_metrics_have_runtime_wait_and_backlog_series(stack):
    samples = scrape(stack.metrics_ports["worker-cpu"])
    names = {name for name, _ in samples}
    assert {"celery_autoscale_task_runtime_seconds_count", "celery_autoscale_queue_wait_seconds_count",
            "celery_autoscale_backlog_tasks"} <= names
    backlog_queues = {dict(labels)["queue"] for name, labels in samples if name == "celery_autoscale_backlog_tasks"}
    assert backlog_queues == {"cpu"}


def test_the_helm_test_round_trip_reaches_every_queue(stack):
    from helpers import run_module

    done = run_module(stack, "celery_autoscale.roundtrip", "--queues", "cpu,io,mixed", "--timeout", "60")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("answered by") == 3


def test_the_round_trip_fails_clearly_for_a_queue_nobody_consumes(stack):
    from helpers import run_module

    done = run_module(stack, "celery_autoscale.roundtrip", "--queues", "cpu,nobody", "--timeout", "5")
    assert done.returncode == 1
    assert "FAILED queue nobody: no answer within 5s" in done.stderr and "queue cpu: answered" in done.stdout


def test_a_worker_reads_the_redis_password_from_a_file_as_the_chart_mounts_it(tmp_path):
    """The chart gives CELERY_BROKER_URL without the password and REDIS_PASSWORD_FILE beside it."""
    from loadgen.stack import LocalStack, WorkerSpec

    with LocalStack(tmp_path, redis_password="s3cret-from-a-secret") as locked:
        locked.start_redis()
        (tmp_path / "password").write_text("s3cret-from-a-secret")
        locked.start_worker(WorkerSpec("cpu", "solo", concurrency=1), name="filed",
                            CELERY_BROKER_URL="redis://127.0.0.1:%d/0" % locked.redis_port,
                            CELERY_RESULT_BACKEND="", REDIS_PASSWORD_FILE=str(tmp_path / "password"))
        result = producer(locked).send_task("tasks.cpu.hash_chain", kwargs={"work_units": 10}, queue="cpu")
        assert result.get(timeout=30)["worker"].startswith("filed@")


def test_a_second_worker_on_a_taken_metrics_port_says_so_in_one_line_and_works_on(fresh_stack):
    from loadgen.stack import WorkerSpec

    first = fresh_stack.start_worker(WorkerSpec("io", "threads", concurrency=2), name="first",
                                     CELERY_METRICS_ADDRESS="127.0.0.1")
    port = fresh_stack.metrics_ports[first]
    fresh_stack.start_worker(WorkerSpec("io", "threads", concurrency=2), name="second",
                             CELERY_METRICS_PORT=str(port), CELERY_METRICS_ADDRESS="127.0.0.1")
    app = producer(fresh_stack)
    results = [app.send_task("tasks.io.transfer", kwargs={"size_bytes": 0}, queue="io") for _ in range(20)]
    workers = {r.get(timeout=60)["worker"].split("@")[0] for r in results}
    assert workers == {"first", "second"}, "both consume"
    log = (fresh_stack.workdir / "second.log").read_text()
    complaints = [line for line in log.splitlines() if "metrics" in line and "cannot listen" in line]
    assert len(complaints) == 1 and f"127.0.0.1:{port}" in complaints[0], log[-2000:]
    assert "Traceback" not in log
    assert scrape(port), "the first worker still serves /metrics"
