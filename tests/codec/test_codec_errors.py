"""Bad input, for both codecs: typed errors with readable messages, never a
crash, a hang or unbounded memory; and the encoders' range checks.
"""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codec_strategies import any_frame_kwargs, build, cut_points, split
from pushcore.errors import ProtocolError, Reason

PING = b"\x30\x00"
ACK_300 = b"\x80\x02\xac\x02"

# One representative input per codec error code (more in tests/vectors/invalid.json).
ONE_PER_CODE = {
    Reason.FRAME_TOO_LARGE: b"\x50\x81\x80\x04",                       # 65537 > 65536
    Reason.UNKNOWN_TYPE: b"\x00\x00",
    Reason.TRUNCATED: b"\x70\x01\x05",                                  # FETCH without max_count
    Reason.VARINT_OVERRUN: b"\x80\x0b" + b"\xff" * 10 + b"\x01",        # 11-byte ACK.seq
    Reason.INVALID_UTF8: b"\xf0\x03\x00\x01\xff",                       # ERROR message ff
    Reason.TRAILING_BYTES: b"\x30\x01\x00",                             # PING with a body
    Reason.BAD_FLAGS: b"\x31\x00",                                      # PING with flag 1
    Reason.INVALID_VALUE: b"\x90\x01\x00",                              # SUBSCRIBE, no topics
}


def feed_all(decoder, chunks):
    """Feed *chunks*; return (frames, error code or None) over the whole stream."""
    frames = []
    for chunk in chunks:
        try:
            frames += decoder.feed(chunk)
        except ProtocolError as exc:
            return frames + exc.frames, exc.code
    return frames, None


# --- every codec error code, with a message a user can act on ----------------

def test_every_codec_error_code_is_covered():
    assert set(ONE_PER_CODE) == {r for r in Reason if 1 <= r <= 8}


@pytest.mark.parametrize("code", list(ONE_PER_CODE), ids=[c.name for c in ONE_PER_CODE])
def test_error_code_and_message(codec, code):
    data = ONE_PER_CODE[code]
    for raise_error in (lambda: codec.decode(data), lambda: codec.Decoder().feed(data)):
        with pytest.raises(ProtocolError) as info:
            raise_error()
        exc = info.value
        assert exc.code == code and isinstance(exc.code, Reason)
        assert isinstance(exc, ValueError)          # ProtocolError is a ValueError
        assert str(exc).startswith(code.name + ": ")
        # A sentence, not a bare code.
        assert isinstance(exc.message, str) and len(exc.message) >= 15 and " " in exc.message
        assert exc.frames == []


def test_frame_too_large_message_names_the_limit(codec):
    with pytest.raises(ProtocolError) as info:
        codec.Decoder(max_frame_size=1000).feed(b"\x50\xe9\x07")   # 1001 bytes
    assert info.value.code == Reason.FRAME_TOO_LARGE
    assert "1000" in info.value.message


def test_protocol_error_pickles(codec):
    import pickle

    with pytest.raises(ProtocolError) as info:
        codec.decode(b"\x00")
    copy = pickle.loads(pickle.dumps(info.value))
    assert copy.code == Reason.UNKNOWN_TYPE and copy.message == info.value.message


# --- ProtocolError.frames and the failed state --------------------------------

def test_frames_completed_before_the_error_are_kept(codec):
    decoder = codec.Decoder()
    with pytest.raises(ProtocolError) as info:
        decoder.feed(PING + ACK_300 + b"\x31\x00")
    assert info.value.code == Reason.BAD_FLAGS
    assert info.value.frames == [codec.Ping(), codec.Ack(300)]


def test_frames_include_one_finished_from_an_earlier_feed(codec):
    decoder = codec.Decoder()
    assert decoder.feed(ACK_300[:3]) == []
    with pytest.raises(ProtocolError) as info:
        decoder.feed(ACK_300[3:] + PING + b"\x00")
    assert info.value.code == Reason.UNKNOWN_TYPE
    assert info.value.frames == [codec.Ack(300), codec.Ping()]


