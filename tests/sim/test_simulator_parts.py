"""The simulator's pure parts: samples and percentiles, payloads, profiles and their parsers, the pusher."""
from __future__ import annotations

import io
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pushcore.sim.profiles import (
    DEMO_PROFILE,
    Profile,
    parse_churn,
    parse_heartbeat,
    parse_nat,
    parse_rate,
)
from pushcore.sim.report import Progress, Report, Samples, percentile
from pushcore.sim.traffic import Pusher, encode_payload, parse_payload


def test_percentile_interpolates():
    values = [1.0, 2.0, 3.0, 4.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile(values, 50) == 2.5
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) != percentile([], 50)  # NaN


def test_samples_are_exact_below_capacity():
    s = Samples(capacity=1000)
    for v in range(1, 101):
        s.add(float(v))
    summary = s.summary(scale=10.0)
    assert summary["count"] == 100
    assert summary["min"] == 10.0 and summary["max"] == 1000.0
    assert summary["mean"] == pytest.approx(505.0)
    assert summary["p50"] == pytest.approx(505.0)
    assert summary["p99"] == pytest.approx(990.1)
    assert Samples().summary() == {"count": 0}


def test_samples_reservoir_stays_bounded_and_representative():
    s = Samples(capacity=2000, seed=1)
    for v in range(100_000):
        s.add(v / 100_000)
    summary = s.summary()
    assert summary["count"] == 100_000 and len(s._values) == 2000
    assert summary["min"] == 0.0 and summary["max"] == pytest.approx(0.99999)
    assert summary["p50"] == pytest.approx(0.5, abs=0.05)
    assert summary["p90"] == pytest.approx(0.9, abs=0.03)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 10**7), st.integers(1, 2**40), st.integers(0, 2**63))
def test_payload_round_trip(run_id, index, counter, sent_ns):
    payload = encode_payload(run_id, index, counter, sent_ns)
    assert parse_payload(payload) == (run_id, index, counter, sent_ns)


@pytest.mark.parametrize("payload", [b"", b"hello", b"pcsim1 1 2 3", b"pcsim1 a b c d", b"pcsim2 1 2 3 4",
                                     b"pcsim1 1 2 3 4 5"])
def test_foreign_payloads_are_not_parsed(payload):
    assert parse_payload(payload) is None


def test_profile_validation():
    with pytest.raises(ValueError, match="heartbeat"):
        Profile(heartbeat="sometimes")
    with pytest.raises(ValueError, match="nat_fraction"):
        Profile(nat_timeout=5, nat_fraction=1.5)
    with pytest.raises(ValueError, match="backoff"):
        Profile(backoff=(2.0, 1.0))
    with pytest.raises(ValueError, match="connect_rate"):
        Profile(connect_rate=-1)
    with pytest.raises(ValueError, match="scale"):
        Profile(heartbeat_scale=0)
    p = DEMO_PROFILE.with_(reset_rate=0.5)
    assert p.reset_rate == 0.5 and DEMO_PROFILE.reset_rate != 0.5
    policy = DEMO_PROFILE.new_policy()
    assert policy.interval == pytest.approx(210 * 0.004)
    assert Profile(heartbeat="fixed").new_policy() is None
    described = DEMO_PROFILE.describe()
    assert described["nat"] == {"timeout": DEMO_PROFILE.nat_timeout, "fraction": DEMO_PROFILE.nat_fraction}
    assert described["heartbeat_policy"]["floor"] == pytest.approx(0.84)


