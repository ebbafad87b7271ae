"""The report explains itself (issue 10, item 10a/10b): every NAT device is accounted for, and the
device-side close reasons are tied to the names the gateway's metrics use for the same closes."""
from __future__ import annotations

import re

from pushcore.cli.demo import metrics_summary
from pushcore.sim.report import Report

BASE = dict(devices=2000, servers=[["127.0.0.1", 1]], duration=12.0, wall_time=17.0, profile={},
            push_rate=400.0, connect={}, latency_ms={"count": 0}, latency_live_ms={"count": 0},
            messages={"sent": 5, "received": 5})


def row(table: str, label: str) -> str:
    found = [line for line in table.splitlines() if line.split("  ")[0].strip() == label]
    assert found, f"no {label!r} row in:\n{table}"
    return found[0]


def nat_report(**nat) -> Report:
    nat = {"timeout": 1.45, "devices": 390, "drops": 770, "held": 388, "held_below_timeout": 385,
           "held_median": 1.40, **nat}
    return Report(connections={}, heartbeat={"nat": nat}, **BASE)


def test_the_nat_line_accounts_for_every_device_behind_the_nat():
    line = row(nat_report().table(), "NAT")
    assert "timeout 1.45 s on 390 devices" in line and "770 silent drops" in line
    assert "385 settled on an interval below the timeout (median 1.40 s)" in line
    # the 3 held at or above the timeout, and what happens to them
    assert "3 held one at or above it" in line and "step down" in line
    # the 2 holding no interval yet
    assert "2 still probing upward" in line
    counts = [int(n) for n in re.findall(r"(\d+) (?:settled|held one|still probing)", line)]
    assert sum(counts) == 390


def test_the_nat_line_leaves_out_empty_parts():
    line = row(nat_report(held=390, held_below_timeout=390).table(), "NAT")
    assert "390 settled on an interval below the timeout" in line
    assert "at or above" not in line and "probing" not in line


def test_the_report_says_how_the_gateway_names_the_same_closes():
    connections = {"connects": 3610, "injected": {"churn_leaves": 761, "link_resets": 79, "nat_drops": 770},
                   "closes": {"IDLE_TIMEOUT": 770, "NORMAL": 761, "PEER_RESET": 79}}
    table = Report(connections=connections, heartbeat={}, **BASE).table()
    closes = row(table, "closes")
    assert "IDLE_TIMEOUT 770" in closes
    note = table.splitlines()[table.splitlines().index(closes) + 1]
    assert "770 NAT drops" in note and "REPLACED" in note
    assert "761 churn leaves" in note and "PEER_CLOSED" in note


def test_no_gateway_note_without_nat_drops_or_churn():
    connections = {"connects": 10, "closes": {"PEER_RESET": 2}, "injected": {"link_resets": 2}}
    table = Report(connections=connections, heartbeat={}, **BASE).table()
    assert "REPLACED" not in table and "PEER_CLOSED" not in table


def test_the_demo_metrics_explain_replaced():
    text = "\n".join([
        '# TYPE pushcore_connections_closed_total counter',
        'pushcore_connections_closed_total{reason="REPLACED"} 773',
        'pushcore_connections_closed_total{reason="PEER_CLOSED"} 761',
    ])
    lines = metrics_summary(text)
    closed = next(i for i, line in enumerate(lines) if line.startswith("connections closed:"))
    assert "REPLACED 773" in lines[closed]
    explained = " ".join(lines[closed:closed + 2])
    assert "reconnected while the gateway still held" in explained and "IDLE_TIMEOUT" in explained
