"""The codec and loop examples run as scripts and say what they promise."""
import subprocess
import sys
from pathlib import Path

import pytest

# every example runs as its own process
pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run_example(name: str) -> str:
    done = subprocess.run([sys.executable, str(EXAMPLES / name)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_codec_example_decodes_a_cut_stream_and_refuses_bad_bytes():
    out = run_example("codec_frames.py")
    assert "PUSH: 92 bytes" in out
    assert "PING: 2 bytes  30 00" in out
    assert "decoded: Push(seq=42" in out and "decoded: Ping()" in out and "decoded: Ack(seq=42)" in out
    assert "refused: UNKNOWN_TYPE (2)" in out


def test_loop_example_broadcasts_to_every_connection():
    out = run_example("loop_broadcast.py")
    assert "50 connections, 150 frames delivered" in out
    assert "'in_use': 0" in out


def test_safe_retries_example_stores_once_and_redelivers_a_failed_message():
    out = run_example("safe_retries.py")
    assert "Server.push twice with one key: seq 1 and seq 1" in out
    assert "AdminClient.push twice with one key: seq 2 and seq 2" in out
    assert "handler attempts by seq: [1, 1, 2]" in out
    assert "still stored (unacked): 0" in out
    assert out.rstrip().endswith("ok")


def test_nowait_broadcast_example_delivers_every_call_in_order():
    out = run_example("broadcast_nowait.py")
    assert "every future says {10} device(s)" in out
    assert "10 devices got 10000 messages, each in the order sent: True" in out
    assert out.rstrip().endswith("ok")


def test_asyncio_gateway_example_awaits_hooks_and_pushes_on_the_apps_loop():
    out = run_example("asyncio_gateway.py")
    assert "mallory refused: AUTH_FAILED" in out
    assert "looked up: ['alice', 'bob', 'mallory']" in out
    assert "alice got ['msg 0', 'msg 1', 'msg 2', 'msg 3', 'msg 4']" in out
    assert "connected: ['alice', 'bob']" in out
    assert out.rstrip().endswith("ok")
