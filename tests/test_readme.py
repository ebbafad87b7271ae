"""The Python snippets of README.md run as written."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.slow
def test_readme_has_snippets_and_they_run():
    blocks = python_blocks()
    assert len(blocks) >= 2
    for code in blocks:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=60, cwd=README.parent)
        assert done.returncode == 0, f"README snippet failed:\n{code}\n{done.stderr}"


def test_readme_quick_start_has_the_two_commands_ci_runs():
    text = README.read_text()
    quick = text[text.index("## Quick start"):text.index("## What is in the box")]
    commands = re.findall(r"```sh\n(.*?)```", quick, flags=re.S)[0].strip().splitlines()
    assert len(commands) == 2
    test_command = commands[1].split("#")[0].strip()
    ci = (README.parent / ".ci" / "run").read_text()
    ci_commands = [line.strip() for line in ci.splitlines() if line.strip() and not line.startswith("#")]
    # .ci/run runs each step of the README's test command, in order (linters in between)
    steps = [step.strip() for step in test_command.split("&&")]
    positions = [ci_commands.index(step) for step in steps]
    assert positions == sorted(positions)
    assert test_command.endswith("python -m pytest -q")
