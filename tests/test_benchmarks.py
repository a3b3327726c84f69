"""The in-process benchmark of a task's delivery runs as `make bench` runs it, and counts what it should.

Speed is the benchmark's to print (``bench/``), never a test's to assert; the Redis commands a task
costs are a count, the same on every machine.
"""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_a_task_costs_the_runtime_one_script_at_delivery_and_one_at_acknowledgement_in_place_of_kombus_transactions():
    out = subprocess.run([sys.executable, "-m", "bench.delivery_cost", "--count", "100", "--repeat", "1"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120, check=True).stdout
    result = json.loads(out)
    kombu, runtime = result["kombu_commands"], result["runtime_commands"]
    assert kombu == {"multi": 2.0, "exec": 2.0, "zadd": 1.0, "hset": 1.0, "zrem": 1.0, "hdel": 1.0}
    # One script at delivery (kombu's ZADD and HSET, and the in-flight ZADD and HSET), one at
    # acknowledgement (kombu's ZREM and HDEL, the in-flight ZREM and HDEL, the run record's SET),
    # and no transaction. The run counters (HINCRBY, HINCRBYFLOAT) ride with the acknowledgement
    # after which nothing runs: here, one task at a time, every one.
    assert runtime == {"evalsha": 2.0, "zadd": 2.0, "hset": 2.0, "zrem": 2.0, "hdel": 2.0, "set": 1.0,
                       "hincrby": 1.0, "hincrbyfloat": 1.0}
    assert all(result[f"{name}_delivery_us"] > 0 and result[f"{name}_signals_us"] > 0
               for name in ("kombu", "runtime"))
