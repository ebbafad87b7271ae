"""pushcore.Simulator: thousands of simulated devices on one connection loop, with a report.

Every device is a small Python object (:class:`SimDevice`, ``__slots__``)
next to the loop's C struct for its connection; heartbeats (PING/PONG) run
in C, and Python sees each device's frames in the loop's per-turn batches.
The receive side reuses the clients' pure logic: :class:`pushcore.device.inbox.Inbox`
(drop duplicates by seq, cumulative ACKs, FETCH after NOTIFY) and
:class:`pushcore.device.heartbeat.HeartbeatPolicy` (the adaptive heartbeat). It
does not use one :class:`pushcore.Client` per device: a Client carries
threads, futures, server probing and reconnect machinery a simulated fleet
does not need, and the simulator must do things to a connection a real
client never does (drop it silently, like a NAT).

A run (:meth:`Simulator.run`) has three phases:

1. **connect** — every device connects, at most ``connect_rate`` new
   connections per second; connect time is HELLO sent → WELCOME received
   (TCP connect included).
2. **traffic** — for ``duration`` seconds an optional
   :class:`pushcore.sim.traffic.Pusher` sends messages at a fixed rate to
   random devices; the profile's churn, link resets and NAT drops happen.
3. **drain** — pushing stops, churn and resets stop, every device that is
   away reconnects, and the run waits until each device has every message
   sent to it (or nothing moved for ``settle`` seconds, or ``drain_timeout``).

Then :meth:`Simulator.report` checks every device: each message carries its
device's counter and send time (:mod:`pushcore.sim.traffic`), so a missing,
duplicated, reordered or misrouted message is found per device, and the
end-to-end latency of each push is known.

NAT emulation
-------------
A NAT forgets a mapping that carried no packet for ``T`` seconds; after
that, packets in both directions vanish, and neither end is told. The
simulator keeps one timer per NAT'd connection: when the connection has
been quiet both ways (nothing received, nothing sent) for ``T``, the
connection becomes a *zombie*: the device stops heartbeating on it and
ignores everything that arrives on it (those bytes are "lost in the NAT":
not shown, not acked, so the gateway keeps them in its store). The device
learns of it the way a phone does: its next heartbeat (due ``interval``
after the last packet) gets no PONG within ``pong_timeout``; then it counts
a heartbeat failure (the adaptive policy backs off and holds) and
reconnects. The zombie socket stays open — the gateway never heard of the
drop — until the gateway replaces it when the device's new HELLO arrives
(``GOAWAY REPLACED``) or its idle timeout closes it. A heartbeat interval
shorter than ``T`` keeps the mapping alive, so over a run the adaptive
policy settles just below ``T`` (within its back-off step). Intervals within
one loop tick (10 ms) of ``T`` are ambiguous.

Gateway heartbeat bounds
------------------------
A gateway grants every device heartbeat bounds in WELCOME, and a device
never heartbeats more often than the minimum. When that minimum is not below
the profile's NAT timeout, every NAT'd connection dies silently and its
messages wait in the store until the device notices: the simulator logs a
warning on the first such WELCOME and lists it in the report
(``Report.warnings``). Without ``servers``, the simulator starts its own
gateway (:attr:`Simulator.server`, on 127.0.0.1, a memory store) with the
bounds its profile needs (:meth:`pushcore.sim.profiles.Profile.gateway_heartbeat`).

Threads: everything runs on the loop's thread. :meth:`Simulator.run` drives
the loop itself (``run_once``); a :class:`pushcore.Server` may share the loop
(tests), in which case its pushes must also be made on this thread.
"""
from __future__ import annotations

import logging
import math
import os
import random
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

from ..codec import frames as _frames
from ..device.heartbeat import HeartbeatPolicy
from ..device.inbox import Inbox
from ..device.serverlist import Address, ServerEntry, parse_servers, resolve_servers
from ..errors import Reason, reason_name
from ..loop.dispatch import dispatch_for
from ..tokens import TokenSigner
from .profiles import Profile
from .report import Progress, Report, Samples
from .traffic import MAGIC, Pusher

if TYPE_CHECKING:
    from .._frame import ErrorFrame, Frame, Goaway, Notify, Push, Redirect, Welcome
    from .._loop import Loop, TimerHandle
    from ..gateway.server import Server

__all__ = ["Simulator", "SimDevice"]

log = logging.getLogger(__name__)

_PUSH = _frames.PUSH
_WELCOME = _frames.WELCOME
_NOTIFY = _frames.NOTIFY
_GOAWAY = _frames.GOAWAY
_REDIRECT = _frames.REDIRECT
_ERROR = _frames.ERROR
_encode_ack = _frames.encode_ack

