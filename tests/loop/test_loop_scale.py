"""10,000 concurrent connections in one process.

The fd hard limit here is 20,000, so the clients live in a subprocess (which
uses a Loop too) and the server Loop in the test process holds all 10,000
accepted connections at once.
"""
from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

import pytest

from pushcore import Reason
from pushcore import _frame as F

N = 10_000

CLIENT = r"""
import json, resource, sys, time
from pushcore import _frame as F
from pushcore._loop import Loop

host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
loop = Loop()
opened, frames, closed = set(), {}, {}
ack = F.Ack(seq=1).encode()

def on_open(batch):
    opened.update(cid for cid, _ in batch)

def on_frames(batch):
    for cid, frame in batch:
        frames[cid] = frames.get(cid, 0) + 1
        loop.send(cid, ack)

def on_close(batch):
    closed.update(batch)

loop.set_handlers(on_open=on_open, on_frames=on_frames, on_close=on_close)
deadline = time.monotonic() + 120
started = 0
while len(opened) < n:
    # at most 500 connects in flight: stay under the listen backlog
    while started < n and started - len(opened) - len(closed) < 500:
        loop.connect(host, port)
        started += 1
    loop.run_once(0.01)
    if closed or time.monotonic() > deadline:
        print(json.dumps({"error": "connect phase", "opened": len(opened),
                          "closed": len(closed), "reasons": sorted(set(closed.values()))}))
        sys.exit(1)
print("OPEN", flush=True)
while len(closed) < n and time.monotonic() < deadline:
    loop.run_once(0.05)
reasons = {}
for r in closed.values():
    reasons[r] = reasons.get(r, 0) + 1
print(json.dumps({"opened": len(opened), "got_frame": len(frames),
                  "frames": sum(frames.values()), "closed": len(closed),
                  "reasons": reasons, "pool_in_use": loop.pool_stats()["in_use"]}), flush=True)
loop.close()
"""


@pytest.mark.slow
def test_ten_thousand_connections(make_loop):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    assert hard >= N + 1000, f"fd hard limit {hard} is too low for {N} connections"
    loop, ev = make_loop()
    lid = loop.listen("127.0.0.1", 0, backlog=4096)
    host, port = loop.listen_address(lid)
    proc = subprocess.Popen([sys.executable, "-c", CLIENT, host, str(port), str(N)],
                            stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 150

        def run_until(pred):
            while not pred():
                assert time.monotonic() < deadline, loop.stats()
                assert proc.poll() is None, proc.stdout.read()
                loop.run_once(0.05)

        run_until(lambda: len(ev.opened) == N)
        st = loop.stats()
        assert st["open"] == N and st["accepted"] == N
        assert proc.stdout.readline().strip() == "OPEN"
        cids = [cid for cid, _ in ev.opened]
        assert len(set(cids)) == N
        assert loop.pool_stats()["in_use"] == 0  # 10,000 idle connections, no buffers

        push = F.Push(seq=1, message_id=77, payload=b"p" * 80).encode()
        assert loop.send_many(cids, push) == N
        run_until(lambda: len(ev.frames) == N)  # every client answered its push
        assert sorted(cid for cid, _ in ev.frames) == sorted(cids)
        assert all(frame == F.Ack(seq=1) for _, frame in ev.frames)

        for cid in cids:
            assert loop.close(cid, Reason.SHUTTING_DOWN)
        run_until(lambda: len(ev.closed) == N)
        assert {r for _, r in ev.closed} == {Reason.SHUTTING_DOWN}
        out, _ = proc.communicate(timeout=60)
        report = json.loads(out.strip().splitlines()[-1])
        assert report == {"opened": N, "got_frame": N, "frames": N, "closed": N,
                          "reasons": {str(int(Reason.PEER_CLOSED)): N}, "pool_in_use": 0}
        assert proc.returncode == 0
        st = loop.stats()
        assert st["open"] == 0 and st["frames_out"] == N and st["frames_in"] == N
        assert st["bytes_out"] == N * len(push)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
