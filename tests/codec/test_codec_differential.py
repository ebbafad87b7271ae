"""Differential tests: the C-level codec against the pure-Python reference.

``pushcore.codec.reference`` is the executable form of docs/PROTOCOL.md and the
oracle here. Both codecs get the same random input and must give the same
answer:

* encoding random frames (and ``encode_push`` calls, valid or not) gives the
  same bytes, or the same kind of error;
* one-shot ``decode()`` of random, mutated and garbage bytes gives equal
  frames or the same ``ProtocolError`` code;
* two streaming ``Decoder``\\ s fed the same stream -- valid frames, frames
  with flipped / inserted / deleted bytes and cut tails, or pure garbage --
  cut into random chunks (the same cuts, then different cuts for each) give
  the same frames, the same error code, the same ``ProtocolError.frames``
  per ``feed`` call and the same ``pending`` count.

Frames are compared with ``==`` in both directions (cross-backend equality
is part of docs/CODEC.md) and by ``fields()`` and class name.
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codec_strategies import FRAME_KWARGS, any_frame_kwargs, build, cut_points, split
from pushcore.errors import ProtocolError, Reason

PING = b"\x30\x00"

# hypothesis budget: enough to find disagreements, small enough for 2 cores.
STREAM_SETTINGS = settings(max_examples=400, deadline=None,
                           suppress_health_check=[HealthCheck.too_slow])
ENCODE_SETTINGS = settings(max_examples=300, deadline=None)

# Maximum frame sizes: mostly the default, sometimes small enough that
# ordinary random frames hit FRAME_TOO_LARGE (and 0, where only empty bodies pass).
max_frame_sizes = st.one_of(st.just(65536), st.integers(0, 64), st.integers(65, 600))


# --- helpers -----------------------------------------------------------------

def assert_same_frame(py_frame, cy_frame):
    """One frame from each backend: same class name, same fields, equal both ways."""
    assert type(py_frame).__name__ == type(cy_frame).__name__
    assert py_frame.TYPE == cy_frame.TYPE
    assert py_frame.fields() == cy_frame.fields()
    assert py_frame == cy_frame
    assert cy_frame == py_frame
    assert not (cy_frame != py_frame)


def assert_same_frames(py_frames, cy_frames):
    assert len(py_frames) == len(cy_frames), (py_frames, cy_frames)
    for py_frame, cy_frame in zip(py_frames, cy_frames):
        assert_same_frame(py_frame, cy_frame)


def decode_outcome(codec, data, max_frame_size=65536):
    """``("frame", frame)`` or ``("error", code)`` for a one-shot decode()."""
    try:
        return "frame", codec.decode(data, max_frame_size=max_frame_size)
    except ProtocolError as exc:
        assert isinstance(exc.code, Reason) and 1 <= exc.code <= 8
        return "error", exc.code


def assert_same_decode(py, cy, data, max_frame_size=65536):
    py_kind, py_value = decode_outcome(py, data, max_frame_size)
    cy_kind, cy_value = decode_outcome(cy, data, max_frame_size)
    assert cy_kind == py_kind, (bytes(data).hex(), py_value, cy_value)
    if py_kind == "frame":
        assert_same_frame(py_value, cy_value)
    else:
        assert cy_value == py_value, (bytes(data).hex(), py_value, cy_value)


def feed_calls(codec, chunks, max_frame_size, as_type=bytes):
    """Feed *chunks* to a fresh Decoder, one ``feed`` per chunk.

    Returns ``(per_call, code, pending)``: the frames of each call (for the
    failing call, its ``ProtocolError.frames``), the error code or None, and
    ``pending`` at the end (None after an error). After an error it checks
    the decoder stays failed with the same code and no frames.
    """
    decoder = codec.Decoder(max_frame_size)
    per_call = []
    for chunk in chunks:
        try:
            per_call.append(decoder.feed(as_type(chunk)))
        except ProtocolError as exc:
            per_call.append(exc.frames)
            for later in (PING, b""):
                with pytest.raises(ProtocolError) as again:
                    decoder.feed(later)
                assert again.value.code == exc.code
                assert again.value.frames == []
            return per_call, exc.code, None
    return per_call, None, decoder.pending


def flatten(per_call):
    return [frame for frames in per_call for frame in frames]


# --- streams of valid, mutated and garbage bytes -------------------------------

@st.composite
def mutated(draw, data: bytes) -> bytes:
    """*data* with 1-4 random edits: flip, insert, delete, cut the tail."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if op == "insert" or not out:
            at = draw(st.integers(0, len(out)))
            out[at:at] = draw(st.binary(min_size=1, max_size=3))
        elif op == "flip":
            at = draw(st.integers(0, len(out) - 1))
            out[at] ^= draw(st.integers(1, 255))
        elif op == "delete":
            at = draw(st.integers(0, len(out) - 1))
            del out[at:at + draw(st.integers(1, 3))]
        else:
            del out[draw(st.integers(0, len(out) - 1)):]
    return bytes(out)


