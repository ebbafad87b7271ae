"""examples/workers.py: two worker processes on one port under a supervisor, a restart, a drain."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "workers.py"
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


@pytest.mark.slow  # the example forks workers and runs its devices in another process
def test_workers_example_serves_from_both_workers_restarts_one_and_drains():
    done = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=60, env=ENV)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    pids = [int(p) for p in re.search(r"2 workers listening on 127\.0\.0\.1:\d+, pids \[(\d+), (\d+)\]",
                                      out).groups()]
    assert f"served by worker 0 (pid {pids[0]})" in out and f"served by worker 1 (pid {pids[1]})" in out
    assert f"worker 0 killed (pid {pids[0]}); restarted as pid " in out and "incarnation 1" in out
    assert "stopped: exit statuses {0: 0, 1: 0}, 1 restart(s)" in out
    assert out.rstrip().endswith("ok")
    assert f"worker 0 (pid {pids[0]}, incarnation 0) exited: killed by SIGKILL" in done.stderr
