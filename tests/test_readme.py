"""Every ```python block of README.md and docs/*.md runs as written.

Each block runs standalone (``python -c BLOCK``, in a fresh temporary
directory, with this tree's pushcore first on the path) with a timeout. The blocks run in parallel, a few at a time, the first time any of
them is asked for; each test then reports its own block, named by file and
line. A fragment that cannot run (a signature listing) belongs in a
```text block.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]
TIMEOUT = 60.0  # generous: a snippet is meant to take a few seconds
PARALLEL = 4

_FENCE = re.compile(r"^([ \t]*)```python[ \t]*\n(.*?)^\1```", flags=re.S | re.M)


def python_blocks(path: Path) -> list[tuple[int, str]]:
    """``(line, code)`` of every ```python block of *path* (indentation of the fence removed)."""
    text = path.read_text()
    blocks = []
    for match in _FENCE.finditer(text):
        indent = match.group(1)
        lines = [line[len(indent):] if line.startswith(indent) else line
                 for line in match.group(2).splitlines()]
        blocks.append((text.count("\n", 0, match.start()) + 1, "\n".join(lines) + "\n"))
    return blocks


SNIPPETS = {f"{path.relative_to(ROOT)}:{line}": code for path in DOCS for line, code in python_blocks(path)}


def _text(output: bytes | str | None) -> str:
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output or ""


def _run(code: str) -> tuple[int | None, str]:
    env = dict(os.environ)
    env.pop("PUSHCORE_SECRET", None)
    env.pop("PUSHCORE_ADMIN_TOKEN", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    # a snippet that writes a file (a SQLite store, say) writes it there, not into the tree
    with tempfile.TemporaryDirectory(prefix="pushcore-snippet-") as cwd:
        try:
            done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                  timeout=TIMEOUT, cwd=cwd, env=env)
        except subprocess.TimeoutExpired as exc:
            return None, (f"timed out after {TIMEOUT:g} s\n--- stdout\n{_text(exc.stdout)}\n"
                          f"--- stderr\n{_text(exc.stderr)}")
    return done.returncode, f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"


@pytest.fixture(scope="module")
def snippet_results() -> dict[str, tuple[int | None, str]]:
    """Every snippet's (exit status, output), run in parallel once per test module."""
    with ThreadPoolExecutor(PARALLEL) as pool:
        futures = {name: pool.submit(_run, code) for name, code in SNIPPETS.items()}
        return {name: future.result() for name, future in futures.items()}


def test_the_docs_have_snippets():
    names = list(SNIPPETS)
    assert sum(name.startswith("README.md:") for name in names) >= 2
    assert any(name.startswith("docs/SIMULATOR.md:") for name in names)
    assert any(name.startswith("docs/SERVER.md:") for name in names)


def test_the_fence_finder_sees_indented_blocks_and_only_python():
    text = "x\n```python\na = 1\n```\n* item\n\n   ```python\n   b = 2\n   ```\n```text\nc(\n```\n"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "x.md")
        path.write_text(text)
        assert python_blocks(path) == [(2, "a = 1\n"), (7, "b = 2\n")]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SNIPPETS))
def test_snippet_runs_as_written(name, snippet_results):
    status, output = snippet_results[name]
    assert status == 0, f"the python block at {name} failed as written (status {status}):\n" \
                        f"{SNIPPETS[name]}\n{output}"


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
