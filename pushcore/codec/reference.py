"""The pure-Python frame codec: docs/PROTOCOL.md in executable form.

This module is three things at once:

* the readable definition of the wire format (read it next to PROTOCOL.md;
  section numbers below refer to that file),
* the fallback codec where the C-level extension ``pushcore._frame`` is not
  built (``PUSHCORE_BACKEND=python``),
* the oracle the tests compare the C-level codec against.

It exports exactly the API of docs/CODEC.md. It never imports
``pushcore._frame``.

Decoding works on ``bytes`` with explicit ``(pos, end)`` positions, so a body
is never copied before it is parsed; every reader returns ``(value, new_pos)``
and raises :class:`~pushcore.errors.ProtocolError` at the first byte that
decides an error (PROTOCOL.md §1-2).
"""
from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from typing import Any, TypeAlias, TypeVar

from ..errors import ProtocolError, Reason
from ..wire import (
    ACK,
    DEFAULT_MAX_FRAME_SIZE,
    ERROR,
    FETCH,
    GOAWAY,
    HELLO,
    NOTIFY,
    PING,
    PING_BYTES,
    PONG,
    PONG_BYTES,
    PRIORITY_HIGH,
    PRIORITY_LOW,
    PROTOCOL_VERSION,
    PUSH,
    REDIRECT,
    SUBSCRIBE,
    UNSUBSCRIBE,
    UPSTREAM,
    UPSTREAM_ACK,
    WELCOME,
)
from ..wire import FIELD_VARINT_MAX_BYTES as _FIELD_VARINT_MAX_BYTES
from ..wire import FLAGS as _DEFINED_FLAGS
from ..wire import GOAWAY_HAS_SERVERS as _GOAWAY_HAS_SERVERS
from ..wire import LENGTH_VARINT_MAX_BYTES as _LENGTH_VARINT_MAX_BYTES
from ..wire import MAX_BODY_LENGTH as _MAX_BODY_LENGTH
from ..wire import MAX_PORT as _MAX_PORT
from ..wire import MAX_VERSIONS as _MAX_VERSIONS
from ..wire import PUSH_HAS_COLLAPSE_KEY as _PUSH_HAS_COLLAPSE_KEY
from ..wire import PUSH_HAS_EXPIRY as _PUSH_HAS_EXPIRY
from ..wire import PUSH_HAS_TOPIC as _PUSH_HAS_TOPIC
from ..wire import PUSH_HIGH_PRIORITY as _PUSH_HIGH_PRIORITY
from ..wire import UPSTREAM_HAS_TOPIC as _UPSTREAM_HAS_TOPIC

__all__ = [
    "PROTOCOL_VERSION", "DEFAULT_MAX_FRAME_SIZE", "PRIORITY_LOW", "PRIORITY_HIGH",
    "HELLO", "WELCOME", "PING", "PONG", "PUSH", "NOTIFY", "FETCH", "ACK",
    "SUBSCRIBE", "UNSUBSCRIBE", "UPSTREAM", "UPSTREAM_ACK", "REDIRECT", "GOAWAY",
    "ERROR", "PING_BYTES", "PONG_BYTES",
    "Hello", "Welcome", "Ping", "Pong", "Push", "Notify", "Fetch", "Ack",
    "Subscribe", "Unsubscribe", "Upstream", "UpstreamAck", "Redirect", "Goaway",
    "ErrorFrame",
    "encode", "decode", "encode_push", "encode_ack", "Decoder",
]

# --------------------------------------------------------------------------
# Constants (PROTOCOL.md §3, §5; CODEC.md)
# --------------------------------------------------------------------------

# The numbers themselves live in pushcore.wire (the C level reads the same
# values from ext/pc_wire.h).

_TYPE_NAMES = {
    HELLO: "HELLO", WELCOME: "WELCOME", PING: "PING", PONG: "PONG", PUSH: "PUSH",
    NOTIFY: "NOTIFY", FETCH: "FETCH", ACK: "ACK", SUBSCRIBE: "SUBSCRIBE",
    UNSUBSCRIBE: "UNSUBSCRIBE", UPSTREAM: "UPSTREAM", UPSTREAM_ACK: "UPSTREAM_ACK",
    REDIRECT: "REDIRECT", GOAWAY: "GOAWAY", ERROR: "ERROR",
}

_U64_LIMIT = 1 << 64          # uvarint fields and u64le hold values below this
_U32_LIMIT = 1 << 32          # u32le (expiry)
_MIN_VERSIONS = 1

_U32LE = struct.Struct("<I")
_U64LE = struct.Struct("<Q")

_T = TypeVar("_T")
#: A server in REDIRECT / GOAWAY: ``(host, port, load)``.
_Server: TypeAlias = tuple[str, int, int]

def _header_error(header: int) -> tuple[Reason, str] | None:
    """Why a header byte is refused (PROTOCOL.md §1), or None when it is valid."""
    frame_type, flags = header >> 4, header & 0x0F
    if frame_type == 0:
        return Reason.UNKNOWN_TYPE, f"header byte 0x{header:02x} has frame type 0, which is not a frame type"
    undefined = flags & ~_DEFINED_FLAGS.get(frame_type, 0)
    if undefined:
        return Reason.BAD_FLAGS, (f"header byte 0x{header:02x}: {_TYPE_NAMES[frame_type]} does not define "
                                  f"flag bits 0x{undefined:x}")
    return None


# Precomputed for all 256 header bytes: the decoder's first check is one lookup.
_HEADER_ERRORS = [_header_error(header) for header in range(256)]


# --------------------------------------------------------------------------
# Encoding helpers (PROTOCOL.md §2). Encoders check ranges and types and raise
# ValueError / TypeError naming the field (CODEC.md).
# --------------------------------------------------------------------------