# Random bytes that often look like frames: valid header bytes, short lengths.
plausible_garbage = st.lists(
    st.one_of(st.sampled_from([0x10, 0x20, 0x30, 0x40, 0x50, 0x5F, 0x60, 0x70, 0x80, 0x90,
                               0xA0, 0xB0, 0xB8, 0xC0, 0xD0, 0xE0, 0xE1, 0xF0]),
              st.integers(0, 12), st.integers(0, 255)),
    max_size=80,
).map(bytes)


# Bytes that stress the field readers: varints of 1 to 11 bytes (10th bytes
# 00, 01, 02, 7f), small lengths and counts, invalid UTF-8 lead bytes.
varint_token = st.builds(
    lambda run, more, last: bytes([more] * run) + bytes([last]),
    st.sampled_from([0, 0, 1, 2, 8, 9, 9, 10]),
    st.sampled_from([0x80, 0x81, 0xFF]),
    st.sampled_from([0x00, 0x01, 0x02, 0x7F, 0x80]),
)
body_token = st.one_of(
    varint_token,
    st.sampled_from([b"\x00", b"\x01", b"\x03", b"\x09", b"A", b"\xc0", b"\xed\xa0\x80", b"\xff"]),
)
body_bytes = st.lists(body_token, max_size=12).map(b"".join)


@st.composite
def framed_random_bodies(draw) -> bytes:
    """Frames with a valid header and a correct body length but a random body,
    so the body checks (not the prefix checks) decide."""
    out = b""
    for _ in range(draw(st.integers(1, 3))):
        header = draw(st.sampled_from([0x10, 0x20, 0x30, 0x50, 0x51, 0x53, 0x5F, 0x60, 0x70, 0x80,
                                       0x90, 0xA0, 0xB0, 0xB8, 0xC0, 0xD0, 0xE0, 0xE1, 0xF0]))
        body = draw(st.one_of(body_bytes, st.binary(max_size=40)))
        out += bytes([header, len(body)]) + body
    return out


@st.composite
def streams(draw) -> bytes:
    """A byte stream: valid frames, valid frames mutated, or garbage."""
    kind = draw(st.sampled_from(["valid", "mutated", "mutated", "garbage", "plausible", "bodies"]))
    if kind == "garbage":
        return draw(st.binary(max_size=300))
    if kind == "plausible":
        return draw(plausible_garbage)
    if kind == "bodies":
        return draw(framed_random_bodies())
    from pushcore.codec import reference as protocol

    frames = draw(st.lists(any_frame_kwargs, max_size=6))
    data = b"".join(build(protocol, item).encode() for item in frames)
    return draw(mutated(data)) if kind == "mutated" else data


# --- encoding -----------------------------------------------------------------

@ENCODE_SETTINGS
@given(item=any_frame_kwargs)
def test_encode_is_byte_identical(both_codecs, item):
    py, cy = both_codecs
    py_frame, cy_frame = build(py, item), build(cy, item)
    assert_same_frame(py_frame, cy_frame)
    data = py_frame.encode()
    assert cy_frame.encode() == data
    assert cy.encode(cy_frame) == data
    # Each backend's encode() also takes the other backend's frame.
    assert cy.encode(py_frame) == data
    assert py.encode(cy_frame) == data
    # And each decodes the bytes to a frame equal to both originals.
    assert_same_frame(py.decode(data), cy.decode(data))
    assert cy.decode(data) == py_frame