def test_command_line_parsers():
    assert parse_heartbeat("adaptive") == {"heartbeat": "adaptive"}
    assert parse_heartbeat("adaptive:0.01") == {"heartbeat": "adaptive", "heartbeat_scale": 0.01}
    assert parse_heartbeat("fixed:30") == {"heartbeat": "fixed", "heartbeat_fixed": 30.0}
    assert parse_heartbeat("off") == {"heartbeat": "off"}
    assert parse_churn("60:5") == {"churn_online": 60.0, "churn_offline": 5.0}
    assert parse_churn("off") == {"churn_online": None}
    assert parse_nat("240") == {"nat_timeout": 240.0}
    assert parse_nat("240:0.3") == {"nat_timeout": 240.0, "nat_fraction": 0.3}
    assert parse_rate("500", "--rate") == 500.0
    assert parse_rate("unlimited", "--rate") is None
    for bad, fn in [("fixed", parse_heartbeat), ("fixed:x", parse_heartbeat), ("60", parse_churn),
                    ("a:b", parse_churn), ("-1", parse_nat), ("nan", parse_nat)]:
        with pytest.raises(ValueError, match="--"):
            fn(bad)


class RecordingSink:
    def __init__(self, refuse_after=None):
        self.batches = []
        self.refuse_after = refuse_after
        self.accepted = 0
        self.lock = threading.Lock()

    def send(self, batch):
        with self.lock:
            self.batches.append(list(batch))
            if self.refuse_after is None:
                self.accepted += len(batch)
                return len(batch)
            take = max(0, min(len(batch), self.refuse_after - self.accepted))
            self.accepted += take
            return take


def test_pusher_counts_per_device_and_takes_back_what_the_sink_refused():
    sink = RecordingSink(refuse_after=150)
    pusher = Pusher(sink, devices=7, rate=2000, seed=1)
    pusher.start()
    deadline = time.monotonic() + 5
    while sum(len(b) for b in sink.batches) < 400 and time.monotonic() < deadline:
        time.sleep(0.01)
    pusher.stop()
    assert not pusher.running
    assert pusher.total == 150 == sum(pusher.sent)
    assert pusher.errors == sum(len(b) for b in sink.batches) - 150
    # the accepted messages carry counters 1..sent[i] for each device, in order
    per_device: dict[int, list[int]] = {}
    accepted = [m for b in sink.batches for m in b][:150]
    for index, counter in accepted:
        per_device.setdefault(index, []).append(counter)
    for index, counters in per_device.items():
        assert counters == list(range(1, pusher.sent[index] + 1))


def test_pusher_holds_its_rate():
    sink = RecordingSink()
    pusher = Pusher(sink, devices=3, rate=500, seed=1)
    pusher.start()
    time.sleep(0.5)
    pusher.stop()
    # the number sent follows the clock, not the loop speed (generous bounds: a busy machine)
    assert 150 <= pusher.total <= 300
    assert pusher.achieved_rate == pytest.approx(pusher.total / (pusher.stopped_at - pusher.started_at))


def test_progress_is_off_for_pipes_and_throttled():
    quiet = Progress(io.StringIO())
    assert not quiet.enabled
    quiet.update(0.5, "x")
    assert quiet.stream.getvalue() == ""
    stream = io.StringIO()
    bar = Progress(stream, enabled=True, hz=1)
    bar.update(0.5, "first")
    bar.update(0.6, "second")  # within the same second: skipped
    bar.update(0.7, "forced", force=True)
    assert bar.drawn == 2
    assert "[##########..........]  50% first" in stream.getvalue()
    bar.finish()
    assert stream.getvalue().endswith("\r")


def test_report_verdict_follows_the_counts():
    base = dict(devices=1, servers=[["127.0.0.1", 1]], duration=1.0, wall_time=1.0, profile={},
                push_rate=10.0, connect={}, connections={}, latency_ms={"count": 0},
                latency_live_ms={"count": 0}, heartbeat={})
    clean = Report(messages={"sent": 5, "received": 5, "missing": 0}, **base)
    assert clean.ok and "OK" in clean.table()
    for key in ("missing", "duplicates", "out_of_order", "misrouted"):
        bad = Report(messages={"sent": 5, "received": 4, key: 1}, **base)
        assert not bad.ok and "FAIL" in bad.table()
    assert Report(messages={"foreign": 3}, **base).ok  # others' messages are not errors
