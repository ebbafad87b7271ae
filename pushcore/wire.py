"""Wire constants of docs/PROTOCOL.md: the one Python source.

The C level reads the same numbers from ``ext/pc_wire.h``; one test
(``tests/test_wire.py``) holds the two equal. Every Python module that
needs a frame type, a flag bit, a reason code or a limit imports it from
here (the pure-Python reference codec, the store, the gateway, the device).

This module is a leaf: it imports nothing from pushcore, so the compiled
extensions may import it (as ``pushcore.errors`` does).
"""
from __future__ import annotations

import enum

__all__ = [
    "PROTOCOL_VERSION", "DEFAULT_MAX_FRAME_SIZE", "PRIORITY_LOW", "PRIORITY_HIGH",
    "FrameType", "Reason", "reason_name", "PING_BYTES", "PONG_BYTES", "FLAGS",
    "PUSH_HIGH_PRIORITY", "PUSH_HAS_EXPIRY", "PUSH_HAS_COLLAPSE_KEY", "PUSH_HAS_TOPIC",
    "UPSTREAM_HAS_TOPIC", "GOAWAY_HAS_SERVERS", "MAX_VERSIONS", "MAX_PORT",
    "MAX_BODY_LENGTH", "LENGTH_VARINT_MAX_BYTES", "FIELD_VARINT_MAX_BYTES",
    "MAX_DEVICE_ID_BYTES", "MAX_TOPIC_BYTES", "MAX_COLLAPSE_KEY_BYTES", "MAX_PAYLOAD_BYTES",
    "TOPIC_CHARACTERS", "topic_problem",
    "HELLO", "WELCOME", "PING", "PONG", "PUSH", "NOTIFY", "FETCH", "ACK", "SUBSCRIBE",
    "UNSUBSCRIBE", "UPSTREAM", "UPSTREAM_ACK", "REDIRECT", "GOAWAY", "ERROR",
]

#: The protocol version this code speaks (negotiated in HELLO / WELCOME).
PROTOCOL_VERSION = 1
#: Largest frame (header + length + body) a decoder accepts by default.
DEFAULT_MAX_FRAME_SIZE = 65536
#: PUSH priority values (PUSH flag bit 0).
PRIORITY_LOW = 0
PRIORITY_HIGH = 1


class FrameType(enum.IntEnum):
    """Frame type numbers: the header byte is ``(type << 4) | flags`` (§1)."""

    HELLO = 1
    WELCOME = 2
    PING = 3
    PONG = 4
    PUSH = 5
    NOTIFY = 6
    FETCH = 7
    ACK = 8
    SUBSCRIBE = 9
    UNSUBSCRIBE = 10
    UPSTREAM = 11
    UPSTREAM_ACK = 12
    REDIRECT = 13
    GOAWAY = 14
    ERROR = 15


# Plain ints under the short names, for hot paths and the codecs' API.
HELLO, WELCOME, PING, PONG, PUSH = 1, 2, 3, 4, 5
NOTIFY, FETCH, ACK, SUBSCRIBE, UNSUBSCRIBE = 6, 7, 8, 9, 10
UPSTREAM, UPSTREAM_ACK, REDIRECT, GOAWAY, ERROR = 11, 12, 13, 14, 15


class Reason(enum.IntEnum):
    """Why a frame was refused or a connection closed (docs/PROTOCOL.md §4)."""

    NORMAL = 0
    # codec errors (raised by the decoders as ProtocolError)
    FRAME_TOO_LARGE = 1
    UNKNOWN_TYPE = 2
    TRUNCATED = 3
    VARINT_OVERRUN = 4
    INVALID_UTF8 = 5
    TRAILING_BYTES = 6
    BAD_FLAGS = 7
    INVALID_VALUE = 8
    # session and connection reasons (ERROR code / GOAWAY reason / close reason)
    NOT_AUTHENTICATED = 16
    AUTH_FAILED = 17
    TOKEN_EXPIRED = 18
    UNSUPPORTED_VERSION = 19
    AUTH_TIMEOUT = 20
    IDLE_TIMEOUT = 21
    REPLACED = 22
    SLOW_CONSUMER = 23
    SHUTTING_DOWN = 24
    OVERLOADED = 25
    PEER_RESET = 26
    INTERNAL_ERROR = 27
    CONNECT_FAILED = 28
    PEER_CLOSED = 29
    LAST_SEQ_AHEAD = 30