# One-byte varints are by far the most common: precompute them, and every
# header byte.
_SMALL_UVARINTS = [bytes((i,)) for i in range(0x80)]
_HEADER_BYTES = [bytes((i,)) for i in range(0x100)]


def _check_uint(value: Any, limit: int, name: str) -> int:
    """Return *value* if it is an int in ``0 .. limit - 1``, else raise."""
    if not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not 0 <= value < limit:
        raise ValueError(f"{name} must be in 0..{limit - 1}, got {value}")
    return value


def _uvarint_bytes(value: int) -> bytes:
    """Minimal unsigned LEB128 form of a non-negative int (range already checked)."""
    if value < 0x80:
        return _SMALL_UVARINTS[value]
    if value < 0x4000:
        return bytes(((value & 0x7F) | 0x80, value >> 7))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _uvarint(value: Any, name: str) -> bytes:
    """A ``uvarint`` field: an int in 0 .. 2**64 - 1."""
    if type(value) is int and 0 <= value < 0x80:   # fast path
        return _SMALL_UVARINTS[value]
    return _uvarint_bytes(_check_uint(value, _U64_LIMIT, name))


def _raw_bytes(value: Any, name: str) -> bytes:
    """The bytes of a bytes-like *value* (bytes, bytearray, memoryview, ...)."""
    if type(value) is bytes:
        return value
    if isinstance(value, str):
        raise TypeError(f"{name} must be bytes, not str (encode the text first)")
    try:
        view = memoryview(value)
    except TypeError:
        raise TypeError(f"{name} must be bytes-like, not {type(value).__name__}") from None
    return view.tobytes()


def _length_prefixed(raw: bytes) -> bytes:
    return _uvarint_bytes(len(raw)) + raw


def _bytes_field(value: Any, name: str) -> bytes:
    """A ``bytes`` field: uvarint length, then the bytes."""
    return _length_prefixed(_raw_bytes(value, name))


def _utf8(value: Any, name: str) -> bytes:
    """The UTF-8 encoding of a str (lone surrogates are refused)."""
    if not isinstance(value, str):
        if isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError(f"{name} must be str, not {type(value).__name__} (decode the bytes first)")
        raise TypeError(f"{name} must be str, not {type(value).__name__}")
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{name} cannot be encoded as UTF-8: {exc.reason} at index {exc.start}") from None


def _text_field(value: Any, name: str) -> bytes:
    """A ``text`` field: a ``bytes`` field holding UTF-8."""
    return _length_prefixed(_utf8(value, name))


def _server_list(servers: tuple[_Server, ...], name: str) -> bytes:
    """A ``list<server>``: count, then (text host, uvarint port, uvarint load) each."""
    parts = [_uvarint_bytes(len(servers))]
    for i, server in enumerate(servers):
        item = f"{name}[{i}]"
        if not isinstance(server, tuple) or len(server) != 3:
            raise TypeError(f"{item} must be a (host, port, load) tuple, got {server!r}")
        host, port, load = server
        parts.append(_text_field(host, item + ".host"))
        parts.append(_uvarint_bytes(_check_uint(port, _MAX_PORT + 1, item + ".port")))
        parts.append(_uvarint(load, item + ".load"))
    return b"".join(parts)


def _topic_list(topics: tuple[str, ...], name: str) -> bytes:
    """A non-empty ``list<text>`` of topics (SUBSCRIBE / UNSUBSCRIBE)."""
    if not topics:
        raise ValueError(f"{name} must hold at least one topic")
    parts = [_uvarint_bytes(len(topics))]
    for i, topic in enumerate(topics):
        parts.append(_text_field(topic, f"{name}[{i}]"))
    return b"".join(parts)


def _frame_bytes(frame_type: int, flags: int, body: bytes) -> bytes:
    """Header byte, body length varint, body (PROTOCOL.md §1)."""
    if len(body) > _MAX_BODY_LENGTH:
        raise ValueError(
            f"{_TYPE_NAMES[frame_type]} body is {len(body)} bytes; a frame body may be at most "
            f"{_MAX_BODY_LENGTH} bytes"
        )
    return b"".join((_HEADER_BYTES[(frame_type << 4) | flags], _uvarint_bytes(len(body)), body))


def _as_tuple(values: Iterable[_T], name: str) -> tuple[_T, ...]:
    """Constructor helper: store a sequence field as a tuple (CODEC.md)."""
    if isinstance(values, tuple):
        return values
    if isinstance(values, (str, bytes, bytearray)):
        raise TypeError(f"{name} must be a sequence of items, not {type(values).__name__}")
    return tuple(values)


def _as_servers(servers: Iterable[_Server]) -> tuple[_Server, ...]:
    """Constructor helper: a tuple of ``(host, port, load)`` tuples."""
    items: tuple[Any, ...] = _as_tuple(servers, "servers")
    if all(type(s) is tuple for s in items):
        return items
    return tuple(s if isinstance(s, tuple) else tuple(s) for s in items)


# --------------------------------------------------------------------------
# Frame classes (PROTOCOL.md §3, CODEC.md)
# --------------------------------------------------------------------------

