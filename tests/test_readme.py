"""The README tells the truth: its loadgen reference is what ``--help`` prints."""

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_usage_block_is_the_current_help():
    text = README.read_text()
    block = re.search(r"<!-- loadgen-help.*?-->\n```\n(.*?)```\n<!-- /loadgen-help -->", text, re.S).group(1)
    help_text = subprocess.run([sys.executable, "-m", "loadgen", "--help"], capture_output=True, text=True,
                               env={**os.environ, "COLUMNS": "100"}).stdout
    assert help_text.startswith(block)


def test_readme_gives_the_two_setup_commands():
    text = README.read_text()
    assert "make demo" in text and "make test" in text
