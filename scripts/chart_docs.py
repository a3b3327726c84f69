"""Generate the values table of the chart README from the `# --` comments in values.yaml.

    python scripts/chart_docs.py          # rewrite the table in charts/celery-autoscale/README.md
    python scripts/chart_docs.py --check  # exit 1 if the README's table is stale

The comment convention is helm-docs': a `# -- description` block right above a key documents it.
Keys under a documented map with undocumented children (e.g. `resources`) are covered by it.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import yaml

CHART = Path(__file__).resolve().parents[1] / "charts" / "celery-autoscale"
BEGIN, END = "<!-- values-table:begin -->", "<!-- values-table:end -->"
KEY = re.compile(r"^(\s*)([A-Za-z0-9_]+):(.*)$")


def documented_keys(text: str) -> dict[str, str]:
    """``{dotted.path: description}`` for every key with a `# --` comment, in file order."""
    docs: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    comment: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            body = stripped.lstrip("#").strip()
            if body.startswith("--"):
                comment = [body[2:].strip()]
            elif comment:
                comment.append(body)
            continue
        match = KEY.match(line)
        if not match:
            comment = [] if not stripped.startswith("-") else comment
            continue
        indent, key = len(match.group(1)), match.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([k for _, k in stack] + [key])
        stack.append((indent, key))
        if comment:
            docs[path] = " ".join(comment)
        comment = []
    return docs


def undocumented(values: dict, docs: dict[str, str], prefix: str = "") -> list[str]:
    """Paths that neither carry a description nor sit under a documented key."""
    missing = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        if path in docs:
            continue
        if isinstance(value, dict) and value:
            missing += undocumented(value, docs, path + ".")
        else:
            missing.append(path)
    return missing


def table(values: dict, docs: dict[str, str]) -> str:
    rows = ["| Key | Default | Description |", "| --- | --- | --- |"]
    for path, description in docs.items():
        value = values
        for part in path.split("."):
            value = value[part]
        has_documented_children = any(other.startswith(path + ".") for other in docs)
        default = "see below" if has_documented_children else f"`{json.dumps(value)}`"
        escaped = description.replace("|", "\\|")
        rows.append(f"| `{path}` | {default} | {escaped} |")
    return "\n".join(rows)


def render() -> tuple[str, list[str]]:
    """The README with a fresh table, and the undocumented value paths."""
    text = (CHART / "values.yaml").read_text()
    values, docs = yaml.safe_load(text), documented_keys(text)
    readme = (CHART / "README.md").read_text()
    head, _, rest = readme.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n{table(values, docs)}\n{END}{tail}", undocumented(values, docs)


def main() -> int:
    fresh, missing = render()
    if missing:
        print(f"undocumented values: {', '.join(missing)}", file=sys.stderr)
        return 1
    readme = CHART / "README.md"
    if "--check" in sys.argv:
        if readme.read_text() != fresh:
            print("charts/celery-autoscale/README.md is stale: run python scripts/chart_docs.py", file=sys.stderr)
            return 1
        return 0
    readme.write_text(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
