"""Encode and decode pushcore frames (docs/PROTOCOL.md, docs/CODEC.md).

Run:  python examples/codec_frames.py
Shows the bytes of a PUSH and a heartbeat, a streaming decode of bytes that
arrive in awkward pieces, and the typed error a malformed frame raises.
"""
import pushcore

PAYLOAD = b'{"title":"Flash sale","body":"50% off today only","url":"app://sale/42"}'


def main() -> None:
    print(f"codec backend: {pushcore.BACKEND}")
    push = pushcore.encode_push(42, 0x8F3A6B2C1D4E5F60, PAYLOAD, pushcore.PRIORITY_HIGH,
                                1_800_000_000, "", "news")
    ping = pushcore.Ping().encode()
    print(f"PUSH: {len(push)} bytes  {push[:16].hex(' ')} ...")
    print(f"PING: {len(ping)} bytes  {ping.hex(' ')}")

    # A stream cut at arbitrary points: the decoder keeps the partial frame.
    stream = push + ping + pushcore.Ack(seq=42).encode()
    decoder = pushcore.Decoder()
    for start in range(0, len(stream), 7):
        for frame in decoder.feed(stream[start:start + 7]):
            print("decoded:", frame)
    assert decoder.pending == 0

    # Bad bytes raise a ProtocolError with a reason code, never crash.
    try:
        pushcore.decode(b"\x05\x00")          # type 0 is not a frame type
    except pushcore.ProtocolError as exc:
        print(f"refused: {exc.code.name} ({int(exc.code)}): {exc.message}")


if __name__ == "__main__":
    main()
