"""`pushcore serve --workers` (issue 12, item 1): the flag, the refusal without a shared store, and
the worker path run for real (with the shared-store check patched: no shared store exists yet)."""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import urllib.request

import pytest
from tests.redisd import RedisServer

from pushcore.cli import serve as cmd_serve
from pushcore.cli.common import ADMIN_TOKEN_ENV, SECRET_ENV, CommandError

ENV = {**{k: v for k, v in os.environ.items() if k not in (SECRET_ENV, ADMIN_TOKEN_ENV)},
       "PYTHONPATH": os.pathsep.join(sys.path)}


def parse(argv):
    parser = argparse.ArgumentParser()
    cmd_serve.add_arguments(parser)
    return parser.parse_args(argv)


def test_workers_flag_values():
    assert parse([]).workers is None  # one process on SQLite and memory: see run()
    assert parse(["--workers", "1"]).workers == 1
    assert parse(["--workers", "8"]).workers == 8
    assert parse(["--workers", "auto"]).workers == (os.cpu_count() or 1)


@pytest.mark.parametrize("value", ["0", "-1", "x", "1.5", "", "2000"])
def test_bad_worker_counts_are_usage_errors(value, capsys):
    with pytest.raises(SystemExit) as exc:
        parse(["--workers", value])
    assert exc.value.code == 2
    assert "argument --workers: must be a number of worker processes" in capsys.readouterr().err


@pytest.mark.parametrize("store, kind", [("pushcore.db", "a SQLite file"), ("sqlite:gw.db", "a SQLite file"),
                                         ("memory", "memory"), ("memory:", "memory")])
def test_several_workers_without_a_shared_store_are_refused(store, kind, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CommandError) as exc:
        cmd_serve.run(parse(["--workers", "2", "--store", store]))
    assert str(exc.value).startswith("--workers 2: several workers need a shared store and routing between "
                                     "them: --store redis://HOST:PORT/DB")
    assert f"(--store {store} is {kind}" in str(exc.value)
    assert list(tmp_path.iterdir()) == []  # refused before any file (secret, token, store) was made


def test_one_worker_is_the_single_process_path(monkeypatch):
    called = []
    monkeypatch.setattr(cmd_serve, "_run_single", lambda args, creds, limit: called.append("single") or 0)
    monkeypatch.setattr(cmd_serve, "_run_workers", lambda *a: called.append("workers") or 0)
    monkeypatch.setattr(cmd_serve, "_credentials", lambda args: None)
    for argv in ([], ["--workers", "1"], ["--store", "memory"], ["--workers", "1", "--store", "memory"]):
        assert cmd_serve.run(parse(argv)) == 0
    assert called == ["single"] * 4


@pytest.mark.slow
def test_serve_with_two_workers_shares_the_ports_and_drains_on_sigterm(tmp_path):
    redis_server = RedisServer(tmp_path / "redis").start()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pushcore", "serve", "--workers", "2", "--store", redis_server.url, "--port", "0",
         "--admin-port", "0", "--log-level", "warning"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=tmp_path, env=ENV)
    try:
        banner = []
        while not banner or not banner[-1].startswith("Ctrl-C or SIGTERM"):
            line = proc.stderr.readline()
            assert line, f"pushcore serve exited: {''.join(banner)}"
            banner.append(line)
        assert banner[0].startswith("pushcore gateway: 2 workers listening on 127.0.0.1:")
        pids = [int(line.split("pid")[1]) for line in banner[1:3]]
        assert [line.split(":")[0].strip() for line in banner[1:3]] == ["worker 0", "worker 1"]
        admin = banner[3].split()[3].rstrip(",")
        assert admin.startswith("http://127.0.0.1:") and "served by every worker" in banner[3]
        # the banner comes once every worker listens: each bound the admin port too (SO_REUSEPORT)
        token = (tmp_path / "pushcore.admin-token").read_text().strip()
        request = urllib.request.Request(f"{admin}/metrics", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200 and "pushcore_" in response.read().decode()
        with urllib.request.urlopen(f"{admin}/healthz", timeout=10) as response:
            assert json.loads(response.read()) == {"status": "ok"}
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=30)
        assert proc.returncode == 0, rest
        assert "pushcore gateway stopped (0 worker restarts)" in rest
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        redis_server.stop()


@pytest.mark.parametrize("store", ["memory", "gw.db"])
def test_reuse_port_without_a_shared_store_is_refused(store, tmp_path, monkeypatch, capsys):
    """The bug that started the cluster work: two `serve --reuse-port` on one SQLite file."""
    from pushcore.cli.common import CommandError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(CommandError, match="--reuse-port: .* need a shared store .*redis://"):
        cmd_serve.run(parse(["--reuse-port", "--store", store]))
    assert not (tmp_path / "gw.db").exists()


def test_workers_on_an_unreachable_redis_fail_at_once_with_the_address(tmp_path, monkeypatch):
    from tests.redisd import free_ports

    from pushcore.cli.common import CommandError

    monkeypatch.chdir(tmp_path)
    url = f"redis://127.0.0.1:{free_ports(1)[0]}/0"  # nothing listens there
    with pytest.raises(CommandError, match="cannot open the Redis store at 127.0.0.1"):
        cmd_serve.run(parse(["--workers", "2", "--store", url, "--port", "0", "--admin-port", "0"]))
