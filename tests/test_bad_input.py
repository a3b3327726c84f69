"""Bad input to every command: one line on stderr, the documented exit code, no secret, nothing sent.

Exit codes (README, "Exit codes"): 1 the job failed (tasks lost or failed, a queue did not
answer, malformed dead-letter entries skipped), 2 bad input, 3 the broker cannot be reached.
"""

import json
import subprocess
import sys

import pytest
from celery_autoscale import backlog
from helpers import settings

from tasks.work import QUEUE_TASKS

SECRET = "hunter2-secret"


@pytest.fixture(scope="module")
def idle_stack(tmp_path_factory):
    """A Redis with no worker, so anything sent would stay visible."""
    from loadgen.stack import LocalStack

    with LocalStack(tmp_path_factory.mktemp("idle")) as s:
        s.start_redis()
        # Apps that cannot be imported, beside where the commands run (their working directory).
        (s.workdir / "raising_app.py").write_text("raise RuntimeError('the settings module is missing')\n")
        (s.workdir / "broken_app.py").write_text("from celery import Celery\napp = Celery(\n")
        (s.workdir / "latin1-password").write_bytes("mot-de-passe-\xe9t\xe9".encode("latin-1"))
        (s.workdir / "a-file").write_text("not a folder\n")
        (s.workdir / "deep.json").write_text("[" * 100_000)
        (s.workdir / "options.json").write_text('{"nightly": {"task": "tasks.io.transfer", "schedule": 60, "options": "fast"}}')
        (s.workdir / "priority.json").write_text('{"nightly": {"task": "tasks.io.transfer", "schedule": 60, '
                                                 '"options": {"priority": 300}}}')
        yield s


def queued(stack) -> int:
    """Every waiting task of any queue, and anything else a run would leave in Redis."""
    client = stack.client()
    lists = sum(client.llen(k) for k in client.scan_iter("*") if client.type(k) == b"list")
    return lists + sum(backlog(client, q, settings(stack)).in_flight for q in QUEUE_TASKS)


def run(stack, *argv: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *argv], env=stack.process_env(REDIS_PASSWORD=SECRET, **env),
                          capture_output=True, text=True, timeout=120, cwd=stack.workdir)


