"""The issue-11 store benchmarks (benchmarks/store/) still run: each script in --quick mode, as a subprocess.

Not a performance test: it checks that every script finishes, prints its
table, writes its JSON, and that what it measured is whole (every expected
PUSH received, every pong answered, every subscriber's message stored).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import pushcore

ROOT = Path(__file__).resolve().parents[2]


def run_quick(name: str, tmp_path: Path, *extra: str) -> dict:
    out = tmp_path / f"{name}.json"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(pushcore.__file__).resolve().parent.parent),
                                         *filter(None, [env.get("PYTHONPATH")])])
    proc = subprocess.run([sys.executable, "-m", f"benchmarks.store.{name}", "--quick", "--json", str(out), *extra],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "\n| " in proc.stdout and "|---" in proc.stdout, proc.stdout  # a table was printed
    result: dict = json.loads(out.read_text())
    assert result["rows"] and result["machine"]["cpus"] >= 1
    return result


@pytest.mark.slow
def test_ping_during_publish_quick(tmp_path):
    rows = run_quick("ping_during_publish", tmp_path, "--stores", "memory")["rows"]
    assert {r["case"] for r in rows} == {"issue", "budget"}
    for row in rows:
        assert row["received"] == row["expected"]
        assert row["deliveries"] == row["subscribers"] * row["publishes"]
        assert row["pings during"] >= 1 and row["unanswered"] == 0


@pytest.mark.slow
def test_fanout_rate_quick(tmp_path):
    rows = run_quick("fanout_rate", tmp_path)["rows"]
    assert {(r["store"], r["what"]) for r in rows} >= {
        (s, w) for s in ("sqlite", "memory") for w in ("publish (durable)", "broadcast (ephemeral)")}
    for row in rows:
        assert row["deliveries"] == row["received"] == row["subscribers"] * row["rounds"]
    assert all("memory/sqlite" in r for r in rows if r["store"] == "sqlite" and r["what"].startswith("publish"))


@pytest.mark.slow
def test_offline_publish_quick(tmp_path):
    (row,) = run_quick("offline_publish", tmp_path)["rows"]
    assert row["store"] == "sqlite" and row["stored"] == row["subscribers"] == 20_000


@pytest.mark.slow
def test_threaded_push_quick(tmp_path):
    rows = run_quick("threaded_push", tmp_path, "--stores", "sqlite")["rows"]
    assert {(r["threads"], r["devices"]) for r in rows} == {(1, "distinct"), (8, "distinct"), (8, "overlapping")}
    assert all(r["pushes"] == r["threads"] * 300 for r in rows)


@pytest.mark.slow
def test_fanout_store_quick(tmp_path):
    rows = run_quick("fanout_store", tmp_path)["rows"]
    assert {(r["store"], r["what"].split()[0]) for r in rows} == {
        (s, w) for s in ("sqlite", "memory") for w in ("per", "append_many", "append_topic")}
    assert all(r["devices"] == 2000 and r["best µs/device"] > 0 for r in rows)


@pytest.mark.slow
def test_push_groups_quick(tmp_path):
    rows = run_quick("push_groups", tmp_path)["rows"]
    assert [r["threads"] for r in rows] == [1, 8]
    assert rows[0]["pushes per group"] == 1.0 and rows[1]["pushes"] == 1600
    assert rows[1]["groups"] == rows[1]["commits"] <= 1600
