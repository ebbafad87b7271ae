"""The bytes the connection-loop benchmarks put on the wire.

Every implementation (pushcore, asyncio, uvloop, plain C) sends the same
frames: valid pushcore PUSH frames of exactly ``FRAME_SIZE`` bytes, built with
pushcore's own ``encode_push`` (the payload length is chosen so the whole
frame is 105 bytes).  The counting client only counts bytes, so a fixed frame
size turns bytes into deliveries exactly.
"""
from __future__ import annotations

import pushcore

FRAME_SIZE = 105
PING = b"\x30\x00"
PONG = b"\x40\x00"
HEARTBEAT_SECONDS = 600   # long enough that no idle timeout fires during a run


def push_frame(index: int) -> bytes:
    """PUSH number *index* (seq = index + 1), padded to exactly FRAME_SIZE bytes."""
    seq = index + 1
    message_id = 0x5EED0000 + seq
    # the payload is `rest`: grow it until the frame is exactly FRAME_SIZE
    bare = len(pushcore.encode_push(seq, message_id, b""))
    payload_len = FRAME_SIZE - bare
    while True:
        payload = bytes((seq + i) & 0xFF for i in range(payload_len))
        frame = pushcore.encode_push(seq, message_id, payload)
        if len(frame) == FRAME_SIZE:
            return frame
        # the body-length varint grew a byte: one byte less of payload
        payload_len -= len(frame) - FRAME_SIZE


def push_frames(count: int) -> list[bytes]:
    """The broadcast: *count* distinct PUSH frames of FRAME_SIZE bytes each."""
    frames = [push_frame(i) for i in range(count)]
    # check with the decoder, so a codec bug cannot make the numbers lie
    for i in (0, count - 1):
        decoded = pushcore.decode(frames[i])
        assert decoded.seq == i + 1 and len(frames[i]) == FRAME_SIZE, decoded
    return frames


def hello_frame(device_number: int = 0) -> bytes:
    """A HELLO as a device would send it (the counting client sends the same one on every connection)."""
    return pushcore.Hello(
        versions=(pushcore.PROTOCOL_VERSION,),
        device_id=f"bench-device-{device_number:06d}",
        token=b"bench-token",
        last_seq=0,
        heartbeat=HEARTBEAT_SECONDS,
    ).encode()


def welcome_frame() -> bytes:
    """The WELCOME the asyncio/uvloop servers answer a HELLO with."""
    return pushcore.Welcome(
        version=pushcore.PROTOCOL_VERSION,
        heartbeat_min=30,
        heartbeat_max=HEARTBEAT_SECONDS,
        server_time=1_700_000_000_000,
    ).encode()


if __name__ == "__main__":
    frames = push_frames(2000)
    print(f"backend={pushcore.BACKEND} frames={len(frames)} size={FRAME_SIZE}")
    print("first:", frames[0].hex())
    print("hello:", hello_frame().hex(), "welcome:", welcome_frame().hex())