LOADGEN = [
    (["sawtooth", "--rate", "5"], {}, "unknown pattern 'sawtooth'"),
    (["steady", "--rate", "5", "--queues", "cpu,gpu"], {}, "unknown queue 'gpu'"),
    (["steady", "--rate", "-3"], {}, "--rate: must be finite and > 0"),
    (["steady", "--rate", "0"], {}, "--rate: must be finite and > 0"),
    (["steady", "--rate", "inf"], {}, "--rate: must be finite"),
    (["steady", "--rate", "nan"], {}, "--rate: must be finite"),
    (["steady", "--rate", "lots"], {}, "--rate: must be a number"),
    (["ramp", "--rate", "5", "--duration", "0"], {}, "--duration: must be finite and > 0"),
    (["steady", "--rate", "5", "--duration", "inf"], {}, "--duration: must be finite"),
    (["oscillate", "--rate", "5", "--period", "nan"], {}, "--period: must be finite"),
    (["oscillate", "--rate", "5", "--amplitude", "9"], {}, "--amplitude must be between 0 and --rate"),
    (["burst"], {}, "burst needs --count"),
    (["burst", "--count", "0"], {}, "--count: must be finite and >= 1"),
    (["burst", "--count", "5", "--fail-rate", "2"], {}, "--fail-rate: must be finite and >= 0 and <= 1"),
    (["burst", "--count", "5", "--fail-rate", "nan"], {}, "--fail-rate: must be finite"),
    (["burst", "--count", "5", "--wait-seconds", "nan"], {}, "--wait-seconds: must be finite"),
    (["burst", "--count", "5", "--wait-seconds", "inf"], {}, "--wait-seconds: must be finite"),
    (["burst", "--count", "5", "--work-units", "-1"], {}, "--work-units: must be finite and >= 0"),
    (["steady", "--rate", "5", "--priorities", "0=1,12=1"], {}, "priorities are 0 to 9"),
    (["steady", "--rate", "5", "--priorities", "0=inf"], {}, "must be a finite number >= 0"),
    (["steady", "--rate", "5", "--queues", "cpu=inf"], {}, "must be a finite number >= 0"),
    (["steady", "--rate", "5", "--queues", "cpu=0"], {}, "at least one entry with a positive weight"),
    (["replay", "--csv", "MALFORMED"], {}, "expected 'seconds,tasks_per_second'"),
    (["replay", "--csv", "NOT_UTF8"], {}, "not UTF-8 text"),
    (["replay", "--csv", "/nonexistent.csv"], {}, "cannot read replay CSV"),
    (["burst", "--count", "5", "--wait", "--timeout", "nan"], {}, "--timeout: must be finite"),
    (["burst", "--count", "5", "--wait", "--timeout", "0"], {}, "--timeout: must be finite and > 0"),
    (["burst", "--count", "5", "--plot", "/nonexistent/x.png"], {}, "--plot: cannot write into /nonexistent"),
    (["burst", "--count", "5", "--timeline", "/nonexistent/x.json"], {}, "--timeline: cannot write into /nonexistent"),
    (["burst", "--count", "5", "--namespace", "celery"], {}, "--kubeconfig and --namespace go with --release"),
    (["burst", "--count", "5", "--release", "ci", "--kubeconfig", "/nonexistent/kubeconfig"], {},
     "cannot read the kubeconfig /nonexistent/kubeconfig"),
    (["burst", "--count", "5", "--release", "ci", "--kubeconfig", "KUBECONFIG_UNREACHABLE"], {},
     "cannot list the worker Deployments of release 'ci' in namespace 'default'"),
    (["burst", "--count", "5", "--broker", f"http://:{SECRET}@127.0.0.1:6379/0"], {}, "must be a redis://, rediss:// or sentinel:// URL"),
    (["burst", "--count", "5", "--broker", "redis://127.0.0.1:port/0"], {}, "is malformed"),
    (["burst", "--count", "5", "--broker", "redis://[::1/0"], {}, "is malformed"),
    (["burst", "--count", "5", "--app", "nosuch.module:app"], {}, "--app: cannot import the app module 'nosuch.module'"),
    (["burst", "--count", "5", "--app", "tasks.work:nothing"], {}, "does not name a Celery app"),
    (["burst", "--count", "5", "--task", "x", "--work-units", "5"], {}, "shapes the sample app's tasks"),
    (["burst", "--count", "5", "--task", "x", "--args", '{"a": 1}'], {}, "--args: must be a JSON list"),
    (["burst", "--count", "5", "--task", "x", "--kwargs", "{oops"], {}, "--kwargs: not JSON"),
    (["burst", "--count", "5", "--mix", '[{"task": 1}]'], {}, "--mix: entry 0 needs a \"task\" name"),
    (["burst", "--count", "5", "--mix", "@/nonexistent.json"], {}, "--mix: cannot read /nonexistent.json"),
    (["burst", "--count", "5", "--kwargs", "{}"], {}, "--args and --kwargs go with --task"),
    (["burst", "--count", "5"], {"CELERY_VISIBILITY_TIMEOUT": "abc"}, "CELERY_VISIBILITY_TIMEOUT must be a whole number"),
    (["burst", "--count", "5"], {"CELERY_VISIBILITY_TIMEOUT": "60", "CELERY_TASK_TIME_LIMIT": "60"},
     "must stay below the visibility timeout"),
    (["burst", "--count", "5"], {"CELERY_HEARTBEAT_INTERVAL": "nan"}, "CELERY_HEARTBEAT_INTERVAL must be a number"),
    (["burst", "--count", "5"], {"CELERY_METRICS_PORT": "70000"}, "CELERY_METRICS_PORT must be a whole number from 0 to 65535"),
    (["burst", "--count", "5"], {"CELERY_PRIORITY_STEPS": "3,6"}, "CELERY_PRIORITY_STEPS must start at 0"),
    (["burst", "--count", "5"], {"REDIS_PASSWORD_FILE": "/nonexistent/password"}, "cannot read REDIS_PASSWORD_FILE"),
    (["steady", "--rate", "1e308"], {}, "--rate: must be finite and > 0 and <= 1e+06"),
    (["steady", "--rate", "5", "--duration", "1e308"], {}, "--duration: must be finite and > 0 and <= 2.592e+06"),
    (["burst", "--count", "5", "--task", "x", "--args", "@deep.json"], {}, "--args: JSON nested too deep"),
    (["burst", "--count", "5", "--plot", "out.xyz"], {}, "--plot: cannot draw a .xyz"),
    (["burst", "--count", "5", "--timeline", "/tmp"], {}, "--timeline: /tmp is a folder"),
    (["burst", "--count", "5", "--queues", ""], {}, "--queues: empty"),
    (["burst", "--count", "5", "--broker", ""], {}, "--broker: empty"),
    (["burst", "--count", "5", "--task", " "], {}, "--task: empty"),
    (["burst", "--count", "5", "--mix", '[{"task": "tasks.io.transfer", "queue": ""}]'], {}, '--mix: entry 0: "queue" must name a queue'),
    (["burst", "--count", "5"], {"CELERY_AUTOSCALE_APP": ""}, "--app: no app given"),
]