class _Frame:
    """Shared behaviour: equality by ``TYPE`` + ``fields()``, repr, no hashing."""

    __slots__ = ()
    TYPE = 0
    _FIELD_NAMES: tuple[str, ...] = ()

    def fields(self) -> tuple[Any, ...]:  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    def encode(self) -> bytes:  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        # Any frame object (either backend) with the same type and fields is equal.
        try:
            other_type = other.TYPE           # type: ignore[attr-defined]
            other_fields = other.fields       # type: ignore[attr-defined]
        except AttributeError:
            return NotImplemented
        if other_type != self.TYPE or not callable(other_fields):
            return False
        equal: bool = self.fields() == other_fields()
        return equal

    __hash__ = None  # type: ignore[assignment]  # frames are mutable, not hashable

    def __repr__(self) -> str:
        args = ", ".join(f"{name}={value!r}" for name, value in zip(self._FIELD_NAMES, self.fields()))
        return f"{type(self).__name__}({args})"


class Hello(_Frame):
    """HELLO (c→s): first frame of every connection."""

    __slots__ = ("versions", "device_id", "token", "last_seq", "heartbeat")
    TYPE = HELLO
    _FIELD_NAMES = __slots__

    def __init__(self, versions: Iterable[int] = (PROTOCOL_VERSION,), device_id: str = "",
                 token: bytes = b"", last_seq: int = 0, heartbeat: int = 0) -> None:
        self.versions = _as_tuple(versions, "versions")
        self.device_id = device_id
        self.token = token
        self.last_seq = last_seq
        self.heartbeat = heartbeat

    def fields(self) -> tuple[tuple[int, ...], str, bytes, int, int]:
        return (self.versions, self.device_id, self.token, self.last_seq, self.heartbeat)

    def encode(self) -> bytes:
        versions = self.versions
        if not _MIN_VERSIONS <= len(versions) <= _MAX_VERSIONS:
            raise ValueError(
                f"Hello.versions must hold {_MIN_VERSIONS} to {_MAX_VERSIONS} versions, got {len(versions)}"
            )
        body = b"".join((
            _uvarint_bytes(len(versions)),
            *[_uvarint(v, f"Hello.versions[{i}]") for i, v in enumerate(versions)],
            _text_field(self.device_id, "Hello.device_id"),
            _bytes_field(self.token, "Hello.token"),
            _uvarint(self.last_seq, "Hello.last_seq"),
            _uvarint(self.heartbeat, "Hello.heartbeat"),
        ))
        return _frame_bytes(HELLO, 0, body)


class Welcome(_Frame):
    """WELCOME (s→c): chosen version, heartbeat bounds, server clock (ms)."""

    __slots__ = ("version", "heartbeat_min", "heartbeat_max", "server_time")
    TYPE = WELCOME
    _FIELD_NAMES = __slots__

    def __init__(self, version: int = PROTOCOL_VERSION, heartbeat_min: int = 0,
                 heartbeat_max: int = 0, server_time: int = 0) -> None:
        self.version = version
        self.heartbeat_min = heartbeat_min
        self.heartbeat_max = heartbeat_max
        self.server_time = server_time

    def fields(self) -> tuple[int, int, int, int]:
        return (self.version, self.heartbeat_min, self.heartbeat_max, self.server_time)

    def encode(self) -> bytes:
        body = b"".join((
            _uvarint(self.version, "Welcome.version"),
            _uvarint(self.heartbeat_min, "Welcome.heartbeat_min"),
            _uvarint(self.heartbeat_max, "Welcome.heartbeat_max"),
            _uvarint(self.server_time, "Welcome.server_time"),
        ))
        return _frame_bytes(WELCOME, 0, body)


class Ping(_Frame):
    """PING (both): heartbeat; the peer answers PONG. Always ``30 00``."""

    __slots__ = ()
    TYPE = PING

    def fields(self) -> tuple[()]:
        return ()

    def encode(self) -> bytes:
        return PING_BYTES


class Pong(_Frame):
    """PONG (both): the answer to PING. Always ``40 00``."""

    __slots__ = ()
    TYPE = PONG

    def fields(self) -> tuple[()]:
        return ()

    def encode(self) -> bytes:
        return PONG_BYTES


class Push(_Frame):
    """PUSH (s→c): one message for the device."""

    __slots__ = ("seq", "message_id", "payload", "priority", "expiry", "collapse_key", "topic")
    TYPE = PUSH
    _FIELD_NAMES = __slots__

    def __init__(self, seq: int = 0, message_id: int = 0, payload: bytes = b"",
                 priority: int = PRIORITY_HIGH, expiry: int = 0, collapse_key: str = "",
                 topic: str = "") -> None:
        self.seq = seq
        self.message_id = message_id
        self.payload = payload
        self.priority = priority
        self.expiry = expiry
        self.collapse_key = collapse_key
        self.topic = topic

    def fields(self) -> tuple[int, int, bytes, int, int, str, str]:
        return (self.seq, self.message_id, self.payload, self.priority, self.expiry,
                self.collapse_key, self.topic)

    def encode(self) -> bytes:
        return encode_push(self.seq, self.message_id, self.payload, self.priority,
                           self.expiry, self.collapse_key, self.topic)


class Notify(_Frame):
    """NOTIFY (s→c): messages up to ``latest_seq`` are waiting; FETCH them."""

    __slots__ = ("latest_seq",)
    TYPE = NOTIFY
    _FIELD_NAMES = __slots__

    def __init__(self, latest_seq: int = 0) -> None:
        self.latest_seq = latest_seq

    def fields(self) -> tuple[int]:
        return (self.latest_seq,)

    def encode(self) -> bytes:
        return _frame_bytes(NOTIFY, 0, _uvarint(self.latest_seq, "Notify.latest_seq"))


