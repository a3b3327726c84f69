"""A plain Celery app: nothing here knows about celery-autoscale."""

import os
import time

import redis
from celery import Celery

app = Celery("myproject")  # broker and backend: CELERY_BROKER_URL, CELERY_RESULT_BACKEND
app.conf.task_routes = {
    "myproject.send_email": {"queue": "emails"},
    "myproject.daily_report": {"queue": "reports.daily"},
}


def _completed(task_id: str) -> None:
    """Count completions per task id in the Redis result backend, so a test can tell "run twice"
    from "redelivered once". It waits out a Redis restart (up to a minute), as a careful task would."""
    for _ in range(120):
        try:
            app.backend.client.incr(f"myproject:completed:{task_id}")
            return
        except redis.ConnectionError:
            time.sleep(0.5)
    raise ConnectionError("Redis did not come back within a minute")


@app.task(name="myproject.add", bind=True)
def add(self, x, y):
    _completed(self.request.id)
    return x + y


@app.task(name="myproject.send_email", bind=True)
def send_email(self, to, seconds=0.0):
    time.sleep(seconds)
    _completed(self.request.id)
    return f"sent to {to}"


@app.task(name="myproject.daily_report", bind=True)
def daily_report(self, day, seconds=0.0):
    time.sleep(seconds)
    _completed(self.request.id)
    return {"day": day, "pid": os.getpid()}
