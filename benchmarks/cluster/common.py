"""Shared pieces of the cluster benchmarks (issue 12): Redis, nodes, device processes, Redis cost.

Builds on ``benchmarks/store/harness.py`` (child processes speaking JSON
lines, percentiles, tables, the machine) and ``tests/redisd.py`` (a real
``redis-server`` on a free 127.0.0.1 port). Every process a benchmark starts
is registered in a :class:`Procs` and ended by its ``close`` (also on
failure).
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "store"))
sys.path.insert(0, str(HERE.parent.parent / "tests"))

import harness  # noqa: E402
from harness import Child, cpu_seconds  # noqa: E402

from redisd import RedisServer  # noqa: E402

__all__ = ["harness", "Procs", "redis_cost", "NODE", "LATENCY_DEVICES"]

NODE = str(HERE / "node_proc.py")
LATENCY_DEVICES = str(HERE / "latency_devices.py")


class Procs:
    """A Redis server and the children of one run; :meth:`close` ends them all, in reverse order."""

    def __init__(self, appendonly: bool = True) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="pushcore-clusterbench-")
        self.redis = RedisServer(Path(self._tmp.name) / "redis", appendonly=appendonly).start()
        self.children: list[Any] = []

    @property
    def url(self) -> str:
        return self.redis.url

    def node(self, *args: object, name: str = "node", timeout: float = 300.0) -> tuple[Child, dict[str, Any]]:
        """A ``node_proc.py`` child with *args* after ``--redis URL``; returns it and its first line."""
        child = Child("", [], name, argv=[sys.executable, NODE, "--redis", self.url, *map(str, args)])
        self.children.append(child)
        return child, child.read(timeout)

    def child(self, argv: list[object], name: str) -> Child:
        child = Child("", [], name, argv=[str(a) for a in argv])
        self.children.append(child)
        return child

    def add(self, thing: Any) -> Any:
        self.children.append(thing)
        return thing

    def close(self) -> None:
        for child in reversed(self.children):
            try:
                child.close()
            except Exception:  # end the others anyway
                pass
        self.children.clear()
        self.redis.stop()
        self._tmp.cleanup()


def redis_cost(procs: Procs) -> dict[str, Any]:
    """Redis's own figures now: CPU seconds of redis-server (/proc), and INFO commandstats (calls, usec)."""
    import redis

    r = redis.Redis.from_url(procs.url)
    try:
        stats = r.info("commandstats")
    finally:
        r.close()
    assert procs.redis.process is not None
    commands = {k.removeprefix("cmdstat_"): {"calls": int(v["calls"]), "usec": int(v["usec"])}
                for k, v in stats.items()}
    return {"cpu_s": cpu_seconds(procs.redis.process.pid), "commands": commands}


def redis_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What Redis did between two :func:`redis_cost` readings: CPU seconds, calls and usec per command."""
    out: dict[str, Any] = {"cpu_s": after["cpu_s"] - before["cpu_s"], "commands": {}}
    for name, now in after["commands"].items():
        then = before["commands"].get(name, {"calls": 0, "usec": 0})
        calls, usec = now["calls"] - then["calls"], now["usec"] - then["usec"]
        if calls:
            out["commands"][name] = {"calls": calls, "usec": usec}
    out["usec"] = sum(c["usec"] for c in out["commands"].values())
    out["calls"] = sum(c["calls"] for c in out["commands"].values())
    return out
