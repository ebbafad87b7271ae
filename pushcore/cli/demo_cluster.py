"""``pushcore demo --cluster``: several gateway nodes on one Redis, faults in the middle, the report.

What it runs, all on 127.0.0.1 and all stopped at the end:

* a ``redis-server`` (the Debian package) in a temporary directory, on a
  free port, with ``appendonly yes``;
* *nodes* gateway nodes, each ``python -m pushcore serve --store redis://...
  --workers W`` on its own device and admin port (each worker is one
  cluster node in Redis; the nodes' supervisors restart workers that die);
* the :class:`pushcore.Simulator` in this process, its devices spread over
  the nodes (device *i* starts on node ``i % nodes``, tries the next node
  when a connect fails, follows GOAWAY redirects), and pushes through the
  nodes' admin APIs (any node for any device: batch *k* goes to node
  ``k % nodes``, a batch that failed goes again, with the same idempotency
  keys, to the next node);
* in the middle, one fault after the other (:class:`Chaos`), each waited
  out before the next: worker SIGKILLs, node drains (SIGTERM to the
  node's supervisor: its devices get GOAWAY listing the other nodes and
  move; then the node starts again), a Redis restart (its AOF brings the
  data back; pushes are refused with 503 meanwhile and sent again).

Then the report: every message once and in order per device (missing,
duplicates, out of order), latency, reconnects, and the timeline of faults.
:class:`ClusterRun` is what ``tests/cluster/test_chaos.py`` drives too.
"""
from __future__ import annotations

import argparse
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from .common import CommandError, raise_fd_limit

if TYPE_CHECKING:
    from ..admin.client import AdminClient
    from ..sim.profiles import Profile
    from ..sim.report import Report
    from ..sim.simulator import Simulator
    from ..sim.traffic import Pusher

__all__ = ["Chaos", "ClusterRun", "ClusterSink", "Node", "RedisProcess", "add_arguments", "run",
           "CHAOS_PROFILE", "default_plan"]

