"""Bad numbers, ports and store specs on the command line are usage errors (issue 10, item 9a/9b).

Every numeric flag of ``serve``, ``simulate``, ``push`` and ``demo`` refuses
negative, zero (where zero means nothing), NaN, infinite and absurd values
at parse time: exit status 2 and ``argument --FLAG: must be ..., got VALUE``,
never a traceback and never a file created first.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from pushcore.cli import build_parser
from pushcore.cli.common import ADMIN_TOKEN_ENV, SECRET_ENV
from pushcore.store import MemoryStore, SQLiteStore, open_store

ENV = {k: v for k, v in os.environ.items() if k not in (SECRET_ENV, ADMIN_TOKEN_ENV)}

BAD = [
    # serve
    ("serve", "--idle-grace", "-5"),
    ("serve", "--idempotency-window", "0"),
    ("serve", "--idempotency-window", "nan"),
    ("serve", "--idle-grace", "nan"),
    ("serve", "--idle-grace", "inf"),
    ("serve", "--idle-grace", "1e9"),
    ("serve", "--port", "-1"),
    ("serve", "--port", "65536"),
    ("serve", "--admin-port", "70000"),
    ("serve", "--auth-timeout", "-1"),
    ("serve", "--heartbeat", "-1:5"),
    ("serve", "--connect-burst", "nan"),
    ("serve", "--store", "mystore"),
    ("serve", "--store", ""),
    # simulate
    ("simulate", "--devices", "0"),
    ("simulate", "--devices", "-3"),
    ("simulate", "--duration", "-1"),
    ("simulate", "--duration", "nan"),
    ("simulate", "--duration", "inf"),
    ("simulate", "--rate", "-10"),
    ("simulate", "--rate", "nan"),
    ("simulate", "--drain-timeout", "-1"),
    ("simulate", "--drain-timeout", "nan"),
    ("simulate", "--pong-timeout", "0"),
    ("simulate", "--pong-timeout", "nan"),
    ("simulate", "--resets", "-0.5"),
    ("simulate", "--resets", "inf"),
    # demo
    ("demo", "--devices", "0"),
    ("demo", "--duration", "-2"),
    ("demo", "--duration", "nan"),
    ("demo", "--rate", "inf"),
    ("demo", "--pong-timeout", "-1"),
    ("demo", "--store", "memroy"),
    # push
    ("push", "--ttl", "0"),
    ("push", "--ttl", "-60"),
    ("push", "--ttl", "nan"),
    ("push", "--ttl", "inf"),
    ("push", "--ttl", "1e12"),
]

# the arguments a command needs besides the flag under test
REQUIRED = {"push": ["--device", "d", "x"]}


@pytest.mark.parametrize("command,flag,value", BAD, ids=[" ".join(b) for b in BAD])
def test_bad_values_are_usage_errors_naming_the_flag(command, flag, value, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([command, *REQUIRED.get(command, []), f"{flag}={value}"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"pushcore {command}: error: argument {flag}: " in err
    if flag == "--store":  # names the spec and the forms that are accepted
        assert (repr(value) in err or "empty" in err) and "sqlite:PATH" in err, err
    else:
        assert "must be" in err and "got" in err, err  # the range, and what it got
    assert "Traceback" not in err


@pytest.mark.parametrize("argv,dest,expected", [
    (["serve", "--idle-grace", "0"], "idle_grace", 0.0),
    (["serve", "--idle-grace", "12.5"], "idle_grace", 12.5),
    (["serve", "--port", "0"], "port", 0),
    (["serve", "--admin-port", "65535"], "admin_port", 65535),
    (["simulate", "--duration", "0"], "duration", 0.0),
    (["simulate", "--rate", "0"], "rate", 0.0),
    (["simulate", "--devices", "1"], "devices", 1),
    (["simulate", "--drain-timeout", "0"], "drain_timeout", 0.0),
    (["simulate", "--resets", "0"], "resets", 0.0),
    (["demo", "--pong-timeout", "0.3"], "pong_timeout", 0.3),
    (["push", "--device", "d", "x", "--ttl", "3600"], "ttl", 3600.0),
])
def test_good_values_still_parse(argv, dest, expected):
    assert getattr(build_parser().parse_args(argv), dest) == expected


def test_the_message_says_the_range_and_the_value(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--idle-grace", "-5"])
    err = capsys.readouterr().err
    assert "pushcore serve: error: argument --idle-grace: must be >= 0 seconds" in err
    assert err.rstrip().endswith("got -5")


@pytest.mark.slow
def test_serve_with_a_negative_idle_grace_exits_2_without_a_traceback_or_files(tmp_path):
    result = subprocess.run([sys.executable, "-m", "pushcore", "serve", "--idle-grace", "-5"],
                            capture_output=True, text=True, env=ENV, timeout=60, cwd=tmp_path)
    assert result.returncode == 2
    assert "pushcore serve: error: argument --idle-grace: must be >= 0 seconds" in result.stderr
    assert "got -5" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # refused before the secret and token files are made


# ---- the store spec ---------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["memory", "memory:"])
def test_memory_spellings_open_a_memory_store_and_create_no_file(target, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open_store(target) as store:
        assert isinstance(store, MemoryStore)
        store.append("d", message_id=1, payload=b"x", priority=1)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("target,path", [
    ("gw.db", "gw.db"), ("gw.sqlite", "gw.sqlite"), ("gw.sqlite3", "gw.sqlite3"),
    ("./gw", "./gw"), ("data/gw", "data/gw"), ("sqlite:gw.db", "gw.db"), ("sqlite:gw", "gw"),
    ("sqlite:///gw.db", "gw.db"),
])
def test_sqlite_spellings(target, path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    with open_store(target) as store:
        assert isinstance(store, SQLiteStore) and store.path == path
    assert (tmp_path / path).is_file()


def test_an_existing_file_without_a_suffix_is_still_a_sqlite_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open_store("./gateway") as store:
        store.append("d", message_id=1, payload=b"x", priority=1)
    with open_store("gateway") as store:  # it exists now: it can only mean that file
        assert isinstance(store, SQLiteStore) and store.last_seq("d") == 1


@pytest.mark.parametrize("target", ["mystore", "memroy", "sqlite", "mem", "sqlite://host/x.db"])
def test_ambiguous_specs_are_refused_with_the_accepted_forms(target, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError) as exc:
        open_store(target)
    message = str(exc.value)
    for form in ("memory", "sqlite:PATH", ".db"):
        assert form in message, message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_serve_store_memory_runs_on_the_memory_store_and_creates_no_store_file(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "pushcore", "serve", "--store", "memory", "--port", "0",
                             "--no-admin"], stderr=subprocess.PIPE, text=True, env=ENV, cwd=tmp_path)
    try:
        banner = proc.stderr.readline()
        assert "pushcore gateway listening on 127.0.0.1:" in banner, banner
        assert "store memory" in banner
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pushcore.secret"]
