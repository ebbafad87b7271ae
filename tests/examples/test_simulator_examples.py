"""examples/simulate_devices.py and examples/admin_push.py, run as a user runs them (subprocesses)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pushcore.admin.api import AdminAPI
from serverkit import make_server

# every example runs as its own process
pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
ENV.pop("PUSHCORE_ADMIN_TOKEN", None)
TOKEN = "example-admin-token-0123456789"


def run(script: str, *args: str, timeout: float = 60.0, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True,
                          timeout=timeout, env=ENV, cwd=cwd)


@pytest.mark.parametrize("script", ["simulate_devices.py", "admin_push.py"])
def test_help(script):
    result = run(script, "--help")
    assert result.returncode == 0 and "usage:" in result.stdout


def test_simulate_devices_runs_and_reports(tmp_path):
    report = tmp_path / "r.json"
    result = run("simulate_devices.py", "--devices", "50", "--duration", "1", "--rate", "100",
                 "--json", str(report))
    assert result.returncode == 0, result.stderr
    assert "OK: every message arrived once and in order" in result.stdout
    assert "on_connect hook ran" in result.stdout
    assert '"ok": true' in report.read_text()


@pytest.fixture
def gateway():
    server = make_server()
    server.start()
    admin = AdminAPI(server, TOKEN, port=0)
    admin.start()
    try:
        yield server, admin
    finally:
        admin.stop()
        server.stop(timeout=5.0)


def test_admin_push_example(gateway, tmp_path):
    server, admin = gateway
    result = run("admin_push.py", "--admin", admin.url, "--token", TOKEN, "--device", "phone-9",
                 "--message", "hi", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "pushed to phone-9 as seq 1" in result.stdout
    assert "phone-9: offline, 1 message(s) waiting, last seq 1" in result.stdout
    assert "metric pushcore_store_messages 1" in result.stdout
    # the token from the file the gateway command writes
    (tmp_path / "pushcore.admin-token").write_text(TOKEN + "\n")
    assert run("admin_push.py", "--admin", admin.url, "--device", "phone-9", cwd=tmp_path).returncode == 0
    assert server.store.last_seq("phone-9") == 2


def test_admin_push_example_errors(gateway, tmp_path):
    _server, admin = gateway
    wrong = run("admin_push.py", "--admin", admin.url, "--token", "wrong-token-xxxxxxxx", "--device", "d",
                cwd=tmp_path)
    assert wrong.returncode == 1 and "403" in wrong.stderr
    missing = run("admin_push.py", "--admin", admin.url, "--device", "d", cwd=tmp_path)
    assert missing.returncode == 2 and "no admin token" in missing.stderr
    down = run("admin_push.py", "--admin", "http://127.0.0.1:9", "--token", TOKEN, "--device", "d", cwd=tmp_path)
    assert down.returncode == 1 and "cannot reach" in down.stderr