START_TIMEOUT = 30.0
INSTALL_HINT = ("redis-server is not installed: `pushcore demo --cluster` runs a real Redis. Install the Debian "
                "package: apt-get install redis-server (or put a redis-server binary on PATH)")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def children_of(pid: int) -> list[int]:
    """The pids whose parent is *pid* (read from /proc: the supervisor's workers)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses, so split after the last ')'
        rest = stat[stat.rfind(b")") + 2:].split()
        if len(rest) > 1 and int(rest[1]) == pid and rest[0] != b"Z":
            out.append(int(entry))
    return sorted(out)


def _wait(condition: Callable[[], bool], timeout: float, what: str, step: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(step)


class RedisProcess:
    """One ``redis-server`` on 127.0.0.1, data (the AOF) in *directory*."""

    def __init__(self, directory: Path, port: int = 0, appendfsync: str = "always") -> None:
        self.directory = directory
        self.port = port or free_port()
        self.appendfsync = appendfsync
        self.process: subprocess.Popen[bytes] | None = None
        binary = shutil.which("redis-server")
        if binary is None:
            raise CommandError(INSTALL_HINT)
        self.binary = binary

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def start(self) -> RedisProcess:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
             "--save", "", "--daemonize", "no", "--protected-mode", "yes", "--appendonly", "yes",
             "--appendfsync", self.appendfsync, "--logfile", str(self.directory / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        process = self.process
        try:
            _wait(lambda: self.ping() or process.poll() is not None, START_TIMEOUT, "redis-server to answer")
        except TimeoutError:
            pass
        if not self.ping():
            log = self.directory / "redis.log"
            tail = log.read_text()[-1500:] if log.exists() else ""
            self.stop()
            raise CommandError(f"redis-server on 127.0.0.1:{self.port} did not start:\n{tail}")
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)

    def restart(self, sig: int = signal.SIGTERM) -> None:
        self.stop(sig)
        self.start()


@dataclass
class Node:
    """One ``pushcore serve --workers W`` process (a supervisor) on its own ports."""

    index: int
    store: str
    workers: int
    env: dict[str, str]
    cwd: Path
    port: int = 0
    admin_port: int = 0
    extra: Sequence[str] = ()
    process: subprocess.Popen[str] | None = None
    banner: list[str] = field(default_factory=list)
    log: IO[str] | None = None

    def __post_init__(self) -> None:
        self.port = self.port or free_port()
        self.admin_port = self.admin_port or free_port()

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def start(self) -> None:
        self.cwd.mkdir(parents=True, exist_ok=True)
        self.process = process = subprocess.Popen(
            [sys.executable, "-m", "pushcore", "serve", "--store", self.store, "--workers", str(self.workers),
             "--port", str(self.port), "--admin-port", str(self.admin_port), "--log-level", "warning",
             *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=self.cwd, env=self.env)
        assert process.stderr is not None
        self.banner = []
        deadline = time.monotonic() + START_TIMEOUT
        while not self.banner or not self.banner[-1].startswith("Ctrl-C or SIGTERM"):
            line = process.stderr.readline()
            if not line or time.monotonic() > deadline:
                process.kill()
                process.wait()
                raise CommandError(f"node {self.index} (pushcore serve on port {self.port}) did not start:\n"
                                   + "".join(self.banner[-20:]))
            self.banner.append(line)
        # keep reading its stderr (warnings) so the pipe never fills; into the log file if any
        threading.Thread(target=self._drain_stderr, args=(process,), daemon=True,
                         name=f"pushcore-demo-node{self.index}-stderr").start()

    def _drain_stderr(self, process: subprocess.Popen[str]) -> None:
        stream = process.stderr
        assert stream is not None
        for line in stream:
            if self.log is not None:
                try:
                    self.log.write(f"node {self.index}: {line}")
                except ValueError:
                    return

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def worker_pids(self) -> list[int]:
        return children_of(self.process.pid) if self.running and self.process is not None else []

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        """Signal the supervisor (SIGTERM: drain every worker) and wait for it to exit; its exit status."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        return process.returncode


class ClusterSink:
    """The pusher's sink over several admin APIs: batch *k* to node ``k % n``; a failed batch to the next.

    Each message carries the idempotency key ``pcsim-<run>-<index>-<counter>``
    and its payload is kept until a node confirms it, so a batch sent again
    (its answer lost to a dead worker, or 503 while Redis is down) is stored
    once. ``attempted`` / ``accepted`` count ``(index, counter)`` pairs: a
    message attempted but never confirmed is *ambiguous* (stored or not).
    """

    def __init__(self, clients: Sequence[AdminClient], id_prefix: str, run_id: int,
                 available: Callable[[int], bool] | None = None) -> None:
        self.clients = list(clients)
        self.id_prefix = id_prefix
        self.run_id = run_id
        self.available = available or (lambda _i: True)
        self.next = 0
        self.failures = 0
        self.failures_by_status: dict[int, int] = {}
        self.accepted: set[tuple[int, int]] = set()
        self.attempted: set[tuple[int, int]] = set()
        self._unconfirmed: dict[tuple[int, int], str] = {}

    def send(self, batch: Sequence[tuple[int, int]]) -> int:
        from ..admin.client import AdminError

        n = len(self.clients)
        for _ in range(n):
            k = self.next % n
            self.next += 1
            if self.available(k):
                break
        now = time.time_ns()
        messages = []
        for index, counter in batch:
            payload = self._unconfirmed.get((index, counter))
            if payload is None:
                payload = self._unconfirmed[index, counter] = f"pcsim1 {self.run_id} {index} {counter} {now}"
            self.attempted.add((index, counter))
            messages.append({"device": f"{self.id_prefix}{index}", "payload": payload,
                             "idempotency_key": f"pcsim-{self.run_id}-{index}-{counter}"})
        try:
            seqs = self.clients[k].push_batch(messages)
        except AdminError as exc:
            self.failures += 1
            self.failures_by_status[exc.status] = self.failures_by_status.get(exc.status, 0) + 1
            raise
        accepted = len(seqs)
        for item in batch[:accepted]:
            self._unconfirmed.pop(item, None)
            self.accepted.add(item)
        return accepted

    @property
    def ambiguous(self) -> int:
        return len(self.attempted - self.accepted)


