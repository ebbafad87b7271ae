"""``pushcore_loop_lag_seconds`` on /metrics, and the loop-lag line of the simulator report."""
from __future__ import annotations

import time

from prometheus_text import parse_exposition, sample
from pushcore.admin.gateway_metrics import GatewayMetrics
from pushcore.sim.report import Report
from serverkit import running_server

BLOCK = 0.25


def test_a_blocked_loop_shows_in_the_lag_metrics():
    with running_server() as server:
        metrics = GatewayMetrics(server)

        def block() -> None:
            server.loop.call_later(0, lambda: None)  # due now, fired only after the block
            time.sleep(BLOCK)

        server.call(block)
        server.call(lambda: None)  # a later turn: the late timer's sample is in
        families = parse_exposition(metrics.registry.render())
    assert families["pushcore_loop_lag_seconds"]["type"] == "histogram"
    count = sample(families, "pushcore_loop_lag_seconds_count")
    assert count >= 1
    assert sample(families, "pushcore_loop_lag_seconds_bucket", le="0.1") < count
    assert sample(families, "pushcore_loop_lag_seconds_bucket", le="+Inf") == count
    assert sample(families, "pushcore_loop_lag_seconds_sum") >= BLOCK
    assert sample(families, "pushcore_loop_lag_max_seconds") >= BLOCK
    assert families["pushcore_loop_lag_recent_p99_seconds"]["type"] == "gauge"


def test_the_simulator_report_has_a_loop_lag_line():
    report = Report(devices=1, servers=[["127.0.0.1", 1]], duration=1.0, wall_time=1.0, profile={},
                    push_rate=None, connect={}, connections={}, messages={}, latency_ms={"count": 0},
                    latency_live_ms={"count": 0}, heartbeat={},
                    loop_lag={"recent_p50": 0.0004, "recent_p99": 0.012, "recent_max": 0.02,
                              "recent_count": 300, "max": 0.25, "count": 300, "sum": 0.5})
    line = next(row for row in report.table().splitlines() if row.startswith("loop lag"))
    assert "p99 12.00 ms" in line and "max 250.00 ms" in line and "300 turns" in line
