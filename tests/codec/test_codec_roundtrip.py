"""Round trips over arbitrary field values, for every frame type and both codecs.

decode(encode(f)) == f for every frame within the encoder's limits, and a
Decoder fed a stream of frames in random chunks gives back exactly that list.
"""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codec_strategies import CLASS_NAMES, FRAME_KWARGS, any_frame_kwargs, build, cut_points, split


@pytest.mark.parametrize("class_name", CLASS_NAMES)
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_round_trip(codec, class_name, data):
    kwargs = data.draw(FRAME_KWARGS[class_name], label="fields")
    frame = getattr(codec, class_name)(**kwargs)
    encoded = frame.encode()
    assert codec.encode(frame) == encoded
    decoded = codec.decode(encoded)
    assert type(decoded) is type(frame)
    assert decoded == frame
    assert decoded.fields() == frame.fields()
    # The encoding is canonical: re-encoding the decoded frame is byte-identical.
    assert decoded.encode() == encoded
    # Decoded values are plain, owned Python objects.
    for value in decoded.fields():
        assert type(value) in (int, str, bytes, tuple)


@settings(max_examples=300, deadline=None)
@given(fields=FRAME_KWARGS["Push"])
def test_encode_push_matches_push(codec, fields):
    """The hot-path encoder writes exactly what Push.encode() writes."""
    expected = codec.Push(**fields).encode()
    assert codec.encode_push(**fields) == expected
    assert codec.encode_push(fields["seq"], fields["message_id"], fields["payload"], fields["priority"],
                             fields["expiry"], fields["collapse_key"], fields["topic"]) == expected


@settings(max_examples=200, deadline=None)
@given(seq=st.integers(0, 2**64 - 1))
def test_encode_ack_matches_ack(codec, seq):
    assert codec.encode_ack(seq) == codec.Ack(seq).encode()
    assert codec.decode(codec.encode_ack(seq)) == codec.Ack(seq)


@settings(max_examples=300, deadline=None)
@given(items=st.lists(any_frame_kwargs, min_size=1, max_size=15), cuts=cut_points,
       empty_chunks=st.booleans())
def test_decoder_random_chunks(codec, items, cuts, empty_chunks):
    frames = [build(codec, item) for item in items]
    stream = b"".join(frame.encode() for frame in frames)
    decoder = codec.Decoder()
    decoded = []
    for chunk in split(stream, cuts):
        decoded += decoder.feed(chunk)
        if empty_chunks:
            assert decoder.feed(b"") == []
        # At most one partial frame is ever buffered.
        assert decoder.pending <= codec.DEFAULT_MAX_FRAME_SIZE + 6
    assert decoded == frames
    assert decoder.pending == 0


@settings(max_examples=100, deadline=None)
@given(items=st.lists(any_frame_kwargs, min_size=1, max_size=8), cuts=cut_points)
def test_decoder_accepts_any_bytes_like(codec, items, cuts):
    frames = [build(codec, item) for item in items]
    stream = b"".join(frame.encode() for frame in frames)
    decoder = codec.Decoder()
    decoded = []
    for i, chunk in enumerate(split(stream, cuts)):
        chunk_as = (bytes, bytearray, memoryview)[i % 3](chunk)
        decoded += decoder.feed(chunk_as)
    assert decoded == frames


@settings(max_examples=100, deadline=None)
@given(item=any_frame_kwargs)
def test_pending_counts_buffered_bytes(codec, item):
    """``pending`` is the number of bytes of the frame still being assembled."""
    encoded = build(codec, item).encode()
    decoder = codec.Decoder()
    for i in range(len(encoded) - 1):
        assert decoder.feed(encoded[i:i + 1]) == []
        assert decoder.pending == i + 1
    assert len(decoder.feed(encoded[-1:])) == 1
    assert decoder.pending == 0