@dataclass
class Event:
    at: float  # seconds since the traffic started
    what: str
    took: float = 0.0  # until the cluster was whole again
    disconnects: int = 0  # device connections that closed meanwhile (GOAWAY, resets, killed workers)


# The faults, in order: (kind, node index or None). A plan is run one step after the other.
def default_plan(kills: int = 2, drains: int = 1, redis_restarts: int = 1, nodes: int = 2) -> list[tuple[str, int]]:
    """Worker SIGKILLs, node drains and Redis restarts interleaved, nodes taken in turn."""
    steps: list[tuple[str, int]] = []
    counts = {"kill": kills, "drain": drains, "redis": redis_restarts}
    order = ["kill", "drain", "kill", "redis"]
    i = 0
    while any(counts.values()):
        kind = order[i % len(order)]
        i += 1
        if counts[kind]:
            counts[kind] -= 1
            steps.append((kind, len(steps) % nodes))
    return steps


class Chaos:
    """Runs a fault plan beside the traffic (its own thread), each fault waited out before the next.

    *start_after* seconds after the traffic starts, then *spacing* seconds
    between faults. ``done`` is set once the plan ran and the cluster is
    whole again (every node's workers up, Redis answering); an error is kept
    in ``error`` (and ``done`` set) so the run ends instead of hanging.
    """

    def __init__(self, run: ClusterRun, plan: Sequence[tuple[str, int]], *, start_after: float = 2.0,
                 spacing: float = 2.0, redis_signal: int = signal.SIGTERM, redis_down: float = 0.5) -> None:
        self.run = run
        self.plan = list(plan)
        self.start_after = start_after
        self.spacing = spacing
        self.redis_signal = redis_signal
        self.redis_down = redis_down
        self.events: list[Event] = []
        self.done = threading.Event()
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.t0 = 0.0

    def start(self, traffic_started: Callable[[], bool]) -> None:
        self._thread = threading.Thread(target=self._main, args=(traffic_started,), daemon=True,
                                        name="pushcore-demo-chaos")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)

    def _sleep(self, seconds: float) -> None:
        if self._stop.wait(seconds):
            raise InterruptedError("stopped")

    def _main(self, traffic_started: Callable[[], bool]) -> None:
        try:
            while not traffic_started():
                self._sleep(0.02)
            self.t0 = time.monotonic()
            self._sleep(self.start_after)
            for kind, node in self.plan:
                at = time.monotonic() - self.t0
                closes = self.run.disconnects()
                what = getattr(self, f"_{kind}")(self.run.nodes[node % len(self.run.nodes)])
                self.events.append(Event(at, what, time.monotonic() - self.t0 - at,
                                         self.run.disconnects() - closes))
                self._sleep(self.spacing)
        except InterruptedError:
            pass
        except BaseException as exc:  # reported by the run; the traffic ends
            self.error = exc
        finally:
            self.done.set()

    def _kill(self, node: Node) -> str:
        pids = node.worker_pids()
        if not pids:
            raise RuntimeError(f"node {node.index} has no workers to kill")
        victim = pids[self.run.rng.randrange(len(pids))]
        os.kill(victim, signal.SIGKILL)
        # the supervisor restarts it: wait until the node has all its workers again, registered
        _wait(lambda: victim not in node.worker_pids() and len(node.worker_pids()) == node.workers,
              START_TIMEOUT, f"node {node.index} to restart its killed worker")
        self.run.wait_registered()
        return f"SIGKILL worker pid {victim} of node {node.index} (:{node.port}); its supervisor restarted it"

    def _drain(self, node: Node) -> str:
        status = node.stop(signal.SIGTERM)
        if status != 0:
            raise RuntimeError(f"node {node.index} exited {status} after SIGTERM (a drain exits 0)")
        node.start()
        self.run.wait_registered()
        return (f"drain node {node.index} (:{node.port}): SIGTERM to its supervisor, devices moved with "
                f"GOAWAY; started again")

    def _redis(self, _node: Node) -> str:
        redis = self.run.redis
        name = "SIGKILL" if self.redis_signal == signal.SIGKILL else "SIGTERM"
        redis.stop(self.redis_signal)
        self._sleep(self.redis_down)  # the nodes answer 503 to pushes meanwhile
        redis.start()
        self.run.wait_registered()
        return f"restart Redis ({name}, down {self.redis_down:g} s, AOF appendfsync {redis.appendfsync})"


