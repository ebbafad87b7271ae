"""Codec benchmarks (pytest-benchmark): the same notification in every format.

    python -m pytest benchmarks/test_bench_codec.py
    python -m pytest benchmarks/test_bench_codec.py --benchmark-group-by=group

Each case of :mod:`pushcore.bench.comparison` (push, heartbeat, ack in pushcore
Cython and pure Python, XMPP via slixmpp, MQTT 3.1.1, msgpack, JSON) gets an
encode and a decode benchmark, grouped per operation and step so that
pytest-benchmark's table sets them side by side; ``extra_info["bytes"]`` is
the size on the wire. Every benchmark also checks its result, so a fast
wrong answer cannot win.

The timed callable is the case's expression compiled into a zero-argument
lambda: every format pays the same one-call overhead, which
``benchmarks/codec_table.py`` (timeit, no wrapper) does not. Use that script
for the ratios reported in BENCHMARKS.md.
"""
from __future__ import annotations

import json

import pytest

from pushcore.bench.comparison import REFERENCE, build_cases

# Rounds of at least 200 us: a codec call takes 30 ns - 30 us, so each round loops many
# times and the timer's own cost (~100 ns) is spread thin. GC off, as in timeit.
pytestmark = pytest.mark.benchmark(min_time=0.0002, disable_gc=True, warmup=True)

CASES, MISSING = build_cases()
TIMED = [case for case in CASES if case.timed]


def _ids(case) -> str:
    return f"{case.operation}-{case.encoder}"


def _compile(expr: str, namespace: dict):
    return eval("lambda: " + expr, namespace)  # noqa: S307 - our own constant expressions


def test_reference_payload_is_the_documented_json():
    """BENCHMARKS.md describes the payload as 72 bytes of JSON with these keys."""
    assert len(REFERENCE.payload) == 72
    assert list(json.loads(REFERENCE.payload)) == ["title", "body", "url"]


@pytest.mark.parametrize("case", TIMED, ids=_ids)
def test_encode(benchmark, case):
    benchmark.group = f"{case.operation} encode"
    benchmark.extra_info["bytes"] = len(case.frame)
    encoded = benchmark(_compile(case.encode_expr, case.namespace))
    assert encoded == case.frame


@pytest.mark.parametrize("case", TIMED, ids=_ids)
def test_decode(benchmark, case):
    benchmark.group = f"{case.operation} decode"
    benchmark.extra_info["bytes"] = len(case.frame)
    decoded = benchmark(_compile(case.decode_expr, case.namespace))
    assert case.accepts(decoded)


PUSHCORE_PUSH_CASES = {c.encoder: c for c in CASES if c.operation == "push"
                       and c.encoder.startswith("pushcore-")}


def _module(encoder: str):
    from pushcore.codec import select_backend

    return select_backend(encoder.removeprefix("pushcore-"))[1]


@pytest.mark.parametrize("encoder", sorted(PUSHCORE_PUSH_CASES))
def test_push_object_encode(benchmark, encoder):
    """The object path: build a ``Push`` and encode it (vs the ``encode_push`` hot path)."""
    codec = _module(encoder)
    n = REFERENCE
    benchmark.group = "push encode (Push object)"
    frame = benchmark(lambda: codec.Push(n.seq, n.message_id, n.payload, n.priority, n.expiry,
                                         "", n.topic).encode())
    assert frame == PUSHCORE_PUSH_CASES[encoder].frame


@pytest.mark.parametrize("encoder", sorted(PUSHCORE_PUSH_CASES))
def test_stream_decoder_feed_batch(benchmark, encoder):
    """The streaming path: 100 pushes arriving in one read, through ``Decoder.feed``."""
    codec = _module(encoder)
    chunk = PUSHCORE_PUSH_CASES[encoder].frame * 100
    benchmark.group = "push decode x100 (Decoder.feed, one chunk)"
    benchmark.extra_info["bytes"] = len(chunk)
    frames = benchmark(lambda: codec.Decoder().feed(chunk))
    assert len(frames) == 100
    assert frames[-1].payload == REFERENCE.payload
