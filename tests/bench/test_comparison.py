"""The comparison harness: every format round-trips the reference notification, and a
format that does not is caught before anything is timed."""
from __future__ import annotations

import pytest

from pushcore.bench import mqtt311
from pushcore.bench.comparison import BENCH_EXTRA_HINT, REFERENCE, Case, CaseCheckError, build_cases
from pushcore.bench.table import Result, evaluate_targets, format_table, time_expr
from pushcore.codec import reference as protocol


@pytest.fixture(scope="module")
def cases_and_missing():
    return build_cases()


def _case(cases, operation, encoder):
    return next(c for c in cases if c.operation == operation and c.encoder == encoder)


def test_core_formats_are_always_there(cases_and_missing):
    cases, _ = cases_and_missing
    names = {(c.operation, c.encoder) for c in cases}
    for op in ("push", "heartbeat", "ack"):
        assert (op, "pushcore-python") in names and (op, "mqtt-3.1.1") in names
    assert ("push", "json") in names and ("push", "mqtt-3.1.1+json") in names


def test_optional_formats_are_present_or_reported(cases_and_missing):
    cases, missing = cases_and_missing
    encoders = {c.encoder for c in cases}
    for encoder in ("xmpp-slixmpp", "msgpack"):
        reported = [m for m in missing if m.startswith(encoder)]
        assert (encoder in encoders) != bool(reported)
        assert all(BENCH_EXTRA_HINT in m for m in reported)


def test_frames_are_the_codecs_bytes(cases_and_missing):
    cases, _ = cases_and_missing
    n = REFERENCE
    assert _case(cases, "push", "pushcore-python").frame == protocol.encode_push(
        n.seq, n.message_id, n.payload, n.priority, n.expiry, "", n.topic)
    assert _case(cases, "heartbeat", "pushcore-python").frame == protocol.PING_BYTES
    assert _case(cases, "ack", "pushcore-python").frame == protocol.encode_ack(n.seq)
    assert _case(cases, "push", "mqtt-3.1.1").frame == mqtt311.encode_publish(
        n.topic, n.payload, 42)
    assert _case(cases, "heartbeat", "mqtt-3.1.1").frame == mqtt311.PINGREQ_BYTES


def test_every_decode_gives_back_the_fields(cases_and_missing):
    cases, _ = cases_and_missing
    for case in cases:
        if case.timed:
            got = case.normalize(case.decode())
            if case.operation == "push" and "all" in case.carries:
                assert got == REFERENCE.as_tuple(), case.encoder
            else:
                assert got == case.expected


def test_a_wrong_decode_is_caught():
    bad = Case("push", "broken", "all", "b'x'", "frame + b'y'", {}, b"x")
    with pytest.raises(CaseCheckError, match="broken"):
        bad.check()


def test_not_carried_fields_are_not_compared():
    case = Case("push", "partial", "topic", "b'x'", "(None, frame)", {}, (None, b"x"))
    case.check()  # passes: None means "not carried"
    wrong = Case("push", "partial", "topic", "b'x'", "(1, b'z')", {}, (None, b"x"))
    with pytest.raises(CaseCheckError):
        wrong.check()


def test_time_expr_uses_the_namespace_and_returns_ns_per_op():
    ns_per_op = time_expr("len(data)", {"data": b"abc"}, min_time=0.005, repeat=2)
    assert 0 < ns_per_op < 1e6


def _result(op, encoder, enc, dec, frame, baseline=False):
    case = Case(op, encoder, "all", "b''", "b''", {}, b"", frame=frame, baseline=baseline)
    return Result(case, enc, dec)


def test_targets_pass_and_miss():
    xmpp = _result("push", "xmpp-slixmpp", 20_000.0, 15_000.0, b"x" * 280, baseline=True)
    msgpack = _result("push", "msgpack", 600.0, 700.0, b"x" * 126)
    fast = _result("push", "pushcore-cython", 150.0, 140.0, b"x" * 92)
    verdicts = [t.passed for t in evaluate_targets([fast, xmpp, msgpack])]
    assert verdicts == [True, True, True, True, True]
    slow = _result("push", "pushcore-cython", 650.0, 160.0, b"x" * 100)
    verdicts = [t.passed for t in evaluate_targets([slow, xmpp, msgpack])]
    # 20000/650 = 31x < 100x; 15000/160 = 94x < 100x; 650 > 600; 160 < 700; 100/280 = 35.7%
    assert verdicts == [False, False, False, True, False]
    table = format_table([slow, xmpp, msgpack], evaluate_targets([slow, xmpp, msgpack]))
    assert "MISS" in table
    missing = evaluate_targets([fast])
    assert all(t.passed is None for t in missing)