# Devices of the cluster demo: a fixed 5 s heartbeat, a few link resets, no NAT, no churn
# (the faults are the cluster's), quick reconnects.
def _chaos_profile() -> Profile:
    from ..sim.profiles import Profile

    return Profile(heartbeat="fixed", heartbeat_fixed=5.0, pong_timeout=2.0, reset_rate=0.002,
                   connect_rate=2000.0, backoff=(0.05, 1.0))


CHAOS_PROFILE: Callable[[], Profile] = _chaos_profile


class ClusterRun:
    """Redis, the nodes, the simulator, the pusher and the faults of one run; :meth:`close` stops them all."""

    def __init__(self, directory: Path, *, nodes: int = 2, workers: int = 2, devices: int = 500,
                 rate: float = 200.0, seed: int | None = None, profile: Profile | None = None,
                 log: IO[str] | None = None, redis_fsync: str = "always") -> None:
        import random

        if nodes < 2:
            raise CommandError("--nodes: a cluster demo needs at least 2 nodes (devices move between them)")
        self.directory = directory
        self.node_count = nodes
        self.workers = workers
        self.devices = devices
        self.rate = rate
        self.seed = seed
        self.rng = random.Random(seed)
        self.profile = profile or CHAOS_PROFILE()
        self.log = log
        self.secret = os.urandom(32)
        self.admin_token = secrets.token_urlsafe(24)
        self.redis = RedisProcess(directory / "redis", appendfsync=redis_fsync)
        self.nodes: list[Node] = []
        self.sim: Simulator | None = None
        self.pusher: Pusher | None = None
        self.sink: ClusterSink | None = None
        self.chaos: Chaos | None = None
        self._clients: list[AdminClient] = []

    # -- setup ------------------------------------------------------------------------------

    def start(self) -> None:
        self.redis.start()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
               "PUSHCORE_SECRET": self.secret.hex(), "PUSHCORE_ADMIN_TOKEN": self.admin_token}
        for i in range(self.node_count):
            node = Node(i, self.redis.url, self.workers, env, self.directory / f"node{i}",
                        extra=("--heartbeat", "1:60", "--idle-grace", "10"), log=self.log)
            self.nodes.append(node)
            node.start()
        self.wait_registered()

    def disconnects(self) -> int:
        """Device connections closed so far (read from the simulator's counters; another thread's)."""
        sim = self.sim
        return 0 if sim is None else sum(list(sim.closes.values()))

    def registry(self) -> list[dict[str, Any]]:
        """``GET /v1/nodes`` of the first node that answers: every live worker ([] when none answers)."""
        import json
        import urllib.request

        for node in self.nodes:
            if not node.running:
                continue
            try:
                request = urllib.request.Request(node.admin_url + "/v1/nodes",
                                                 headers={"Authorization": f"Bearer {self.admin_token}"})
                with urllib.request.urlopen(request, timeout=2) as response:
                    servers: list[dict[str, Any]] = json.loads(response.read())["nodes"]
                    return servers
            except (OSError, ValueError, KeyError):
                continue
        return []

    def wait_registered(self, timeout: float = START_TIMEOUT) -> None:
        """Until every worker now running on every node is in the load registry and each node is ready.

        A worker's node id ends in its pid (``pushcore serve``), so a killed
        worker whose lease has not run out yet is not taken for its successor.
        """

        def whole() -> bool:
            registered = {(str(n.get("node", "")).rpartition("-")[2], n.get("port")) for n in self.registry()}
            for node in self.nodes:
                pids = node.worker_pids()
                if len(pids) != node.workers or not all((str(pid), node.port) in registered for pid in pids):
                    return False
            return all(self._ready(n) for n in self.nodes)

        _wait(whole, timeout, f"{self.node_count * self.workers} workers in the cluster's registry", step=0.05)

    def _ready(self, node: Node) -> bool:
        import urllib.request

        try:
            with urllib.request.urlopen(node.admin_url + "/readyz", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def make_traffic(self) -> tuple[Simulator, Pusher | None]:
        from ..admin.client import AdminClient
        from ..sim.simulator import Simulator
        from ..sim.traffic import Pusher

        self.sim = sim = Simulator([n.address for n in self.nodes], devices=self.devices, secret=self.secret,
                                   profile=self.profile, seed=self.seed)
        if self.rate > 0:
            self._clients = [AdminClient(n.admin_url, self.admin_token, timeout=10.0, retries=0)
                             for n in self.nodes]
            self.sink = ClusterSink(self._clients, sim.id_prefix, sim.run_id,
                                    available=lambda k: self.nodes[k].running)
            self.pusher = Pusher(self.sink, self.devices, self.rate, seed=self.seed)
        return sim, self.pusher

    def run(self, duration: float, plan: Sequence[tuple[str, int]], *, start_after: float = 2.0,
            spacing: float = 2.0, redis_signal: int = signal.SIGTERM, drain_timeout: float = 30.0,
            settle: float = 3.0, progress: Any = None) -> Report:
        """The traffic for at least *duration* seconds and until the *plan* ran; the simulator's report.

        After the traffic, the simulator waits up to *drain_timeout* seconds
        for every message, giving up early only when nothing arrived for
        *settle* seconds (what is missing then is lost).
        """
        sim, pusher = self.make_traffic()
        self.chaos = chaos = Chaos(self, plan, start_after=start_after, spacing=spacing, redis_signal=redis_signal)
        chaos.start(lambda: pusher is None or pusher.started_at is not None)
        try:
            report = sim.run(duration, pusher=pusher, drain_timeout=drain_timeout, settle=settle,
                             progress=progress, until=chaos.done.is_set)
        finally:
            chaos.stop()
        if chaos.error is not None:
            raise CommandError(f"a fault of the plan failed: {chaos.error}")
        return report

    def close(self) -> None:
        if self.chaos is not None:
            self.chaos.stop()
        if self.pusher is not None:
            self.pusher.stop(10)
        if self.sim is not None:
            self.sim.close()
        for client in self._clients:
            client.close()
        for node in self.nodes:
            node.stop(signal.SIGTERM, timeout=20)
        self.redis.stop()

    # -- the report -------------------------------------------------------------------------

    def lines(self, report: Report) -> list[str]:
        """The cluster part of the report: the faults' timeline, pushes refused, devices moved."""
        out = []
        chaos = self.chaos
        if chaos is not None:
            out.append("what happened when (seconds since the traffic started; 'whole again' = every worker "
                       "registered and ready):")
            for e in chaos.events:
                out.append(f"  t={e.at:5.1f} s  {e.what} (whole again after {e.took:.1f} s; "
                           f"{e.disconnects} device connections closed meanwhile)")
        sink = self.sink
        if sink is not None:
            by = ", ".join(f"{'unreachable/reset' if k == 0 else f'HTTP {k}'} {v}"
                           for k, v in sorted(sink.failures_by_status.items()))
            out.append(f"pushes: {len(sink.accepted):,} confirmed by a node; {sink.failures} batch requests "
                       f"failed and went again to another node ({by or 'none'}); "
                       f"{sink.ambiguous} never confirmed (not expected)")
        conn = report.connections
        out.append(f"reconnects: {conn.get('connects', 0) - report.devices:,} beyond the first connect of each "
                   f"device; GOAWAY {conn.get('goaway') or {}}; closes {conn.get('closes') or {}}")
        return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--cluster`` options of ``pushcore demo`` (added to its parser)."""
    g = parser.add_argument_group("cluster demo (--cluster)")
    g.add_argument("--cluster", action="store_true",
                   help="run several gateway nodes on one Redis (redis-server), spread the devices over "
                        "them and kill workers, drain a node and restart Redis in the middle")
    g.add_argument("--nodes", type=int, default=2, metavar="N", help="gateway nodes (default 2)")
    g.add_argument("--workers", type=int, default=2, metavar="W", help="worker processes per node (default 2)")
    g.add_argument("--kills", type=int, default=2, metavar="K", help="worker SIGKILLs (default 2)")
    g.add_argument("--drains", type=int, default=1, metavar="D", help="node drains (default 1)")
    g.add_argument("--redis-restarts", type=int, default=1, metavar="R", help="Redis restarts (default 1)")


def run(args: argparse.Namespace) -> int:
    """``pushcore demo --cluster``."""
    from ..sim.report import Progress
    from .simulate import write_report

    if not 2 <= args.nodes <= 16 or not 1 <= args.workers <= 64:
        raise CommandError("--nodes must be 2..16 and --workers 1..64")
    if min(args.kills, args.drains, args.redis_restarts) < 0:
        raise CommandError("--kills, --drains and --redis-restarts must be >= 0")
    if shutil.which("redis-server") is None:
        raise CommandError(INSTALL_HINT)
    devices = 600 if args.devices is None else args.devices
    duration = 30.0 if args.duration is None else args.duration
    rate = 300.0 if args.rate is None else args.rate
    raise_fd_limit(devices + 256, f"--devices {devices}")
    out = sys.stdout
    started = time.monotonic()
    # failed batches are counted and shown in the report; one warning per retry would flood the terminal
    logging.getLogger("pushcore.sim.simulator").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="pushcore-demo-cluster-") as tmp:
        with open(os.path.join(tmp, "nodes.log"), "w") as log:
            cluster = ClusterRun(Path(tmp), nodes=args.nodes, workers=args.workers, devices=devices, rate=rate,
                                 seed=args.seed, log=log)
            try:
                print(f"pushcore demo --cluster: redis-server (appendonly) and {args.nodes} nodes x "
                      f"{args.workers} workers on 127.0.0.1, starting ...", file=out, flush=True)
                cluster.start()
                print(f"  redis at {cluster.redis.url}", file=out)
                for node in cluster.nodes:
                    print(f"  node {node.index}: devices on :{node.port}, admin API on {node.admin_url} "
                          f"(workers {', '.join(map(str, node.worker_pids()))})", file=out)
                plan = default_plan(args.kills, args.drains, args.redis_restarts, args.nodes)
                print(f"  {devices:,} simulated devices spread over the nodes; {rate:g} pushes/s through the "
                      f"nodes' admin APIs for {duration:g} s (longer if the faults need it); faults: "
                      f"{', '.join(f'{k} node {n}' if k != 'redis' else 'restart redis' for k, n in plan)}",
                      file=out, flush=True)
                spacing = max(1.0, (duration - 4.0) / max(len(plan), 1) - 1.0)
                report = cluster.run(duration, plan, start_after=2.0, spacing=spacing,
                                     progress=Progress(enabled=args.progress))
                print("", file=out)
                write_report(report, args.json, out)
                if args.json != "-":
                    print("", file=out)
                    for line in cluster.lines(report):
                        print(line, file=out)
                    verdict = ("every confirmed push arrived once and in order" if report.ok
                               else "PROBLEMS: see missing / duplicates / out of order above")
                    print(f"\n{verdict}; done in {time.monotonic() - started:.1f} s", file=out)
                return 0 if report.ok else 1
            finally:
                cluster.close()