@pytest.mark.parametrize("args, env, message", LOADGEN, ids=[" ".join(a) + (f" {e}" if e else "") for a, e, _ in LOADGEN])
def test_loadgen_bad_input_exits_2_with_one_line_and_sends_nothing(idle_stack, tmp_path, args, env, message):
    files = {"MALFORMED": b"seconds,tasks_per_second\n10,5\n10,lots\n", "NOT_UTF8": b"10,5\n\xff\xfe,1\n",
             # a well-formed kubeconfig whose API server refuses connections (a closed loopback port)
             "KUBECONFIG_UNREACHABLE": b"apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters: [{name: k, "
                                       b"cluster: {server: 'https://127.0.0.1:1'}}]\nusers: [{name: u, user: "
                                       b"{token: x}}]\ncontexts: [{name: c, context: {cluster: k, user: u}}]\n"}
    for placeholder, content in files.items():
        if placeholder in args:
            (tmp_path / placeholder.lower()).write_bytes(content)
            args = [str(tmp_path / placeholder.lower()) if a == placeholder else a for a in args]
    done = run(idle_stack, "-m", "loadgen", *args, **env)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: "), done.stderr
    assert message in done.stderr, done.stderr
    assert SECRET not in done.stderr + done.stdout
    assert queued(idle_stack) == 0


