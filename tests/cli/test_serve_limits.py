"""`pushcore serve` takes the auth timeout and the abuse limits as flags
(issue 9, finding 5), lists them in --help, and they reach the gateway."""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time

import pytest

from pushcore import Reason
from pushcore.cli import serve as cmd_serve
from pushcore.cli.common import ADMIN_TOKEN_ENV, SECRET_ENV
from pushcore.codec import reference as protocol
from pushcore.loop import limits

ENV = {k: v for k, v in os.environ.items() if k not in (SECRET_ENV, ADMIN_TOKEN_ENV)}
FLAGS = ("--auth-timeout", "--preauth-frame-max", "--preauth-budget", "--outbound-budget",
         "--connect-rate", "--connect-burst", "--source-connect-rate", "--source-connect-burst")


def parse(argv):
    parser = argparse.ArgumentParser()
    cmd_serve.add_arguments(parser)
    return parser.parse_args(argv)


def test_help_lists_the_auth_timeout_and_every_limit_flag():
    result = subprocess.run([sys.executable, "-m", "pushcore", "serve", "--help"], capture_output=True,
                            text=True, env=ENV, timeout=60)
    assert result.returncode == 0, result.stderr
    for flag in FLAGS:
        assert flag in result.stdout


def test_flag_defaults_and_values():
    args = parse([])
    assert (args.auth_timeout, args.preauth_frame_max, args.preauth_budget, args.outbound_budget,
            args.connect_rate, args.connect_burst, args.source_connect_rate, args.source_connect_burst) == (
        10.0, limits.DEFAULT_PREAUTH_FRAME_MAX, limits.DEFAULT_PREAUTH_BUDGET, limits.DEFAULT_OUTBOUND_BUDGET,
        limits.DEFAULT_CONNECT_RATE, None, limits.DEFAULT_SOURCE_CONNECT_RATE, None)
    args = parse(["--auth-timeout", "2.5", "--preauth-frame-max", "4K", "--preauth-budget", "8MiB",
                  "--outbound-budget", "1G", "--connect-rate", "0", "--source-connect-rate", "50",
                  "--source-connect-burst", "100"])
    assert (args.auth_timeout, args.preauth_frame_max, args.preauth_budget, args.outbound_budget,
            args.connect_rate, args.source_connect_rate, args.source_connect_burst) == (
        2.5, 4096, 8 << 20, 1 << 30, 0.0, 50.0, 100.0)


@pytest.mark.parametrize("argv", [["--auth-timeout", "0"], ["--auth-timeout", "soon"],
                                  ["--preauth-budget", "-1"], ["--outbound-budget", "lots"],
                                  ["--connect-rate", "-5"], ["--source-connect-rate", "inf"],
                                  ["--preauth-frame-max", "0"], ["--connect-burst", "0.5"]])
def test_bad_flag_values_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        parse(argv)
    assert exc.value.code == 2
    assert argv[0] in capsys.readouterr().err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_closes_a_silent_connection_at_the_given_auth_timeout(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pushcore", "serve", "--port", str(port), "--no-admin", "--store", "memory:",
         "--auth-timeout", "0.3", "--preauth-frame-max", "512"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=ENV)
    try:
        banner = []
        while not banner or not banner[-1].startswith("Ctrl-C or SIGTERM"):
            line = proc.stderr.readline()
            assert line, f"pushcore serve exited: {''.join(banner)}"
            banner.append(line)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as silent:
            started = time.monotonic()
            data = b""
            while chunk := silent.recv(4096):
                data += chunk
            assert time.monotonic() - started >= 0.25        # not before the timeout it was given
            assert protocol.decode(data).code == Reason.AUTH_TIMEOUT
        with socket.create_connection(("127.0.0.1", port), timeout=10) as big:
            big.sendall(protocol.Hello((1,), "d", b"x" * 600, 0, 0).encode())   # over --preauth-frame-max
            data = b""
            while chunk := big.recv(4096):
                data += chunk
            assert protocol.decode(data).code == Reason.FRAME_TOO_LARGE
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