class Fetch(_Frame):
    """FETCH (c→s): send up to ``max_count`` messages with seq > ``after_seq``."""

    __slots__ = ("after_seq", "max_count")
    TYPE = FETCH
    _FIELD_NAMES = __slots__

    def __init__(self, after_seq: int = 0, max_count: int = 0) -> None:
        self.after_seq = after_seq
        self.max_count = max_count

    def fields(self) -> tuple[int, int]:
        return (self.after_seq, self.max_count)

    def encode(self) -> bytes:
        body = _uvarint(self.after_seq, "Fetch.after_seq") + _uvarint(self.max_count, "Fetch.max_count")
        return _frame_bytes(FETCH, 0, body)


class Ack(_Frame):
    """ACK (c→s): cumulative, the client has every message with seq ≤ ``seq``."""

    __slots__ = ("seq",)
    TYPE = ACK
    _FIELD_NAMES = __slots__

    def __init__(self, seq: int = 0) -> None:
        self.seq = seq

    def fields(self) -> tuple[int]:
        return (self.seq,)

    def encode(self) -> bytes:
        return encode_ack(self.seq)


class Subscribe(_Frame):
    """SUBSCRIBE (c→s): join one or more topics."""

    __slots__ = ("topics",)
    TYPE = SUBSCRIBE
    _FIELD_NAMES = __slots__

    def __init__(self, topics: Iterable[str] = ()) -> None:
        self.topics = _as_tuple(topics, "topics")

    def fields(self) -> tuple[tuple[str, ...]]:
        return (self.topics,)

    def encode(self) -> bytes:
        return _frame_bytes(SUBSCRIBE, 0, _topic_list(self.topics, "Subscribe.topics"))


class Unsubscribe(_Frame):
    """UNSUBSCRIBE (c→s): leave one or more topics."""

    __slots__ = ("topics",)
    TYPE = UNSUBSCRIBE
    _FIELD_NAMES = __slots__

    def __init__(self, topics: Iterable[str] = ()) -> None:
        self.topics = _as_tuple(topics, "topics")

    def fields(self) -> tuple[tuple[str, ...]]:
        return (self.topics,)

    def encode(self) -> bytes:
        return _frame_bytes(UNSUBSCRIBE, 0, _topic_list(self.topics, "Unsubscribe.topics"))


class Upstream(_Frame):
    """UPSTREAM (c→s): a device-to-server message, acknowledged by UPSTREAM_ACK."""

    __slots__ = ("upstream_id", "payload", "topic")
    TYPE = UPSTREAM
    _FIELD_NAMES = __slots__

    def __init__(self, upstream_id: int = 0, payload: bytes = b"", topic: str = "") -> None:
        self.upstream_id = upstream_id
        self.payload = payload
        self.topic = topic

    def fields(self) -> tuple[int, bytes, str]:
        return (self.upstream_id, self.payload, self.topic)

    def encode(self) -> bytes:
        flags = 0
        parts = [_uvarint(self.upstream_id, "Upstream.upstream_id")]
        topic = _utf8(self.topic, "Upstream.topic")
        if topic:
            flags |= _UPSTREAM_HAS_TOPIC
            parts.append(_length_prefixed(topic))
        parts.append(_raw_bytes(self.payload, "Upstream.payload"))
        return _frame_bytes(UPSTREAM, flags, b"".join(parts))


class UpstreamAck(_Frame):
    """UPSTREAM_ACK (s→c): echoes the ``upstream_id`` of an UPSTREAM."""

    __slots__ = ("upstream_id",)
    TYPE = UPSTREAM_ACK
    _FIELD_NAMES = __slots__

    def __init__(self, upstream_id: int = 0) -> None:
        self.upstream_id = upstream_id

    def fields(self) -> tuple[int]:
        return (self.upstream_id,)

    def encode(self) -> bytes:
        return _frame_bytes(UPSTREAM_ACK, 0, _uvarint(self.upstream_id, "UpstreamAck.upstream_id"))


class Redirect(_Frame):
    """REDIRECT (s→c): servers to use instead, sorted by ascending load."""

    __slots__ = ("servers",)
    TYPE = REDIRECT
    _FIELD_NAMES = __slots__

    def __init__(self, servers: Iterable[tuple[str, int, int]] = ()) -> None:
        self.servers = _as_servers(servers)

    def fields(self) -> tuple[tuple[_Server, ...]]:
        return (self.servers,)

    def encode(self) -> bytes:
        return _frame_bytes(REDIRECT, 0, _server_list(self.servers, "Redirect.servers"))


class Goaway(_Frame):
    """GOAWAY (s→c): the server closes the connection; maybe where to reconnect."""

    __slots__ = ("reason", "message", "servers")
    TYPE = GOAWAY
    _FIELD_NAMES = __slots__

    def __init__(self, reason: int = 0, message: str = "",
                 servers: Iterable[tuple[str, int, int]] = ()) -> None:
        self.reason = reason
        self.message = message
        self.servers = _as_servers(servers)

    def fields(self) -> tuple[int, str, tuple[_Server, ...]]:
        return (self.reason, self.message, self.servers)

    def encode(self) -> bytes:
        flags = 0
        parts = [_uvarint(self.reason, "Goaway.reason"), _text_field(self.message, "Goaway.message")]
        if self.servers:
            flags |= _GOAWAY_HAS_SERVERS
            parts.append(_server_list(self.servers, "Goaway.servers"))
        return _frame_bytes(GOAWAY, flags, b"".join(parts))


class ErrorFrame(_Frame):
    """ERROR (both): a reason code and a human-readable message."""

    __slots__ = ("code", "message")
    TYPE = ERROR
    _FIELD_NAMES = __slots__

    def __init__(self, code: int = 0, message: str = "") -> None:
        self.code = code
        self.message = message

    def fields(self) -> tuple[int, str]:
        return (self.code, self.message)

    def encode(self) -> bytes:
        body = _uvarint(self.code, "ErrorFrame.code") + _text_field(self.message, "ErrorFrame.message")
        return _frame_bytes(ERROR, 0, body)


