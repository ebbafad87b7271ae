"""A minimal MQTT 3.1.1 packet codec, used only as a comparison point.

pushcore's benchmarks and demo compare its frames with MQTT 3.1.1
(OASIS Standard, 29 October 2014) on the same notification. This module
implements just the packets that comparison needs — PUBLISH, PUBACK,
PINGREQ and PINGRESP — faithfully to the spec, including the checks a
receiver must make, so that the comparison is with a real MQTT codec and
not a strawman. It is not an MQTT client or broker.

Spec sections referred to below:
  2.2    fixed header: packet type (bits 7-4) and flags (bits 3-0)
  2.2.2  flags: PUBACK/PINGREQ/PINGRESP must be 0000; PUBLISH is DUP, QoS, RETAIN
  2.2.3  remaining length: 1 to 4 bytes, 7 bits each, low group first, max 268,435,455
  1.5.3  UTF-8 encoded string: 2-byte big-endian length, then UTF-8 without U+0000
  2.3.1  packet identifier: 2 bytes, non-zero, in PUBLISH only when QoS > 0
  3.3    PUBLISH: topic name (no wildcards, at least one character), [packet id], payload
  3.4    PUBACK: packet identifier
  3.12 / 3.13  PINGREQ `C0 00`, PINGRESP `D0 00`
"""
from __future__ import annotations

import struct
from typing import NamedTuple

__all__ = [
    "MalformedPacket", "Publish", "Puback", "PingReq", "PingResp",
    "PUBLISH", "PUBACK", "PINGREQ", "PINGRESP", "MAX_REMAINING_LENGTH",
    "PINGREQ_BYTES", "PINGRESP_BYTES",
    "encode_publish", "encode_puback", "encode_pingreq", "encode_pingresp",
    "decode_packet",
]

# Control packet types (spec table 2.1); only the ones this module speaks.
PUBLISH = 3
PUBACK = 4
PINGREQ = 12
PINGRESP = 13

MAX_REMAINING_LENGTH = 268_435_455  # 0xFF 0xFF 0xFF 0x7F (2.2.3)
PINGREQ_BYTES = b"\xc0\x00"
PINGRESP_BYTES = b"\xd0\x00"

_U16 = struct.Struct(">H")


class MalformedPacket(ValueError):
    """Bytes that are not a valid MQTT 3.1.1 packet of the kinds this module speaks."""


class Publish(NamedTuple):
    """A decoded PUBLISH (3.3). ``packet_id`` is 0 for QoS 0, where it is absent."""

    topic: str
    payload: bytes
    qos: int
    packet_id: int
    dup: bool
    retain: bool


class Puback(NamedTuple):
    """A decoded PUBACK (3.4): acknowledges one QoS 1 PUBLISH."""

    packet_id: int


class PingReq(NamedTuple):
    """A decoded PINGREQ (3.12)."""


class PingResp(NamedTuple):
    """A decoded PINGRESP (3.13)."""


def _remaining_length(n: int) -> bytes:
    """Encode the remaining length *n* (2.2.3)."""
    if n < 128:  # the common case: one byte, no loop
        return bytes((n,))
    if n > MAX_REMAINING_LENGTH:
        raise ValueError(f"MQTT remaining length {n} exceeds {MAX_REMAINING_LENGTH}")
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _check_packet_id(packet_id: int) -> None:
    if not 0 < packet_id <= 0xFFFF:
        raise ValueError(f"MQTT packet identifier must be 1..65535, got {packet_id}")


def encode_publish(
    topic: str,
    payload: bytes,
    packet_id: int = 0,
    qos: int = 1,
    dup: bool = False,
    retain: bool = False,
) -> bytes:
    """Encode a PUBLISH packet (3.3).

    *packet_id* is required (1..65535) for QoS 1 and 2 and must be 0 for QoS 0.
    """
    if qos not in (0, 1, 2):
        raise ValueError(f"MQTT QoS must be 0, 1 or 2, got {qos}")
    if not topic or "+" in topic or "#" in topic or "\x00" in topic:
        raise ValueError(f"MQTT topic name {topic!r} is empty or holds a wildcard or U+0000")
    if dup and qos == 0:
        raise ValueError("MQTT DUP must be 0 for QoS 0 messages (3.3.1.1)")
    topic_bytes = topic.encode("utf-8")
    if len(topic_bytes) > 0xFFFF:
        raise ValueError("MQTT topic name is over 65535 bytes")
    header = 0x30 | (dup << 3) | (qos << 1) | retain
    if qos:
        _check_packet_id(packet_id)
        variable = _U16.pack(len(topic_bytes)) + topic_bytes + _U16.pack(packet_id)
    else:
        if packet_id:
            raise ValueError("MQTT QoS 0 PUBLISH has no packet identifier")
        variable = _U16.pack(len(topic_bytes)) + topic_bytes
    return (
        bytes((header,))
        + _remaining_length(len(variable) + len(payload))
        + variable
        + payload
    )


