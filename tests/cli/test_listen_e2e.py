"""The device side of the command line, run for real: ``pushcore token`` and ``pushcore listen``.

The three-terminal walkthrough of docs/OPERATIONS.md, as subprocesses on
127.0.0.1: ``pushcore serve``, ``pushcore listen``, ``pushcore push``; then a
restart of ``listen`` from its state file (nothing printed twice), and a
token from ``pushcore token`` checked against the secret ``serve`` made.
"""
from __future__ import annotations

import json
import os
import queue
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pushcore import verify_token

ENV = {k: v for k, v in os.environ.items() if k not in ("PUSHCORE_SECRET", "PUSHCORE_ADMIN_TOKEN")}
WAIT = 30.0  # generous deadline for any one event


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pushcore(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pushcore", *args], capture_output=True, text=True,
                          cwd=cwd, env=env or ENV, timeout=60)


class Lines:
    """Every line a pipe gives, collected by a thread, waited for with a deadline."""

    def __init__(self, pipe) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._thread.start()

    def _read(self, pipe) -> None:
        for line in pipe:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, predicate, what: str) -> str:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                break
            if line is None:
                raise AssertionError(f"the pipe closed before {what}; got {self.lines}")
            self.lines.append(line)
            if predicate(line):
                return line
        raise AssertionError(f"no {what} within {WAIT:g} s; got {self.lines}")

    def rest(self) -> list[str]:
        """The lines after the pipe closed (call once the process exited)."""
        self._thread.join(timeout=WAIT)
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                return self.lines
            if line is None:
                return self.lines
            self.lines.append(line)


class Process:
    """A ``pushcore`` subcommand in a subprocess, its stdout and stderr read line by line."""

    def __init__(self, cwd: Path, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "pushcore", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, cwd=cwd, env=ENV)
        self.out = Lines(self.proc.stdout)
        self.err = Lines(self.proc.stderr)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("the process did not stop on the signal") from None


@pytest.fixture
def serve(tmp_path):
    port, admin_port = free_port(), free_port()
    proc = Process(tmp_path, "serve", "--port", str(port), "--admin-port", str(admin_port), "--store", "memory:")
    proc.err.wait_for(lambda line: line.startswith("Ctrl-C or SIGTERM"), "serve's banner")
    proc.port, proc.admin = port, f"http://127.0.0.1:{admin_port}"
    try:
        yield proc
    finally:
        proc.stop()


def state_seq(path: Path) -> int | None:
    try:
        return json.loads(path.read_text())["last_seq"]
    except (OSError, ValueError, KeyError):
        return None


def wait_state(path: Path, seq: int) -> None:
    deadline = time.monotonic() + WAIT
    while state_seq(path) != seq:
        assert time.monotonic() < deadline, f"{path} never recorded seq {seq}: {path.read_text()!r}"
        time.sleep(0.02)