# Device states
IDLE = 0  # not started
QUEUED = 1  # waiting for the connect rate limiter
CONNECTING = 2  # TCP connect / HELLO sent, no WELCOME yet
ONLINE = 3  # welcomed
LEAVING = 4  # churn: closing cleanly, then offline for a while
RESETTING = 5  # link fault: aborted, reconnects after a short backoff
NAT_WAIT = 6  # the NAT dropped the connection; the device has not noticed yet
WAITING = 7  # offline (churn) or backing off before the next attempt
FAILED = 8  # refused for good (bad token, no common version, replaced)
STOPPED = 9

_FATAL = frozenset({Reason.AUTH_FAILED, Reason.TOKEN_EXPIRED, Reason.UNSUPPORTED_VERSION})
_MAX_HOLE_SPAN = 1_000_000  # a counter jump larger than this is garbage, not a gap


class SimDevice:
    """One simulated device: its connection, receive state, heartbeat and tallies."""

    __slots__ = (
        "index", "cid", "state", "inbox", "policy", "nat", "pongs_seen", "hb_timer", "nat_timer",
        "wait_timer", "t_connect", "online_since_ns", "last_tx", "next_counter", "holes",
        "received", "duplicates", "out_of_order", "misrouted", "foreign", "connects", "attempt",
        "target", "nat_drops", "refusal", "hop",
    )

    def __init__(self, index: int, inbox: Inbox, policy: HeartbeatPolicy | None, nat: bool) -> None:
        self.index = index
        self.cid = 0
        self.state = IDLE
        self.inbox = inbox
        self.policy = policy  # HeartbeatPolicy (adaptive) or None
        self.nat = nat  # behind the emulated NAT
        self.pongs_seen = 0
        self.hb_timer: TimerHandle | None = None
        self.nat_timer: TimerHandle | None = None
        self.wait_timer: TimerHandle | None = None
        self.t_connect = 0.0
        self.online_since_ns = 0
        self.last_tx = 0.0
        self.next_counter = 1  # the pusher's next counter for this device
        self.holes: set[int] | None = None  # counters skipped so far, made on the first gap
        self.received = 0  # distinct simulator messages received
        self.duplicates = 0
        self.out_of_order = 0
        self.misrouted = 0
        self.foreign = 0  # not a message of this run (another run's, or an operator's)
        self.connects = 0
        self.attempt = 0
        self.target: Address | None = None  # (host, port) from a REDIRECT / GOAWAY, used once
        self.nat_drops = 0
        self.refusal: int | None = None  # the code of the server's last ERROR (or REPLACED)
        self.hop = 0  # how many servers of the list this device moved on from (failed connects)


def _poisson(rng: random.Random, lam: float) -> int:
    """A Poisson-distributed count with mean *lam* (Knuth below 30, normal approximation above)."""
    if lam <= 0:
        return 0
    if lam < 30:
        limit = math.exp(-lam)
        k, p = 0, rng.random()
        while p > limit:
            k += 1
            p *= rng.random()
        return k
    return max(0, int(round(rng.gauss(lam, math.sqrt(lam)))))


