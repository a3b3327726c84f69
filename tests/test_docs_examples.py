"""Every values example in the READMEs renders: a user who copies one gets a chart, not an error."""

import re
import textwrap
from pathlib import Path

import pytest
import yaml
from chart import render_chart

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "charts" / "celery-autoscale" / "README.md"]


def values_blocks() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        text = doc.read_text()
        for match in re.finditer(r"```ya?ml\n(.*?)```", text, re.S):
            line = text[:match.start()].count("\n") + 1
            found.append((f"{doc.relative_to(ROOT)}:{line}", textwrap.dedent(match.group(1))))
    return found


BLOCKS = values_blocks()


def test_the_docs_have_values_examples():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("where, block", BLOCKS, ids=[w for w, _ in BLOCKS])
def test_every_values_example_renders(where, block):
    values = yaml.safe_load(block)
    objects = render_chart(values)  # the schema, every template and its checks
    assert any(o["kind"] == "Deployment" for o in objects), where
