"""The C-level connection loop on its own (docs/LOOP.md).

Run:  python examples/loop_broadcast.py
One Loop listens on 127.0.0.1, opens 50 outbound connections to itself,
broadcasts three PUSH frames to every accepted connection with one
send_many() each, and prints what the loop counted. PINGs are answered in C.
"""
from pushcore import encode_push
from pushcore.loop import Loop, named_stats, run_until

N = 50


def main() -> None:
    loop = Loop()
    accepted: list[int] = []
    received: dict[int, int] = {}

    def on_open(batch):
        for cid, listener in batch:
            if listener >= 0:
                accepted.append(cid)

    def on_frames(batch):           # one call per loop turn, a list of (cid, frame)
        for cid, _frame in batch:
            received[cid] = received.get(cid, 0) + 1

    loop.set_handlers(on_open=on_open, on_frames=on_frames)
    lid = loop.listen("127.0.0.1", 0)
    host, port = loop.listen_address(lid)
    clients = [loop.connect(host, port) for _ in range(N)]
    run_until(loop, lambda: len(accepted) == N)

    for seq in (1, 2, 3):           # encoded once, queued to every target in one C call
        loop.send_many(accepted, encode_push(seq, 1000 + seq, b"hello", topic="demo"))
    run_until(loop, lambda: sum(received.values()) == 3 * N)

    stats = named_stats(loop)
    print(f"{N} connections, {sum(received.values())} frames delivered")
    print(f"frames out {stats['frames_out']}, bytes out {stats['bytes_out']}, turns {stats['turns']}")
    for cid in clients + accepted:
        loop.close(cid)
    run_until(loop, lambda: loop.stats()["open"] == 0)
    print("pool after close:", loop.pool_stats())
    loop.close()


if __name__ == "__main__":
    main()
