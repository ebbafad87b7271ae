"""examples/cluster_nodes.py runs as written: two nodes on a real redis-server it starts itself."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.redisd import ensure_redis_installed

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cluster_nodes.py"


def test_the_cluster_example_moves_a_phone_between_nodes_and_loses_nothing():
    ensure_redis_installed()
    result = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "push through node-B: seq 1, arrived (1, b'hello through node-B')" in lines
    assert "node-B says phone-1 is on node-A" in lines
    assert "phone-1 moved to node-B; push through node-A: seq 2, arrived (2, b'hello through node-A')" in lines
    assert lines[-1] == "ok"
