"""Flower, in Debian's real chromium driven by Playwright, sees the three workers and their tasks."""

from helpers import eventually

from loadgen.stack import free_port
from tasks.work import QUEUE_TASKS


def test_flower_shows_the_workers_and_their_tasks(stack, celery_app, chromium, artifacts):
    url = stack.start_flower(free_port())
    try:
        page = chromium.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{url}/workers")
        for queue in QUEUE_TASKS:
            page.get_by_text(f"worker-{queue}@").first.wait_for(timeout=30_000)
        page.screenshot(path=str(artifacts / "flower-workers.png"), full_page=True)

        results = [celery_app.send_task(name, queue=queue) for queue, (name, _) in QUEUE_TASKS.items()]
        for r in results:
            r.get(timeout=60)

        def tasks_listed():
            page.goto(f"{url}/tasks")
            page.wait_for_load_state("networkidle")
            return all(page.get_by_text(name).count() for name, _ in QUEUE_TASKS.values())

        eventually(tasks_listed, 30, "tasks shown in Flower", interval=1)
        assert page.get_by_text(results[0].id).count() == 1
        page.screenshot(path=str(artifacts / "flower-tasks.png"), full_page=True)
    finally:
        stack.stop("flower")


def test_flower_basic_auth_comes_from_files_through_the_image_config(stack, tmp_path):
    """What the chart does: Secret files in BASIC_AUTH_DIR, read by the runtime's flowerconfig.py."""
    import base64
    import urllib.error
    import urllib.request

    (tmp_path / "username").write_text("ops\n")
    (tmp_path / "password").write_text("correct-horse\n")
    url = stack.start_flower(free_port(), BASIC_AUTH_DIR=str(tmp_path))

    def status(path, auth=None):
        request = urllib.request.Request(f"{url}{path}")
        if auth:
            request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
        try:
            return urllib.request.urlopen(request, timeout=5).status
        except urllib.error.HTTPError as err:
            return err.code

    try:
        eventually(lambda: status("/healthcheck") == 200, 30, "flower answering")
        assert status("/workers") == 401
        assert status("/workers", "ops:wrong") == 401
        assert status("/workers", "ops:correct-horse") == 200
    finally:
        stack.stop("flower")
