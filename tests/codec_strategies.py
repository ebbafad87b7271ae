"""Hypothesis strategies for codec frames, shared by the codec tests.

Each strategy draws constructor keyword arguments (docs/CODEC.md) within the
encoder's limits; build the frame with any backend's class:
``getattr(codec, class_name)(**kwargs)``.
"""
from __future__ import annotations

from hypothesis import strategies as st

U64_MAX = 2**64 - 1
U32_MAX = 2**32 - 1

# Mostly small values (the common case, 1-2 byte varints) plus the full range
# (hypothesis also favours the boundaries 0 and 2**64 - 1).
u64 = st.one_of(st.integers(0, 300), st.integers(0, U64_MAX))
u32_nonzero_or_zero = st.one_of(st.just(0), st.integers(1, U32_MAX))
# st.text() never draws lone surrogates, so every value is valid UTF-8.
short_text = st.text(max_size=40)
payload = st.binary(max_size=400)
server = st.tuples(st.text(max_size=30), st.integers(0, 65535), u64)
servers = st.lists(server, max_size=5).map(tuple)
topics = st.lists(short_text, min_size=1, max_size=12).map(tuple)

FRAME_KWARGS = {
    "Hello": st.fixed_dictionaries({
        "versions": st.lists(u64, min_size=1, max_size=8).map(tuple),
        "device_id": short_text,
        "token": st.binary(max_size=200),
        "last_seq": u64,
        "heartbeat": u64,
    }),
    "Welcome": st.fixed_dictionaries({
        "version": u64, "heartbeat_min": u64, "heartbeat_max": u64, "server_time": u64,
    }),
    "Ping": st.just({}),
    "Pong": st.just({}),
    "Push": st.fixed_dictionaries({
        "seq": u64,
        "message_id": st.integers(0, U64_MAX),
        "payload": payload,
        "priority": st.sampled_from([0, 1]),
        "expiry": u32_nonzero_or_zero,
        "collapse_key": short_text,
        "topic": short_text,
    }),
    "Notify": st.fixed_dictionaries({"latest_seq": u64}),
    "Fetch": st.fixed_dictionaries({"after_seq": u64, "max_count": u64}),
    "Ack": st.fixed_dictionaries({"seq": u64}),
    "Subscribe": st.fixed_dictionaries({"topics": topics}),
    "Unsubscribe": st.fixed_dictionaries({"topics": topics}),
    "Upstream": st.fixed_dictionaries({"upstream_id": u64, "payload": payload, "topic": short_text}),
    "UpstreamAck": st.fixed_dictionaries({"upstream_id": u64}),
    "Redirect": st.fixed_dictionaries({"servers": servers}),
    "Goaway": st.fixed_dictionaries({"reason": u64, "message": short_text, "servers": servers}),
    "ErrorFrame": st.fixed_dictionaries({"code": u64, "message": short_text}),
}

CLASS_NAMES = list(FRAME_KWARGS)

# (class_name, kwargs) of any frame type.
any_frame_kwargs = st.sampled_from(CLASS_NAMES).flatmap(
    lambda name: FRAME_KWARGS[name].map(lambda kwargs: (name, kwargs))
)


def build(codec, item):
    """The frame for a drawn ``(class_name, kwargs)``, built with *codec*."""
    class_name, kwargs = item
    return getattr(codec, class_name)(**kwargs)


# Positions at which to cut a byte string into chunks (see split()).
cut_points = st.lists(st.integers(0, 10**6), max_size=30)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """*data* cut at the given positions (taken modulo ``len(data) + 1``)."""
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:])] or [b""]