OTHER_COMMANDS = [
    (["-m", "celery_autoscale.deadletter", "list", "--limit", "0"], {}, 2, "--limit: must be finite and >= 1"),
    (["-m", "celery_autoscale.deadletter", "list", "--limit", "-1"], {}, 2, "--limit: must be finite and >= 1"),
    (["-m", "celery_autoscale.deadletter", "requeue", "--limit", "x"], {}, 2, "must be a whole number"),
    (["-m", "celery_autoscale.deadletter", "count"], {"CELERY_VISIBILITY_TIMEOUT": "abc"}, 2, "CELERY_VISIBILITY_TIMEOUT"),
    (["-m", "celery_autoscale.deadletter", "count"], {"CELERY_BROKER_URL": f"redis://:{SECRET}@127.0.0.1:1/0"}, 3,
     "talking to redis://:***@127.0.0.1:1/0"),
    (["-m", "celery_autoscale.deadletter", "nothing"], {}, 2, "invalid choice: 'nothing'"),
    (["-m", "celery_autoscale.roundtrip", "--queues", " ,", "--timeout", "5"], {}, 2, "give at least one queue"),
    (["-m", "celery_autoscale.roundtrip", "--queues", "cpu", "--timeout", "nan"], {}, 2, "--timeout: must be finite and > 0"),
    (["-m", "celery_autoscale.roundtrip", "--queues", "cpu", "--app", "nosuch:app"], {}, 2, "cannot import the app module"),
    (["-m", "celery_autoscale.health", "--max-age", "nan"], {}, 2, "--max-age: must be finite and > 0"),
    (["-m", "celery_autoscale.reconciler", "--once"], {"CELERY_ETA_HORIZON": "-1"}, 2,
     "CELERY_ETA_HORIZON must be a whole number from 0 to 86400"),
    (["-m", "celery_autoscale.reconciler", "--interval", "0"], {}, 2, "--interval: must be finite and > 0"),
    (["-m", "celery_autoscale.reconciler", "--margin", "inf"], {}, 2, "--margin: must be finite and > 0"),
    (["-m", "celery_autoscale.reconciler", "--app", "nosuch:app", "--once"], {}, 2, "cannot import the app module"),
    (["-m", "celery_autoscale.reconciler", "--once"], {"CELERY_BROKER_URL": f"redis://:{SECRET}@127.0.0.1:1/0"}, 3,
     "talking to redis://:***@127.0.0.1:1/0"),
    (["-m", "celery", "-A", "celery_autoscale.worker", "worker", "-Q", "cpu"], {"CELERY_TASK_TIME_LIMIT": "-5"}, 2,
     "CELERY_TASK_TIME_LIMIT must be a whole number at least 1"),
    (["-m", "celery", "-A", "celery_autoscale.worker", "worker", "-Q", "cpu"], {"CELERY_AUTOSCALE_APP": "tasks.work:QUEUES"}, 2,
     "does not name a Celery app"),
    (["-m", "celery", "-A", "celery_autoscale.worker", "worker", "-Q", "cpu"], {"CELERY_METRICS_ADDRESS": "everywhere"}, 2,
     "CELERY_METRICS_ADDRESS must be an IP address"),
    (["-m", "celery", "-A", "celery_autoscale.worker", "worker", "-Q", "cpu"], {"CELERY_ETA_HORIZON": "4000"}, 2, "the ETA horizon (4000 s) must stay below the visibility timeout"),
    (["-m", "celery", "-A", "celery_autoscale.worker", "worker", "-Q", "cpu"], {"CELERY_HEARTBEAT_FILE": "/nonexistent/folder/beat"}, 2, "the heartbeat file /nonexistent/folder/beat"),
    (["-m", "celery", "-A", "celery_autoscale.worker", "worker", "-Q", "cpu"], {"CELERY_HEARTBEAT_FILE": "/tmp"}, 2, "the heartbeat file /tmp (CELERY_HEARTBEAT_FILE) cannot be written"),
    (["-m", "celery", "-A", "celery_autoscale.worker", "worker", "-Q", "cpu"], {"CELERY_AUTOSCALE_APP": ":app"}, 2, "does not name a module"),
    (["-m", "celery", "-A", "celery_autoscale.worker", "worker", "-Q", "cpu"], {"CELERY_AUTOSCALE_APP": ".tasks:app"}, 2, "does not name a module"),
    (["-m", "celery", "-A", "celery_autoscale.worker", "worker", "-Q", "cpu"], {"CELERY_AUTOSCALE_APP": "raising_app:app"}, 2,
     "cannot import the app module 'raising_app': it raised RuntimeError: the settings module is missing"),
    (["-m", "celery", "-A", "celery_autoscale.worker", "worker", "-Q", "cpu"], {"CELERY_AUTOSCALE_APP": "broken_app:app"}, 2, "cannot import the app module 'broken_app': a syntax error"),
    (["-m", "celery_autoscale.deadletter", "count"], {"CELERY_BROKER_URL": "redis://127.0.0.1:1/notadb"}, 2, "names no database"),
    (["-m", "celery_autoscale.deadletter", "count"], {"CELERY_BROKER_URL": "redis://127.0.0.1:1/0?socket_timeout=abc"}, 2, "invalid query value socket_timeout"),
    (["-m", "celery_autoscale.deadletter", "count"], {"REDIS_PASSWORD_FILE": "latin1-password"}, 2, "REDIS_PASSWORD_FILE latin1-password is not UTF-8 text"),
    (["-m", "celery_autoscale.reconciler", "--once", "--heartbeat-file", "/nonexistent/folder/beat"], {}, 2,
     "--heartbeat-file /nonexistent/folder/beat: cannot be written"),
    (["-m", "celery_autoscale.health", "--file", "a-file/beat"], {}, 1, "unhealthy: cannot read the heartbeat file"),
    (["-m", "celery_autoscale.health", "--file", "/tmp"], {}, 2, "--file /tmp is a folder"),
    (["-m", "celery_autoscale.beat", "--max-interval", "1e308e"], {}, 2, "--max-interval: must be a number"),
    (["-m", "celery_autoscale.beat", "--loglevel", "loud"], {}, 2, "--loglevel: invalid choice: 'LOUD'"),
    (["-m", "celery_autoscale.beat", "--schedule", "options.json"], {}, 2, "nightly: options must be an object"),
    (["-m", "celery_autoscale.beat", "--schedule", "priority.json"], {}, 2,
     "nightly: options.priority must be a whole number from 0 to 255"),
    (["-m", "celery_autoscale.flower", "--no-such-option=1"], {}, 2, "--no-such-option: not an option of Flower"),
    (["-m", "celery_autoscale.flower", "--port=abc"], {}, 2, "--port: a malformed value"),
    (["-m", "celery_autoscale.flower", "--port=70000"], {}, 2, "--port: must be from 1 to 65535"),
    (["-m", "celery_autoscale.flower", f"--basic-auth=admin:{SECRET}", "--max-tasks=many"], {}, 2,
     "--max-tasks: a malformed value"),
    (["-m", "celery_autoscale.flower", "--port=5599"], {"BASIC_AUTH_DIR": "/nonexistent/auth"}, 2,
     "BASIC_AUTH_DIR: cannot read /nonexistent/auth/username"),
    (["-m", "celery_autoscale.deadletter", "count"], {"CELERY_BROKER_URL": "rediss://127.0.0.1:1/0",
                                                      "REDIS_TLS_CA_FILE": "/nonexistent/ca.pem"}, 2,
     "REDIS_TLS_CA_FILE /nonexistent/ca.pem: no readable file there"),
]


