"""The frame objects and module names of docs/CODEC.md, for both codecs."""
from __future__ import annotations

import pytest

from pushcore.errors import ProtocolError

CLASSES = {
    "Hello": 1, "Welcome": 2, "Ping": 3, "Pong": 4, "Push": 5, "Notify": 6, "Fetch": 7, "Ack": 8,
    "Subscribe": 9, "Unsubscribe": 10, "Upstream": 11, "UpstreamAck": 12, "Redirect": 13,
    "Goaway": 14, "ErrorFrame": 15,
}
TYPE_CONSTANTS = {
    "HELLO": 1, "WELCOME": 2, "PING": 3, "PONG": 4, "PUSH": 5, "NOTIFY": 6, "FETCH": 7, "ACK": 8,
    "SUBSCRIBE": 9, "UNSUBSCRIBE": 10, "UPSTREAM": 11, "UPSTREAM_ACK": 12, "REDIRECT": 13,
    "GOAWAY": 14, "ERROR": 15,
}
# Constructor defaults, in constructor order (docs/CODEC.md).
DEFAULT_FIELDS = {
    "Hello": ((1,), "", b"", 0, 0),
    "Welcome": (1, 0, 0, 0),
    "Ping": (),
    "Pong": (),
    "Push": (0, 0, b"", 1, 0, "", ""),
    "Notify": (0,),
    "Fetch": (0, 0),
    "Ack": (0,),
    "Subscribe": ((),),
    "Unsubscribe": ((),),
    "Upstream": (0, b"", ""),
    "UpstreamAck": (0,),
    "Redirect": ((),),
    "Goaway": (0, "", ()),
    "ErrorFrame": (0, ""),
}
FIELD_NAMES = {
    "Hello": ("versions", "device_id", "token", "last_seq", "heartbeat"),
    "Welcome": ("version", "heartbeat_min", "heartbeat_max", "server_time"),
    "Ping": (),
    "Pong": (),
    "Push": ("seq", "message_id", "payload", "priority", "expiry", "collapse_key", "topic"),
    "Notify": ("latest_seq",),
    "Fetch": ("after_seq", "max_count"),
    "Ack": ("seq",),
    "Subscribe": ("topics",),
    "Unsubscribe": ("topics",),
    "Upstream": ("upstream_id", "payload", "topic"),
    "UpstreamAck": ("upstream_id",),
    "Redirect": ("servers",),
    "Goaway": ("reason", "message", "servers"),
    "ErrorFrame": ("code", "message"),
}


def test_constants(codec):
    assert codec.PROTOCOL_VERSION == 1
    assert codec.DEFAULT_MAX_FRAME_SIZE == 65536
    assert (codec.PRIORITY_LOW, codec.PRIORITY_HIGH) == (0, 1)
    for name, number in TYPE_CONSTANTS.items():
        assert getattr(codec, name) == number
    assert codec.PING_BYTES == b"\x30\x00" and codec.PONG_BYTES == b"\x40\x00"


@pytest.mark.parametrize("class_name", list(CLASSES))
def test_class_defaults_and_fields(codec, class_name):
    cls = getattr(codec, class_name)
    assert cls.TYPE == CLASSES[class_name]
    frame = cls()
    assert frame.TYPE == CLASSES[class_name]
    assert frame.fields() == DEFAULT_FIELDS[class_name]
    # every field is a plain attribute, in constructor order
    assert tuple(getattr(frame, name) for name in FIELD_NAMES[class_name]) == frame.fields()


@pytest.mark.parametrize("class_name", list(CLASSES))
def test_keyword_and_positional_construction_agree(codec, class_name):
    cls = getattr(codec, class_name)
    values = DEFAULT_FIELDS[class_name]
    by_keyword = cls(**dict(zip(FIELD_NAMES[class_name], values)))
    assert cls(*values) == by_keyword


@pytest.mark.parametrize("class_name", list(CLASSES))
def test_frames_have_slots_not_dicts(codec, class_name):
    frame = getattr(codec, class_name)()
    assert not hasattr(frame, "__dict__")
    with pytest.raises(AttributeError):
        frame.not_a_field = 1


@pytest.mark.parametrize("class_name", list(CLASSES))
def test_frames_are_not_hashable(codec, class_name):
    with pytest.raises(TypeError):
        hash(getattr(codec, class_name)())