def encode_puback(packet_id: int) -> bytes:
    """Encode a PUBACK packet (3.4)."""
    _check_packet_id(packet_id)
    return b"\x40\x02" + _U16.pack(packet_id)


def encode_pingreq() -> bytes:
    """Encode a PINGREQ packet (3.12): always ``C0 00``."""
    return PINGREQ_BYTES


def encode_pingresp() -> bytes:
    """Encode a PINGRESP packet (3.13): always ``D0 00``."""
    return PINGRESP_BYTES


def _decode_remaining_length(data: bytes, n: int) -> tuple[int, int]:
    """Return (remaining length, index after it); the length starts at data[1]."""
    value = 0
    shift = 0
    pos = 1
    while True:
        if pos >= n:
            raise MalformedPacket("truncated remaining length")
        if pos > 4:
            raise MalformedPacket("remaining length longer than 4 bytes")
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            return value, pos
        shift += 7


def decode_packet(data: bytes) -> Publish | Puback | PingReq | PingResp:
    """Decode exactly one whole packet from *data* (any bytes-like object).

    Raises :class:`MalformedPacket` for a truncated packet, bytes after it,
    reserved flag bits, QoS 3, an invalid topic name, a zero packet
    identifier, or a packet type this module does not speak.
    """
    data = bytes(data)
    n = len(data)
    if n < 2:
        raise MalformedPacket("truncated fixed header")
    header = data[0]
    if data[1] < 0x80:  # one-byte remaining length: the common case
        length = data[1]
        pos = 2
    else:
        length, pos = _decode_remaining_length(data, n)
    end = pos + length
    if end > n:
        raise MalformedPacket(f"truncated packet: {length} bytes announced, {n - pos} present")
    if end < n:
        raise MalformedPacket(f"{n - end} bytes after the packet")
    kind = header >> 4
    flags = header & 0x0F

    if kind == PUBLISH:
        qos = (flags >> 1) & 0x03
        if qos == 3:
            raise MalformedPacket("PUBLISH with QoS 3")
        dup = bool(flags & 0x08)
        if dup and qos == 0:
            raise MalformedPacket("PUBLISH with DUP set at QoS 0")
        if end - pos < 2:
            raise MalformedPacket("truncated topic name length")
        topic_len = (data[pos] << 8) | data[pos + 1]
        pos += 2
        if pos + topic_len > end:
            raise MalformedPacket("truncated topic name")
        try:
            topic = data[pos:pos + topic_len].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedPacket(f"topic name is not UTF-8: {exc}") from None
        if not topic or "+" in topic or "#" in topic or "\x00" in topic:
            raise MalformedPacket(f"invalid topic name {topic!r}")
        pos += topic_len
        packet_id = 0
        if qos:
            if end - pos < 2:
                raise MalformedPacket("truncated packet identifier")
            packet_id = (data[pos] << 8) | data[pos + 1]
            if not packet_id:
                raise MalformedPacket("packet identifier 0")
            pos += 2
        return Publish(topic, data[pos:end], qos, packet_id, dup, bool(flags & 0x01))

    if kind == PUBACK:
        if flags:
            raise MalformedPacket("PUBACK with reserved flags set")
        if length != 2:
            raise MalformedPacket(f"PUBACK remaining length {length}, expected 2")
        packet_id = (data[pos] << 8) | data[pos + 1]
        if not packet_id:
            raise MalformedPacket("packet identifier 0")
        return Puback(packet_id)

    if kind in (PINGREQ, PINGRESP):
        if flags:
            raise MalformedPacket("PINGREQ/PINGRESP with reserved flags set")
        if length:
            raise MalformedPacket(f"PINGREQ/PINGRESP remaining length {length}, expected 0")
        return PingReq() if kind == PINGREQ else PingResp()

    raise MalformedPacket(f"packet type {kind} is not handled by this comparison codec")