@pytest.mark.parametrize("argv, env, code, message", OTHER_COMMANDS, ids=[" ".join(a[1:]) for a, *_ in OTHER_COMMANDS])
def test_every_other_command_says_what_is_wrong_in_one_line(idle_stack, argv, env, code, message):
    env.setdefault("CELERY_AUTOSCALE_APP", "tasks.app:app")
    done = run(idle_stack, *argv, **env)
    assert done.returncode == code, done.stderr
    assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr
    assert SECRET not in done.stderr + done.stdout
    assert queued(idle_stack) == 0


REFUSED = [
    ["-m", "celery", "-A", "celery_autoscale.worker", "worker", "-Q", "cpu"],
    ["-m", "celery_autoscale.beat"],
    ["-m", "celery_autoscale.flower", "--port=5599"],
    ["-m", "celery_autoscale.reconciler"],
    ["-m", "celery_autoscale.reconciler", "--once"],
]


@pytest.fixture(scope="module")
def locked_stack(tmp_path_factory):
    """A Redis that requires a password the commands do not have."""
    from loadgen.stack import LocalStack

    with LocalStack(tmp_path_factory.mktemp("locked"), redis_password="the-right-one") as s:
        s.start_redis()
        yield s


@pytest.mark.parametrize("given", ["wrong", "none"])
@pytest.mark.parametrize("argv", REFUSED, ids=[" ".join(a[1:]) for a in REFUSED])
def test_a_refused_password_exits_3_at_once_with_one_line(locked_stack, argv, given):
    """Celery would retry a refused password 100 times (a worker), beat print 825 lines: here every
    long-running command stops before it starts, naming the broker but not the password."""
    url = f"redis://{':' + SECRET + '@' if given == 'wrong' else ''}127.0.0.1:{locked_stack.redis_port}/0"
    done = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=60, cwd=locked_stack.workdir,
                          env=locked_stack.process_env(CELERY_BROKER_URL=url, CELERY_RESULT_BACKEND=url,
                                                       CELERY_AUTOSCALE_APP="tasks.app:app"))
    assert done.returncode == 3, done.stderr
    why = "wrong username or password" if given == "wrong" else "it requires a password, none was given"
    assert done.stderr.count("\n") == 1 and "refused the credentials: " + why in done.stderr, done.stderr
    assert SECRET not in done.stderr + done.stdout and "the-right-one" not in done.stderr + done.stdout


