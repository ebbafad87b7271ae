"""Start, talk to and always stop the benchmark's child processes.

Every child gets a pipe as stdin and exits when it closes; on the way out
(normal or not) the child is terminated and then killed, so a failed run
never leaves a server holding ports or 10,000 sockets.
"""
from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


class Child:
    """A child process whose stdout is read line by line with deadlines."""

    def __init__(self, argv: list[str], name: str, env: dict | None = None):
        self.name = name
        self.argv = [str(a) for a in argv]
        full_env = dict(os.environ)
        full_env.setdefault("PYTHONWARNINGS", "ignore::RuntimeWarning")
        if env:
            full_env.update(env)
        # stderr goes to a file: a chatty child must never block on a full pipe
        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=full_env,
        )
        self._buf = b""
        self.lines: list[str] = []

    @property
    def pid(self) -> int:
        return self.proc.pid

    def readline(self, timeout: float) -> str:
        """The next stdout line, or RuntimeError after *timeout* seconds or at EOF."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"{self.name}: no output within {timeout:.0f}s")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise RuntimeError(f"{self.name} exited (rc={self.proc.poll()}): {self.stderr_tail()}")
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        text = line.decode()
        self.lines.append(text)
        return text

    def expect(self, prefix: str, timeout: float) -> str:
        """Read lines until one starts with *prefix*; return the rest of it."""
        while True:
            line = self.readline(timeout)
            if line.startswith(prefix):
                return line[len(prefix):].strip()

    def json_line(self, timeout: float) -> dict:
        """Read lines until a JSON object."""
        while True:
            line = self.readline(timeout)
            if line.startswith("{"):
                return json.loads(line)

    def stderr_tail(self, limit: int = 2000) -> str:
        """The last *limit* characters the child wrote to stderr so far."""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-limit:]

    def close_stdin(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass

    def wait(self, timeout: float) -> int:
        """Wait for exit; returns the exit code (kills and raises on timeout)."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise RuntimeError(f"{self.name} did not finish within {timeout:.0f}s") from None

    def stop(self) -> None:
        """Close stdin, then terminate, then kill: the child is gone afterwards."""
        if self.proc.poll() is None:
            self.close_stdin()
            try:
                self.proc.wait(2)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                try:
                    self.proc.wait(2)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        for f in (self.proc.stdout, self.proc.stdin, self._stderr):
            try:
                f.close()
            except OSError:
                pass

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def python_child(script: str, args: list, name: str) -> Child:
    """Run benchmarks/loop/<script> with this interpreter."""
    return Child([sys.executable, str(HERE / script), *args], name)


def rss_bytes(pid: int) -> int:
    """Resident set size of *pid* in bytes (smaps_rollup Rss, else status VmRSS)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no RSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time *pid* has used so far (from /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        # the command name may hold spaces: fields start after the last ')'
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def busy_fraction(interval: float = 0.5) -> float:
    """Share of all CPUs busy over *interval* seconds (from /proc/stat)."""
    def sample():
        with open("/proc/stat") as f:
            vals = [int(v) for v in f.readline().split()[1:]]
        idle = vals[3] + vals[4]          # idle + iowait
        return idle, sum(vals)
    i0, t0 = sample()
    time.sleep(interval)
    i1, t1 = sample()
    return 1.0 - (i1 - i0) / max(1, t1 - t0)


def wait_for_quiet(max_busy: float = 0.15, patience: float = 60.0) -> float:
    """Wait (up to *patience* s) until other work leaves the CPUs mostly idle.

    The machine is shared: a benchmark run while something else holds a core
    measures the neighbour.  Returns the last busy fraction seen.
    """
    deadline = time.monotonic() + patience
    busy = busy_fraction()
    while busy > max_busy and time.monotonic() < deadline:
        busy = busy_fraction(1.0)
    return busy


def rss_breakdown(pid: int) -> dict[str, int]:
    """Resident bytes of *pid* by kind of mapping: heap (brk), anon (mmap), file, other.

    Tells where RSS growth lives: malloc'd small objects grow the heap, big
    allocations and pymalloc arenas are anonymous mmaps.
    """
    out = {"heap": 0, "anon": 0, "file": 0, "other": 0}
    kind = "other"
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            first = line.split(None, 1)[0]
            if "-" in first and not first.endswith(":"):
                parts = line.split()
                name = parts[5] if len(parts) > 5 else ""
                if name == "[heap]":
                    kind = "heap"
                elif name == "":
                    kind = "anon"
                elif name.startswith("/"):
                    kind = "file"
                else:
                    kind = "other"
            elif first == "Rss:":
                out[kind] += int(line.split()[1]) * 1024
    return out


def run_delay_seconds(pid: int) -> float:
    """Time *pid* spent runnable but waiting for a CPU (/proc/PID/schedstat).

    On a shared machine this says how much of a run was lost to neighbours.
    """
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return float("nan")
