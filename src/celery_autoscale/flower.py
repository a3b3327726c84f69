"""``python -m celery_autoscale.flower [FLOWER OPTIONS]``: Flower for the app, with file-based basic auth.

Runs ``celery -A celery_autoscale.worker flower --conf=<this package>/flowerconfig.py`` plus
the given options, so any image with ``celery-autoscale[flower]`` installed serves Flower for
the app in ``CELERY_AUTOSCALE_APP`` (or a bare app on ``CELERY_BROKER_URL``), with the Redis
password the chart mounts.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    conf = Path(__file__).with_name("flowerconfig.py")
    argv = sys.argv[1:] if argv is None else argv
    os.execv(sys.executable, [sys.executable, "-m", "celery", "-A", "celery_autoscale.worker", "flower",
                              f"--conf={conf}", *argv])


if __name__ == "__main__":
    main()