def test_error_in_a_later_feed_has_only_that_feeds_frames(codec):
    decoder = codec.Decoder()
    assert decoder.feed(PING + PING) == [codec.Ping(), codec.Ping()]
    with pytest.raises(ProtocolError) as info:
        decoder.feed(b"\x90\x01\x00")
    assert info.value.code == Reason.INVALID_VALUE
    assert info.value.frames == []


@pytest.mark.parametrize("code", list(ONE_PER_CODE), ids=[c.name for c in ONE_PER_CODE])
def test_failed_decoder_keeps_raising_the_same_code(codec, code):
    decoder = codec.Decoder()
    with pytest.raises(ProtocolError):
        decoder.feed(PING + ONE_PER_CODE[code])
    for later in (PING, b"", ACK_300, b"\x00", ONE_PER_CODE[code]):
        with pytest.raises(ProtocolError) as info:
            decoder.feed(later)
        assert info.value.code == code
        assert info.value.frames == []


def test_a_fresh_decoder_is_independent(codec):
    failed = codec.Decoder()
    with pytest.raises(ProtocolError):
        failed.feed(b"\x00")
    assert codec.Decoder().feed(PING) == [codec.Ping()]


# --- the size limit holds before any body byte is buffered ---------------------

def test_huge_length_raises_before_any_body_arrives(codec):
    decoder = codec.Decoder()
    # PUSH claiming 2**35 - 1 bytes: refused at its last length byte.
    header = b"\x50\xff\xff\xff\xff\x7f"
    for i in range(len(header) - 1):
        assert decoder.feed(header[i:i + 1]) == []
        assert decoder.pending == i + 1 <= 5
    with pytest.raises(ProtocolError) as info:
        decoder.feed(header[-1:] + b"x" * 100_000)
    assert info.value.code == Reason.FRAME_TOO_LARGE
    assert decoder.pending <= 6


@pytest.mark.parametrize("limit", [0, 1, 100, 127, 128, 65536])
def test_limit_is_inclusive(codec, limit):
    """A body of exactly max_frame_size bytes is fine; one more is refused."""
    payload_len = limit - 9               # PUSH body: seq (1) + message_id (8) + payload
    if payload_len >= 0:
        fits = codec.encode_push(1, 0, b"p" * payload_len)
        assert len(fits) == 1 + len(_uvarint(limit)) + limit
        decoder = codec.Decoder(max_frame_size=limit)
        assert decoder.feed(fits) == [codec.Push(1, 0, b"p" * payload_len)]
        assert codec.decode(fits, max_frame_size=limit).payload == b"p" * payload_len
    too_big = codec.Ping().encode()[:1] + _uvarint(limit + 1)
    with pytest.raises(ProtocolError) as info:
        codec.Decoder(max_frame_size=limit).feed(too_big)
    assert info.value.code == Reason.FRAME_TOO_LARGE
    with pytest.raises(ProtocolError) as info:
        codec.decode(too_big + bytes(limit + 1), max_frame_size=limit)
    assert info.value.code == Reason.FRAME_TOO_LARGE


def _uvarint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def test_default_limit_is_65536(codec):
    assert codec.DEFAULT_MAX_FRAME_SIZE == 65536
    payload = b"\xaa" * (65536 - 9)                 # body: seq (1) + message_id (8) + payload
    fits = codec.encode_push(1, 0, payload)
    assert fits[1:4] == b"\x80\x80\x04"            # body length 65536
    assert codec.Decoder().feed(fits)[0].payload == payload
    over = codec.encode_push(1, 0, payload + b"\xaa")   # the encoder has no such limit
    with pytest.raises(ProtocolError) as info:
        codec.decode(over)
    assert info.value.code == Reason.FRAME_TOO_LARGE


