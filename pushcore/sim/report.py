"""What a simulation measured, and how it is shown: samples, the report table and JSON, progress.

* :class:`Samples` keeps latency-like values with exact count, mean, min and
  max, and a bounded uniform sample (reservoir) for percentiles, so a long
  run's memory stays fixed.
* :class:`Report` is the result of a run: plain data (:meth:`Report.to_dict`
  is what ``--json`` writes), a human table (:meth:`Report.table`) and a
  verdict: ``ok`` is true when no device missed, duplicated or reordered a
  message and none got another device's message.
* :class:`Progress` is a one-line progress bar on stderr (``\\r``-rewritten,
  no dependency), shown on terminals only unless forced.
"""
from __future__ import annotations

import json
import random
import shutil
import sys
import time
from array import array
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

__all__ = ["Samples", "Report", "Progress", "percentile"]


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The *q*-th percentile (0-100) of ascending *sorted_values*, by linear interpolation."""
    n = len(sorted_values)
    if n == 0:
        return float("nan")
    if n == 1:
        return float(sorted_values[0])
    pos = (n - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    return float(sorted_values[lo] * (1 - frac) + sorted_values[hi] * frac)


class Samples:
    """Values (e.g. seconds) with exact count/mean/min/max and a reservoir for percentiles."""

    __slots__ = ("capacity", "count", "total", "minimum", "maximum", "_values", "_rng")

    def __init__(self, capacity: int = 200_000, seed: int | None = None) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self.count = 0
        self.total = 0.0
        self.minimum = float("inf")
        self.maximum = float("-inf")
        self._values = array("d")
        self._rng = random.Random(seed)

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        if value < self.minimum:
            self.minimum = value
        if value > self.maximum:
            self.maximum = value
        values = self._values
        if len(values) < self.capacity:
            values.append(value)
        else:  # reservoir sampling (algorithm R): every value kept with equal probability
            j = self._rng.randrange(self.count)
            if j < self.capacity:
                values[j] = value

    def summary(self, scale: float = 1.0) -> dict[str, float]:
        """``count, mean, min, p50, p90, p99, p999, max`` (values times *scale*); empty: count only."""
        if not self.count:
            return {"count": 0}
        ordered = sorted(self._values)
        return {
            "count": self.count,
            "mean": self.total / self.count * scale,
            "min": self.minimum * scale,
            "p50": percentile(ordered, 50) * scale,
            "p90": percentile(ordered, 90) * scale,
            "p99": percentile(ordered, 99) * scale,
            "p999": percentile(ordered, 99.9) * scale,
            "max": self.maximum * scale,
        }


@dataclass
class Report:
    """The result of one simulation run (see :meth:`table` for what each part means)."""

    devices: int
    servers: list[list[str | int]]  # [host, port] each
    duration: float  # seconds of the steady phase (pushes flowing)
    wall_time: float  # seconds of the whole run, connect and drain included
    profile: dict[str, Any]
    push_rate: float | None  # messages per second asked of the pusher (None: no pusher)
    connect: dict[str, Any]  # ramp: seconds until every device was online, rate, connect time summary (ms)
    connections: dict[str, Any]  # connects, failures, refusals, closes by reason, injected faults
    messages: dict[str, float]  # sent, received, missing, duplicates, out of order, misrouted, redelivered
    latency_ms: dict[str, float]  # every push: summary in milliseconds
    latency_live_ms: dict[str, float]  # pushes sent while the device was connected
    heartbeat: dict[str, Any]  # intervals at the end; NAT convergence
    problems: list[str] = field(default_factory=list)  # per-device issues (first few)
    online_at_end: int = 0
    failed_devices: int = 0
    warnings: list[str] = field(default_factory=list)  # what was wrong with the setup (e.g. heartbeat bounds)
    loop_lag: dict[str, float] = field(default_factory=dict)  # the simulator loop's timer lateness (s)

    @property
    def ok(self) -> bool:
        m = self.messages
        return (m.get("missing", 0) == 0 and m.get("duplicates", 0) == 0
                and m.get("out_of_order", 0) == 0 and m.get("misrouted", 0) == 0)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        return data

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False, default=str)

    # -- the table ----------------------------------------------------------------------------

    def table(self) -> str:
        """The report as aligned text lines (what ``pushcore simulate`` and ``demo`` print)."""
        rows: list[tuple[str, str]] = []
        c, conn, m = self.connect, self.connections, self.messages
        servers = ", ".join(f"{h}:{p}" for h, p in self.servers)
        rows.append(("devices", f"{self.devices:,} against {servers}; "
                                f"{self.online_at_end:,} online at the end"
                                + (f", {self.failed_devices:,} refused for good" if self.failed_devices else "")))
        rows.append(("run", f"{self.duration:.1f} s of traffic, {self.wall_time:.1f} s in all"))
        ramp = c.get("ramp_seconds")
        ramp_text = (f"all online in {ramp:.2f} s ({c.get('rate', 0):,.0f} connections/s)"
                     if ramp is not None else "not every device came online")
        rows.append(("connect", ramp_text))
        rows.append(("connect time", _latency_line(c.get("time_ms", {"count": 0}))))
        rows.append(("connections", f"{conn.get('connects', 0):,} sessions, "
                                    f"{conn.get('connect_failures', 0):,} failed attempts"
                     + _dict_tail("refused", conn.get("refused", {}))))
        injected = conn.get("injected", {})
        if any(injected.values()):
            rows.append(("faults", ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in injected.items())))
        closes = conn.get("closes", {})
        if closes:
            rows.append(("closes", ", ".join(f"{k} {v:,}" for k, v in sorted(closes.items(), key=lambda kv: -kv[1]))))
            note = _gateway_names(injected, closes)
            if note:
                rows.append(("  at the gateway", note))
        if self.push_rate is not None:
            rows.append(("pushes", f"{m.get('sent', 0):,} sent at {m.get('sent_rate', 0):,.0f}/s "
                                   f"(asked {self.push_rate:,.0f}/s), {m.get('received', 0):,} received"
                         + (f", {m.get('push_errors', 0):,} push errors" if m.get("push_errors") else "")))
        rows.append(("correctness", f"missing {m.get('missing', 0):,}, duplicates {m.get('duplicates', 0):,}, "
                                    f"out of order {m.get('out_of_order', 0):,}, "
                                    f"misrouted {m.get('misrouted', 0):,}"
                                    f" (redelivered and dropped by seq: {m.get('redelivered', 0):,})"))
        rows.append(("latency", _latency_line(self.latency_ms)))
        if self.latency_live_ms.get("count") != self.latency_ms.get("count"):
            rows.append(("  while online", _latency_line(self.latency_live_ms)))
        hb = self.heartbeat
        if hb.get("intervals"):
            rows.append(("heartbeat", _interval_line(hb["intervals"])))
        nat = hb.get("nat")
        if nat:
            rows.append(("NAT", _nat_line(nat)))
        if self.loop_lag.get("recent_count"):
            rows.append(("loop lag", _lag_line(self.loop_lag)))
        for problem in self.problems[:5]:
            rows.append(("  device", problem))
        if len(self.problems) > 5:
            rows.append(("", f"... {len(self.problems) - 5} more devices with problems (see --json)"))
        for warning in self.warnings:
            rows.append(("warning", warning))
        rows.append(("verdict", "OK: every message arrived once and in order" if self.ok else
                     "FAIL: messages were lost, duplicated, reordered or misrouted"))
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _nat_line(nat: dict[str, Any]) -> str:
    """Every device behind the NAT in one of three groups: settled below the timeout, held at or
    above it (each further drop steps it down), or holding no interval yet (still probing upward)."""
    below = nat["held_below_timeout"]
    above = nat["held"] - below
    probing = nat["devices"] - nat["held"]
    median = nat.get("held_median")
    parts = [f"{below:,} settled on an interval below the timeout"
             + (f" (median {median:.2f} s)" if median is not None and below else "")]
    if above:
        parts.append(f"{above:,} held one at or above it (their next drop makes them step down again)")
    if probing:
        parts.append(f"{probing:,} still probing upward (holding no interval)")
    return (f"timeout {nat['timeout']:.2f} s on {nat['devices']:,} devices: {nat['drops']:,} silent drops; "
            + ", ".join(parts))


def _gateway_names(injected: dict[str, int], closes: dict[str, int]) -> str:
    """How the gateway's metrics (``pushcore_connections_closed_total``) name the closes the devices count.

    A NAT drop is silent: the device notices it as an unanswered heartbeat
    (``IDLE_TIMEOUT``) and reconnects, and only then does the gateway close
    the connection it still held, as ``REPLACED``. A churn leave is the
    device's ``NORMAL`` close, the gateway's ``PEER_CLOSED``.
    """
    parts = []
    drops = injected.get("nat_drops", 0)
    if drops and closes.get("IDLE_TIMEOUT"):
        parts.append(f"the {drops:,} NAT drops (here IDLE_TIMEOUT: no PONG came back) are REPLACED there, "
                     f"closed when the device's new connection replaced the one the gateway still held")
    leaves = injected.get("churn_leaves", 0)
    if leaves and closes.get("NORMAL"):
        parts.append(f"the {leaves:,} churn leaves (NORMAL) are PEER_CLOSED")
    return "; ".join(parts)


def _latency_line(summary: dict[str, float]) -> str:
    if not summary.get("count"):
        return "no samples"
    return (f"p50 {summary['p50']:.2f} ms, p90 {summary['p90']:.2f} ms, p99 {summary['p99']:.2f} ms, "
            f"max {summary['max']:.2f} ms ({summary['count']:,} samples)")


def _lag_line(lag: dict[str, float]) -> str:
    """How late the loop's timers fired: a loop kept busy (or blocked) answers everything late."""
    return (f"timers fired late by p50 {lag['recent_p50'] * 1000:.2f} ms, p99 {lag['recent_p99'] * 1000:.2f} ms "
            f"(last {lag['recent_count']:,.0f} turns with timers), max {lag['max'] * 1000:.2f} ms")


