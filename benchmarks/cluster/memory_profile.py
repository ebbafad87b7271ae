"""Where a connected device's user-space memory goes in one worker: a tracemalloc diff over N connects.

    python benchmarks/cluster/memory_profile.py [N]            # default 10,000 devices

One Server (RedisStore + ClusterLink on its own redis-server) in this
process, tracemalloc started once it listens; N devices connected by
``benchmarks/store/push_reader.c`` (256 handshakes in flight). Prints the RSS
and Python-heap growth per device and the 15 source lines that allocated most.
"""
from __future__ import annotations

import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "store"))
sys.path.insert(0, str(HERE.parent.parent / "tests"))

from harness import SECRET, Devices, raise_fd_limit, rss_bytes  # noqa: E402

from pushcore import Server  # noqa: E402
from pushcore.cluster.link import ClusterLink  # noqa: E402
from pushcore.store.redis import RedisStore  # noqa: E402
from redisd import RedisServer  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
raise_fd_limit()
with tempfile.TemporaryDirectory() as d:
    r = RedisServer(Path(d)).start()
    try:
        server = Server("127.0.0.1", 0, secret=SECRET, store=RedisStore(r.url, prefix="m"),
                        cluster=ClusterLink(r.url, prefix="m"), heartbeat=(0, 3600), idle_grace=600,
                        auth_timeout=600, backlog=4096, connect_rate=1e6, connect_burst=1e6,
                        source_connect_rate=1e6, source_connect_burst=1e6)
        _h, port = server.start()
        time.sleep(0.5)
        tracemalloc.start(1)
        rss0, s0, t0 = rss_bytes(), tracemalloc.take_snapshot(), tracemalloc.get_traced_memory()[0]
        dev = Devices(port, N, ack=True)
        dev.connect(0, N)
        time.sleep(2)
        rss1, s1, t1 = rss_bytes(), tracemalloc.take_snapshot(), tracemalloc.get_traced_memory()[0]
        print(f"devices {server.device_count()}: RSS +{(rss1 - rss0) / N:.0f} B/device (with tracemalloc's own overhead), "
              f"Python heap (tracemalloc) +{(t1 - t0) / N:.0f} B/device")
        for stat in s1.compare_to(s0, "lineno")[:15]:
            print(f"  {stat.size_diff / N:8.1f} B/device  {stat.count_diff / N:5.2f} blocks/device  {stat.traceback[0]}")
        dev.close()
        server.stop()
    finally:
        r.stop()