def push(serve, tmp_path: Path, *args: str) -> None:
    result = pushcore("push", "--admin", serve.admin, *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_serve_listen_push_then_a_restarted_listen_prints_only_what_is_new(serve, tmp_path):
    state = tmp_path / "phone-1.state"
    server = f"127.0.0.1:{serve.port}"
    listen = Process(tmp_path, "listen", "phone-1", "--server", server, "--state-file", str(state))
    listen.err.wait_for(lambda line: "connected to" in line, "listen's connected line")
    push(serve, tmp_path, "--device", "phone-1", "hello from the command line")
    assert listen.out.wait_for(lambda line: True, "a message") == "1 - hello from the command line"
    push(serve, tmp_path, "--device", "phone-1", "--b64", "/wBhYg==")  # not UTF-8: shown as base64
    assert listen.out.wait_for(lambda line: True, "a message") == "2 - base64:/wBhYg=="
    wait_state(state, 2)
    listen.stop(signal.SIGKILL)  # no clean stop: the state file alone must carry the resume

    token = pushcore("token", "phone-1", cwd=tmp_path)  # a token from the secret serve made
    assert token.returncode == 0, token.stderr
    again = Process(tmp_path, "listen", "phone-1", "--server", server, "--state-file", str(state),
                    "--token", token.stdout.strip())
    connected = again.err.wait_for(lambda line: "connected to" in line, "the restarted listen's connected line")
    assert "after seq 2" in connected, connected
    push(serve, tmp_path, "--device", "phone-1", "second\nline")
    assert again.out.wait_for(lambda line: True, "a message") == "3 - second\\nline"
    assert again.stop() == 0  # SIGTERM: a clean stop
    assert again.out.rest() == ["3 - second\\nline"]  # neither old message came again
    assert any("stopped" in line for line in again.err.rest())
    assert state_seq(state) == 3


@pytest.mark.slow
def test_token_verifies_against_the_serve_secret(serve, tmp_path):
    secret = bytes.fromhex((tmp_path / "pushcore.secret").read_text().strip())
    before = time.time()
    result = pushcore("token", "phone-7", "--ttl", "60", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    claims = verify_token(secret, "phone-7", bytes.fromhex(result.stdout.strip()))
    assert claims.device_id == "phone-7"
    assert before + 59 <= claims.expires_at <= time.time() + 61
    forever = pushcore("token", "phone-7", "--ttl", "never", "--secret-file", "pushcore.secret", cwd=tmp_path)
    assert verify_token(secret, "phone-7", bytes.fromhex(forever.stdout.strip())).expires_at is None
    # a token for another device is refused, and listen says so and stops
    listen = Process(tmp_path, "listen", "phone-8", "--server", f"127.0.0.1:{serve.port}",
                     "--token", result.stdout.strip())
    assert listen.proc.wait(timeout=WAIT) == 1
    assert any("AUTH_FAILED" in line for line in listen.err.rest()), listen.err.lines


@pytest.mark.slow
def test_token_and_listen_say_what_is_wrong(tmp_path):
    result = pushcore("token", "phone-1", cwd=tmp_path)  # no pushcore.secret here
    assert result.returncode == 2 and "pushcore serve" in result.stderr and "Traceback" not in result.stderr
    for bad in (["--ttl", "0"], ["--ttl", "soon"]):
        result = pushcore("token", "phone-1", *bad, env={**ENV, "PUSHCORE_SECRET": "ab" * 32}, cwd=tmp_path)
        assert result.returncode == 2 and "--ttl" in result.stderr, result.stderr
    result = pushcore("listen", "phone-1", "--token", "not-hex", cwd=tmp_path)
    assert result.returncode == 2 and "--token" in result.stderr and "Traceback" not in result.stderr
    # a state file that cannot be written is refused at once (else every message would come again)
    result = pushcore("listen", "phone-1", "--token", "00", "--state-file", str(tmp_path / "no-dir" / "s.json"),
                      cwd=tmp_path)
    assert result.returncode == 2 and "cannot write the state file" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_listen_prints_connection_failures_and_stops_on_sigterm(tmp_path):
    dead = free_port()  # nothing listens there
    (tmp_path / "pushcore.secret").write_text("ab" * 32 + "\n")
    listen = Process(tmp_path, "listen", "phone-1", "--server", f"127.0.0.1:{dead}")
    line = listen.err.wait_for(lambda line: "cannot connect" in line, "a connection failure")
    assert f"127.0.0.1:{dead}" in line and "retrying in" in line, line
    assert f"connection refused by 127.0.0.1:{dead}" in line, line  # the cause, from the Client
    assert listen.stop() == 0
    assert not any("pushcore client" in line for line in listen.err.rest()), "said twice (the client's log)"
    assert listen.out.rest() == []


def walkthrough() -> tuple[list[list[str]], list[str]]:
    """The commands (one per ```sh block) and the expected output of OPERATIONS.md's first section."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "OPERATIONS.md").read_text()
    start = text.index("## A device receiving a push, in three terminals")
    section = text[start:text.index("\n## ", start + 1)]
    commands = [block.strip() for block in re.findall(r"```sh\n(.*?)```", section, flags=re.S)]
    shown = re.findall(r"```text\n(.*?)```", section, flags=re.S)
    return [shlex.split(command) for command in commands], shown[0].strip().splitlines()


@pytest.mark.slow
def test_the_operations_walkthrough_runs_as_written(tmp_path):
    """The three commands of the walkthrough, in one directory; only the ports are added (free ones)."""
    (serve_cmd, listen_cmd, push_cmd), shown = walkthrough()
    assert [c[:2] for c in (serve_cmd, listen_cmd, push_cmd)] == [
        ["pushcore", "serve"], ["pushcore", "listen"], ["pushcore", "push"]]
    assert len(shown) == 1
    port, admin_port = free_port(), free_port()
    serve = Process(tmp_path, *serve_cmd[1:], "--port", str(port), "--admin-port", str(admin_port))
    try:
        serve.err.wait_for(lambda line: line.startswith("Ctrl-C or SIGTERM"), "serve's banner")
        listen = Process(tmp_path, *listen_cmd[1:], "--server", f"127.0.0.1:{port}")
        try:
            listen.err.wait_for(lambda line: "connected to" in line, "listen's connected line")
            result = pushcore(*push_cmd[1:], "--admin", f"http://127.0.0.1:{admin_port}", cwd=tmp_path)
            assert result.returncode == 0, result.stderr
            assert listen.out.wait_for(lambda line: True, "the message") == shown[0]
        finally:
            assert listen.stop() == 0
    finally:
        assert serve.stop() == 0


@pytest.mark.slow
@pytest.mark.parametrize("command", ["token", "listen"])
def test_the_device_commands_have_help(command, tmp_path):
    result = pushcore(command, "--help", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.startswith(f"usage: pushcore {command}")