_CLASSES: dict[int, type[_Frame]] = {
    cls.TYPE: cls for cls in (Hello, Welcome, Ping, Pong, Push, Notify, Fetch, Ack, Subscribe,
                              Unsubscribe, Upstream, UpstreamAck, Redirect, Goaway, ErrorFrame)
}


# --------------------------------------------------------------------------
# Encoding functions (CODEC.md)
# --------------------------------------------------------------------------

def encode(frame: Any) -> bytes:
    """Encode *frame*; the same as ``frame.encode()``.

    A frame of the other backend (anything with ``TYPE`` and ``fields()``) is
    encoded from its fields.
    """
    if isinstance(frame, _Frame):
        return frame.encode()
    kind: Any = getattr(frame, "TYPE", None)
    cls = _CLASSES.get(kind) if hasattr(frame, "fields") else None
    if cls is None:
        raise TypeError(f"encode() needs a frame, not {type(frame).__name__}")
    return cls(*frame.fields()).encode()


def encode_push(seq: int, message_id: int, payload: bytes, priority: int = PRIORITY_HIGH,
                expiry: int = 0, collapse_key: str = "", topic: str = "") -> bytes:
    """Encode a PUSH without building a :class:`Push` (the hot path)."""
    if not isinstance(priority, int):
        raise TypeError(f"Push.priority must be an int, not {type(priority).__name__}")
    if priority == PRIORITY_HIGH:
        flags = _PUSH_HIGH_PRIORITY
    elif priority == PRIORITY_LOW:
        flags = 0
    else:
        raise ValueError(f"Push.priority must be PRIORITY_LOW (0) or PRIORITY_HIGH (1), got {priority}")
    parts = [
        _uvarint(seq, "Push.seq"),
        _U64LE.pack(_check_uint(message_id, _U64_LIMIT, "Push.message_id")),
    ]
    if _check_uint(expiry, _U32_LIMIT, "Push.expiry"):
        flags |= _PUSH_HAS_EXPIRY
        parts.append(_U32LE.pack(expiry))
    collapse_key_utf8 = _utf8(collapse_key, "Push.collapse_key")
    if collapse_key_utf8:
        flags |= _PUSH_HAS_COLLAPSE_KEY
        parts.append(_length_prefixed(collapse_key_utf8))
    topic_utf8 = _utf8(topic, "Push.topic")
    if topic_utf8:
        flags |= _PUSH_HAS_TOPIC
        parts.append(_length_prefixed(topic_utf8))
    parts.append(_raw_bytes(payload, "Push.payload"))
    return _frame_bytes(PUSH, flags, b"".join(parts))


def encode_ack(seq: int) -> bytes:
    """Encode an ACK of every message with seq ≤ *seq*."""
    return _frame_bytes(ACK, 0, _uvarint(seq, "Ack.seq"))


# --------------------------------------------------------------------------
# Decoding: field readers (PROTOCOL.md §2). Each takes the frame bytes `buf`,
# the position `pos` of the field and the `end` of the body, and returns
# (value, position after the field). `what` names the field in messages.
# --------------------------------------------------------------------------

def _truncated(what: str, needed: int, left: int) -> ProtocolError:
    return ProtocolError(
        Reason.TRUNCATED,
        f"{what} runs past the end of the frame body (needs {needed} more bytes, {left} left)",
    )


def _read_uvarint(buf: bytes, pos: int, end: int, what: str) -> tuple[int, int]:
    """A field ``uvarint``: at most 10 bytes, the 10th only 00 or 01."""
    if pos < end:
        byte = buf[pos]
        if byte < 0x80:                      # fast path: one byte
            return byte, pos + 1
    value = 0
    shift = 0
    for index in range(_FIELD_VARINT_MAX_BYTES):
        if pos >= end:
            raise ProtocolError(Reason.TRUNCATED, f"{what}: varint runs past the end of the frame body")
        byte = buf[pos]
        pos += 1
        if index == _FIELD_VARINT_MAX_BYTES - 1 and byte > 1:
            # The 10th byte carries bit 63 only; anything more is >= 2**64
            # (or an 11th byte).
            raise ProtocolError(
                Reason.VARINT_OVERRUN,
                f"{what}: varint is longer than 10 bytes or >= 2**64 (10th byte 0x{byte:02x})",
            )
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    raise AssertionError("unreachable: the 10th byte is 0 or 1 and ends the varint")


def _read_u32le(buf: bytes, pos: int, end: int, what: str) -> tuple[int, int]:
    if end - pos < 4:
        raise _truncated(what, 4, end - pos)
    return _U32LE.unpack_from(buf, pos)[0], pos + 4


def _read_u64le(buf: bytes, pos: int, end: int, what: str) -> tuple[int, int]:
    if end - pos < 8:
        raise _truncated(what, 8, end - pos)
    return _U64LE.unpack_from(buf, pos)[0], pos + 8


def _read_bytes(buf: bytes, pos: int, end: int, what: str) -> tuple[bytes, int]:
    """A ``bytes`` field: uvarint length, then that many bytes."""
    if pos < end and buf[pos] < 0x80:          # fast path: a 1-byte length
        length = buf[pos]
        pos += 1
    else:
        length, pos = _read_uvarint(buf, pos, end, what + " length")
    if length > end - pos:
        raise _truncated(what, length, end - pos)
    return buf[pos:pos + length], pos + length