def test_large_frame_fed_in_small_chunks(codec):
    """A 64 KiB frame arriving in 1 KiB reads: no quadratic blow-up, one frame out."""
    frame = codec.Push(9, 9, bytes(range(256)) * 255)
    data = frame.encode()
    decoder = codec.Decoder()
    out = []
    for i in range(0, len(data), 1024):
        out += decoder.feed(data[i:i + 1024])
        assert decoder.pending <= len(data)
    assert out == [frame]


# --- garbage never escapes as anything but ProtocolError ----------------------

@settings(max_examples=400, deadline=None)
@given(data=st.binary(max_size=600), cuts=cut_points, limit=st.sampled_from([0, 7, 64, 300, 65536]))
def test_garbage_stream(codec, data, cuts, limit):
    """Random bytes: only ProtocolError, bounded buffering, chunking-independent."""
    whole = feed_all(codec.Decoder(limit), [data])
    decoder = codec.Decoder(limit)
    frames = []
    code = None
    for chunk in split(data, cuts):
        try:
            frames += decoder.feed(chunk)
        except ProtocolError as exc:
            frames += exc.frames
            code = exc.code
            break
        assert decoder.pending <= limit + 6
    assert (frames, code) == whole


@settings(max_examples=400, deadline=None)
@given(data=st.binary(max_size=300))
def test_garbage_decode(codec, data):
    """decode() of random bytes: a frame or ProtocolError, agreeing with the Decoder."""
    try:
        frame = codec.decode(data)
    except ProtocolError as exc:
        assert 1 <= exc.code <= 8
        frames, code = feed_all(codec.Decoder(), [data])
        if code is not None:
            # decode() may only differ by what follows the first frame.
            assert code == exc.code or (exc.code == Reason.TRAILING_BYTES and len(frames) >= 1)
        return
    assert codec.Decoder().feed(data) == [frame]


@settings(max_examples=400, deadline=None)
@given(items=st.lists(any_frame_kwargs, min_size=1, max_size=5), flips=st.lists(
    st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4), cuts=cut_points)
def test_mutated_frames(codec, items, flips, cuts):
    """Valid streams with a few bytes overwritten: same outcome however they are cut."""
    data = bytearray(b"".join(build(codec, item).encode() for item in items))
    for position, value in flips:
        data[position % len(data)] = value
    data = bytes(data)
    assert feed_all(codec.Decoder(), split(data, cuts)) == feed_all(codec.Decoder(), [data])


@settings(max_examples=200, deadline=None)
@given(item=any_frame_kwargs, cut=st.integers(0, 10**6))
def test_every_cut_short_frame_is_truncated(codec, item, cut):
    data = build(codec, item).encode()
    short = data[:cut % len(data)]
    with pytest.raises(ProtocolError) as info:
        codec.decode(short)
    assert info.value.code == Reason.TRUNCATED
    decoder = codec.Decoder()
    assert decoder.feed(short) == []
    assert decoder.pending == len(short)


# --- encoder range and type checks -------------------------------------------

U64_LIMIT = 2**64

VALUE_ERRORS = [
    ("Ack", dict(seq=-1)),
    ("Ack", dict(seq=U64_LIMIT)),
    ("Notify", dict(latest_seq=U64_LIMIT + 12345)),
    ("Fetch", dict(after_seq=0, max_count=-5)),
    ("Welcome", dict(server_time=U64_LIMIT)),
    ("Hello", dict(versions=())),
    ("Hello", dict(versions=tuple(range(1, 10)))),
    ("Hello", dict(versions=(1, -1))),
    ("Hello", dict(last_seq=-1)),
    ("Push", dict(seq=-1)),
    ("Push", dict(message_id=U64_LIMIT)),
    ("Push", dict(message_id=-1)),
    ("Push", dict(expiry=2**32)),
    ("Push", dict(expiry=-1)),
    ("Push", dict(priority=2)),
    ("Push", dict(priority=-1)),
    ("Push", dict(topic="\ud800")),                       # lone surrogate: not encodable
    ("Subscribe", dict(topics=())),
    ("Unsubscribe", dict(topics=[])),
    ("Upstream", dict(upstream_id=U64_LIMIT)),
    ("UpstreamAck", dict(upstream_id=-1)),
    ("Redirect", dict(servers=[("h", 65536, 0)])),
    ("Redirect", dict(servers=[("h", -1, 0)])),
    ("Redirect", dict(servers=[("h", 1, U64_LIMIT)])),
    ("Goaway", dict(reason=-1)),
    ("Goaway", dict(servers=[("h", 70000, 0)])),
    ("ErrorFrame", dict(code=U64_LIMIT)),
]

