"""The simulator and the gateway's heartbeat bounds: a warning when they cannot work, a gateway that fits.

A NAT'd device must heartbeat more often than its NAT forgets an idle
mapping; a gateway whose heartbeat minimum is not below the NAT timeout
forbids that, and every NAT'd connection dies silently. The simulator says
so (log and report) as soon as the first WELCOME shows the bounds, and the
gateway it starts itself (no ``servers``) grants bounds that fit its profile.
"""
from __future__ import annotations

import logging

from pushcore.gateway.server import Server
from pushcore.sim.profiles import Profile
from pushcore.sim.simulator import Simulator
from pushcore.sim.traffic import Pusher, ServerSink

SECRET = b"simulator-gateway-test-secret-32b"
NAT = Profile(heartbeat="adaptive", heartbeat_scale=0.004, nat_timeout=1.45, connect_rate=None,
              backoff=(0.05, 0.5), ack_delay=0.02)


def test_a_gateway_minimum_above_the_nat_timeout_is_warned_about(caplog):
    server = Server("127.0.0.1", 0, secret=SECRET, store="memory:")  # the default minimum: 30 s
    host, port = server.start()
    try:
        with caplog.at_level(logging.WARNING, logger="pushcore.sim.simulator"):
            with Simulator([(host, port)], devices=5, secret=SECRET, profile=NAT) as sim:
                report = sim.run(0.2, drain_timeout=2.0, settle=0.2)
    finally:
        server.stop(timeout=5.0)
    assert report.online_at_end == 5
    assert len(report.warnings) == 1, report.warnings  # once per run, not once per device
    warning = report.warnings[0]
    assert "heartbeat minimum (30 s" in warning and "NAT timeout (1.45 s)" in warning, warning
    assert "heartbeat=(0," in warning  # says what to do
    assert warning in report.table()
    assert report.to_dict()["warnings"] == [warning]
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert logged == [warning]


def test_a_fitting_gateway_gets_no_warning():
    server = Server("127.0.0.1", 0, secret=SECRET, store="memory:", heartbeat=(0, 5))
    host, port = server.start()
    try:
        with Simulator([(host, port)], devices=5, secret=SECRET, profile=NAT) as sim:
            report = sim.run(0.2, drain_timeout=2.0, settle=0.2)
    finally:
        server.stop(timeout=5.0)
    assert report.online_at_end == 5
    assert report.warnings == []


def test_without_servers_the_simulator_starts_a_gateway_that_fits_its_profile():
    with Simulator(devices=50, profile=NAT) as sim:
        server = sim.server
        assert isinstance(server, Server)
        assert sim.servers == [server.address]
        pusher = Pusher(ServerSink(server, sim.id_prefix, sim.run_id), 50, rate=200)
        report = sim.run(1.0, pusher=pusher)
    assert report.warnings == []
    assert report.messages["sent"] > 0
    assert report.ok, report.table()
    assert server.stopped  # close() stopped the gateway it started


def test_the_profile_says_which_gateway_heartbeat_fits_it():
    assert NAT.gateway_heartbeat() == (0.0, 5.0)  # cap 600 s x 0.004 = 2.4 s; at least 5
    assert Profile().gateway_heartbeat() == (0.0, 601.0)
    assert Profile(heartbeat="fixed", heartbeat_fixed=30).gateway_heartbeat() == (0.0, 31.0)
