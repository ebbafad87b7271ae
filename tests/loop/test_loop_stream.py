"""The loop's frame splitting against the pure-Python reference decoder.

Random streams (valid frames, optionally followed by random bytes) are sent
over a real socket in random pieces, with loop turns between the pieces. The
loop must deliver the same frames as ``pushcore.codec.reference.Decoder`` fed the
same bytes, and close with the reference's error code - or PEER_RESET /
PEER_CLOSED when the stream ends inside / between frames.
"""
from __future__ import annotations

import socket

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pushcore import ProtocolError, Reason
from pushcore._loop import Loop
from pushcore.codec import reference as ref
from pushcore.loop import run_until

FRAMES = [
    ref.Ack(seq=0), ref.Ack(seq=2**63), ref.Fetch(after_seq=5, max_count=100),
    ref.Upstream(upstream_id=9, payload=b"\x00" * 300, topic="news"),
    ref.Upstream(upstream_id=1, payload=b"x" * 40000),
    ref.Subscribe(topics=("a", "b\u00e9")), ref.Hello(versions=(1, 2), device_id="d", token=b"t"),
    ref.ErrorFrame(code=3, message="m"), ref.Ping(), ref.Pong(),
]

streams = st.tuples(
    st.lists(st.sampled_from(range(len(FRAMES))), max_size=12),
    st.one_of(st.just(b""), st.binary(min_size=1, max_size=12)),
    st.lists(st.integers(min_value=1, max_value=5000), min_size=1, max_size=20),
)


def expected(data: bytes):
    """(frames Python should see, close reason): PING/PONG are handled in C."""
    dec = ref.Decoder()
    try:
        frames = dec.feed(data)
        reason = Reason.PEER_RESET if dec.pending else Reason.PEER_CLOSED
    except ProtocolError as exc:
        frames, reason = exc.frames, int(exc.code)
    return [f for f in frames if not isinstance(f, (ref.Ping, ref.Pong))], reason


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams)
def test_loop_splits_like_the_reference_decoder(stream):
    picks, garbage, cuts = stream
    data = b"".join(FRAMES[i].encode() for i in picks) + garbage
    want_frames, want_reason = expected(data)
    loop = Loop(chunk_size=1024)  # small chunks: partial frames cross into big buffers
    try:
        frames, opened, closed = [], [], []
        loop.set_handlers(on_frames=frames.extend, on_open=opened.extend, on_close=closed.extend)
        lid = loop.listen("127.0.0.1", 0)
        s = socket.create_connection(loop.listen_address(lid), timeout=5)
        assert run_until(loop, lambda: opened)
        pos = 0
        for cut in cuts:
            if pos >= len(data) or closed:
                break
            try:
                s.sendall(data[pos:pos + cut])
            except (BrokenPipeError, ConnectionResetError):
                break
            pos += cut
            loop.run_once(0.001)
        if pos < len(data) and not closed:
            try:
                s.sendall(data[pos:])
            except (BrokenPipeError, ConnectionResetError):
                pass
        s.shutdown(socket.SHUT_WR)
        assert run_until(loop, lambda: closed)
        cid = opened[0][0]
        assert [f for c, f in frames] == want_frames
        assert all(c == cid for c, _ in frames)
        assert closed == [(cid, want_reason)]
        s.close()
        loop.run_once(0.01)
        assert loop.pool_stats()["in_use"] == 0 and loop.pool_stats()["big_in_use"] == 0
        assert loop.stats()["recv_partial_bytes"] == 0
    finally:
        loop.close()
