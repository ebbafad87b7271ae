"""Shared pieces of the store benchmarks: child processes, clocks, percentiles, tables, the machine.

Every benchmark of ``benchmarks/store/`` imports this module (it puts its own
directory first on ``sys.path``, so it runs both as
``python benchmarks/store/<name>.py`` and as ``python -m benchmarks.store.<name>``).
Child processes (``gateway_proc.py``, ``probe_proc.py``; the subscribers are ``push_reader.c``)
speak one JSON object per line: a command on stdin, an answer on stdout.
Times that cross processes are ``time.monotonic()`` (CLOCK_MONOTONIC, one
clock for every process of the machine).
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import resource
import select
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
SECRET_HEX = "5c" * 32  # the benchmark's device-token secret (not a real secret)
SECRET = bytes.fromhex(SECRET_HEX)
TOPIC = "bench"


def device_name(i: int) -> str:
    """The device id of subscriber *i* (the gateway subscribes them, the devices process connects them)."""
    return f"d{i:07d}"


def raise_fd_limit() -> int:
    """Soft fd limit to the hard limit (20,000 on the benchmark machine); returns it."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def child_env() -> dict[str, str]:
    """The environment for a child: the same pushcore the parent imported comes first on the path."""
    import pushcore

    env = dict(os.environ)
    root = str(Path(pushcore.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([root, str(HERE), *filter(None, [env.get("PYTHONPATH")])])
    return env


class Child:
    """A helper process speaking JSON lines; always ended (stdin closed, then killed) by :meth:`close`."""

    def __init__(self, script: str, args: Sequence[object], name: str, argv: Sequence[str] | None = None) -> None:
        self.name = name
        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            list(argv) if argv is not None else [sys.executable, str(HERE / script), *map(str, args)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, env=child_env(), cwd=REPO,
        )
        self._buf = b""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr_tail(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read()[-3000:].decode("utf-8", "replace")

    def read(self, timeout: float) -> dict[str, Any]:
        """The next JSON line, or RuntimeError (with the child's stderr) after *timeout* s or at its exit."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"{self.name}: no answer within {timeout:.0f} s: {self.stderr_tail()}")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"{self.name} exited (rc={self.proc.wait()}): {self.stderr_tail()}")
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"{self.name}: {answer['error']}")
        return answer

    def ask(self, timeout: float = 120.0, **command: Any) -> dict[str, Any]:
        """Send one command (a JSON line), return its answer."""
        return self.say(json.dumps(command), timeout)

    def say(self, line: str, timeout: float) -> dict[str, Any]:
        """Send one command line, return its answer."""
        assert self.proc.stdin is not None
        self.proc.stdin.write((line + "\n").encode())
        self.proc.stdin.flush()
        return self.read(timeout)

    def close(self, timeout: float = 20.0) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        except (OSError, BrokenPipeError):
            pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()


def build_reader() -> Path:
    """``push_reader.c`` compiled (gcc -O2) into a cache directory outside the repository, keyed by its source."""
    src = HERE / "push_reader.c"
    flags = ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    digest = hashlib.sha256(src.read_bytes() + " ".join(flags).encode()).hexdigest()[:12]
    cache = Path(tempfile.gettempdir()) / f"pushcore-storebench-{os.getuid()}"
    cache.mkdir(exist_ok=True)
    exe = cache / f"push_reader-{digest}"
    if not exe.exists():
        tmp = cache / f"push_reader-{digest}.{os.getpid()}.tmp"
        subprocess.run(["gcc", *flags, "-o", str(tmp), str(src)], check=True)
        tmp.replace(exe)
    return exe


class Devices:
    """Connected subscribers ``device_name(0 .. capacity-1)`` in their own process (``push_reader.c``).

    The gateway's process carries none of the device load, and this one
    costs far less per delivery than the gateway: C, one epoll loop, frames
    parsed in place, one cumulative ACK per read (unless *ack* is False).
    """

    def __init__(self, port: int, capacity: int, ack: bool = True) -> None:
        import pushcore

        self._hellos = tempfile.NamedTemporaryFile("w", prefix="pushcore-hellos-", suffix=".hex")
        for i in range(capacity):
            name = device_name(i)
            self._hellos.write(pushcore.Hello(device_id=name, token=pushcore.mint_token(SECRET, name)).encode().hex())
            self._hellos.write("\n")
        self._hellos.flush()
        argv = [str(build_reader()), *([] if ack else ["-n"]), str(port), self._hellos.name]
        self.child = Child("", [], "push_reader", argv=argv)
        self.pid = self.child.pid
        self.online = 0

    def connect(self, first: int, count: int, timeout: float = 300.0) -> dict[str, Any]:
        """Connect devices *first* .. *first+count-1*; returns once each is welcomed or closed."""
        answer = self.child.say(f"connect {first} {count}", timeout)
        self.online = answer["online"]
        return answer

    def wait(self, pushes: int, within: float = 300.0) -> dict[str, Any]:
        """Until *pushes* PUSH frames arrived in all (or *within* s): ``{"pushes", "last", "closed"}``."""
        return self.child.say(f"wait {pushes} {within}", within + 30.0)

    def close(self) -> None:
        self.child.close()
        self._hellos.close()


def serve_commands(handlers: dict[str, Any]) -> None:
    """A child's main loop: one JSON command a line on stdin, ``handlers[op](**args)`` answers it; EOF ends."""
    for line in sys.stdin:
        if not line.strip():
            continue
        command = json.loads(line)
        op = command.pop("op")
        if op == "quit":
            break
        try:
            answer = handlers[op](**command)
        except Exception as exc:  # reported to the driver, which stops the run with it
            answer = {"error": f"{op}: {type(exc).__name__}: {exc}"}
        print(json.dumps(answer), flush=True)


def rss_bytes(pid: int | str = "self", field: str = "VmRSS") -> int:
    """*field* of /proc/PID/status in bytes (VmRSS: now; VmHWM: the peak since start or the last reset)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def reset_peak_rss() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux ``clear_refs`` 5); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def cpu_seconds(pid: int | str = "self") -> float:
    """User + system CPU seconds of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: Sequence[float], q: float) -> float:
    """The *q*-th percentile (0-100, nearest rank) of *values*; NaN for none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(round(q / 100.0 * len(ordered) + 0.5)) - 1))
    return ordered[rank]


def load_average() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import pushcore

    commit = ""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(pushcore.__file__).parent,
                                capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "cpu": model, "cpus": os.cpu_count(), "python": platform.python_version(),
        "kernel": platform.release(), "pushcore": str(Path(pushcore.__file__).resolve().parent.parent),
        "commit": commit, "backend": pushcore.BACKEND,
        "fd_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[1],
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def fmt(value: object) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value:
            return "-"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    return str(value)


def table(columns: Sequence[str], rows: Iterable[dict[str, Any]]) -> str:
    """A markdown table of *rows* (dicts) over *columns*; numbers right-aligned."""
    rows = list(rows)
    cells = [[fmt(row.get(c, "")) for c in columns] for row in rows]
    numeric = [all(isinstance(row.get(c), (int, float)) and not isinstance(row.get(c), bool) for row in rows)
               for c in columns]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    out = ["| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths)) + " |",
           "|" + "|".join(("-" * (w + 1) + ":") if n else ("-" * (w + 2)) for w, n in zip(widths, numeric)) + "|"]
    for r in cells:
        out.append("| " + " | ".join(v.rjust(w) if n else v.ljust(w) for v, w, n in zip(r, widths, numeric)) + " |")
    return "\n".join(out)


def report(title: str, columns: Sequence[str], rows: list[dict[str, Any]], notes: Sequence[str],
           json_path: str | None, extra: dict[str, Any] | None = None) -> None:
    """Print the table, the notes and the machine; write everything to *json_path* too when given."""
    info = machine()
    print(f"\n## {title}\n")
    print(table(columns, rows))
    print()
    for note in notes:
        print(f"* {note}")
    print(f"* machine: {info['cpu']}, {info['cpus']} CPUs, Linux {info['kernel']}, Python {info['python']}, "
          f"codec {info['backend']}; pushcore {info['commit'] or '?'} from {info['pushcore']}; {info['date']}")
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"title": title, "rows": rows, "notes": list(notes), "machine": info, **(extra or {})},
                      f, indent=2)
        print(f"* JSON: {json_path}")
