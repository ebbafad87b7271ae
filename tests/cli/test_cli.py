"""The ``pushcore`` command (``python -m pushcore``), run as a user runs it: in a subprocess."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from pushcore.bench import mqtt311
from pushcore.bench.codec_demo import push_layout
from pushcore.bench.comparison import REFERENCE
from pushcore.codec.reference import encode_push

BACKENDS = ["python", "cython"]


def run_pushcore(*args: str, backend: str = "python", timeout: float = 120):
    env = {**os.environ, "PUSHCORE_BACKEND": backend}
    return subprocess.run([sys.executable, "-m", "pushcore", *args], capture_output=True,
                          text=True, env=env, timeout=timeout)


def reference_push_frame() -> bytes:
    n = REFERENCE
    return encode_push(n.seq, n.message_id, n.payload, n.priority, n.expiry, "", n.topic)


def size_row(output: str, label: str) -> int:
    """The byte count printed on the size-table row starting with *label*."""
    match = re.search(rf"^\s+{re.escape(label)}[^\n]*?\s(\d+)(?:\s|$)", output, re.MULTILINE)
    assert match, f"no size row {label!r} in:\n{output}"
    return int(match.group(1))


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_demo_prints_the_frame_and_sizes(backend):
    result = run_pushcore("demo-codec", backend=backend)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"backend: {backend}" in out
    frame = reference_push_frame()
    assert f"PUSH frame, {len(frame)} bytes:" in out
    assert "equal to the input: yes" in out
    # the frame's bytes appear in the dump, header first
    assert re.search(rf"^\s+{frame[0]:02x}\s+header: type 5 \(PUSH\)", out, re.MULTILINE)
    assert size_row(out, "pushcore PUSH frame") == len(frame)
    mqtt = mqtt311.encode_publish(REFERENCE.topic, REFERENCE.payload, 42)
    assert size_row(out, "MQTT 3.1.1 PUBLISH, QoS 1") == len(mqtt)
    assert size_row(out, "JSON object") > len(REFERENCE.payload)
    assert "quick speed" in out and "pushcore-python" in out
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_demo_without_optional_packages_names_the_install_command():
    # Run the demo with slixmpp and msgpack made unimportable: the core install's view.
    code = ("import sys; sys.modules['slixmpp'] = None; sys.modules['msgpack'] = None; "
            "from pushcore.cli import main; sys.exit(main(['demo-codec', '--no-speed']))")
    env = {**os.environ, "PUSHCORE_BACKEND": "python"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert size_row(out, "pushcore PUSH frame") == len(reference_push_frame())
    assert "XMPP <message> stanza" not in out and "msgpack map" not in out
    assert "pip install -e '.[bench]'" in out
    assert "quick speed" not in out  # --no-speed


def test_push_layout_covers_every_byte_once():
    frame = reference_push_frame()
    parts = push_layout(frame)
    assert b"".join(part for part, _ in parts) == frame
    described = " ".join(what for _, what in parts)
    for text in (f"seq {REFERENCE.seq}", f"{REFERENCE.message_id:#018x}",
                 f"expiry {REFERENCE.expiry}", "topic 'news'", f"payload, {len(REFERENCE.payload)}"):
        assert text in described
    json.loads(parts[-1][0])  # the last part is exactly the JSON payload


@pytest.mark.slow
@pytest.mark.parametrize("args", [["--help"], ["demo-codec", "--help"], ["bench", "--help"]])
def test_help(args):
    result = run_pushcore(*args)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: pushcore")
    if args == ["--help"]:
        for command in ("demo", "serve", "simulate", "push", "bench", "demo-codec"):
            assert command in result.stdout
    if "bench" in args:
        assert "--quick" in result.stdout and "--repeat" in result.stdout


@pytest.mark.slow
def test_no_or_unknown_command_is_a_usage_error():
    for args in ([], ["fly"]):
        result = run_pushcore(*args)
        assert result.returncode == 2
        assert "usage: pushcore" in result.stderr


@pytest.mark.slow
def test_bench_quick_prints_a_table():
    result = run_pushcore("bench", "--quick", "--operation", "ack", "--operation", "heartbeat")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    rows = [line for line in out.splitlines() if line.startswith("| ")]
    assert rows[0].split("|")[1].strip() == "operation"
    encoders = {(row.split("|")[1].strip(), row.split("|")[2].strip()) for row in rows[1:]}
    assert {("ack", "pushcore-python"), ("ack", "mqtt-3.1.1"),
            ("heartbeat", "pushcore-python"), ("heartbeat", "mqtt-3.1.1")} <= encoders
    assert not any(op == "push" for op, _ in encoders)
    pushcore_ack = next(r for r in rows if "| ack" in r and "pushcore-python" in r)
    assert pushcore_ack.split("|")[6].strip() == "3"  # ACK of seq 42 is 3 bytes on the wire


@pytest.mark.slow
def test_bench_rejects_bad_numbers():
    result = run_pushcore("bench", "--repeat", "0")
    assert result.returncode == 2
    assert "--repeat" in result.stderr
