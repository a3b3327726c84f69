"""``python scripts/package_chart.py DIR``: the chart archive, as ``helm package`` makes it (Helm's Go SDK).

Its ``version`` and ``appVersion`` are the chart's own, which a test keeps equal to the package's.
Prints the archive's path.
"""

from __future__ import annotations

import sys
from pathlib import Path

import helm_python as helm

CHART = Path(__file__).resolve().parents[1] / "charts" / "celery-autoscale"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python scripts/package_chart.py DIR", file=sys.stderr)
        return 2
    destination = Path(argv[0])
    destination.mkdir(parents=True, exist_ok=True)
    print(helm.package(CHART, destination=destination))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