def _interval_line(intervals: dict[str, float]) -> str:
    return (f"interval at the end: min {intervals['min']:.2f} s, median {intervals['p50']:.2f} s, "
            f"max {intervals['max']:.2f} s over {intervals['count']:,} devices")


def _dict_tail(label: str, counts: dict[str, int]) -> str:
    if not counts:
        return ""
    return f"; {label} " + ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items()))


class Progress:
    """A one-line progress bar on *stream* (stderr), redrawn at most ``hz`` times a second.

    ``enabled=None`` shows it only when the stream is a terminal, so logs and
    pipes are not filled with ``\\r`` lines.
    """

    def __init__(self, stream: TextIO | None = None, enabled: bool | None = None, hz: float = 5.0) -> None:
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty())
        self.enabled = enabled
        self._interval = 1.0 / hz
        self._last = 0.0
        self._width = 0
        self.drawn = 0

    def update(self, fraction: float, text: str, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < self._interval:
            return
        self._last = now
        fraction = min(max(fraction, 0.0), 1.0)
        columns = shutil.get_terminal_size((100, 20)).columns
        bar_width = 20
        filled = int(round(fraction * bar_width))
        line = f"[{'#' * filled}{'.' * (bar_width - filled)}] {fraction * 100:3.0f}% {text}"
        line = line[: max(columns - 1, 10)]
        pad = max(self._width - len(line), 0)
        self.stream.write("\r" + line + " " * pad)
        self.stream.flush()
        self._width = len(line)
        self.drawn += 1

    def finish(self) -> None:
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0