@ENCODE_SETTINGS
@given(kwargs=FRAME_KWARGS["Push"])
def test_encode_push_is_byte_identical(both_codecs, kwargs):
    py, cy = both_codecs
    args = (kwargs["seq"], kwargs["message_id"], kwargs["payload"], kwargs["priority"],
            kwargs["expiry"], kwargs["collapse_key"], kwargs["topic"])
    data = py.encode_push(*args)
    assert cy.encode_push(*args) == data
    assert cy.encode_push(**kwargs) == data
    assert cy.Push(*args).encode() == data


# Values of every kind, in range or not, for each encode_push argument.
any_value = st.one_of(
    st.integers(-2, 3), st.integers(2**32 - 2, 2**32 + 1), st.integers(2**64 - 2, 2**64 + 1),
    st.just(-(2**70)), st.booleans(), st.none(), st.floats(allow_nan=False),
    st.text(max_size=4), st.binary(max_size=4), st.just(bytearray(b"ba")), st.just(memoryview(b"mv")),
    st.just("\ud800"),  # a lone surrogate: not encodable as UTF-8
)


def encode_outcome(call):
    """The bytes, or the category of error: ``ValueError`` or ``TypeError``."""
    try:
        return call()
    except TypeError:
        return "TypeError"
    except ValueError as exc:
        assert not isinstance(exc, ProtocolError)
        return "ValueError"


@ENCODE_SETTINGS
@given(kwargs=FRAME_KWARGS["Push"], position=st.integers(0, 6), value=any_value)
def test_encode_push_accepts_and_refuses_the_same_arguments(both_codecs, kwargs, position, value):
    """One argument replaced by a value of any kind: the same bytes or the same kind of error.

    (Only one argument may be bad: which of several bad arguments is reported
    first is not part of the contract.)
    """
    py, cy = both_codecs
    args = [kwargs["seq"], kwargs["message_id"], kwargs["payload"], kwargs["priority"],
            kwargs["expiry"], kwargs["collapse_key"], kwargs["topic"]]
    args[position] = value
    assert encode_outcome(lambda: cy.encode_push(*args)) == encode_outcome(lambda: py.encode_push(*args))


@ENCODE_SETTINGS
@given(value=any_value)
def test_encode_ack_accepts_and_refuses_the_same_arguments(both_codecs, value):
    py, cy = both_codecs
    assert encode_outcome(lambda: cy.encode_ack(value)) == encode_outcome(lambda: py.encode_ack(value))


# --- one-shot decode ---------------------------------------------------------

@STREAM_SETTINGS
@given(data=streams(), max_frame_size=max_frame_sizes)
def test_decode_agrees(both_codecs, data, max_frame_size):
    py, cy = both_codecs
    assert_same_decode(py, cy, data, max_frame_size)
    # The first frame alone (when the prefix parses) exercises the body checks
    # rather than TRAILING_BYTES.
    for end in range(1, min(len(data), 12) + 1):
        assert_same_decode(py, cy, data[:end], max_frame_size)


@STREAM_SETTINGS
@given(data=framed_random_bodies())
def test_decode_agrees_on_random_bodies(both_codecs, data):
    """Valid prefixes, random bodies: the field readers decide."""
    py, cy = both_codecs
    assert_same_decode(py, cy, data)
    py_calls, py_code, _ = feed_calls(py, [data], 65536)
    cy_calls, cy_code, _ = feed_calls(cy, [data], 65536)
    assert cy_code == py_code, data.hex()
    assert_same_frames(py_calls[-1], cy_calls[-1])


@STREAM_SETTINGS
@given(item=any_frame_kwargs, data=st.data())
def test_decode_agrees_on_single_mutated_frames(both_codecs, item, data):
    py, cy = both_codecs
    frame_bytes = data.draw(mutated(build(py, item).encode()))
    assert_same_decode(py, cy, frame_bytes)
    assert_same_decode(py, cy, bytearray(frame_bytes))


# --- streaming Decoder -------------------------------------------------------