def _read_text(buf: bytes, pos: int, end: int, what: str) -> tuple[str, int]:
    """A ``text`` field: a ``bytes`` field holding strict UTF-8."""
    raw, pos = _read_bytes(buf, pos, end, what)
    try:
        return raw.decode("utf-8"), pos        # strict: refuses surrogates and overlongs
    except UnicodeDecodeError as exc:
        raise ProtocolError(
            Reason.INVALID_UTF8, f"{what} is not valid UTF-8 ({exc.reason} at byte {exc.start})"
        ) from None


def _read_count(buf: bytes, pos: int, end: int, what: str) -> tuple[int, int]:
    """A list count; each item takes at least one byte, so it cannot exceed the bytes left."""
    count, pos = _read_uvarint(buf, pos, end, what + " count")
    if count > end - pos:
        raise ProtocolError(
            Reason.TRUNCATED,
            f"{what} claims {count} items but only {end - pos} bytes are left in the frame body",
        )
    return count, pos


def _read_servers(buf: bytes, pos: int, end: int, what: str) -> tuple[tuple[_Server, ...], int]:
    """A ``list<server>``: each server is (text host, uvarint port ≤ 65535, uvarint load)."""
    count, pos = _read_count(buf, pos, end, what)
    servers: list[_Server] = []
    for i in range(count):
        item = f"{what}[{i}]"
        host, pos = _read_text(buf, pos, end, item + ".host")
        port, pos = _read_uvarint(buf, pos, end, item + ".port")
        if port > _MAX_PORT:
            raise ProtocolError(Reason.INVALID_VALUE, f"{item}.port is {port}; a port is at most {_MAX_PORT}")
        load, pos = _read_uvarint(buf, pos, end, item + ".load")
        servers.append((host, port, load))
    return tuple(servers), pos


def _read_topics(buf: bytes, pos: int, end: int, what: str) -> tuple[tuple[str, ...], int]:
    """A non-empty ``list<text>`` of topics."""
    count, pos = _read_count(buf, pos, end, what)
    if count == 0:
        raise ProtocolError(Reason.INVALID_VALUE, f"{what} is empty; at least one topic is required")
    topics: list[str] = []
    for i in range(count):
        topic, pos = _read_text(buf, pos, end, f"{what}[{i}]")
        topics.append(topic)
    return tuple(topics), pos


def _expect_end(pos: int, end: int, type_name: str) -> None:
    """Types without a ``rest`` field must use their whole body."""
    if pos != end:
        raise ProtocolError(
            Reason.TRAILING_BYTES,
            f"{type_name} body has {end - pos} bytes left after its last field",
        )


# --------------------------------------------------------------------------
# Decoding: one body per frame type (PROTOCOL.md §3). `buf[pos:end]` is the
# body of a frame whose header already passed the header check.
# --------------------------------------------------------------------------

def _decode_hello(flags: int, buf: bytes, pos: int, end: int) -> Hello:
    count, pos = _read_count(buf, pos, end, "HELLO.versions")
    if not _MIN_VERSIONS <= count <= _MAX_VERSIONS:
        raise ProtocolError(
            Reason.INVALID_VALUE,
            f"HELLO.versions has {count} entries; it must have {_MIN_VERSIONS} to {_MAX_VERSIONS}",
        )
    versions: list[int] = []
    for i in range(count):
        version, pos = _read_uvarint(buf, pos, end, f"HELLO.versions[{i}]")
        versions.append(version)
    device_id, pos = _read_text(buf, pos, end, "HELLO.device_id")
    token, pos = _read_bytes(buf, pos, end, "HELLO.token")
    last_seq, pos = _read_uvarint(buf, pos, end, "HELLO.last_seq")
    heartbeat, pos = _read_uvarint(buf, pos, end, "HELLO.heartbeat")
    _expect_end(pos, end, "HELLO")
    return Hello(tuple(versions), device_id, token, last_seq, heartbeat)


def _decode_welcome(flags: int, buf: bytes, pos: int, end: int) -> Welcome:
    version, pos = _read_uvarint(buf, pos, end, "WELCOME.version")
    heartbeat_min, pos = _read_uvarint(buf, pos, end, "WELCOME.heartbeat_min")
    heartbeat_max, pos = _read_uvarint(buf, pos, end, "WELCOME.heartbeat_max")
    server_time, pos = _read_uvarint(buf, pos, end, "WELCOME.server_time")
    _expect_end(pos, end, "WELCOME")
    return Welcome(version, heartbeat_min, heartbeat_max, server_time)


def _decode_ping(flags: int, buf: bytes, pos: int, end: int) -> Ping:
    _expect_end(pos, end, "PING")
    return Ping()


def _decode_pong(flags: int, buf: bytes, pos: int, end: int) -> Pong:
    _expect_end(pos, end, "PONG")
    return Pong()


def _decode_push(flags: int, buf: bytes, pos: int, end: int) -> Push:
    seq, pos = _read_uvarint(buf, pos, end, "PUSH.seq")
    message_id, pos = _read_u64le(buf, pos, end, "PUSH.message_id")
    expiry = 0
    if flags & _PUSH_HAS_EXPIRY:
        expiry, pos = _read_u32le(buf, pos, end, "PUSH.expiry")
    collapse_key = ""
    if flags & _PUSH_HAS_COLLAPSE_KEY:
        collapse_key, pos = _read_text(buf, pos, end, "PUSH.collapse_key")
    topic = ""
    if flags & _PUSH_HAS_TOPIC:
        topic, pos = _read_text(buf, pos, end, "PUSH.topic")
    priority = PRIORITY_HIGH if flags & _PUSH_HIGH_PRIORITY else PRIORITY_LOW
    return Push(seq, message_id, buf[pos:end], priority, expiry, collapse_key, topic)


