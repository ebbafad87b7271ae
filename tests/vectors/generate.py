"""Regenerate tests/vectors/*.json from the hand-written cases below.

    python tests/vectors/generate.py

Valid cases: the field values are written here by hand; the expected hex is
produced by the reference codec (pushcore.codec.reference), and a handful of them are
checked against byte strings built by hand in tests/codec/test_codec_vectors.py.
"Decode-only" cases (non-canonical encodings a decoder must accept) have both
their hex and their fields written by hand.

Invalid cases: the bytes are built by hand (with a local LEB128 helper, not the
codec's) and the expected error codes are written by hand; this script refuses
to write the files if the reference codec disagrees with any of them.

Format: tests/vectors/README.md.
"""
from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))          # for `import vectors`

from pushcore.codec import reference as P  # noqa: E402
from pushcore.errors import ProtocolError, Reason  # noqa: E402
from vectors import FRAME_FILES, from_json, to_json  # noqa: E402

U64_MAX = 2**64 - 1
U32_MAX = 2**32 - 1


def leb(value: int) -> bytes:
    """Minimal unsigned LEB128 (independent of the codec under test)."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def frame(header: int, body: bytes) -> bytes:
    """Header byte, minimal body length, body."""
    return bytes([header]) + leb(len(body)) + body


def text(s: str | bytes) -> bytes:
    raw = s.encode("utf-8") if isinstance(s, str) else s
    return leb(len(raw)) + raw


def server(host: str | bytes, port: int, load: int) -> bytes:
    return text(host) + leb(port) + leb(load)


# ---------------------------------------------------------------------------
# Valid cases: {file stem: [(name, {field: value})]}
# ---------------------------------------------------------------------------

TOKEN = bytes.fromhex("a1b2c3d4e5f60718293a4b5c6d7e8f90")
UNICODE_TEXT = "设备-Ünïcødé-😀"
LONG_PAYLOAD = bytes(range(256)) + bytes(range(44))      # 300 bytes: 2-byte lengths

VALID: dict[str, list[tuple[str, dict]]] = {
    "hello": [
        ("defaults", {}),
        ("typical", dict(versions=[1], device_id="dev-0001", token=TOKEN, last_seq=42, heartbeat=240)),
        ("two versions, 2-byte heartbeat", dict(versions=[2, 1], device_id="d", token=b"t", last_seq=0, heartbeat=300)),
        ("eight versions (the maximum)", dict(versions=[1, 2, 3, 127, 128, 16384, 2**32, U64_MAX],
                                              device_id="x", token=b"", last_seq=1, heartbeat=1)),
        ("unicode device id, long token, u64 max last_seq",
         dict(versions=[1], device_id=UNICODE_TEXT, token=bytes(200), last_seq=U64_MAX, heartbeat=U64_MAX)),
    ],
    "welcome": [
        ("defaults", {}),
        ("typical", dict(version=1, heartbeat_min=60, heartbeat_max=600, server_time=1_700_000_000_000)),
        ("varint boundaries 127/128/16383", dict(version=127, heartbeat_min=128, heartbeat_max=16383, server_time=16384)),
        ("u64 max everywhere", dict(version=U64_MAX, heartbeat_min=U64_MAX, heartbeat_max=U64_MAX, server_time=U64_MAX)),
    ],
    "ping": [("ping", {})],
    "pong": [("pong", {})],
    "push": [
        ("defaults", {}),
        # The reference notification of pushcore/comparison.py (benchmarks, PROTOCOL.md §6-7).
        ("reference notification",
         dict(seq=42, message_id=0x8F3A6B2C1D4E5F60,
              payload=b'{"title":"Flash sale","body":"50% off today only","url":"app://sale/42"}',
              priority=P.PRIORITY_HIGH, expiry=1_800_000_000, collapse_key="", topic="news")),
        ("low priority, empty payload", dict(seq=7, message_id=1, payload=b"", priority=P.PRIORITY_LOW)),
        ("u64 max seq and message id, u32 max expiry",
         dict(seq=U64_MAX, message_id=U64_MAX, payload=b"\x00\xff", priority=P.PRIORITY_HIGH, expiry=U32_MAX)),
        ("300-byte payload: 2-byte body length", dict(seq=128, message_id=2**63, payload=LONG_PAYLOAD)),
        ("unicode topic and collapse key",
         dict(seq=3, message_id=3, payload="héllo".encode(), collapse_key="score-⚽", topic=UNICODE_TEXT)),
        ("200-byte topic: 2-byte text length", dict(seq=4, message_id=4, payload=b"p", topic="t" * 200)),
    ] + [
        # Every combination of the four flag bits.
        (f"flags {('high' if high else 'low')}"
         f"{' +expiry' if expiry else ''}{' +collapse_key' if collapse else ''}{' +topic' if topic else ''}",
         dict(seq=10 + n, message_id=1000 + n, payload=b"msg",
              priority=P.PRIORITY_HIGH if high else P.PRIORITY_LOW,
              expiry=1_800_000_000 if expiry else 0,
              collapse_key="ck" if collapse else "", topic="sports" if topic else ""))
        for n, (high, expiry, collapse, topic) in enumerate(
            ((n >> 0) & 1, (n >> 1) & 1, (n >> 2) & 1, (n >> 3) & 1) for n in range(16))
    ],
    "notify": [
        ("zero", dict(latest_seq=0)),
        ("one", dict(latest_seq=1)),
        ("127: largest 1-byte varint", dict(latest_seq=127)),
        ("128: smallest 2-byte varint", dict(latest_seq=128)),
        ("2**32", dict(latest_seq=2**32)),
        ("2**63: 10-byte varint", dict(latest_seq=2**63)),
        ("u64 max", dict(latest_seq=U64_MAX)),
    ],
    "fetch": [
        ("defaults", {}),
        ("typical page", dict(after_seq=100, max_count=50)),
        ("u64 max", dict(after_seq=U64_MAX, max_count=U64_MAX)),
    ],
    "ack": [
        ("zero", dict(seq=0)),
        ("300", dict(seq=300)),
        ("2**56", dict(seq=2**56)),
        ("u64 max", dict(seq=U64_MAX)),
    ],
    "subscribe": [
        ("one topic", dict(topics=["news"])),
        ("several topics, unicode and empty", dict(topics=["sports", UNICODE_TEXT, ""])),
        ("130 topics: 2-byte count and body length", dict(topics=[f"t{i}" for i in range(130)])),
    ],
    "unsubscribe": [
        ("one topic", dict(topics=["news"])),
        ("two topics", dict(topics=["a", "天气"])),
    ],
    "upstream": [
        ("defaults", {}),
        ("no topic", dict(upstream_id=1, payload=b"hello server")),
        ("with topic", dict(upstream_id=2, payload=b"\x01\x02", topic="chat")),
        ("u64 max id, unicode topic, empty payload", dict(upstream_id=U64_MAX, payload=b"", topic=UNICODE_TEXT)),
        ("300-byte payload", dict(upstream_id=300, payload=LONG_PAYLOAD)),
    ],
    "upstream_ack": [
        ("zero", dict(upstream_id=0)),
        ("two-byte id", dict(upstream_id=200)),
        ("u64 max", dict(upstream_id=U64_MAX)),
    ],
    "redirect": [
        ("no servers", dict(servers=[])),
        ("one server", dict(servers=[["push1.example.com", 5223, 10]])),
        ("three servers by load, port 65535, IPv6 and unicode hosts",
         dict(servers=[["10.0.0.1", 443, 0], ["::1", 65535, 128], ["пуш.example", 1, U64_MAX]])),
    ],
    "goaway": [
        ("defaults", {}),
        ("shutting down", dict(reason=int(Reason.SHUTTING_DOWN), message="server is draining")),
        ("overloaded with servers", dict(reason=int(Reason.OVERLOADED), message="busy",
                                         servers=[["a.example", 5223, 1], ["b.example", 5224, 2]])),
        ("unicode message, u64 max reason", dict(reason=U64_MAX, message=UNICODE_TEXT)),
    ],
    "error": [
        ("defaults", {}),
        ("truncated", dict(code=int(Reason.TRUNCATED), message="ACK.seq runs past the end of the frame body")),
        ("unicode message", dict(code=int(Reason.AUTH_FAILED), message=UNICODE_TEXT)),
        ("u64 max code, 200-byte message", dict(code=U64_MAX, message="e" * 200)),
    ],
}

# Non-canonical encodings every decoder accepts (PROTOCOL.md §1-2); the
# encoder writes a different (canonical) form of the same frame.
DECODE_ONLY: dict[str, list[tuple[str, bytes, dict]]] = {
    "ping": [
        ("non-minimal body length 80 00", bytes.fromhex("30 80 00"), {}),
        ("non-minimal body length in 5 bytes", bytes.fromhex("30 80 80 80 80 00"), {}),
    ],
    "ack": [
        ("non-minimal seq 80 00", bytes.fromhex("80 02 80 00"), dict(seq=0)),
        ("seq 1 in 10 bytes, 10th byte 00",
         bytes.fromhex("80 0a 81 80 80 80 80 80 80 80 80 00"), dict(seq=1)),
    ],
    "push": [
        ("expiry flag with expiry 0",
         frame(0x53, leb(1) + bytes(8) + bytes(4) + b"x"), dict(seq=1, message_id=0, payload=b"x", expiry=0)),
        ("collapse_key and topic flags with empty texts",
         frame(0x5D, leb(2) + bytes(8) + text("") + text("") + b"y"), dict(seq=2, message_id=0, payload=b"y")),
    ],
    "upstream": [
        ("topic flag with empty topic", frame(0xB8, leb(5) + text("") + b"z"), dict(upstream_id=5, payload=b"z")),
    ],
    "goaway": [
        ("servers flag with an empty list", frame(0xE1, leb(24) + text("bye") + leb(0)),
         dict(reason=24, message="bye", servers=[])),
    ],
}


# ---------------------------------------------------------------------------
# Invalid cases: (name, bytes, code, options). Options: "stream" (the code the
# Decoder raises, None = no error; default: same as decode()), "stream_frames"
# (frames the Decoder completes first; default 0), "max_frame_size".
# ---------------------------------------------------------------------------

PING = bytes.fromhex("30 00")
ACK_300 = frame(0x80, leb(300))
PUSH_1 = frame(0x51, leb(1) + (7).to_bytes(8, "little") + b"payload")
HELLO_BODY_OK = leb(1) + leb(1) + text("dev") + text(b"tok") + leb(0) + leb(60)

INVALID: list[tuple[str, bytes, str, dict]] = [
    # 1 FRAME_TOO_LARGE -------------------------------------------------------
    ("PUSH claiming 65537 bytes (default max 65536)", bytes.fromhex("50 81 80 04"), "FRAME_TOO_LARGE", {}),
    ("largest 5-byte length 2**35-1", bytes.fromhex("50 ff ff ff ff 7f"), "FRAME_TOO_LARGE", {}),
    ("non-minimal length 2**28", bytes.fromhex("50 80 80 80 80 01"), "FRAME_TOO_LARGE", {}),
    ("ACK of 11 bytes over max_frame_size 10 (no body sent)", bytes.fromhex("80 0b"), "FRAME_TOO_LARGE",
     dict(max_frame_size=10)),
    ("PING with a 1-byte body, max_frame_size 0", bytes.fromhex("30 01 00"), "FRAME_TOO_LARGE",
     dict(max_frame_size=0)),
    ("too large after two whole frames", PING + ACK_300 + bytes.fromhex("90 ff ff 7f"), "TRAILING_BYTES",
     dict(stream="FRAME_TOO_LARGE", stream_frames=2)),
    # 2 UNKNOWN_TYPE -----------------------------------------------------------
    ("type 0", bytes.fromhex("00 00"), "UNKNOWN_TYPE", {}),
    ("type 0 header alone", bytes.fromhex("00"), "UNKNOWN_TYPE", {}),
    ("type 0 with flags (type decides, not flags)", bytes.fromhex("0f 00"), "UNKNOWN_TYPE", {}),
    ("type 0 before a huge length", bytes.fromhex("05 ff ff ff ff ff"), "UNKNOWN_TYPE", {}),
    ("type 0 after a PING", PING + bytes.fromhex("00 00"), "TRAILING_BYTES",
     dict(stream="UNKNOWN_TYPE", stream_frames=1)),
    # 3 TRUNCATED --------------------------------------------------------------
    ("no bytes at all", b"", "TRUNCATED", dict(stream=None)),
    ("header only", bytes.fromhex("30"), "TRUNCATED", dict(stream=None)),
    ("ends inside the body length", bytes.fromhex("50 81"), "TRUNCATED", dict(stream=None)),
    ("ends inside the body", ACK_300[:-1], "TRUNCATED", dict(stream=None)),
    ("ends inside the second frame", PING + ACK_300[:-1], "TRAILING_BYTES", dict(stream=None, stream_frames=1)),
    ("ACK.seq varint runs past the body", frame(0x80, bytes.fromhex("80")), "TRUNCATED", {}),
    ("PUSH.message_id: 3 of 8 bytes", frame(0x51, leb(1) + bytes(3)), "TRUNCATED", {}),
    ("PUSH.expiry: 2 of 4 bytes", frame(0x53, leb(1) + bytes(8) + bytes(2)), "TRUNCATED", {}),
    ("PUSH.topic length over the body", frame(0x58, leb(1) + bytes(8) + leb(10) + b"abc"), "TRUNCATED", {}),
    ("ERROR.message length 5, 1 byte left", frame(0xF0, leb(0) + leb(5) + b"a"), "TRUNCATED", {}),
    ("ERROR without its message", frame(0xF0, leb(3)), "TRUNCATED", {}),
    ("HELLO versions count 5, nothing left", frame(0x10, leb(5)), "TRUNCATED", {}),
    ("HELLO versions count 9, nothing left (shape before value)", frame(0x10, leb(9)), "TRUNCATED", {}),
    ("HELLO without heartbeat", frame(0x10, HELLO_BODY_OK[:-1]), "TRUNCATED", {}),
    ("HELLO token length over the body", frame(0x10, leb(1) + leb(1) + text("d") + leb(50) + b"tok"),
     "TRUNCATED", {}),
    ("WELCOME with 2 of 4 fields", frame(0x20, leb(1) + leb(60)), "TRUNCATED", {}),
    ("FETCH without max_count", frame(0x70, leb(5)), "TRUNCATED", {}),
    ("SUBSCRIBE count 5, 2 bytes left", frame(0x90, leb(5) + bytes(2)), "TRUNCATED", {}),
    ("SUBSCRIBE count 3, 2 bytes left: count checked before the items",
     frame(0x90, leb(3) + text(b"\xff")), "TRUNCATED", {}),
    ("HELLO versions count 9, 8 bytes left (shape before value)", frame(0x10, leb(9) + leb(1) * 8),
     "TRUNCATED", {}),
    ("REDIRECT count 2, 1 byte left", frame(0xD0, leb(2) + b"\x00"), "TRUNCATED", {}),
    ("SUBSCRIBE second topic cut", frame(0x90, leb(2) + text("") + leb(5)), "TRUNCATED", {}),
    ("REDIRECT server without load", frame(0xD0, leb(1) + text("h") + leb(80)), "TRUNCATED", {}),
    ("GOAWAY servers flag, no list", frame(0xE1, leb(0) + text("")), "TRUNCATED", {}),
    ("NOTIFY varint cut at its 9th byte", frame(0x60, bytes.fromhex("ff" * 9)), "TRUNCATED", {}),
    ("UPSTREAM topic cut", frame(0xB8, leb(1) + leb(4) + b"ab"), "TRUNCATED", {}),
    ("body error waits for the whole body: decode() says TRUNCATED",
     bytes.fromhex("f0 05 00 02 ff"), "TRUNCATED", dict(stream=None)),
    # 4 VARINT_OVERRUN ---------------------------------------------------------
    ("body length: 5th byte continues", bytes.fromhex("30 80 80 80 80 80"), "VARINT_OVERRUN", {}),
    ("body length: 5th byte continues, more follows", bytes.fromhex("30 ff ff ff ff ff 01"), "VARINT_OVERRUN", {}),
    ("body length overrun after a PING", PING + bytes.fromhex("40 80 80 80 80 80"), "TRAILING_BYTES",
     dict(stream="VARINT_OVERRUN", stream_frames=1)),
    ("ACK.seq: 11-byte varint", frame(0x80, bytes.fromhex("ff" * 10 + "01")), "VARINT_OVERRUN", {}),
    ("ACK.seq: 10th byte 02 (2**64)", frame(0x80, bytes.fromhex("80" * 9 + "02")), "VARINT_OVERRUN", {}),
    ("ACK.seq: 10th byte 7f", frame(0x80, bytes.fromhex("ff" * 9 + "7f")), "VARINT_OVERRUN", {}),
    ("NOTIFY: 10 continuation bytes fill the body (overrun decided at the 10th)",
     frame(0x60, bytes.fromhex("ff" * 10)), "VARINT_OVERRUN", {}),
    ("HELLO.versions[0] overruns", frame(0x10, leb(1) + bytes.fromhex("ff" * 10 + "00") + text("d")),
     "VARINT_OVERRUN", {}),
    ("PUSH.seq overruns", frame(0x50, bytes.fromhex("80" * 10 + "01") + bytes(8)), "VARINT_OVERRUN", {}),
    ("REDIRECT port overruns", frame(0xD0, leb(1) + text("h") + bytes.fromhex("ff" * 10 + "01") + leb(0)),
     "VARINT_OVERRUN", {}),
    ("text length overruns", frame(0xF0, leb(0) + bytes.fromhex("ff" * 10 + "01")), "VARINT_OVERRUN", {}),
    # 5 INVALID_UTF8 -----------------------------------------------------------
    ("ERROR.message byte ff", frame(0xF0, leb(1) + text(b"\xff")), "INVALID_UTF8", {}),
    ("overlong NUL c0 80", frame(0xF0, leb(1) + text(b"a\xc0\x80")), "INVALID_UTF8", {}),
    ("overlong 3-byte e0 80 af", frame(0xF0, leb(1) + text(b"\xe0\x80\xaf")), "INVALID_UTF8", {}),
    ("surrogate U+D800 ed a0 80", frame(0xF0, leb(1) + text(b"\xed\xa0\x80")), "INVALID_UTF8", {}),
    ("above U+10FFFF f4 90 80 80", frame(0xF0, leb(1) + text(b"\xf4\x90\x80\x80")), "INVALID_UTF8", {}),
    ("sequence cut at the end of the text", frame(0xF0, leb(1) + text(b"ok\xe2\x82")), "INVALID_UTF8", {}),
    ("lone continuation byte", frame(0xF0, leb(1) + text(b"\x80")), "INVALID_UTF8", {}),
    ("HELLO.device_id before a cut token (field order)",
     frame(0x10, leb(1) + leb(1) + text(b"\xff") + leb(50)), "INVALID_UTF8", {}),
    ("PUSH.topic", frame(0x58, leb(1) + bytes(8) + text(b"\xfe") + b"p"), "INVALID_UTF8", {}),
    ("PUSH.collapse_key", frame(0x54, leb(1) + bytes(8) + text(b"\xc3") + b"p"), "INVALID_UTF8", {}),
    ("SUBSCRIBE second topic", frame(0x90, leb(2) + text("ok") + text(b"\xed\xbf\xbf")), "INVALID_UTF8", {}),
    ("GOAWAY server host", frame(0xE1, leb(0) + text("") + leb(1) + text(b"\xff") + leb(1) + leb(1)),
     "INVALID_UTF8", {}),
    ("UPSTREAM.topic", frame(0xB8, leb(1) + text(b"\xc0\xaf")), "INVALID_UTF8", {}),
    # 6 TRAILING_BYTES ---------------------------------------------------------
    ("PING with a 1-byte body", bytes.fromhex("30 01 00"), "TRAILING_BYTES", {}),
    ("PONG with a 2-byte body", bytes.fromhex("40 02 00 00"), "TRAILING_BYTES", {}),
    ("ACK with a byte after seq", frame(0x80, leb(1) + b"\x00"), "TRAILING_BYTES", {}),
    ("WELCOME with a 5th field", frame(0x20, leb(1) * 5), "TRAILING_BYTES", {}),
    ("HELLO with a byte after heartbeat", frame(0x10, HELLO_BODY_OK + b"\x00"), "TRAILING_BYTES", {}),
    ("REDIRECT with a byte after its list", frame(0xD0, leb(1) + server("h", 1, 1) + b"\x00"),
     "TRAILING_BYTES", {}),
    ("GOAWAY servers without the flag", frame(0xE0, leb(0) + text("") + leb(1) + server("h", 1, 1)),
     "TRAILING_BYTES", {}),
    ("decode(): a PING after a PING", PING + PING, "TRAILING_BYTES", dict(stream=None, stream_frames=2)),
    ("decode(): one stray byte after a frame", ACK_300 + b"\x30", "TRAILING_BYTES",
     dict(stream=None, stream_frames=1)),
    # 7 BAD_FLAGS --------------------------------------------------------------
    ("PING with flag 1", bytes.fromhex("31 00"), "BAD_FLAGS", {}),
    ("header alone decides", bytes.fromhex("3f"), "BAD_FLAGS", {}),
    ("ACK with flag 8", bytes.fromhex("88 01 00"), "BAD_FLAGS", {}),
    ("HELLO with flags f", frame(0x1F, HELLO_BODY_OK), "BAD_FLAGS", {}),
    ("UPSTREAM with flag 1 (only 8 is defined)", frame(0xB1, leb(1)), "BAD_FLAGS", {}),
    ("GOAWAY with flag 2 (only 1 is defined)", frame(0xE2, leb(0) + text("")), "BAD_FLAGS", {}),
    ("ERROR with flag 4 before a huge length", bytes.fromhex("f4 ff ff ff ff 7f"), "BAD_FLAGS", {}),
    ("bad flags after a PUSH", PUSH_1 + bytes.fromhex("a2 00"), "TRAILING_BYTES",
     dict(stream="BAD_FLAGS", stream_frames=1)),
    # 8 INVALID_VALUE ----------------------------------------------------------
    ("HELLO with no versions", frame(0x10, leb(0) + text("d") + text(b"") + leb(0) + leb(0)), "INVALID_VALUE", {}),
    ("HELLO with 9 versions", frame(0x10, leb(9) + leb(1) * 9 + text("d") + text(b"") + leb(0) + leb(0)),
     "INVALID_VALUE", {}),
    ("HELLO with 9 versions, count checked before the items are read",
     frame(0x10, leb(9) + bytes.fromhex("ff" * 11)), "INVALID_VALUE", {}),
    ("SUBSCRIBE with no topics", frame(0x90, leb(0)), "INVALID_VALUE", {}),
    ("UNSUBSCRIBE with no topics", frame(0xA0, leb(0)), "INVALID_VALUE", {}),
    ("SUBSCRIBE with no topics, then a byte (value before trailing)", frame(0x90, leb(0) + b"\x00"),
     "INVALID_VALUE", {}),
    ("REDIRECT port 65536", frame(0xD0, leb(1) + server("h", 65536, 0)), "INVALID_VALUE", {}),
    ("REDIRECT second server port u64 max", frame(0xD0, leb(2) + server("a", 1, 0) + server("b", 2**64 - 1, 0)),
     "INVALID_VALUE", {}),
    ("port checked before the missing load", frame(0xD0, leb(1) + text("h") + leb(70000)), "INVALID_VALUE", {}),
    ("GOAWAY server port 100000", frame(0xE1, leb(0) + text("") + leb(1) + server("h", 100000, 1)),
     "INVALID_VALUE", {}),
    ("invalid value after two good frames", PUSH_1 + PING + frame(0xA0, leb(0)), "TRAILING_BYTES",
     dict(stream="INVALID_VALUE", stream_frames=2)),
]


# ---------------------------------------------------------------------------

def _parameter_names(class_name: str) -> list[str]:
    return list(inspect.signature(getattr(P, class_name)).parameters)


def _case_fields(class_name: str, fields: dict) -> dict:
    """Every constructor field of the case, defaults filled in, as JSON values."""
    built = getattr(P, class_name)(**{k: from_json(to_json(v)) for k, v in fields.items()})
    return {name: to_json(value) for name, value in zip(_parameter_names(class_name), built.fields())}


def build_valid() -> dict[str, list[dict]]:
    files = {}
    for stem, class_name in FRAME_FILES.items():
        cases = []
        for name, fields in VALID[stem]:
            json_fields = _case_fields(class_name, fields)
            frame_obj = getattr(P, class_name)(**{k: from_json(v) for k, v in json_fields.items()})
            encoded = frame_obj.encode()
            assert P.decode(encoded) == frame_obj, (stem, name)
            cases.append({"name": name, "frame": json_fields, "hex": encoded.hex()})
        for name, data, fields in DECODE_ONLY.get(stem, []):
            json_fields = _case_fields(class_name, fields)
            frame_obj = getattr(P, class_name)(**{k: from_json(v) for k, v in json_fields.items()})
            decoded = P.decode(data)
            if decoded != frame_obj or frame_obj.encode() == data:
                raise SystemExit(f"decode-only case {stem}/{name!r}: decoded {decoded!r}, "
                                 f"expected {frame_obj!r} with a different canonical encoding")
            cases.append({"name": name, "frame": json_fields, "hex": data.hex(), "decode_only": True})
        names = [c["name"] for c in cases]
        assert len(names) == len(set(names)), f"duplicate case names in {stem}"
        files[stem] = cases
    return files


def _run_stream(data: bytes, max_frame_size: int) -> tuple[str | None, int]:
    decoder = P.Decoder(max_frame_size)
    try:
        return None, len(decoder.feed(data))
    except ProtocolError as exc:
        return Reason(exc.code).name, len(exc.frames)


def build_invalid() -> list[dict]:
    cases = []
    problems = []
    for name, data, code, options in INVALID:
        max_frame_size = options.get("max_frame_size", P.DEFAULT_MAX_FRAME_SIZE)
        stream = options.get("stream", code)
        stream_frames = options.get("stream_frames", 0)
        try:
            P.decode(data, max_frame_size=max_frame_size)
            got = "no error"
        except ProtocolError as exc:
            got = Reason(exc.code).name
        if got != code:
            problems.append(f"{name!r}: decode() gives {got}, expected {code}")
        got_stream = _run_stream(data, max_frame_size)
        if got_stream != (stream, stream_frames):
            problems.append(f"{name!r}: Decoder gives {got_stream}, expected {(stream, stream_frames)}")
        case = {"name": name, "hex": data.hex(), "code": code, "stream": stream, "stream_frames": stream_frames}
        if "max_frame_size" in options:
            case["max_frame_size"] = options["max_frame_size"]
        cases.append(case)
    names = [c["name"] for c in cases]
    assert len(names) == len(set(names)), "duplicate invalid case names"
    covered = {c["code"] for c in cases} | {c["stream"] for c in cases}
    missing = {r.name for r in Reason if 1 <= r <= 8} - covered
    if missing:
        problems.append(f"codec error codes without a case: {sorted(missing)}")
    if problems:
        raise SystemExit("the reference codec disagrees with the hand-written expectations:\n  "
                         + "\n  ".join(problems))
    return cases


def _write(path: Path, value) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=1, ensure_ascii=False)
        f.write("\n")


def main() -> None:
    valid = build_valid()
    invalid = build_invalid()
    for stem, cases in valid.items():
        _write(HERE / f"{stem}.json", cases)
    _write(HERE / "invalid.json", invalid)
    total = sum(len(c) for c in valid.values())
    print(f"wrote {total} valid cases in {len(valid)} files and {len(invalid)} invalid cases to {HERE}")


if __name__ == "__main__":
    main()
