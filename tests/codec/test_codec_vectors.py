"""Both codecs against the shared test vectors (tests/vectors/, README there).

Valid vectors: encode(fields) == hex and decode(hex) == fields. Invalid
vectors: the exact ProtocolError code from decode() and from a Decoder fed the
bytes whole and byte by byte. A few expected byte strings are also built by
hand here, independent of any encoder, so the vectors cannot drift from the
spec unnoticed.
"""
from __future__ import annotations

import pytest

from pushcore.errors import ProtocolError, Reason
from vectors import FRAME_FILES, build_frame, load_invalid, load_valid

VALID = load_valid()
INVALID = load_invalid()


def _valid_id(item):
    class_name, case = item
    return f"{class_name}:{case['name']}"


@pytest.mark.parametrize("item", VALID, ids=[_valid_id(v) for v in VALID])
def test_valid_vector(codec, item):
    class_name, case = item
    frame = build_frame(codec, class_name, case)
    data = bytes.fromhex(case["hex"])
    decoded = codec.decode(data)
    assert type(decoded) is getattr(codec, class_name)
    assert decoded == frame
    assert decoded.fields() == frame.fields()
    if case.get("decode_only"):
        # A non-canonical form: the encoder must write something else (and
        # that must decode to the same frame).
        assert frame.encode() != data
        assert codec.decode(frame.encode()) == frame
    else:
        assert frame.encode() == data
        assert codec.encode(frame) == data


@pytest.mark.parametrize("item", VALID, ids=[_valid_id(v) for v in VALID])
def test_valid_vector_streamed(codec, item):
    """The Decoder gives the same frame, fed whole or byte by byte."""
    class_name, case = item
    frame = build_frame(codec, class_name, case)
    data = bytes.fromhex(case["hex"])
    assert codec.Decoder().feed(data) == [frame]
    decoder = codec.Decoder()
    frames = []
    for i in range(len(data)):
        frames += decoder.feed(data[i:i + 1])
    assert frames == [frame]
    assert decoder.pending == 0


def test_every_frame_type_has_vectors():
    classes = {class_name for class_name, _ in VALID}
    assert classes == set(FRAME_FILES.values())


def test_every_codec_error_has_invalid_vectors():
    codes = {case["code"] for case in INVALID} | {case["stream"] for case in INVALID}
    for reason in Reason:
        if 1 <= reason <= 8:
            assert reason.name in codes
            # several ways each, through decode() itself
            assert sum(case["code"] == reason.name for case in INVALID) >= 3, reason


def _max_frame_size(codec, case):
    return case.get("max_frame_size", codec.DEFAULT_MAX_FRAME_SIZE)


@pytest.mark.parametrize("case", INVALID, ids=[c["name"] for c in INVALID])
def test_invalid_vector_decode(codec, case):
    data = bytes.fromhex(case["hex"])
    with pytest.raises(ProtocolError) as info:
        codec.decode(data, max_frame_size=_max_frame_size(codec, case))
    assert info.value.code == Reason[case["code"]]
    assert isinstance(info.value.code, Reason)


@pytest.mark.parametrize("case", INVALID, ids=[c["name"] for c in INVALID])
def test_invalid_vector_feed_whole(codec, case):
    data = bytes.fromhex(case["hex"])
    decoder = codec.Decoder(_max_frame_size(codec, case))
    if case["stream"] is None:
        frames = decoder.feed(data)
        assert len(frames) == case["stream_frames"]
        return
    with pytest.raises(ProtocolError) as info:
        decoder.feed(data)
    assert info.value.code == Reason[case["stream"]]
    assert len(info.value.frames) == case["stream_frames"]


@pytest.mark.parametrize("case", INVALID, ids=[c["name"] for c in INVALID])
def test_invalid_vector_feed_byte_by_byte(codec, case):
    """Any chunking gives the same frames and the same error."""
    data = bytes.fromhex(case["hex"])
    decoder = codec.Decoder(_max_frame_size(codec, case))
    frames = []
    error = None
    for i in range(len(data)):
        try:
            frames += decoder.feed(data[i:i + 1])
        except ProtocolError as exc:
            error = exc
            frames += exc.frames
            # The decoder is failed now: every later byte raises the same code.
            for rest in range(i + 1, len(data)):
                with pytest.raises(ProtocolError) as again:
                    decoder.feed(data[rest:rest + 1])
                assert again.value.code == exc.code
            break
    if case["stream"] is None:
        assert error is None
    else:
        assert error is not None and error.code == Reason[case["stream"]]
    assert len(frames) == case["stream_frames"]


# --- Byte strings built by hand from PROTOCOL.md, independent of any encoder ---

