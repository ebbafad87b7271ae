"""Durable fan-out to connected devices: N ``send_push`` calls vs one ``send_pushes`` call.

One Loop, CONNS connections to itself over 127.0.0.1 (the accepted sides are
the "devices"; the connecting sides read and drop what arrives). Two levels:

* the loop call alone: queue one PUSH (each its own seq) on every connection,
  as a Python loop of ``send_push`` or as one ``send_pushes``;
* the gateway's delivery pass after the store call of a publish
  (``Delivery._deliver_fanout``, what ``push_many`` runs) against the per-device
  pass it replaces (``Delivery._deliver``), memory store, every device caught up.

Each round queues, then flushes and drains the output (not timed). Prints the
median µs per delivery of ROUNDS rounds and the ratio.

    python benchmarks/loop/fanout_send_pushes.py [--conns 5000] [--rounds 20]
"""
from __future__ import annotations

import argparse
import statistics
import time

from pushcore._loop import Loop
from pushcore.gateway.delivery import Delivery
from pushcore.loop import run_until
from pushcore.store import MemoryStore

PAYLOAD = b"x" * 100


def connected_loop(conns: int) -> tuple[Loop, list[int], list[int]]:
    loop = Loop(connect_rate=0, source_connect_rate=0)
    accepted: list[int] = []
    outbound: list[int] = []
    loop.set_handlers(on_open=lambda b: [(accepted if lid >= 0 else outbound).append(c) for c, lid in b])
    lid = loop.listen("127.0.0.1", 0, backlog=conns)
    port = loop.listen_address(lid)[1]
    for i in range(conns):
        loop.connect("127.0.0.1", port)
        if i % 500 == 499:
            run_until(loop, lambda want=i - 100: len(accepted) >= want, timeout=30)
    assert run_until(loop, lambda: len(accepted) == conns and len(outbound) == conns, timeout=60)
    return loop, accepted, outbound


def drain(loop: Loop) -> None:
    loop.flush()
    for _ in range(50):
        loop.run_once(0)
        if not loop.stats()["send_queue_bytes"]:
            break


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--conns", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    loop, cids, _outbound = connected_loop(args.conns)
    n = len(cids)
    try:
        times: dict[str, list[float]] = {k: [] for k in ("send_push", "send_pushes", "_deliver", "_deliver_fanout")}
        seq = 0
        for _ in range(args.rounds):
            seq += 1
            seqs = [seq] * n
            t = time.perf_counter()
            for cid in cids:
                loop.send_push(cid, seq, 7, PAYLOAD)
            times["send_push"].append(time.perf_counter() - t)
            drain(loop)
            seq += 1
            t = time.perf_counter()
            loop.send_pushes(cids, [seq] * n, 7, PAYLOAD)
            times["send_pushes"].append(time.perf_counter() - t)
            drain(loop)
            del seqs
        # the delivery pass of a publish, memory store, every device caught up
        store = MemoryStore()
        delivery = Delivery(store, loop)
        devices = [f"dev-{i:06d}" for i in range(n)]
        for device, cid in zip(devices, cids):
            delivery.attach(cid, device, 0)
        for _ in range(args.rounds):
            for name in ("_deliver", "_deliver_fanout"):
                stored = store.append_many(devices, message_id=delivery.message_ids.next(), payload=PAYLOAD,
                                           priority=1, expiry=0, collapse_key="", topic="news")
                t = time.perf_counter()
                getattr(delivery, name)(devices, stored)
                times[name].append(time.perf_counter() - t)
                drain(loop)
                store.ack_many([(d, m.seq) for d, m in zip(devices, stored)])
        print(f"one PUSH to each of {n:,} connected devices, {len(PAYLOAD)}-byte payload, "
              f"median of {args.rounds} rounds")
        print(f"{'what':<46} {'µs/delivery':>12} {'deliveries/s':>14}")
        med = {k: statistics.median(v) / n for k, v in times.items()}
        rows = [("loop: N x send_push (Python loop)", "send_push"),
                ("loop: one send_pushes", "send_pushes"),
                ("delivery pass, per device (_deliver)", "_deliver"),
                ("delivery pass, one C call (_deliver_fanout)", "_deliver_fanout")]
        for label, key in rows:
            print(f"{label:<46} {med[key] * 1e6:>12.3f} {1 / med[key]:>14,.0f}")
        print(f"send_pushes vs send_push: {med['send_push'] / med['send_pushes']:.1f}x; "
              f"_deliver_fanout vs _deliver: {med['_deliver'] / med['_deliver_fanout']:.1f}x")
    finally:
        loop.close()


if __name__ == "__main__":
    main()
