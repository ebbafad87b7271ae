"""No example and no doc snippet takes `pushcore serve`'s ports (issue 10, item 10e).

A gateway started from an example or a snippet next to a running
``pushcore serve`` (devices on 5222, admin API on 8222) must not fail with
"address already in use", nor — worse — talk to the other gateway: they
bind port 0 and print the port they got.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pushcore.admin.api import DEFAULT_ADMIN_PORT
from pushcore.cli.serve import DEFAULT_PORT

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
# The one example that talks to a running `pushcore serve`'s admin API: it connects to 8222, it binds nothing.
CLIENT_OF_SERVE = {"admin_push.py"}


def test_the_defaults_are_what_this_test_guards():
    assert (DEFAULT_PORT, DEFAULT_ADMIN_PORT) == (5222, 8222)


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_no_example_uses_the_serve_ports(script):
    text = script.read_text()
    assert str(DEFAULT_PORT) not in text, f"{script.name} mentions port {DEFAULT_PORT}"
    if script.name not in CLIENT_OF_SERVE:
        assert str(DEFAULT_ADMIN_PORT) not in text, f"{script.name} mentions port {DEFAULT_ADMIN_PORT}"


def test_no_python_snippet_in_the_docs_uses_the_serve_ports():
    offenders = []
    for doc in DOCS:
        for block in re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.S):
            for port in (DEFAULT_PORT, DEFAULT_ADMIN_PORT):
                if re.search(rf"\b{port}\b", block):
                    offenders.append(f"{doc.name}: {block.strip().splitlines()[0]} ... uses {port}")
    assert not offenders, "\n".join(offenders)


@pytest.mark.slow
def test_the_gateway_example_binds_an_ephemeral_port_by_default():
    proc = subprocess.Popen([sys.executable, str(ROOT / "examples" / "gateway_custom_auth.py"),
                             "--device", "alice=s3cret"], stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        banner = proc.stdout.readline()  # "gateway listening on 127.0.0.1:<port> for 1 device(s)"
        assert banner.startswith("gateway listening on 127.0.0.1:"), banner
        port = int(banner.split()[3].rpartition(":")[2])
        assert port not in (0, DEFAULT_PORT, DEFAULT_ADMIN_PORT)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