def test_an_unreachable_broker_exits_3_and_never_shows_the_password(idle_stack):
    done = run(idle_stack, "-m", "loadgen", "burst", "--count", "5", "--broker", f"redis://:{SECRET}@127.0.0.1:1/0")
    assert done.returncode == 3
    assert done.stderr.count("\n") == 1 and "cannot reach the broker" in done.stderr
    assert "redis://:***@127.0.0.1:1/0" in done.stderr and SECRET not in done.stderr


def test_tasks_nobody_consumes_are_reported_unfinished_not_lost_and_exit_1(idle_stack):
    """They are still waiting in Redis at --timeout: unfinished. Lost means in Redis nowhere."""
    done = run(idle_stack, "-m", "loadgen", "burst", "--count", "4", "--task", "tasks.io.transfer",
               "--queues", "nobody", "--wait", "--timeout", "2", "--json")
    assert done.returncode == 1, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["submitted"] == 4 and summary["unfinished"] == 4 and summary["lost"] == 0
    assert summary["succeeded"] == 0
    idle_stack.client().delete("nobody")


def test_a_malformed_dead_letter_entry_is_reported_by_index_and_blocks_nothing(idle_stack):
    client = idle_stack.client()
    key = "celery-autoscale:dead-letter"
    good = {"task_id": "t1", "task": "tasks.io.transfer", "queue": "parked", "args": [], "kwargs": {},
            "error": "TransientError: x", "retries": 2, "failed_at": 1.0, "traceback": ""}
    client.delete(key)
    client.rpush(key, "not json", json.dumps(good), json.dumps({"task_id": "no other field"}))
    listed = run(idle_stack, "-m", "celery_autoscale.deadletter", "list", "--json", CELERY_AUTOSCALE_APP="tasks.app:app")
    assert listed.returncode == 1 and json.loads(listed.stdout)["task_id"] == "t1"
    assert listed.stderr.strip() == "error: skipped 2 malformed entries at index 0, 2 (0: newest)"
    requeued = run(idle_stack, "-m", "celery_autoscale.deadletter", "requeue", CELERY_AUTOSCALE_APP="tasks.app:app")
    assert requeued.returncode == 1 and requeued.stdout.strip() == "requeued 1"
    assert client.llen("parked") == 1 and client.llen(key) == 2  # the malformed ones stay, for a person to look at
    client.delete(key, "parked")


def test_help_is_the_reference():
    text = subprocess.run([sys.executable, "-m", "loadgen", "--help"], capture_output=True, text=True).stdout
    for option in ("--rate", "--duration", "--count", "--queues", "--priorities", "--seed", "--wait", "--app",
                   "--task", "--args", "--kwargs", "--mix", "--timeout", "--json", "--plot", "--csv", "tasks/s",
                   "seconds", "Exit status"):
        assert option in text