def _decode_notify(flags: int, buf: bytes, pos: int, end: int) -> Notify:
    latest_seq, pos = _read_uvarint(buf, pos, end, "NOTIFY.latest_seq")
    _expect_end(pos, end, "NOTIFY")
    return Notify(latest_seq)


def _decode_fetch(flags: int, buf: bytes, pos: int, end: int) -> Fetch:
    after_seq, pos = _read_uvarint(buf, pos, end, "FETCH.after_seq")
    max_count, pos = _read_uvarint(buf, pos, end, "FETCH.max_count")
    _expect_end(pos, end, "FETCH")
    return Fetch(after_seq, max_count)


def _decode_ack(flags: int, buf: bytes, pos: int, end: int) -> Ack:
    seq, pos = _read_uvarint(buf, pos, end, "ACK.seq")
    _expect_end(pos, end, "ACK")
    return Ack(seq)


def _decode_subscribe(flags: int, buf: bytes, pos: int, end: int) -> Subscribe:
    topics, pos = _read_topics(buf, pos, end, "SUBSCRIBE.topics")
    _expect_end(pos, end, "SUBSCRIBE")
    return Subscribe(topics)


def _decode_unsubscribe(flags: int, buf: bytes, pos: int, end: int) -> Unsubscribe:
    topics, pos = _read_topics(buf, pos, end, "UNSUBSCRIBE.topics")
    _expect_end(pos, end, "UNSUBSCRIBE")
    return Unsubscribe(topics)


def _decode_upstream(flags: int, buf: bytes, pos: int, end: int) -> Upstream:
    upstream_id, pos = _read_uvarint(buf, pos, end, "UPSTREAM.upstream_id")
    topic = ""
    if flags & _UPSTREAM_HAS_TOPIC:
        topic, pos = _read_text(buf, pos, end, "UPSTREAM.topic")
    return Upstream(upstream_id, buf[pos:end], topic)


def _decode_upstream_ack(flags: int, buf: bytes, pos: int, end: int) -> UpstreamAck:
    upstream_id, pos = _read_uvarint(buf, pos, end, "UPSTREAM_ACK.upstream_id")
    _expect_end(pos, end, "UPSTREAM_ACK")
    return UpstreamAck(upstream_id)


def _decode_redirect(flags: int, buf: bytes, pos: int, end: int) -> Redirect:
    servers, pos = _read_servers(buf, pos, end, "REDIRECT.servers")
    _expect_end(pos, end, "REDIRECT")
    return Redirect(servers)


def _decode_goaway(flags: int, buf: bytes, pos: int, end: int) -> Goaway:
    reason, pos = _read_uvarint(buf, pos, end, "GOAWAY.reason")
    message, pos = _read_text(buf, pos, end, "GOAWAY.message")
    servers: tuple[_Server, ...] = ()
    if flags & _GOAWAY_HAS_SERVERS:
        servers, pos = _read_servers(buf, pos, end, "GOAWAY.servers")
    _expect_end(pos, end, "GOAWAY")
    return Goaway(reason, message, servers)


def _decode_error(flags: int, buf: bytes, pos: int, end: int) -> ErrorFrame:
    code, pos = _read_uvarint(buf, pos, end, "ERROR.code")
    message, pos = _read_text(buf, pos, end, "ERROR.message")
    _expect_end(pos, end, "ERROR")
    return ErrorFrame(code, message)


def _decode_type0(flags: int, buf: bytes, pos: int, end: int) -> _Frame:
    # Never called: the header check refuses type 0 before any body is decoded.
    raise ProtocolError(Reason.UNKNOWN_TYPE, "frame type 0 is not a frame type")


# Indexed by frame type; index 0 is never used (type 0 fails the header check).
_BODY_DECODERS: list[Callable[[int, bytes, int, int], _Frame]] = [
    _decode_type0, _decode_hello, _decode_welcome, _decode_ping, _decode_pong, _decode_push,
    _decode_notify, _decode_fetch, _decode_ack, _decode_subscribe, _decode_unsubscribe,
    _decode_upstream, _decode_upstream_ack, _decode_redirect, _decode_goaway, _decode_error,
]


# --------------------------------------------------------------------------
# Decoding: the frame prefix (PROTOCOL.md §1) and whole frames
# --------------------------------------------------------------------------

def _parse_prefix(buf: bytes | bytearray, pos: int, end: int, max_frame_size: int) -> tuple[int, int] | None:
    """Check the header and body length of the frame at ``buf[pos:end]``.

    Returns ``(body_start, body_length)``, or None when the bytes end before
    the length does. Raises at the first byte that decides an error: the
    header byte, then the 5th length byte (overrun) or the last length byte
    (too large). Nothing here depends on how many body bytes are present.
    """
    if pos >= end:
        return None
    header_error = _HEADER_ERRORS[buf[pos]]
    if header_error is not None:
        raise ProtocolError(*header_error)
    cursor = pos + 1
    if cursor < end and buf[cursor] < 0x80 and buf[cursor] <= max_frame_size:
        return cursor + 1, buf[cursor]          # fast path: a 1-byte length within the limit
    length = 0
    shift = 0
    for _index in range(_LENGTH_VARINT_MAX_BYTES):
        if cursor >= end:
            return None
        byte = buf[cursor]
        cursor += 1
        length |= (byte & 0x7F) << shift
        if byte < 0x80:
            if length > max_frame_size:
                raise ProtocolError(
                    Reason.FRAME_TOO_LARGE,
                    f"frame body of {length} bytes is over the maximum frame size of "
                    f"{max_frame_size} bytes",
                )
            return cursor, length
        shift += 7
    raise ProtocolError(
        Reason.VARINT_OVERRUN,
        f"body length varint is longer than {_LENGTH_VARINT_MAX_BYTES} bytes",
    )


