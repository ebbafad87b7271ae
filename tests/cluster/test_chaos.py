"""Exactly-once through a cluster under faults (issue 12): worker SIGKILLs, node drains, a Redis crash.

Two nodes of two workers (``pushcore serve --workers 2`` subprocesses) on
one real ``redis-server`` (AOF, ``appendfsync always``), a few hundred
simulated devices spread over the nodes, pushes through both nodes' admin
APIs with idempotency keys (a batch whose answer was lost, to a dead worker
or a 503 while Redis is down, goes again to the other node). In the middle,
one after the other and each waited out (every worker back in the registry
and ready): 5 worker SIGKILLs, 2 node drains (SIGTERM to the supervisor,
then a new node on the same ports) and one Redis SIGKILL + restart.

Then every push a node confirmed must have reached its device, none may
have reached the device's app twice, none out of order. A push never
confirmed (its batch still failing at the stop) is *ambiguous*: it may
arrive (it was stored) or not; it is never expected, and a message beyond
the last confirmed one is fine only if it was attempted.
"""
from __future__ import annotations

import signal

import pytest
from tests.redisd import ensure_redis_installed

from pushcore.cli.demo_cluster import ClusterRun, default_plan

pytestmark = pytest.mark.slow

KILLS, DRAINS, REDIS_RESTARTS = 5, 2, 1


def test_exactly_once_through_kills_drains_and_a_redis_restart(tmp_path):
    ensure_redis_installed()
    cluster = ClusterRun(tmp_path, nodes=2, workers=2, devices=300, rate=300.0, seed=12)
    try:
        cluster.start()
        plan = default_plan(KILLS, DRAINS, REDIS_RESTARTS, nodes=2)
        assert [k for k, _ in plan].count("kill") == KILLS and len(plan) == KILLS + DRAINS + REDIS_RESTARTS
        report = cluster.run(3.0, plan, start_after=1.0, spacing=0.5, redis_signal=signal.SIGKILL,
                             drain_timeout=60.0, settle=15.0)
        chaos, sink, pusher, sim = cluster.chaos, cluster.sink, cluster.pusher, cluster.sim
        assert chaos is not None and sink is not None and pusher is not None and sim is not None
        timeline = "\n".join(cluster.lines(report))
        # the faults happened, in full
        assert len(chaos.events) == len(plan), timeline
        assert sink.failures > 0, timeline  # some batches did fail and went again
        # every confirmed push arrived, once, in order
        m = report.messages
        assert (m["missing"], m["duplicates"], m["out_of_order"], m["misrouted"]) == (0, 0, 0, 0), \
            f"{report.problems[:10]}\n{timeline}"
        accepted: dict[int, set[int]] = {}
        for index, counter in sink.accepted:
            accepted.setdefault(index, set()).add(counter)
        attempted_max: dict[int, int] = {}
        for index, counter in sink.attempted:
            attempted_max[index] = max(attempted_max.get(index, 0), counter)
        for dev in sim.devices:
            mine = accepted.get(dev.index, set())
            # the pusher only counts a message as sent once a node confirmed it (and everything before it)
            assert mine == set(range(1, pusher.sent[dev.index] + 1)), dev.index
            assert dev.received >= len(mine), (dev.index, dev.received, len(mine), dev.holes)
            assert not dev.holes, (dev.index, sorted(dev.holes)[:5])
            assert dev.duplicates == 0 and dev.out_of_order == 0
            # nothing arrived that was never pushed; beyond the confirmed, only what was attempted
            assert dev.next_counter - 1 <= attempted_max.get(dev.index, 0), dev.index
        assert len(sink.accepted) == m["sent"] > 1000
        # every device is back and served: none refused for good (REPLACED, auth) by the faults
        assert report.failed_devices == 0 and report.online_at_end == 300, timeline
    finally:
        cluster.close()