HAND_BUILT = [
    # PING / PONG: header (3 << 4 | 0), body length 0.
    ("Ping", {}, b"\x30\x00"),
    ("Pong", {}, b"\x40\x00"),
    # ACK 300: 300 = 0b10_0101100 -> groups 0101100 (0x2c | 0x80 = 0xac), 10 (0x02).
    ("Ack", {"seq": 300}, b"\x80\x02\xac\x02"),
    # ACK 0
    ("Ack", {"seq": 0}, b"\x80\x01\x00"),
    # NOTIFY 2**64-1: nine 0xff bytes then 0x01.
    ("Notify", {"latest_seq": 2**64 - 1}, b"\x60\x0a" + b"\xff" * 9 + b"\x01"),
    # FETCH after 128 (80 01), max 16384 (80 80 01).
    ("Fetch", {"after_seq": 128, "max_count": 16384}, b"\x70\x05\x80\x01\x80\x80\x01"),
    # PUSH low priority, no options: header 0x50; seq 1; id 2 as u64le; payload "hi".
    ("Push", {"seq": 1, "message_id": 2, "payload": b"hi", "priority": 0},
     b"\x50\x0b\x01" + b"\x02\x00\x00\x00\x00\x00\x00\x00" + b"hi"),
    # PUSH high priority with expiry 0x01020304 and topic "t": flags 1|2|8 = 0xb.
    ("Push", {"seq": 5, "message_id": 0x1122334455667788, "payload": b"", "priority": 1,
              "expiry": 0x01020304, "topic": "t"},
     b"\x5b\x0f\x05" + b"\x88\x77\x66\x55\x44\x33\x22\x11" + b"\x04\x03\x02\x01" + b"\x01t"),
    # PUSH with collapse key "k" and topic "é" (c3 a9): flags 1|4|8 = 0xd.
    ("Push", {"seq": 1, "message_id": 0, "payload": b"x", "collapse_key": "k", "topic": "é"},
     b"\x5d\x0f\x01" + bytes(8) + b"\x01k" + b"\x02\xc3\xa9" + b"x"),
    # HELLO versions (1,), device "d", token b"\xab", last_seq 0, heartbeat 300.
    ("Hello", {"versions": (1,), "device_id": "d", "token": b"\xab", "last_seq": 0, "heartbeat": 300},
     b"\x10\x09\x01\x01\x01d\x01\xab\x00\xac\x02"),
    # WELCOME 1, 30, 600 (d8 04), 0.
    ("Welcome", {"version": 1, "heartbeat_min": 30, "heartbeat_max": 600, "server_time": 0},
     b"\x20\x05\x01\x1e\xd8\x04\x00"),
    # SUBSCRIBE ("a", "bc").
    ("Subscribe", {"topics": ("a", "bc")}, b"\x90\x06\x02\x01a\x02bc"),
    ("Unsubscribe", {"topics": ("a",)}, b"\xa0\x03\x01\x01a"),
    # UPSTREAM id 7 with topic "t" (flag 8), payload "p".
    ("Upstream", {"upstream_id": 7, "payload": b"p", "topic": "t"}, b"\xb8\x04\x07\x01tp"),
    ("Upstream", {"upstream_id": 7, "payload": b"p"}, b"\xb0\x02\x07p"),
    ("UpstreamAck", {"upstream_id": 200}, b"\xc0\x02\xc8\x01"),
    # REDIRECT [("h", 443 = bb 03, load 2)].
    ("Redirect", {"servers": (("h", 443, 2),)}, b"\xd0\x06\x01\x01h\xbb\x03\x02"),
    ("Redirect", {"servers": ()}, b"\xd0\x01\x00"),
    # GOAWAY reason 24, message "x", servers [("h", 1, 0)]: flag 1.
    ("Goaway", {"reason": 24, "message": "x", "servers": (("h", 1, 0),)},
     b"\xe1\x08\x18\x01x\x01\x01h\x01\x00"),
    ("Goaway", {"reason": 0, "message": ""}, b"\xe0\x02\x00\x00"),
    # ERROR code 3, message "no".
    ("ErrorFrame", {"code": 3, "message": "no"}, b"\xf0\x04\x03\x02no"),
]


@pytest.mark.parametrize("class_name,fields,expected", HAND_BUILT,
                         ids=[f"{c}-{e.hex()[:16]}" for c, _, e in HAND_BUILT])
def test_hand_built_bytes(codec, class_name, fields, expected):
    frame = getattr(codec, class_name)(**fields)
    assert frame.encode() == expected
    assert codec.decode(expected) == frame


def test_hand_built_constants(codec):
    assert codec.PING_BYTES == b"\x30\x00" == codec.Ping().encode()
    assert codec.PONG_BYTES == b"\x40\x00" == codec.Pong().encode()
    assert codec.encode_ack(300) == b"\x80\x02\xac\x02"
    # 200-byte payload: body 1 + 8 + 200 = 209 = d1 01.
    push = codec.encode_push(1, 0, b"z" * 200, codec.PRIORITY_LOW)
    assert push[:3] == b"\x50\xd1\x01" and len(push) == 3 + 209


def test_hand_built_vector_hex_matches():
    """A few vector files' hex, checked against hand-built bytes."""
    by_name = {(class_name, case["name"]): case["hex"] for class_name, case in VALID}
    assert by_name[("Ping", "ping")] == "3000"
    assert by_name[("Ack", "300")] == "8002ac02"
    assert by_name[("Ack", "u64 max")] == "800a" + "ff" * 9 + "01"
    assert by_name[("Notify", "128: smallest 2-byte varint")] == "60028001"
    assert by_name[("Redirect", "no servers")] == "d00100"
    # defaults: seq 0, id 0 (8 bytes), empty payload, high priority -> flag 1
    assert by_name[("Push", "defaults")] == "5109" + "00" * 9
    # Hello(): count 1, version 1, device_id "" (00), token b"" (00), last_seq 0, heartbeat 0
    assert by_name[("Hello", "defaults")] == "1006" + "01" "01" "00" "00" "00" "00"


def test_protocol_md_worked_examples_are_current():
    """docs/PROTOCOL.md §7 is what tests/vectors/worked_examples.py writes."""
    from vectors.worked_examples import PROTOCOL_MD, updated_document

    document = PROTOCOL_MD.read_text(encoding="utf-8")
    assert updated_document(document) == document, "run: python tests/vectors/worked_examples.py"
