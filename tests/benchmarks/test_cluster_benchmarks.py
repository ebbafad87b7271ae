"""The issue-12 cluster benchmarks (benchmarks/cluster/) still run: each script in --quick mode, as a subprocess.

Not a performance test: it checks that every script finishes against a
real redis-server (tests/redisd.py), prints its table, writes its JSON, and
that what it measured is whole (every push received, every device online).
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
    proc = subprocess.run([sys.executable, f"benchmarks/cluster/{name}.py", "--quick", "--json", str(out), *extra],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "\n| " in proc.stdout and "|---" in proc.stdout, proc.stdout  # a table was printed
    result: dict = json.loads(out.read_text())
    assert result["rows"] and result["machine"]["cpus"] >= 1
    return result


@pytest.mark.slow
def test_cross_node_push_quick(tmp_path):
    rows = run_quick("cross_node_push", tmp_path)["rows"]
    local, remote, diff = rows
    assert local["pushes"] == local["received"] == remote["pushes"] == remote["received"] == 1000
    assert diff["p50 ms"] == pytest.approx(remote["p50 ms"] - local["p50 ms"])


@pytest.mark.slow
def test_fanout_scaling_quick(tmp_path):
    rows = run_quick("fanout_scaling", tmp_path)["rows"]
    assert {(r["what"], r["workers"]) for r in rows} == {(w, n) for w in ("broadcast", "publish") for n in (1, 2)}
    for row in rows:
        assert row["deliveries"] == row["expected"] > 0
    assert all("/" in r["devices per worker"] for r in rows if r["workers"] == 2)


@pytest.mark.slow
def test_connections_quick(tmp_path):
    rows = run_quick("connections", tmp_path)["rows"]
    assert rows[-1]["worker"] == "all" and rows[-1]["devices"] == 2000 and rows[-1]["sim failed"] == 0
    assert all(r["PINGs/s"] > 0 for r in rows)