@STREAM_SETTINGS
@given(stream=streams(), cuts=cut_points, max_frame_size=max_frame_sizes)
def test_decoders_agree_call_by_call(both_codecs, stream, cuts, max_frame_size):
    """Same chunks: the same frames from every feed call, the same error, the same pending."""
    py, cy = both_codecs
    chunks = split(stream, cuts)
    py_calls, py_code, py_pending = feed_calls(py, chunks, max_frame_size)
    cy_calls, cy_code, cy_pending = feed_calls(cy, chunks, max_frame_size)
    assert cy_code == py_code, stream.hex()
    assert cy_pending == py_pending, stream.hex()
    assert len(cy_calls) == len(py_calls)
    for py_frames, cy_frames in zip(py_calls, cy_calls):
        assert_same_frames(py_frames, cy_frames)


@STREAM_SETTINGS
@given(stream=streams(), py_cuts=cut_points, cy_cuts=cut_points, max_frame_size=max_frame_sizes,
       chunk_type=st.sampled_from([bytes, bytearray, memoryview]))
def test_decoders_agree_whatever_the_chunking(both_codecs, stream, py_cuts, cy_cuts,
                                              max_frame_size, chunk_type):
    """Different chunks for each backend: the same frames in total and the same error."""
    py, cy = both_codecs
    py_calls, py_code, py_pending = feed_calls(py, split(stream, py_cuts), max_frame_size)
    cy_calls, cy_code, cy_pending = feed_calls(cy, split(stream, cy_cuts), max_frame_size, chunk_type)
    assert cy_code == py_code, stream.hex()
    assert_same_frames(flatten(py_calls), flatten(cy_calls))
    # Without an error both hold the same partial frame, however it was cut.
    assert cy_pending == py_pending


@STREAM_SETTINGS
@given(stream=streams(), max_frame_size=max_frame_sizes)
def test_decoders_agree_byte_by_byte(both_codecs, stream, max_frame_size):
    py, cy = both_codecs
    chunks = [stream[i:i + 1] for i in range(len(stream))]
    py_calls, py_code, py_pending = feed_calls(py, chunks, max_frame_size)
    cy_calls, cy_code, cy_pending = feed_calls(cy, chunks, max_frame_size)
    assert (cy_code, cy_pending, len(cy_calls)) == (py_code, py_pending, len(py_calls))
    assert_same_frames(flatten(py_calls), flatten(cy_calls))
    # Fed whole, the Cython decoder reaches the same end.
    whole_calls, whole_code, whole_pending = feed_calls(cy, [stream], max_frame_size)
    assert (whole_code, whole_pending) == (py_code, py_pending)
    assert_same_frames(flatten(py_calls), flatten(whole_calls))


@STREAM_SETTINGS
@given(items=st.lists(any_frame_kwargs, min_size=1, max_size=8), cuts=cut_points)
def test_valid_streams_decode_to_the_frames_encoded(both_codecs, items, cuts):
    """No error on valid streams, and both give back exactly the frames encoded."""
    py, cy = both_codecs
    frames = [build(py, item) for item in items]
    stream = b"".join(frame.encode() for frame in frames)
    cy_calls, cy_code, cy_pending = feed_calls(cy, split(stream, cuts), 65536)
    assert (cy_code, cy_pending) == (None, 0)
    assert_same_frames(frames, flatten(cy_calls))


@pytest.mark.parametrize("limit", [0, 1, 65536, 2**35, 2**64 - 1, 2**64, 2**70, -1, 1.5, "10", None])
def test_max_frame_size_arguments_agree(both_codecs, limit):
    """Both backends accept and refuse the same limits, and apply them alike."""
    py, cy = both_codecs

    def outcome(codec):
        try:
            decoder = codec.Decoder(limit)
        except (TypeError, ValueError) as exc:
            with pytest.raises(type(exc)):
                codec.decode(PING, max_frame_size=limit)
            return type(exc).__name__
        ack = b"\x80\x01\x05"                          # a 1-byte body
        per_call, code, _ = feed_calls(codec, [ack], limit)
        return decoder.max_frame_size, code, len(flatten(per_call)), decode_outcome(codec, ack, limit)[0]

    assert outcome(cy) == outcome(py)
