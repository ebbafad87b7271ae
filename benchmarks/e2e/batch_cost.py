"""Loop-thread cost of one admin batch: 100 pushes one by one vs one ``push_batch``.

    python benchmarks/e2e/batch_cost.py

What ``POST /v1/push/batch`` costs the gateway's loop thread besides HTTP:
storing 100 messages for random devices out of 1,000 online ones and the
delivery pass (encoding the PUSHes). ``Delivery.push`` per message (what the
endpoint did before ``Server.push_batch``: one store transaction each) against
one ``Delivery.push_batch`` (one transaction). The transport is a stand-in
that keeps the per-connection tags and drops the bytes, so this is store +
delivery only; the sockets are measured end to end by run_e2e.py. The devices
ACK after every batch, as the e2e devices do, so the store stays small.
"""
from __future__ import annotations

import os
import random
import tempfile
import time

from pushcore._frame import encode_push
from pushcore.gateway.delivery import Delivery
from pushcore.store import MemoryStore, NewMessage, SQLiteStore

DEVICES = 1000
BATCH = 100
ROUNDS = 200
PAYLOAD = b'{"t": 1712345678.123456, "n": 12345, "pad": "................"}'


class SentSeqOnly:
    """The loop methods Delivery calls: sent seqs kept, frames encoded, bytes dropped."""

    def __init__(self) -> None:
        self.sent: dict[int, int] = {}
        self.labels: dict[int, object] = {}

    def send(self, cid, data, frames=1):
        return True

    def send_push(self, cid, seq, message_id, payload, priority=1, expiry=0, collapse_key="", topic=""):
        encode_push(seq, message_id, payload, priority, expiry, collapse_key, topic)
        self.sent[cid] = max(self.sent.get(cid, 0), seq)
        return True

    def sent_seq(self, cid):
        return self.sent[cid]

    def set_label(self, cid, label):
        self.labels[cid] = label

    def label(self, cid):
        return self.labels.get(cid)

    def set_sent_seq(self, cid, value):
        self.sent[cid] = value

    def watch_activity(self, cid):
        pass


def run(store, batched: bool) -> float:
    """Median milliseconds per batch of BATCH messages."""
    delivery = Delivery(store, SentSeqOnly())
    for i in range(DEVICES):
        delivery.attach(i + 1, f"dev{i}", 0)
    rnd = random.Random(7)
    times = []
    for _ in range(ROUNDS):
        batch = [rnd.randrange(DEVICES) for _ in range(BATCH)]
        t0 = time.perf_counter()
        if batched:
            next_id = delivery.message_ids.next
            delivery.push_batch([NewMessage(f"dev{i}", next_id(), PAYLOAD, 1) for i in batch])
        else:
            for i in batch:
                delivery.push(f"dev{i}", PAYLOAD)
        times.append(time.perf_counter() - t0)
        store.ack_many([(f"dev{i}", store.last_seq(f"dev{i}")) for i in set(batch)])
    times.sort()
    return times[len(times) // 2] * 1000


def main() -> None:
    print(f"| store | {BATCH} × push, ms | push_batch({BATCH}), ms | µs per message (push → batch) |")
    print("|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("sqlite", "memory"):
            results = []
            for batched in (False, True):
                store = SQLiteStore(os.path.join(tmp, f"{batched}.db")) if name == "sqlite" else MemoryStore()
                results.append(run(store, batched))
                store.close()
            one, many = results
            print(f"| {name} | {one:.2f} | {many:.2f} | {one * 1000 / BATCH:.1f} → {many * 1000 / BATCH:.1f} |")


if __name__ == "__main__":
    main()