def reason_name(code: int) -> str:
    """``Reason`` name for *code*, or ``"UNKNOWN_<n>"`` for a code this version lacks."""
    try:
        return Reason(code).name
    except ValueError:
        return f"UNKNOWN_{code}"


#: A heartbeat and its answer: a header and a zero length.
PING_BYTES = bytes((PING << 4, 0))
PONG_BYTES = bytes((PONG << 4, 0))

# Flag bits (low nibble of the header), §3 "Flags".
PUSH_HIGH_PRIORITY = 0x1
PUSH_HAS_EXPIRY = 0x2
PUSH_HAS_COLLAPSE_KEY = 0x4
PUSH_HAS_TOPIC = 0x8
UPSTREAM_HAS_TOPIC = 0x8
GOAWAY_HAS_SERVERS = 0x1

#: The flag bits each type defines; any other bit set is BAD_FLAGS.
FLAGS = {
    PUSH: PUSH_HIGH_PRIORITY | PUSH_HAS_EXPIRY | PUSH_HAS_COLLAPSE_KEY | PUSH_HAS_TOPIC,
    UPSTREAM: UPSTREAM_HAS_TOPIC,
    GOAWAY: GOAWAY_HAS_SERVERS,
}

MAX_VERSIONS = 8                  # a HELLO lists 1 to 8 versions
MAX_PORT = 65535
MAX_BODY_LENGTH = (1 << 32) - 1   # largest body an encoder writes (docs/CODEC.md)
LENGTH_VARINT_MAX_BYTES = 5       # the body length varint (§1)
FIELD_VARINT_MAX_BYTES = 10       # every other uvarint (§2)


# ---- message field limits (docs/SECURITY.md "Messages") ------------------------------------
# A stored message must always fit one PUSH frame under DEFAULT_MAX_FRAME_SIZE,
# or the device's decoder refuses it (FRAME_TOO_LARGE), reconnects, and is sent
# the same message again forever. A PUSH body is at most 9 (seq) + 8 (message
# id) + 4 (expiry) + 2 + 256 (collapse key) + 2 + 256 (topic) = 537 bytes
# beside its payload, so 64,000 payload bytes leave room to spare. The device
# id travels in HELLO, which the loop caps before authentication.

#: Longest device id, in UTF-8 bytes.
MAX_DEVICE_ID_BYTES = 256
#: Longest topic name, in bytes (topics are ASCII, see TOPIC_CHARACTERS).
MAX_TOPIC_BYTES = 256
#: Longest collapse key, in UTF-8 bytes.
MAX_COLLAPSE_KEY_BYTES = 256
#: Largest payload of one message.
MAX_PAYLOAD_BYTES = 64_000
#: The characters a topic name may use (besides being 1..MAX_TOPIC_BYTES long).
TOPIC_CHARACTERS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-:/@+=~#"
)


def topic_problem(topic: str) -> str | None:
    """Why *topic* is not a valid topic name, or None when it is.

    The rule: 1 to :data:`MAX_TOPIC_BYTES` characters, each an ASCII letter,
    digit or one of ``. _ - : / @ + = ~ #``. Keeping topics to a small ASCII
    alphabet means they never need escaping in logs, metrics labels, Redis
    keys or URLs, and cannot hide look-alike Unicode.
    """
    if not topic:
        return "a topic must not be empty"
    if len(topic) > MAX_TOPIC_BYTES:
        return f"topic is {len(topic)} characters, the limit is {MAX_TOPIC_BYTES}"
    if not TOPIC_CHARACTERS.issuperset(topic):
        bad = next(c for c in topic if c not in TOPIC_CHARACTERS)
        return (
            f"topic {topic[:40]!r} has the character {bad!r}; topics use ASCII letters, "
            "digits and . _ - : / @ + = ~ #"
        )
    return None