class Simulator:
    """Simulated devices ``<id_prefix>0 .. <id_prefix>(devices-1)`` against *servers*.

    Parameters
    ----------
    servers
        ``"host:port"`` strings or ``(host, port)`` tuples; names are
        resolved once, here. Device *i* uses ``servers[i % len(servers)]``;
        after a failed connect it tries the next one of the list (probing).
        None (the default): the simulator starts its own gateway
        (:attr:`server`: a :class:`pushcore.Server` on 127.0.0.1, any free
        port, memory store, heartbeat bounds fitted to *profile*), stopped
        by :meth:`close`.
    devices
        how many devices (each holds one file descriptor while connected;
        twice that with the simulator's own gateway).
    secret
        the gateway's token secret: devices mint their own HMAC tokens
        (:mod:`pushcore.tokens`). Or give *token*. With the simulator's own
        gateway it may be left out (a random one).
    token
        ``token(device_id) -> bytes`` instead of *secret*.
    profile
        a :class:`pushcore.sim.profiles.Profile` (heartbeat, churn, NAT,
        faults, connect rate).
    loop
        a ``pushcore._loop.Loop`` to share (default: the simulator's own).
    run_id
        tags this run's messages (default: random); messages of other runs
        are counted as foreign, not as errors.
    seed
        makes the random choices (NAT devices, churn, faults) repeatable.
    """

    def __init__(
        self,
        servers: Iterable[ServerEntry] | None = None,
        *,
        devices: int = 1000,
        secret: bytes | None = None,
        token: Callable[[str], bytes] | None = None,
        id_prefix: str = "sim-",
        profile: Profile | None = None,
        loop: Loop | None = None,
        run_id: int | None = None,
        seed: int | None = None,
        versions: tuple[int, ...] = (1,),
    ) -> None:
        if devices < 1:
            raise ValueError(f"devices must be >= 1, got {devices}")
        self.profile = profile if profile is not None else Profile()
        #: The gateway the simulator started itself (``servers`` left out), else None.
        self.server: Server | None = None
        if servers is None:
            if token is not None:
                raise ValueError("token= needs servers=: the simulator's own gateway checks tokens minted "
                                 "from secret= (or a random secret)")
            if secret is None:
                secret = os.urandom(32)
            servers = [self._start_gateway(secret)]
        if token is None:
            if secret is None:
                raise ValueError("give secret= (the gateway's token secret) or token= (device_id -> bytes)")
            token = TokenSigner(secret).mint
        try:
            self.servers = resolve_servers(parse_servers(servers, sort_by_load=False))
        except BaseException:
            self._stop_gateway()
            raise
        self.id_prefix = id_prefix
        self.run_id = run_id if run_id is not None else int.from_bytes(os.urandom(4), "little")
        self._token = token
        self._versions = tuple(versions)
        self._rng = random.Random(seed)
        self._owns_loop = loop is None
        if loop is None:
            from ..loop import new_loop

            loop = new_loop()
        self.loop = loop
        self._dispatch = dispatch_for(loop)
        p = self.profile
        nat_on = p.nat_timeout is not None
        self.devices: list[SimDevice] = [
            SimDevice(
                i,
                Inbox(ack_every=p.ack_every, page_size=p.page_size),
                p.new_policy(),
                nat_on and self._rng.random() < p.nat_fraction,
            )
            for i in range(devices)
        ]
        self._by_cid: dict[int, SimDevice] = {}
        self._zombies: dict[int, SimDevice] = {}  # NAT-dropped connections the gateway still holds
        self._queue: deque[SimDevice] = deque()
        self._ack_dirty: set[SimDevice] = set()
        self._ack_timer: TimerHandle | None = None
        self._pump_timer: TimerHandle | None = None
        self._fault_timer: TimerHandle | None = None
        self._tokens = 0.0
        self._pump_last = 0.0
        self._fault_last = 0.0
        self._faults_on = False
        self._stopping = False
        self._closed = False
        self.online = 0
        self.failed = 0
        self.received_total = 0
        self.all_online_at: float | None = None
        self.started_at: float | None = None
        self.latency = Samples(seed=seed)
        self.latency_live = Samples(seed=seed)
        self.connect_times = Samples(seed=seed)
        self.counts = {
            "attempts": 0, "connects": 0, "connect_failures": 0, "connect_errors": 0,
            "churn_leaves": 0, "resets": 0, "nat_drops": 0, "heartbeat_failures": 0,
            "redirects": 0, "zombies_closed": 0,
        }
        self.closes: dict[str, int] = {}
        self.refusals: dict[str, int] = {}
        self.goaways: dict[str, int] = {}
        #: What the run found wrong with its setup (logged once each, listed in the report).
        self.warnings: list[str] = []

    # -- the simulator's own gateway ------------------------------------------------------

    def _start_gateway(self, secret: bytes) -> tuple[str, int]:
        from ..gateway.server import Server

        server = Server("127.0.0.1", 0, secret=secret, store="memory:",
                        heartbeat=self.profile.gateway_heartbeat())
        address = server.start()
        self.server = server
        return address

    def _stop_gateway(self) -> None:
        if self.server is not None and not self.server.stopped:
            self.server.stop(timeout=5.0)

    def _warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)
            log.warning("%s", message)

    # -- names ----------------------------------------------------------------------------

    def device_id(self, index: int) -> str:
        return f"{self.id_prefix}{index}"

    # -- connecting -----------------------------------------------------------------------

    def start(self) -> None:
        """Queue every device for connecting (through the rate limiter)."""
        if self.started_at is not None:
            raise RuntimeError("the simulator is already started")
        self.started_at = self.loop.time()
        for dev in self.devices:
            dev.state = QUEUED
            self._queue.append(dev)
        self._pump_last = self.loop.time()
        self._pump()

    def _enqueue(self, dev: SimDevice) -> None:
        dev.wait_timer = None
        if self._stopping or dev.state in (FAILED, STOPPED, QUEUED):
            return
        dev.state = QUEUED
        self._queue.append(dev)
        if self._pump_timer is None:
            self._pump_last = self.loop.time()
            self._pump()

    def _pump(self) -> None:
        """Connect queued devices at most ``connect_rate`` per second (token bucket)."""
        self._pump_timer = None
        loop = self.loop
        rate = self.profile.connect_rate
        queue = self._queue
        if rate is None:
            allowed = len(queue)
        else:
            now = loop.time()
            burst = max(rate * 0.02, 1.0)
            self._tokens = min(self._tokens + (now - self._pump_last) * rate, burst)
            self._pump_last = now
            allowed = int(self._tokens)
            self._tokens -= allowed
        while allowed > 0 and queue:
            dev = queue.popleft()
            if dev.state != QUEUED:
                continue
            self._connect(dev)
            allowed -= 1
        if queue and not self._stopping:
            self._pump_timer = loop.call_later(0.01, self._pump)

    def _connect(self, dev: SimDevice) -> None:
        servers = self.servers
        target = dev.target or servers[(dev.index + dev.hop) % len(servers)]
        dev.target = None
        self.counts["attempts"] += 1
        try:
            cid = self.loop.connect(target[0], target[1], timeout=self.profile.connect_timeout)
        except (OSError, ValueError):
            # e.g. out of file descriptors: back off like any failed attempt
            self.counts["connect_errors"] += 1
            dev.hop += 1
            self._backoff(dev)
            return
        dev.cid = cid
        dev.state = CONNECTING
        dev.refusal = None
        dev.t_connect = self.loop.time()
        self._by_cid[cid] = dev
        self._dispatch.clients[cid] = self

    def _backoff(self, dev: SimDevice) -> None:
        if self._stopping:
            dev.state = STOPPED
            return
        initial, maximum = self.profile.backoff
        ceiling = min(maximum, initial * (2 ** min(dev.attempt, 30)))
        dev.attempt += 1
        dev.state = WAITING
        dev.wait_timer = self.loop.call_later(self._rng.uniform(ceiling / 2, ceiling), self._enqueue, dev)

    # -- loop events (from pushcore.loop.dispatch) ----------------------------------------------

    def _on_open(self, cid: int) -> None:
        dev = self._by_cid.get(cid)
        if dev is None or dev.state != CONNECTING:
            return
        policy = dev.policy
        proposal = int(policy.interval) if policy is not None else int(self.profile.heartbeat_fixed)
        device_id = self.device_id(dev.index)
        hello = _frames.Hello(self._versions, device_id, self._token(device_id), dev.inbox.last_seq, proposal)
        self.loop.send(cid, hello.encode())
        dev.last_tx = self.loop.time()

    # A frame's TYPE says which class it is: each branch casts it to that class.
    def _on_frame(self, cid: int, frame: Frame) -> None:
        dev = self._by_cid.get(cid)
        if dev is None:
            return  # a zombie's bytes: lost in the emulated NAT
        kind = frame.TYPE
        if kind == _PUSH:
            if dev.state == ONLINE:
                self._on_push(dev, cast("Push", frame))
        elif kind == _WELCOME:
            if dev.state == CONNECTING:
                self._on_welcome(dev, cast("Welcome", frame))
        elif kind == _NOTIFY:
            fetch = dev.inbox.on_notify(cast("Notify", frame).latest_seq)
            if fetch is not None and dev.state == ONLINE:
                self._send_ack(dev)
                self.loop.send(cid, _frames.Fetch(*fetch).encode())
        elif kind == _GOAWAY:
            goaway = cast("Goaway", frame)
            name = reason_name(goaway.reason)
            self.goaways[name] = self.goaways.get(name, 0) + 1
            if goaway.reason == Reason.REPLACED:
                dev.refusal = Reason.REPLACED
            if goaway.servers:
                dev.target = goaway.servers[0][:2]
            self._send_ack(dev)
            self.loop.close_conn(cid, int(goaway.reason))
        elif kind == _REDIRECT:
            servers = cast("Redirect", frame).servers
            if servers:
                self.counts["redirects"] += 1
                dev.target = sorted(servers, key=lambda s: s[2])[0][:2]
                self._send_ack(dev)
                self.loop.close_conn(cid, Reason.NORMAL)
        elif kind == _ERROR:
            error = cast("ErrorFrame", frame)
            dev.refusal = error.code
            name = reason_name(error.code)
            self.refusals[name] = self.refusals.get(name, 0) + 1

    def _on_welcome(self, dev: SimDevice, welcome: Welcome) -> None:
        loop = self.loop
        now = loop.time()
        dev.state = ONLINE
        dev.attempt = 0
        dev.connects += 1
        dev.online_since_ns = time.time_ns()
        dev.inbox.connected()
        self.online += 1
        self.counts["connects"] += 1
        self.connect_times.add(now - dev.t_connect)
        if self.all_online_at is None and self.online + self.failed >= len(self.devices):
            self.all_online_at = now
        if dev.policy is not None:
            try:
                dev.policy.grant(welcome.heartbeat_min, welcome.heartbeat_max)
            except ValueError:
                pass  # a bad grant: keep the policy's own bounds
            nat_timeout = self.profile.nat_timeout
            if dev.nat and nat_timeout is not None and welcome.heartbeat_min >= nat_timeout:
                self._warn(
                    f"the gateway's heartbeat minimum ({welcome.heartbeat_min} s, from its WELCOME) is not "
                    f"below the profile's NAT timeout ({nat_timeout:g} s): the devices behind the NAT "
                    f"cannot heartbeat often enough to keep their connections, which die silently "
                    f"(their messages wait in the gateway's store). Give the gateway a lower minimum "
                    f"(Server(..., heartbeat=(0, 5)), pushcore serve --heartbeat 0:600), or leave out "
                    f"servers so the simulator starts a gateway that fits its profile")
        self._apply_heartbeat(dev)
        if dev.nat:
            nat_timeout = self.profile.nat_timeout
            assert nat_timeout is not None  # devices are behind the NAT only when the profile has one
            dev.nat_timer = loop.call_later(nat_timeout, self._nat_check, dev, dev.cid)

    def _on_push(self, dev: SimDevice, push: Push) -> None:
        inbox = dev.inbox
        now_ns = time.time_ns()
        if not inbox.accept(push.seq, push.expiry, now_ns / 1e9):
            return  # already seen (redelivered after a reconnect) or expired
        if push.seq:
            if inbox.ack_due():
                self._send_ack(dev)
            else:
                self._ack_dirty.add(dev)
                if self._ack_timer is None:
                    self._ack_timer = self.loop.call_later(self.profile.ack_delay, self._flush_acks)
        payload = push.payload
        if not payload.startswith(MAGIC):
            dev.foreign += 1
            return
        parts = payload.split(b" ")
        try:
            run_id, index, counter, sent_ns = int(parts[1]), int(parts[2]), int(parts[3]), int(parts[4])
        except (IndexError, ValueError):
            dev.foreign += 1
            return
        if run_id != self.run_id:
            dev.foreign += 1
            return
        if index != dev.index:
            dev.misrouted += 1
            return
        expected = dev.next_counter
        if counter == expected:
            dev.next_counter = counter + 1
        elif counter > expected:
            if counter - expected > _MAX_HOLE_SPAN:
                dev.misrouted += 1
                return
            if dev.holes is None:
                dev.holes = set()
            dev.holes.update(range(expected, counter))
            dev.next_counter = counter + 1
        elif dev.holes is not None and counter in dev.holes:
            dev.holes.discard(counter)
            dev.out_of_order += 1
        else:
            dev.duplicates += 1
            return
        dev.received += 1
        self.received_total += 1
        latency = (now_ns - sent_ns) / 1e9
        self.latency.add(latency)
        if sent_ns >= dev.online_since_ns:
            self.latency_live.add(latency)

    def _on_close(self, cid: int, reason: int) -> None:
        if self._zombies.pop(cid, None) is not None:
            self.counts["zombies_closed"] += 1
            return
        dev = self._by_cid.pop(cid, None)
        if dev is None:
            return
        dev.cid = 0
        name = reason_name(reason)
        self.closes[name] = self.closes.get(name, 0) + 1
        state = dev.state
        if state == ONLINE:
            self._leave_online(dev)
            if reason == Reason.IDLE_TIMEOUT and dev.policy is not None:
                # no PONG in time: what a real NAT drop looks like when the gateway is gone too
                self.counts["heartbeat_failures"] += 1
                dev.policy.on_failure()
        if self._stopping:
            dev.state = STOPPED
            return
        if state == CONNECTING:
            self.counts["connect_failures"] += 1
            dev.hop += 1  # probing, like pushcore.Client: the next attempt tries the next server
        if dev.refusal in _FATAL or dev.refusal == Reason.REPLACED:
            # reconnecting cannot help (bad token, no common version), or another
            # instance of this device took over and fighting it would never end
            dev.state = FAILED
            self.failed += 1
            return
        if state == LEAVING:
            dev.state = WAITING
            delay = self._rng.expovariate(1.0 / self.profile.churn_offline) if self.profile.churn_offline else 0.0
            dev.wait_timer = self.loop.call_later(delay, self._enqueue, dev)
            return
        if state in (ONLINE, RESETTING) and dev.target is not None:
            self._enqueue(dev)  # redirected: go there now
            return
        self._backoff(dev)

    def _leave_online(self, dev: SimDevice) -> None:
        """Bookkeeping when a device stops being online (any reason)."""
        self.online -= 1
        if dev.hb_timer is not None:
            dev.hb_timer.cancel()
            dev.hb_timer = None
        if dev.nat_timer is not None:
            dev.nat_timer.cancel()
            dev.nat_timer = None
        self._ack_dirty.discard(dev)

    # -- ACKs -------------------------------------------------------------------------------

    def _send_ack(self, dev: SimDevice) -> None:
        seq = dev.inbox.take_ack()
        if seq is not None and dev.cid:
            self.loop.send(dev.cid, _encode_ack(seq))
            dev.last_tx = self.loop.time()

    def _flush_acks(self) -> None:
        self._ack_timer = None
        dirty, self._ack_dirty = self._ack_dirty, set()
        for dev in dirty:
            if dev.state == ONLINE:
                self._send_ack(dev)

    # -- heartbeat and NAT -------------------------------------------------------------------

    def _interval(self, dev: SimDevice) -> float | None:
        if dev.policy is not None:
            return dev.policy.interval
        if self.profile.heartbeat == "fixed":
            return self.profile.heartbeat_fixed
        return None

    def _apply_heartbeat(self, dev: SimDevice) -> None:
        interval = self._interval(dev)
        if interval is None:
            return
        loop, cid = self.loop, dev.cid
        loop.set_ping_interval(cid, interval)
        loop.set_idle_timeout(cid, interval + self.profile.pong_timeout)
        if dev.policy is not None:
            dev.pongs_seen = loop.conn_info(cid)["pongs"]
            if dev.hb_timer is not None:
                dev.hb_timer.cancel()
            dev.hb_timer = loop.call_later(interval, self._heartbeat_check, dev, cid)

    def _heartbeat_check(self, dev: SimDevice, cid: int) -> None:
        """Once per interval: a PONG since the last check is one successful heartbeat."""
        dev.hb_timer = None
        if dev.cid != cid or dev.state != ONLINE:
            return
        policy = dev.policy
        assert policy is not None  # only adaptive devices have the check (_apply_heartbeat)
        pongs = self.loop.conn_info(cid)["pongs"]
        if pongs > dev.pongs_seen and policy.on_success():
            self._apply_heartbeat(dev)
            return
        dev.pongs_seen = pongs
        dev.hb_timer = self.loop.call_later(policy.interval, self._heartbeat_check, dev, cid)

    def _nat_check(self, dev: SimDevice, cid: int) -> None:
        dev.nat_timer = None
        if dev.cid != cid or dev.state != ONLINE:
            return
        loop = self.loop
        now = loop.time()
        quiet = min(loop.conn_info(cid)["idle_for"], now - dev.last_tx)
        timeout = self.profile.nat_timeout
        assert timeout is not None  # the check runs for devices behind the NAT only
        if quiet >= timeout - 0.005:
            self._nat_drop(dev, now - quiet)
        else:
            dev.nat_timer = loop.call_later(timeout - quiet, self._nat_check, dev, cid)

    def _nat_drop(self, dev: SimDevice, last_packet: float) -> None:
        """The NAT forgot the mapping: the connection silently stops carrying packets."""
        loop, cid = self.loop, dev.cid
        self.counts["nat_drops"] += 1
        dev.nat_drops += 1
        loop.set_ping_interval(cid, 0)
        loop.set_idle_timeout(cid, 0)
        del self._by_cid[cid]
        self._zombies[cid] = dev  # still registered with the dispatcher: its bytes arrive, are dropped
        self._leave_online(dev)
        dev.cid = 0
        dev.state = NAT_WAIT
        interval = self._interval(dev) or 0.0
        # The device's next PING is due `interval` after the last packet; it gives up
        # `pong_timeout` later.
        noticed_in = max(last_packet + interval + self.profile.pong_timeout - loop.time(), 0.0)
        dev.wait_timer = loop.call_later(noticed_in, self._nat_noticed, dev)

    def _nat_noticed(self, dev: SimDevice) -> None:
        dev.wait_timer = None
        if dev.state != NAT_WAIT:
            return
        self.counts["heartbeat_failures"] += 1
        if dev.policy is not None:
            dev.policy.on_failure()
        closes = self.closes
        closes["IDLE_TIMEOUT"] = closes.get("IDLE_TIMEOUT", 0) + 1  # what the device's loop would report
        dev.state = WAITING
        self._enqueue(dev)  # a phone reconnects at once after a failed heartbeat

    # -- churn and link faults ---------------------------------------------------------------

    def _faults_tick(self) -> None:
        self._fault_timer = None
        if not self._faults_on:
            return
        loop = self.loop
        now = loop.time()
        dt = now - self._fault_last
        self._fault_last = now
        p = self.profile
        rng = self._rng
        if p.churn_online is not None:
            for _ in range(_poisson(rng, self.online * dt / p.churn_online)):
                dev = self._random_online()
                if dev is None:
                    break
                self.counts["churn_leaves"] += 1
                self._send_ack(dev)
                self._leave_online(dev)
                dev.state = LEAVING
                loop.close_conn(dev.cid, Reason.NORMAL)
        if p.reset_rate:
            for _ in range(_poisson(rng, self.online * dt * p.reset_rate)):
                dev = self._random_online()
                if dev is None:
                    break
                self.counts["resets"] += 1
                self._leave_online(dev)
                dev.state = RESETTING
                loop.abort(dev.cid, Reason.PEER_RESET)
        self._fault_timer = loop.call_later(0.1, self._faults_tick)

    def _random_online(self) -> SimDevice | None:
        devices = self.devices
        for _ in range(32):
            dev = devices[self._rng.randrange(len(devices))]
            if dev.state == ONLINE:
                return dev
        return None

    def _set_faults(self, on: bool) -> None:
        p = self.profile
        self._faults_on = on and (p.churn_online is not None or p.reset_rate > 0)
        if self._faults_on and self._fault_timer is None:
            self._fault_last = self.loop.time()
            self._fault_timer = self.loop.call_later(0.1, self._faults_tick)
        elif not self._faults_on and self._fault_timer is not None:
            self._fault_timer.cancel()
            self._fault_timer = None

    def _recall_everyone(self) -> None:
        """Every device that is away (churn, backoff) reconnects now."""
        for dev in self.devices:
            if dev.state == WAITING:
                if dev.wait_timer is not None:
                    dev.wait_timer.cancel()
                    dev.wait_timer = None
                dev.attempt = 0
                self._enqueue(dev)

    # -- running ----------------------------------------------------------------------------

    def _turn(self, timeout: float = 0.05) -> None:
        self.loop.run_once(timeout)

    def run(
        self,
        duration: float,
        *,
        pusher: Pusher | None = None,
        ramp_timeout: float = 60.0,
        drain_timeout: float = 10.0,
        settle: float = 1.0,
        progress: Progress | None = None,
        until: Callable[[], bool] | None = None,
    ) -> Report:
        """Connect, run traffic for *duration* seconds, drain, and return the :class:`Report`.

        With *until*, the traffic also goes on (past *duration*) until
        ``until()`` is true, checked on every loop turn of this thread (a
        scenario run beside the traffic, e.g. ``pushcore demo --cluster``'s faults).

        Drives the loop from the calling thread; once per Simulator. The
        devices stay connected afterwards; call :meth:`close` (or use ``with``).
        """
        if pusher is not None and pusher.devices != len(self.devices):
            raise ValueError("the pusher must target exactly this simulator's devices")
        progress = progress or Progress(enabled=False)
        loop = self.loop
        wall_start = time.monotonic()
        n = len(self.devices)
        self.start()
        ramp_deadline = loop.time() + ramp_timeout
        while self.online + self.failed < n and loop.time() < ramp_deadline:
            self._turn()
            progress.update((self.online + self.failed) / n,
                            f"connecting: {self.online:,}/{n:,} online")
        ramp_seconds = (self.all_online_at - self.started_at
                        if self.all_online_at is not None and self.started_at is not None else None)

        traffic_start = loop.time()
        self._set_faults(True)
        if pusher is not None:
            pusher.start()
        last_received = self.received_total
        last_lat = (self.latency.count, self.latency.total)
        while True:
            elapsed = loop.time() - traffic_start
            if elapsed >= duration and (until is None or until()):
                break
            self._turn(min(0.05, max(duration - elapsed, 0.01)))
            count, total = self.latency.count - last_lat[0], self.latency.total - last_lat[1]
            if progress.enabled and (count or self.received_total != last_received):
                avg = f"{total / count * 1000:.2f} ms" if count else "-"
                last_lat = (self.latency.count, self.latency.total)
                last_received = self.received_total
                progress.update(elapsed / duration,
                                f"{elapsed:.1f}/{duration:.1f} s | online {self.online:,}/{n:,} | "
                                f"sent {pusher.total if pusher else 0:,} recv {self.received_total:,} | "
                                f"latency {avg}")
        traffic_seconds = loop.time() - traffic_start

        # drain: stop the pusher without blocking the loop (it may be waiting on this loop)
        if pusher is not None:
            pusher.request_stop()
            while pusher.running:
                self._turn(0.01)
        self._set_faults(False)
        self._recall_everyone()
        expected = sum(pusher.sent) if pusher is not None else 0
        drain_deadline = loop.time() + drain_timeout
        last_change, seen = loop.time(), self.received_total
        while loop.time() < drain_deadline:
            self._turn()
            everyone = self.online + self.failed >= n
            if everyone and self.received_total >= expected and not self._ack_dirty:
                break
            if self.received_total != seen:
                seen, last_change = self.received_total, loop.time()
            elif everyone and loop.time() - last_change >= settle:
                break  # nothing arrives any more: what is missing is lost
            progress.update(1.0, f"draining: {expected - self.received_total:,} messages in flight, "
                                 f"{n - self.online - self.failed:,} devices reconnecting")
        # let the last ACKs go out
        self._flush_acks()
        self._turn(0)
        progress.finish()
        return self.report(pusher=pusher, duration=traffic_seconds, wall_time=time.monotonic() - wall_start,
                           ramp_seconds=ramp_seconds)

    # -- the report ------------------------------------------------------------------------

    def report(self, *, pusher: Pusher | None = None, duration: float = 0.0, wall_time: float = 0.0,
               ramp_seconds: float | None = None) -> Report:
        """Check every device against what the pusher sent and summarise the run."""
        sent = pusher.sent if pusher is not None else None
        missing = duplicates = out_of_order = misrouted = foreign = redelivered = 0
        problems = []
        for dev in self.devices:
            dev_missing = 0
            if sent is not None:
                dev_missing = max(int(sent[dev.index]) - dev.received, 0)
            missing += dev_missing
            duplicates += dev.duplicates
            out_of_order += dev.out_of_order
            misrouted += dev.misrouted
            foreign += dev.foreign
            redelivered += dev.inbox.duplicates
            if dev_missing or dev.duplicates or dev.out_of_order or dev.misrouted:
                first = ""
                if dev_missing:
                    holes = sorted(dev.holes) if dev.holes else []
                    lost = holes[:3] or [dev.next_counter]
                    first = f" (e.g. message {', '.join(map(str, lost))})"
                problems.append(
                    f"{self.device_id(dev.index)}: missing {dev_missing}{first}, "
                    f"duplicates {dev.duplicates}, out of order {dev.out_of_order}, "
                    f"misrouted {dev.misrouted}")
        sent_total = int(sum(sent)) if sent is not None else 0
        messages = {
            "sent": sent_total,
            "sent_rate": (pusher.achieved_rate if pusher is not None else 0.0),
            "push_errors": pusher.errors if pusher is not None else 0,
            "received": self.received_total,
            "missing": missing,
            "duplicates": duplicates,
            "out_of_order": out_of_order,
            "misrouted": misrouted,
            "foreign": foreign,
            "redelivered": redelivered,
        }
        n = len(self.devices)
        connect = {
            "ramp_seconds": ramp_seconds,
            "rate": (n / ramp_seconds) if ramp_seconds else None,
            "time_ms": self.connect_times.summary(1000.0),
        }
        connections = {
            "connects": self.counts["connects"],
            "attempts": self.counts["attempts"],
            "connect_failures": self.counts["connect_failures"] + self.counts["connect_errors"],
            "refused": dict(self.refusals),
            "goaway": dict(self.goaways),
            "closes": dict(self.closes),
            "injected": {
                "churn_leaves": self.counts["churn_leaves"],
                "link_resets": self.counts["resets"],
                "nat_drops": self.counts["nat_drops"],
            },
            "heartbeat_failures": self.counts["heartbeat_failures"],
            "redirects": self.counts["redirects"],
        }
        return Report(
            devices=n,
            servers=[list(s) for s in self.servers],
            duration=duration,
            wall_time=wall_time,
            profile=self.profile.describe(),
            push_rate=pusher.rate if pusher is not None else None,
            connect=connect,
            connections=connections,
            messages=messages,
            latency_ms=self.latency.summary(1000.0),
            latency_live_ms=self.latency_live.summary(1000.0),
            heartbeat=self._heartbeat_summary(),
            problems=problems[:100],
            online_at_end=self.online,
            failed_devices=self.failed,
            warnings=list(self.warnings),
            loop_lag=self._loop_lag(),
        )

    def _loop_lag(self) -> dict[str, float]:
        """The loop's lag numbers (``loop.stats()["lag"]``) without the histogram."""
        lag = self.loop.stats().get("lag") or {}
        return {k: float(v) for k, v in lag.items() if k != "buckets"}

    def _heartbeat_summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mode": self.profile.heartbeat}
        intervals = Samples()
        for dev in self.devices:
            if dev.policy is not None:
                intervals.add(dev.policy.interval)
        if intervals.count:
            out["intervals"] = intervals.summary()
        timeout = self.profile.nat_timeout
        if timeout is not None:
            nat_devices = [d for d in self.devices if d.nat]
            held = [d.policy.interval for d in nat_devices if d.policy is not None and d.policy.held]
            held.sort()
            out["nat"] = {
                "timeout": timeout,
                "devices": len(nat_devices),
                "drops": sum(d.nat_drops for d in nat_devices),
                "held": len(held),
                "held_below_timeout": sum(1 for i in held if i < timeout),
                "held_median": held[len(held) // 2] if held else None,
                "held_min": held[0] if held else None,
                "held_max": held[-1] if held else None,
            }
        return out

    # -- closing ----------------------------------------------------------------------------

    def close(self, timeout: float = 2.0) -> None:
        """Flush ACKs, close every connection, and release the loop (closing it if it is ours)."""
        if self._closed:
            return
        self._closed = True
        self._stopping = True
        loop = self.loop
        self._set_faults(False)
        for timer in (self._ack_timer, self._pump_timer):
            if timer is not None:
                timer.cancel()
        self._ack_timer = self._pump_timer = None
        self._queue.clear()
        for dev in self.devices:
            for name in ("hb_timer", "nat_timer", "wait_timer"):
                timer = getattr(dev, name)
                if timer is not None:
                    timer.cancel()
                    setattr(dev, name, None)
            if dev.cid:
                if dev.state == ONLINE:
                    self._send_ack(dev)
                loop.close_conn(dev.cid, Reason.NORMAL)
        for cid in list(self._zombies):
            loop.abort(cid, Reason.NORMAL)
        if not loop.closed and not getattr(loop, "running", False):
            deadline = time.monotonic() + timeout
            while (self._by_cid or self._zombies) and time.monotonic() < deadline:
                loop.run_once(0.05)
        clients = self._dispatch.clients
        for cid in list(self._by_cid) + list(self._zombies):
            if clients.get(cid) is self:
                del clients[cid]
        self._by_cid.clear()
        self._zombies.clear()
        if self._owns_loop and not loop.closed:
            loop.close()
        self._stop_gateway()

    def __enter__(self) -> Simulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
