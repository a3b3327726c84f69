"""The chart README's values table is generated from values.yaml, so the two cannot drift."""

import subprocess
import sys

from chart import ROOT


def test_every_value_is_documented_and_the_readme_table_is_current():
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "chart_docs.py"), "--check"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_generator_notices_an_undocumented_key():
    sys.path.insert(0, str(ROOT / "scripts"))
    import chart_docs

    text = "a:\n  # -- documented\n  b: 1\n  c: 2\n"
    import yaml

    assert chart_docs.undocumented(yaml.safe_load(text), chart_docs.documented_keys(text)) == ["a.c"]
