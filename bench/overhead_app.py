"""A plain Celery app for bench/worker_overhead.py: nothing here knows about celery-autoscale.

Each task counts itself done with one ``INCR`` (the same cost in both configurations), so the
bench sees the last one end.
"""

import os
import time

import redis
from celery import Celery

app = Celery("overhead")  # broker: CELERY_BROKER_URL
_done = redis.Redis.from_url(os.environ.get("CELERY_BROKER_URL", "redis://localhost:6379/0"))


@app.task(name="overhead.work")
def work(seconds: float = 0.0) -> None:
    if seconds:
        time.sleep(seconds)
    _done.incr("overhead:done")