def _check_max_frame_size(max_frame_size: Any) -> int:
    if not isinstance(max_frame_size, int):
        raise TypeError(f"max_frame_size must be an int, not {type(max_frame_size).__name__}")
    if max_frame_size < 0:
        raise ValueError(f"max_frame_size must be >= 0, got {max_frame_size}")
    return max_frame_size


def decode(data: Any, *, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> _Frame:
    """Decode exactly one whole frame from the bytes-like *data*.

    An incomplete frame is ``TRUNCATED``; bytes after the frame are
    ``TRAILING_BYTES`` (checked after the frame itself decoded cleanly).
    """
    if type(max_frame_size) is not int or max_frame_size < 0:
        _check_max_frame_size(max_frame_size)
    buf = data if type(data) is bytes else memoryview(data).tobytes()
    end = len(buf)
    if end == 0:
        raise ProtocolError(Reason.TRUNCATED, "no bytes: a frame needs at least a header and a body length")
    prefix = _parse_prefix(buf, 0, end, max_frame_size)
    if prefix is None:
        raise ProtocolError(Reason.TRUNCATED, "the data ends inside the frame's body length")
    body_start, body_length = prefix
    body_end = body_start + body_length
    if body_end > end:
        raise ProtocolError(
            Reason.TRUNCATED,
            f"the frame body is {body_length} bytes but only {end - body_start} follow its header",
        )
    header = buf[0]
    frame = _BODY_DECODERS[header >> 4](header & 0x0F, buf, body_start, body_end)
    if body_end != end:
        raise ProtocolError(
            Reason.TRAILING_BYTES, f"{end - body_end} bytes follow the frame; decode() takes exactly one frame"
        )
    return frame


class Decoder:
    """Streaming decoder: feed it reads as they come, get whole frames back.

    It buffers at most one partial frame (at most ``max_frame_size + 6``
    bytes: header, 5 length bytes, body) and checks the body length before it
    buffers any of the body. After an error it is failed: every later
    ``feed`` raises a ``ProtocolError`` with the same code.
    """

    __slots__ = ("max_frame_size", "_partial", "_body_start", "_frame_size", "_failure")

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        self.max_frame_size = _check_max_frame_size(max_frame_size)
        # The bytes of the frame in progress (header onward).
        self._partial = bytearray()
        # Where its body starts and its total size, once header and length
        # are known; else 0.
        self._body_start = 0
        self._frame_size = 0
        # (code, message) of the error that failed this decoder, if any; not
        # the exception itself, whose traceback would keep buffers alive.
        self._failure: tuple[int, str] | None = None

    @property
    def pending(self) -> int:
        """Bytes buffered towards the next frame."""
        return len(self._partial)

    def feed(self, data: Any) -> list[_Frame]:
        """Return every frame the bytes-like *data* completes, in order.

        On bad bytes raise ``ProtocolError`` whose ``frames`` holds the frames
        completed earlier in this call.
        """
        if self._failure is not None:
            code, message = self._failure
            raise ProtocolError(code, f"the decoder already failed ({message}); open a new connection")
        buf = data if type(data) is bytes else memoryview(data).tobytes()
        frames: list[_Frame] = []
        try:
            pos = self._finish_partial(buf, frames) if self._partial else 0
            self._decode_whole_frames(buf, pos, frames)
        except ProtocolError as exc:
            self._failure = (exc.code, exc.message)
            self._partial = bytearray()
            self._body_start = self._frame_size = 0
            exc.frames = frames
            raise
        return frames

    def _finish_partial(self, buf: bytes, frames: list[_Frame]) -> int:
        """Complete the buffered frame with bytes from *buf*; return where *buf*'s unused bytes start."""
        partial = self._partial
        pos = 0
        if not self._frame_size:
            # Header (and part of the length) buffered: take length bytes one
            # at a time, so no body byte is buffered before the length is judged.
            while True:
                prefix = _parse_prefix(partial, 0, len(partial), self.max_frame_size)
                if prefix is not None:
                    self._body_start, body_length = prefix
                    self._frame_size = self._body_start + body_length
                    break
                if pos == len(buf):
                    return pos
                partial.append(buf[pos])
                pos += 1
        take = min(self._frame_size - len(partial), len(buf) - pos)
        partial += buf[pos:pos + take]
        pos += take
        if len(partial) == self._frame_size:
            frame_bytes = bytes(partial)
            body_start = self._body_start
            self._partial = bytearray()
            self._body_start = self._frame_size = 0
            # The header and length were checked when they arrived; decode the body.
            header = frame_bytes[0]
            frames.append(_BODY_DECODERS[header >> 4](header & 0x0F, frame_bytes, body_start, len(frame_bytes)))
        return pos

    def _decode_whole_frames(self, buf: bytes, pos: int, frames: list[_Frame]) -> None:
        """Decode the frames in ``buf[pos:]``; buffer a trailing partial frame."""
        end = len(buf)
        max_frame_size = self.max_frame_size
        decoders = _BODY_DECODERS
        while pos < end:
            prefix = _parse_prefix(buf, pos, end, max_frame_size)
            if prefix is None:                     # header and part of the length
                self._partial = bytearray(buf[pos:end])
                return
            body_start, body_length = prefix
            body_end = body_start + body_length
            if body_end > end:                     # body incomplete: keep it for later
                self._partial = bytearray(buf[pos:end])
                self._body_start = body_start - pos
                self._frame_size = body_end - pos
                return
            header = buf[pos]
            frames.append(decoders[header >> 4](header & 0x0F, buf, body_start, body_end))
            pos = body_end