def test_attributes_are_writable(codec):
    push = codec.Push(1, 2, b"x")
    push.seq = 5
    push.topic = "news"
    assert push.fields() == (5, 2, b"x", 1, 0, "", "news")
    assert codec.decode(push.encode()) == push


def test_sequences_become_tuples(codec):
    assert codec.Hello(versions=[2, 1]).versions == (2, 1)
    assert codec.Hello(versions=iter([3])).versions == (3,)
    assert codec.Subscribe(["a", "b"]).topics == ("a", "b")
    assert codec.Unsubscribe(t for t in ["x"]).topics == ("x",)
    assert codec.Redirect([("h", 1, 2)]).servers == (("h", 1, 2),)
    assert codec.Redirect([["h", 1, 2]]).servers == (("h", 1, 2),)
    assert codec.Goaway(1, "m", [("h", 1, 2)]).servers == (("h", 1, 2),)


def test_equality(codec):
    assert codec.Push(1, 2, b"x") == codec.Push(1, 2, b"x")
    assert codec.Push(1, 2, b"x") != codec.Push(1, 2, b"y")
    assert codec.Push(1, 2, b"x", priority=0) != codec.Push(1, 2, b"x")
    assert codec.Ack(1) != codec.Notify(1)            # same fields, different type
    assert codec.UpstreamAck(1) != codec.Ack(1)
    assert codec.Ping() != codec.Pong()
    assert codec.Ping() == codec.Ping()
    assert codec.Ack(1) != (1,)
    assert codec.Ack(1) != 1
    assert codec.Ack(1) is not None


def test_repr_shows_class_and_fields(codec):
    text = repr(codec.Push(7, 8, b"pay", topic="news"))
    assert text.startswith("Push(")
    for part in ("7", "8", "b'pay'", "'news'"):
        assert part in text
    assert repr(codec.Ping()) == "Ping()"
    assert "ErrorFrame" in repr(codec.ErrorFrame(3, "oops")) and "oops" in repr(codec.ErrorFrame(3, "oops"))


def test_decode_takes_any_bytes_like(codec):
    data = codec.Push(1, 2, b"payload", topic="t").encode()
    expected = codec.Push(1, 2, b"payload", topic="t")
    for form in (bytes, bytearray, memoryview):
        assert codec.decode(form(data)) == expected
    assert codec.decode(memoryview(b"xx" + data)[2:]) == expected


def test_decoded_frames_own_their_data(codec):
    data = bytearray(codec.Push(1, 2, b"payload", topic="t").encode()
                     + codec.Hello((1,), "dev", b"token").encode())
    frames = codec.Decoder().feed(data)
    single = codec.decode(data[:-len(codec.Hello((1,), "dev", b"token").encode())])
    data[:] = bytes(len(data))                       # the reader reuses its buffer
    assert frames == [codec.Push(1, 2, b"payload", topic="t"), codec.Hello((1,), "dev", b"token")]
    assert type(frames[0].payload) is bytes and type(frames[1].token) is bytes
    assert single.payload == b"payload"


def test_encode_function_equals_method(codec):
    frame = codec.Goaway(24, "bye", [("h", 1, 2)])
    assert codec.encode(frame) == frame.encode()


def test_decoder_max_frame_size_keyword(codec):
    decoder = codec.Decoder(max_frame_size=3)
    assert decoder.feed(codec.encode_ack(300)) == [codec.Ack(300)]
    with pytest.raises(ProtocolError):
        decoder.feed(codec.encode_ack(2**40))        # body of 6 bytes
    assert codec.Decoder().pending == 0


def test_priority_flag_decodes_to_priority(codec):
    low = codec.decode(codec.encode_push(1, 1, b"", codec.PRIORITY_LOW))
    high = codec.decode(codec.encode_push(1, 1, b"", codec.PRIORITY_HIGH))
    assert (low.priority, high.priority) == (0, 1)


def test_cross_backend_equality(both_codecs):
    """A frame equals the other backend's frame with the same type and fields."""
    python, cython = both_codecs
    for class_name, fields in DEFAULT_FIELDS.items():
        a = getattr(python, class_name)(*fields)
        b = getattr(cython, class_name)(*fields)
        assert a == b and b == a
        assert not (a != b)
    assert python.Push(1, 2, b"x") != cython.Push(1, 2, b"y")
    assert python.Ack(1) != cython.Notify(1)
    data = python.Push(1, 2, b"x", topic="t").encode()
    assert python.decode(data) == cython.decode(data)
