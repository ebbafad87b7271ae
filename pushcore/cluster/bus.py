"""The messages nodes send each other over Redis pub/sub: forwarded pushes, kicks, broadcasts.

Each node listens on its own channel (``<prefix>:{n:<node>}:bus``, sharded
pub/sub on a Redis Cluster) and on one broadcast channel. A message is bytes:
one type byte, then its body.

* ``F`` **forward**: messages already stored (each with its device's seq) for
  devices this node holds. Records: a PUSH frame body (``pushcore.codec``:
  seq, message id, payload, priority, expiry, collapse key, topic; the
  readable definition is docs/PROTOCOL.md) followed by the devices it is for,
  each with its own seq, so a publish to a topic carries the payload once per
  node, not once per device.
* ``K`` **kick**: a newer connection of a device took over on another node;
  close the one named (device id and cid) with GOAWAY ``REPLACED``.
Each parsed message has a ``kind`` (``"forward"``, ``"kick"``, ``"broadcast"``):
the gateway dispatches on it without importing this room above it.

* ``W`` **wake**: devices of this node that may have stored messages up to a
  seq that were never sent to them (an idempotent retry answered from the
  store, whose first attempt's node stopped before it delivered): each
  connection catches up from the store if it has not sent that seq yet.
* ``B`` **broadcast**: an ephemeral (unstored, seq 0) message for every
  device connected to any node.

Pub/sub is at most once: a lost forward is a delay, not a loss, because the
message is in the store and the device gets it on its next catch-up (a
reconnect, a FETCH, a later push, or the resync a node makes after it
reconnects to Redis).
"""
from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from ..codec import frames as _frames
from ..store import StoredMessage

__all__ = ["Forward", "Kick", "Wake", "Broadcast", "pack_forward", "pack_kick", "pack_wake", "pack_broadcast",
           "unpack",
           "BusMessage", "BusError"]

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_SEQ = struct.Struct("<Q")


class BusError(ValueError):
    """A bus message that does not parse (another version, or not pushcore's)."""


@dataclass(frozen=True, slots=True)
class Forward:
    """Stored messages for devices of the receiving node, in groups: one message's fields
    (*first*) and the ``(device_id, seq)`` pairs it was stored for."""

    groups: list[tuple[StoredMessage, list[tuple[str, int]]]]
    kind: ClassVar[str] = "forward"


@dataclass(frozen=True, slots=True)
class Kick:
    """Close *device_id*'s connection *cid* on the receiving node: a newer one took over elsewhere."""

    device_id: str
    cid: int
    kind: ClassVar[str] = "kick"


@dataclass(frozen=True, slots=True)
class Wake:
    """Catch these ``(device_id, seq)`` up from the store unless their connection sent *seq* already."""

    targets: list[tuple[str, int]]
    kind: ClassVar[str] = "wake"


@dataclass(frozen=True, slots=True)
class Broadcast:
    """An ephemeral message for every connected device (seq 0, not stored), sent by node *origin*."""

    origin: str
    message: StoredMessage
    kind: ClassVar[str] = "broadcast"


BusMessage = Forward | Kick | Wake | Broadcast


def _push_body(m: StoredMessage) -> bytes:
    return bytes(_frames.Push(m.seq, m.message_id, m.payload, m.priority, m.expiry, m.collapse_key, m.topic).encode())


def _text(s: str) -> bytes:
    b = s.encode()
    return _U16.pack(len(b)) + b


def pack_forward(groups: Iterable[tuple[StoredMessage, Sequence[tuple[str, int]]]]) -> bytes:
    """``F``: each group is one message's fields and the ``(device_id, seq)`` pairs it was stored for."""
    out = [b"F"]
    for message, targets in groups:
        body = _push_body(message)
        out.append(_U32.pack(len(body)))
        out.append(body)
        out.append(_U32.pack(len(targets)))
        for device_id, seq in targets:
            out.append(_text(device_id))
            out.append(_SEQ.pack(seq))
    return b"".join(out)


def pack_kick(device_id: str, cid: int) -> bytes:
    return b"K" + _text(device_id) + _SEQ.pack(cid)


def pack_wake(targets: Sequence[tuple[str, int]]) -> bytes:
    return b"W" + b"".join(_text(d) + _SEQ.pack(seq) for d, seq in targets)


def pack_broadcast(origin: str, message: StoredMessage) -> bytes:
    return b"B" + _text(origin) + _push_body(message)


class _Reader:
    __slots__ = ("data", "at")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 1

    def take(self, n: int) -> bytes:
        end = self.at + n
        if end > len(self.data):
            raise BusError("truncated bus message")
        chunk = self.data[self.at:end]
        self.at = end
        return chunk

    def u16(self) -> int:
        return int(_U16.unpack(self.take(2))[0])

    def u32(self) -> int:
        return int(_U32.unpack(self.take(4))[0])

    def u64(self) -> int:
        return int(_SEQ.unpack(self.take(8))[0])

    def text(self) -> str:
        try:
            return self.take(self.u16()).decode()
        except UnicodeDecodeError as exc:
            raise BusError(f"bad device id in bus message: {exc}") from None

    def done(self) -> bool:
        return self.at == len(self.data)


def _message(frame_bytes: bytes) -> StoredMessage:
    try:
        frame = _frames.decode(frame_bytes)
    except Exception as exc:  # ProtocolError and friends: not ours
        raise BusError(f"bad PUSH in bus message: {exc}") from None
    if not isinstance(frame, _frames.Push):
        raise BusError("a bus record is not a PUSH")
    return StoredMessage(frame.seq, frame.message_id, bytes(frame.payload), frame.priority, frame.expiry,
                         frame.collapse_key, frame.topic, 0.0)


def unpack(data: bytes) -> BusMessage:
    """Parse one bus message; :class:`BusError` when it is not one."""
    if not data:
        raise BusError("empty bus message")
    kind = data[:1]
    r = _Reader(data)
    if kind == b"F":
        groups: list[tuple[StoredMessage, list[tuple[str, int]]]] = []
        while not r.done():
            first = _message(r.take(r.u32()))
            targets = []
            for _ in range(r.u32()):
                device_id = r.text()
                targets.append((device_id, r.u64()))
            groups.append((first, targets))
        return Forward(groups)
    if kind == b"K":
        device_id = r.text()
        cid = r.u64()
        if not r.done():
            raise BusError("trailing bytes in a kick")
        return Kick(device_id, cid)
    if kind == b"W":
        targets = []
        while not r.done():
            device_id = r.text()
            targets.append((device_id, r.u64()))
        return Wake(targets)
    if kind == b"B":
        origin = r.text()
        return Broadcast(origin, _message(r.take(len(data) - r.at)))
    raise BusError(f"unknown bus message type {kind!r}")

