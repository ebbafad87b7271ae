"""Compile the benchmark's C programs at run time (gcc -O2) into a cache dir.

The binaries live outside the repository (under the system temp dir, keyed
by a hash of the source), so nothing built is ever committed.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CFLAGS = ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"]


def build_dir() -> Path:
    d = Path(tempfile.gettempdir()) / f"pushcore-loopbench-{os.getuid()}"
    d.mkdir(exist_ok=True)
    return d


def build(name: str) -> Path:
    """Return the path of the compiled ``benchmarks/loop/<name>.c``, building it if its source changed."""
    src = HERE / f"{name}.c"
    digest = hashlib.sha256(src.read_bytes() + " ".join(CFLAGS).encode()).hexdigest()[:12]
    exe = build_dir() / f"{name}-{digest}"
    if not exe.exists():
        tmp = exe.with_suffix(".tmp")
        subprocess.run(["gcc", *CFLAGS, "-o", str(tmp), str(src)], check=True)
        tmp.replace(exe)
    return exe


if __name__ == "__main__":
    for prog in ("count_client", "c_fanout_server"):
        print(build(prog))
