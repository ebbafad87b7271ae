"""The examples run against each other on 127.0.0.1 (real subprocesses)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

# every example runs as its own process
pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


def run(script: str, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True, text=True, timeout=timeout, env=ENV,
    )


@pytest.mark.parametrize("script", ["gateway_custom_auth.py", "device_print.py"])
def test_help(script):
    result = run(script, "--help")
    assert result.returncode == 0
    assert "usage:" in result.stdout


@pytest.fixture
def gateway(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "gateway_custom_auth.py"), "--port", "0",
         "--device", "alice=s3cret", "--store", str(tmp_path / "gw.db")],
        stdout=subprocess.PIPE, text=True, env=ENV,
    )
    banner = proc.stdout.readline()  # "gateway listening on 127.0.0.1:<port> for 1 device(s)"
    assert banner.startswith("gateway listening on 127.0.0.1:")
    port = int(banner.split()[3].rpartition(":")[2])
    yield port, proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def test_device_gets_its_upstream_echoed_and_resumes_from_its_state_file(gateway, tmp_path):
    port, _proc = gateway
    state = tmp_path / "alice.seq"
    common = ["--server", f"127.0.0.1:{port}", "--device", "alice", "--token", "s3cret",
              "--state-file", str(state)]
    first = run("device_print.py", *common, "--send", "hello", "--send", "again", "--count", "2")
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [
        "seq=1 topic=- priority=high payload=b'echo: hello'",
        "seq=2 topic=- priority=high payload=b'echo: again'",
    ]
    assert state.read_text() == "2"
    second = run("device_print.py", *common, "--send", "third", "--count", "1")
    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines() == ["seq=3 topic=- priority=high payload=b'echo: third'"]


def test_wrong_key_is_refused(gateway):
    port, _proc = gateway
    result = run("device_print.py", "--server", f"127.0.0.1:{port}", "--device", "alice",
                 "--token", "wrong")
    assert result.returncode == 2
    assert "AUTH_FAILED" in result.stderr


def test_gateway_drains_on_sigterm(gateway):
    port, proc = gateway
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert proc.stdout.read().strip() == "gateway stopped"


def test_private_topics_example_keeps_user_topics_private():
    result = run("private_topics.py")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "subscribers of user/alice: ['alice']" in out
    assert "publish user/alice -> stored for 1 device(s)" in out
    assert "refused: payload is 70000 bytes, the limit is 64000 bytes" in out
    assert "bob received: ['for everyone', 'two']" in out
    assert out.rstrip().endswith("OK")