#: Passwords with every character a URL parser stops at, percent signs, spaces and non-ASCII; each
#: 3-character run between them is distinct, so a leak of any part shows.
HARD_PASSWORDS = ["Zq9#Kx7/Wm3?Tr5@Hy2", "Pd4%41Lc8;Gf6 Vb1", "Qa5;Nj2@Xe7#Ü-Os3"]


def fragments(password: str) -> list[str]:
    import re

    return [f for f in re.split(r"[#/?@%;\s-]", password) if len(f) >= 3]


def secret_commands(url: str) -> list[tuple[list[str], dict]]:
    """Every command that takes a broker URL, pointed at ``url``."""
    return [
        (["-m", "loadgen", "burst", "--count", "2", "--broker", url], {}),
        (["-m", "celery_autoscale.deadletter", "count"], {"CELERY_BROKER_URL": url}),
        (["-m", "celery_autoscale.deadletter", "requeue"], {"CELERY_BROKER_URL": url}),
        (["-m", "celery_autoscale.reconciler", "--once"], {"CELERY_BROKER_URL": url}),
        (["-m", "celery_autoscale.roundtrip", "--queues", "cpu", "--timeout", "1"], {"CELERY_BROKER_URL": url}),
    ]


@pytest.mark.parametrize("password", HARD_PASSWORDS)
def test_no_command_ever_prints_any_part_of_a_password_whatever_it_holds(idle_stack, password):
    urls = [f"redis://:{password}@127.0.0.1:1/0", f"redis://user:{password}@127.0.0.1:1/0",
            f"sentinel://127.0.0.1:1;sentinel://:{password}@127.0.0.1:2"]
    for url in urls:
        for argv, env in secret_commands(url):
            env = {"CELERY_AUTOSCALE_APP": "tasks.app:app", "CELERY_SENTINEL_MASTER": "mymaster", **env}
            done = run(idle_stack, *argv, **env)
            seen = done.stdout + done.stderr
            assert done.returncode in (2, 3), (argv, url, seen)
            assert done.stderr.count("\n") == 1, (argv, seen)
            assert password not in seen and not [f for f in fragments(password) if f in seen], (argv, seen)
    assert queued(idle_stack) == 0


def test_redact_hides_every_password_of_every_url_in_a_list():
    from celery_autoscale import redact

    for password in HARD_PASSWORDS:
        text = redact(f"sentinel://:a@s1:26379;sentinel://u:{password}@s2:26379;redis://:{password}@h:6379/0")
        assert text == "sentinel://:***@s1:26379;sentinel://u:***@s2:26379;redis://:***@h:6379/0"


def test_a_dead_letter_entry_of_the_wrong_shape_is_skipped_and_blocks_nothing(idle_stack):
    client = idle_stack.client()
    key = "celery-autoscale:dead-letter"
    good = {"task_id": "t1", "task": "tasks.io.transfer", "queue": "parked", "args": [], "kwargs": {},
            "error": "TransientError: x", "retries": 2, "failed_at": 1.0, "traceback": ""}
    wrong = [{**good, "failed_at": "yesterday"}, {**good, "args": "[1]"}, {**good, "queue": "unknown"},
             {**good, "task": ""}, {**good, "kwargs": []}]
    client.delete(key)
    client.rpush(key, json.dumps(good), *map(json.dumps, wrong), "[" * 100_000)
    listed = run(idle_stack, "-m", "celery_autoscale.deadletter", "list", CELERY_AUTOSCALE_APP="tasks.app:app")
    assert listed.returncode == 1 and "tasks.io.transfer[t1]" in listed.stdout, listed.stderr
    assert listed.stderr.strip() == "error: skipped 6 malformed entries at index 1, 2, 3, 4, 5, 6 (0: newest)"
    requeued = run(idle_stack, "-m", "celery_autoscale.deadletter", "requeue", CELERY_AUTOSCALE_APP="tasks.app:app")
    assert requeued.returncode == 1 and requeued.stdout.strip() == "requeued 1"
    assert client.llen("parked") == 1 and client.llen("unknown") == 0 and client.llen(key) == 6
    client.delete(key, "parked")