TYPE_ERRORS = [
    ("Push", dict(payload="text, not bytes")),
    ("Push", dict(topic=b"bytes, not text")),
    ("Push", dict(collapse_key=b"k")),
    ("Push", dict(seq="1")),
    ("Push", dict(message_id=1.0)),
    ("Hello", dict(device_id=b"dev")),
    ("Hello", dict(token="tok")),
    ("Hello", dict(versions=("1",))),
    ("Upstream", dict(payload="p")),
    ("Upstream", dict(topic=b"t")),
    ("Subscribe", dict(topics=[b"t"])),
    ("Redirect", dict(servers=[(b"h", 1, 0)])),
    ("Redirect", dict(servers=[("h", "80", 0)])),
    ("Goaway", dict(message=b"m")),
    ("ErrorFrame", dict(message=3)),
    ("ErrorFrame", dict(code=None)),
    ("Ack", dict(seq=None)),
]


@pytest.mark.parametrize("class_name,kwargs", VALUE_ERRORS, ids=[f"{c}-{k}" for c, k in VALUE_ERRORS])
def test_encoder_value_errors(codec, class_name, kwargs):
    # A backend may check when the frame is built (typed C fields) or when it
    # is encoded; either way no bytes come out.
    with pytest.raises(ValueError) as info:
        getattr(codec, class_name)(**kwargs).encode()
    assert not isinstance(info.value, ProtocolError)
    with pytest.raises(ValueError):
        codec.encode(getattr(codec, class_name)(**kwargs))


@pytest.mark.parametrize("class_name,kwargs", TYPE_ERRORS, ids=[f"{c}-{k}" for c, k in TYPE_ERRORS])
def test_encoder_type_errors(codec, class_name, kwargs):
    with pytest.raises(TypeError):
        getattr(codec, class_name)(**kwargs).encode()


def test_encode_push_and_ack_check_ranges(codec):
    with pytest.raises(ValueError):
        codec.encode_push(-1, 0, b"")
    with pytest.raises(ValueError):
        codec.encode_push(1, U64_LIMIT, b"")
    with pytest.raises(ValueError):
        codec.encode_push(1, 0, b"", priority=3)
    with pytest.raises(ValueError):
        codec.encode_push(1, 0, b"", expiry=2**32)
    with pytest.raises(TypeError):
        codec.encode_push(1, 0, "payload")
    with pytest.raises(TypeError):
        codec.encode_push(1, 0, b"", topic=b"t")
    with pytest.raises(ValueError):
        codec.encode_ack(-1)
    with pytest.raises(ValueError):
        codec.encode_ack(U64_LIMIT)
    with pytest.raises(TypeError):
        codec.encode_ack("1")


def test_encode_needs_a_frame(codec):
    for not_a_frame in ("abc", b"\x30\x00", None, 3):
        with pytest.raises(TypeError):
            codec.encode(not_a_frame)


def test_encoder_limits_are_inclusive(codec):
    """The largest allowed values encode and decode."""
    top = U64_LIMIT - 1
    push = codec.Push(top, top, b"", codec.PRIORITY_LOW, 2**32 - 1, "", "")
    assert codec.decode(push.encode()) == push
    hello = codec.Hello(tuple(range(8)), "", b"", top, top)
    assert codec.decode(hello.encode()) == hello
    redirect = codec.Redirect([("h", 65535, top)])
    assert codec.decode(redirect.encode()) == redirect
