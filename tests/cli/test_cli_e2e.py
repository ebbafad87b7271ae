"""The serve / simulate / push / demo commands: their helpers, and the commands run for real.

The helpers (secrets, tokens, addresses, limits) are tested in-process; the
commands run against real gateways on 127.0.0.1.
"""
from __future__ import annotations

import argparse
import errno
import io
import json
import os
import resource
import socket
from contextlib import redirect_stdout

import pytest

from pushcore.admin.api import AdminAPI
from pushcore.cli.common import (
    ADMIN_TOKEN_ENV,
    SECRET_ENV,
    CommandError,
    bind_error,
    check_ip,
    load_admin_token,
    load_secret,
    parse_hostport,
    raise_fd_limit,
)
from serverkit import SECRET, make_server

ADMIN_TOKEN = "cli-test-admin-token-0123456789"


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv(SECRET_ENV, raising=False)
    monkeypatch.delenv(ADMIN_TOKEN_ENV, raising=False)


# ---- helpers ----------------------------------------------------------------------------------


def test_secret_file_is_created_private_and_read_back(tmp_path):
    path = tmp_path / "s.secret"
    with pytest.raises(CommandError, match="does not exist"):
        load_secret(str(path))
    secret, where = load_secret(str(path), create=True)
    assert len(secret) == 32 and where == str(path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert load_secret(str(path)) == (secret, str(path))  # not replaced on the next start


def test_secret_from_the_environment_wins(tmp_path, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, "ab" * 20)
    assert load_secret(str(tmp_path / "none")) == (b"\xab" * 20, f"${SECRET_ENV}")
    monkeypatch.setenv(SECRET_ENV, "xyz")
    with pytest.raises(CommandError, match="hex"):
        load_secret(None)
    monkeypatch.setenv(SECRET_ENV, "abcd")
    with pytest.raises(CommandError, match="at least 16"):
        load_secret(None)


def test_bad_secret_file(tmp_path):
    path = tmp_path / "s"
    path.write_text("not hex\n")
    with pytest.raises(CommandError, match="hex"):
        load_secret(str(path))


def test_admin_token_sources(tmp_path, monkeypatch):
    path = tmp_path / "t"
    with pytest.raises(CommandError, match="no admin token: pass --admin-token"):
        load_admin_token(None, str(path))
    made, where = load_admin_token(None, str(path), create=True)
    assert len(made) >= 16 and where == str(path)
    assert load_admin_token(None, str(path)) == (made, str(path))
    monkeypatch.setenv(ADMIN_TOKEN_ENV, "from-env")
    assert load_admin_token(None, str(path)) == ("from-env", f"${ADMIN_TOKEN_ENV}")
    assert load_admin_token("given", str(path)) == ("given", "--admin-token")


@pytest.mark.parametrize("text,expected", [
    ("127.0.0.1:5222", ("127.0.0.1", 5222)),
    ("[::1]:80", ("::1", 80)),
    ("localhost:1", ("localhost", 1)),
])
def test_parse_hostport(text, expected):
    assert parse_hostport(text) == expected


@pytest.mark.parametrize("text,fragment", [
    ("127.0.0.1", "no port"), (":5222", "no host"), ("h:0", "1..65535"), ("h:70000", "1..65535"),
    ("h:x", "1..65535"), ("::1:5", "IPv6"), ("[::1", "']'"),
])
def test_parse_hostport_errors(text, fragment):
    with pytest.raises(CommandError, match=fragment.replace("[", r"\[").replace(".", r"\.")):
        parse_hostport(text)


def test_bind_errors_say_what_to_do():
    busy = bind_error(OSError(errno.EADDRINUSE, "in use"), "127.0.0.1", 5222, "gateway", "--port")
    assert "port 5222 on 127.0.0.1 is already in use" in str(busy) and "--port" in str(busy)
    assert "not an address of this machine" in str(
        bind_error(OSError(errno.EADDRNOTAVAIL, "x"), "10.9.9.9", 1, "gateway", "--port"))
    assert "not an IP address" in str(bind_error(socket.gaierror(-2, "x"), "nope", 1, "gateway", "--port"))
    with pytest.raises(CommandError, match="not an IP address"):
        check_ip("no-such-host.invalid", "gateway address")
    assert check_ip("127.0.0.1", "x") == "127.0.0.1"


def test_fd_limit_is_raised_or_refused():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert raise_fd_limit(10, "x") >= soft
    with pytest.raises(CommandError, match="file descriptors"):
        raise_fd_limit(hard + 1 if hard != resource.RLIM_INFINITY else 2**62, "--devices 99999999")


# ---- the commands, in-process against a real gateway -------------------------------------------


@pytest.fixture
def gateway(tmp_path):
    server = make_server()
    server.start()
    admin = AdminAPI(server, ADMIN_TOKEN, port=0)
    admin.start()
    secret_file = tmp_path / "gw.secret"
    secret_file.write_text(SECRET.hex())
    try:
        yield server, admin, str(secret_file)
    finally:
        admin.stop()
        server.stop(timeout=5.0)


def parse(module, argv):
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return parser.parse_args(argv)


def run_command(module, argv):
    out = io.StringIO()
    with redirect_stdout(out):
        status = module.run(parse(module, argv))
    return status, out.getvalue()


def test_simulate_command_reports_a_clean_run(gateway, tmp_path):
    from pushcore.cli import simulate as cmd_simulate

    server, admin, secret_file = gateway
    host, port = server.address
    report_file = tmp_path / "r.json"
    status, out = run_command(cmd_simulate, [
        f"{host}:{port}", "--devices", "30", "--duration", "1", "--rate", "200",
        "--admin", admin.url, "--admin-token", ADMIN_TOKEN, "--secret-file", secret_file,
        "--heartbeat", "fixed:5", "--json", str(report_file), "--no-progress", "--drain-timeout", "5"])
    assert status == 0, out
    assert "OK: every message arrived once and in order" in out
    data = json.loads(report_file.read_text())
    assert data["ok"] and data["messages"]["sent"] == data["messages"]["received"] > 100
    assert data["devices"] == 30


def test_simulate_command_errors(gateway):
    from pushcore.cli import simulate as cmd_simulate

    server, admin, secret_file = gateway
    host, port = server.address
    base = [f"{host}:{port}", "--secret-file", secret_file, "--no-progress"]
    with pytest.raises(CommandError, match="cannot reach the admin API.*--rate 0"):
        run_command(cmd_simulate, base + ["--admin", "http://127.0.0.1:9", "--admin-token", ADMIN_TOKEN])
    with pytest.raises(CommandError, match="wrong admin token"):
        run_command(cmd_simulate, base + ["--admin", admin.url, "--admin-token", "x" * 20])
    with pytest.raises(CommandError, match="churn"):
        run_command(cmd_simulate, base + ["--rate", "0", "--churn", "often"])
    with pytest.raises(CommandError, match="file descriptors"):
        run_command(cmd_simulate, base + ["--rate", "0", "--devices", "10000000"])


def test_push_command_sends_and_shows_status(gateway):
    from pushcore.cli import push as cmd_push

    server, admin, _secret = gateway
    common = ["--admin", admin.url, "--admin-token", ADMIN_TOKEN]
    assert run_command(cmd_push, ["--device", "d1", "hello", *common]) == (0, "stored for d1 as seq 1\n")
    status, out = run_command(cmd_push, ["--device", "d1", "--b64", "AAE=", "--low", "--ttl", "60", "--json", *common])
    assert status == 0 and json.loads(out) == {"device": "d1", "seq": 2}
    assert run_command(cmd_push, ["--status", "d1", *common])[1] == "d1: offline, 2 waiting, last seq 2, topics -\n"
    assert run_command(cmd_push, ["--topic", "news", "x", *common])[1] == "stored for 0 subscriber(s) of 'news'\n"
    assert run_command(cmd_push, ["--all", "x", *common])[1] == "sent to 0 connected device(s) (not stored)\n"
    with pytest.raises(CommandError, match="wrong admin token"):
        run_command(cmd_push, ["--device", "d1", "x", "--admin", admin.url, "--admin-token", "y" * 20])
    with pytest.raises(CommandError, match="give the message"):
        run_command(cmd_push, ["--device", "d1", *common])
    with pytest.raises(CommandError, match="base64"):
        run_command(cmd_push, ["--device", "d1", "--b64", "***", *common])
    with pytest.raises(CommandError, match="cannot reach"):
        run_command(cmd_push, ["--device", "d1", "x", "--admin", "http://127.0.0.1:9", "--admin-token", ADMIN_TOKEN])


def test_serve_command_refuses_busy_ports_and_bad_addresses(tmp_path):
    from pushcore.cli import serve as cmd_serve

    files = ["--secret-file", str(tmp_path / "s"), "--admin-token-file", str(tmp_path / "t"), "--store", "memory:"]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(CommandError, match=f"gateway: port {port} on 127.0.0.1 is already in use.*--port"):
            run_command(cmd_serve, ["--port", str(port), "--admin-port", "0", *files])
        with pytest.raises(CommandError, match=f"admin API: port {port} .*already in use.*--admin-port"):
            run_command(cmd_serve, ["--port", "0", "--admin-port", str(port), *files])
    with pytest.raises(CommandError, match="not an address of this machine"):
        run_command(cmd_serve, ["--host", "10.255.255.1", "--port", "0", "--no-admin", *files])
    with pytest.raises(CommandError, match="not an IP address"):
        run_command(cmd_serve, ["--host", "no-such-host.invalid", "--port", "0", "--no-admin", *files])
    # the first start created the secret and the admin token, private
    assert os.stat(tmp_path / "s").st_mode & 0o777 == 0o600
    assert os.stat(tmp_path / "t").st_mode & 0o777 == 0o600


# ---- the `pushcore` command in subprocesses, as a user runs it -------------------------------------

import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402

from prometheus_text import parse_exposition, sample  # noqa: E402

ENV = {k: v for k, v in os.environ.items() if k not in (SECRET_ENV, ADMIN_TOKEN_ENV)}


def pushcore(*args: str, cwd, timeout: float = 120.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pushcore", *args], capture_output=True, text=True,
                          cwd=cwd, env=ENV, timeout=timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServeProcess:
    """`pushcore serve` in a subprocess, on free ports, in its own directory."""

    def __init__(self, cwd, *extra: str) -> None:
        self.cwd = cwd
        self.port, self.admin_port = free_port(), free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pushcore", "serve", "--port", str(self.port), "--admin-port",
             str(self.admin_port), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd, env=ENV)
        self.banner = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                raise AssertionError(f"pushcore serve exited: {''.join(self.banner)}")
            self.banner.append(line)
            if line.startswith("Ctrl-C or SIGTERM"):
                break
        self.admin = f"http://127.0.0.1:{self.admin_port}"

    def metrics(self) -> dict:
        token = (self.cwd / "pushcore.admin-token").read_text().strip()
        request = urllib.request.Request(self.admin + "/metrics", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return parse_exposition(response.read().decode())

    def stop(self) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            _out, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _out, err = self.proc.communicate()
        return self.proc.returncode, err


@pytest.fixture
def served(tmp_path):
    serve = ServeProcess(tmp_path, "--store", str(tmp_path / "gw.db"), "--heartbeat", "0:10")
    try:
        yield serve
    finally:
        serve.stop()


@pytest.mark.slow
def test_serve_push_simulate_and_metrics_end_to_end(served, tmp_path):
    banner = "".join(served.banner)
    assert f"listening on 127.0.0.1:{served.port}" in banner and f"admin API on {served.admin}" in banner
    # push and status read the admin token file `serve` wrote in this directory
    result = pushcore("push", "--device", "phone-1", "hello", "--admin", served.admin, cwd=tmp_path)
    assert (result.returncode, result.stdout) == (0, "stored for phone-1 as seq 1\n"), result.stderr
    result = pushcore("push", "--status", "phone-1", "--admin", served.admin, cwd=tmp_path)
    assert result.stdout == "phone-1: offline, 1 waiting, last seq 1, topics -\n"
    before = served.metrics()
    # simulate reads the device token secret `serve` wrote
    result = pushcore("simulate", f"127.0.0.1:{served.port}", "--devices", "40", "--duration", "1.5",
                      "--rate", "200", "--admin", served.admin, "--heartbeat", "fixed:5", "--json",
                      str(tmp_path / "report.json"), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: every message arrived once and in order" in result.stdout
    assert "Traceback" not in result.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["ok"] and report["messages"]["sent"] == report["messages"]["received"] > 100
    after = served.metrics()
    sent = report["messages"]["sent"]
    assert sample(after, "pushcore_welcomes_total") - sample(before, "pushcore_welcomes_total") == 40
    assert sample(after, "pushcore_admin_pushes_total", kind="device") - \
        sample(before, "pushcore_admin_pushes_total", kind="device") == sent
    assert sample(after, "pushcore_push_ack_seconds_count") >= sent
    assert sample(after, "pushcore_frames_sent_total") - sample(before, "pushcore_frames_sent_total") >= sent
    status, err = served.stop()
    assert status == 0 and "pushcore gateway stopped" in err


@pytest.mark.slow
def test_serve_refuses_a_busy_port_and_a_bad_address(served, tmp_path):
    result = pushcore("serve", "--port", str(served.port), "--no-admin", cwd=tmp_path)
    assert result.returncode == 2
    assert f"pushcore serve: error: gateway: port {served.port} on 127.0.0.1 is already in use" in result.stderr
    assert "Traceback" not in result.stderr
    result = pushcore("serve", "--port", "0", "--admin-port", str(served.admin_port), cwd=tmp_path)
    assert result.returncode == 2 and "admin API: port" in result.stderr and "--admin-port" in result.stderr
    result = pushcore("serve", "--host", "300.1.2.3", "--port", "0", "--no-admin", cwd=tmp_path)
    assert result.returncode == 2 and "not an IP address" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_push_and_simulate_say_what_is_missing(tmp_path):
    result = pushcore("push", "--device", "d", "x", cwd=tmp_path)
    assert result.returncode == 2
    assert "pushcore push: error: no admin token: pass --admin-token" in result.stderr
    result = pushcore("push", "--device", "d", "x", "--admin-token", "t" * 20, "--admin", "http://127.0.0.1:9",
                      cwd=tmp_path)
    assert result.returncode == 1 and "cannot reach the admin API" in result.stderr
    result = pushcore("simulate", "127.0.0.1:9", "--rate", "0", cwd=tmp_path)
    assert result.returncode == 2 and "no token secret" in result.stderr
    (tmp_path / "pushcore.secret").write_text("ab" * 32)
    result = pushcore("simulate", f"127.0.0.1:{free_port()}", "--rate", "0", cwd=tmp_path)
    assert result.returncode == 2 and "nothing listens on" in result.stderr
    result = pushcore("simulate", "localhost", cwd=tmp_path)
    assert result.returncode == 2 and "has no port" in result.stderr
    for result in (pushcore("push", "--device", "d", "x", "--admin-token", "t" * 20, "--admin", "ftp://x",
                            cwd=tmp_path),):
        assert result.returncode == 2 and "http://HOST:PORT" in result.stderr
        assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_demo_runs_end_to_end_and_prints_the_report(tmp_path):
    result = pushcore("demo", "--devices", "150", "--duration", "2", "--rate", "150", "--seed", "3",
                      cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert out.startswith("pushcore demo: gateway on 127.0.0.1:")
    assert "OK: every message arrived once and in order" in out
    assert "gateway metrics (scraped from its admin API, /metrics):" in out
    assert "frames in/out" in out and "NAT" in out
    assert not list(tmp_path.iterdir())  # the temporary store was removed, nothing left behind


@pytest.mark.slow
def test_demo_json_on_stdout(tmp_path):
    result = pushcore("demo", "--devices", "20", "--duration", "0.5", "--rate", "50", "--nat", "off",
                      "--churn", "off", "--resets", "0", "--json", "-", cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout[result.stdout.index("{"):])
    assert data["ok"] and data["devices"] == 20 and "nat" not in data["profile"]


@pytest.mark.slow
@pytest.mark.parametrize("command", ["demo", "serve", "simulate", "push", "bench"])
def test_every_command_has_help(command, tmp_path):
    result = pushcore(command, "--help", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith(f"usage: pushcore {command}")
