"""pushcore.cluster.Supervisor with real worker processes on 127.0.0.1 (issue 12, item 1).

The supervisor runs as its own process (tests/cluster/supervised.py), so it
forks from a process without threads, and a SIGTERM reaches it as it would
from an operator. Its workers use memory stores: the supervisor's job is
processes, not delivery. Each worker writes its pid to files (per start, per
device served), which is how a test learns which process did what.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pushcore import Reason
from pushcore.cluster import PortUnavailable, Supervisor
from pushcore.codec import reference as protocol
from serverkit import RawDevice, wait_for

SCRIPT = Path(__file__).resolve().parent / "supervised.py"
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


class Supervised:
    """tests/cluster/supervised.py in a subprocess; its stderr (the log) in a file."""

    def __init__(self, tmp_path: Path, mode: str, workers: int = 2) -> None:
        self.dir = tmp_path
        self.log = tmp_path / "supervisor.log"
        self.proc = subprocess.Popen([sys.executable, str(SCRIPT), mode, str(tmp_path), "--workers", str(workers)],
                                     stdout=subprocess.PIPE, stderr=self.log.open("w"), text=True, env=ENV)
        self.address: tuple[str, int] | None = None

    def ready(self) -> tuple[str, int]:
        line = self.proc.stdout.readline()
        assert line.startswith("ready "), f"{line!r}; log:\n{self.log.read_text()}"
        _, host, port = line.split()
        self.address = (host, int(port))
        return self.address

    def pid(self, index: int, incarnation: int) -> int:
        path = self.dir / f"worker-{index}-{incarnation}"
        wait_for(lambda: path.exists() and path.read_text(), what=f"worker {index} incarnation {incarnation}")
        return int(path.read_text())

    def served_by(self, device_id: str) -> int:
        path = self.dir / f"served-{device_id}"
        wait_for(lambda: path.exists() and path.read_text(), what=f"the pid that served {device_id}")
        return int(path.read_text())

    def wait(self, timeout: float = 15.0) -> int:
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self.proc.stdout.close()


@pytest.fixture
def supervised(tmp_path):
    started: list[Supervised] = []

    def start(mode: str = "run", workers: int = 2) -> Supervised:
        sup = Supervised(tmp_path, mode, workers)
        started.append(sup)
        return sup

    yield start
    for sup in started:
        sup.close()


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def welcomed(address: tuple[str, int], device_id: str) -> RawDevice:
    dev = RawDevice(address)
    assert dev.hello(device_id).TYPE == protocol.WELCOME
    return dev


def devices_on_every_worker(sup: Supervised, pids: set[int], limit: int = 200) -> dict[str, RawDevice]:
    """Connect devices until every pid in *pids* served one (SO_REUSEPORT spreads them by hash)."""
    devices: dict[str, RawDevice] = {}
    seen: set[int] = set()
    while seen != pids:
        assert len(devices) < limit, f"{limit} connections and only {seen} of {pids} served any"
        name = f"d{len(devices)}"
        devices[name] = welcomed(sup.address, name)
        seen.add(sup.served_by(name))
        assert seen <= pids, f"a pid that is no worker served {name}: {seen - pids}"
    return devices


@pytest.mark.slow  # starts processes
def test_two_workers_on_one_port_both_serve_devices(supervised):
    sup = supervised()
    sup.ready()
    pids = {sup.pid(0, 0), sup.pid(1, 0)}
    assert len(pids) == 2 and sup.proc.pid not in pids
    devices = devices_on_every_worker(sup, pids)
    for dev in devices.values():
        dev.close()
    sup.proc.send_signal(signal.SIGTERM)
    assert sup.wait() == 0


@pytest.mark.slow  # starts processes
def test_a_killed_worker_is_restarted_and_the_port_keeps_accepting(supervised):
    sup = supervised()
    sup.ready()
    first, other = sup.pid(0, 0), sup.pid(1, 0)
    os.kill(first, signal.SIGKILL)
    second = sup.pid(0, 1)  # incarnation 1 of worker 0: a new process
    assert second not in (first, other)
    wait_for(lambda: gone(first), what="the killed worker reaped")
    # the port accepts throughout, and the new worker serves devices too
    devices = devices_on_every_worker(sup, {second, other})
    log = sup.log.read_text()
    assert f"worker 0 (pid {first}, incarnation 0) exited: killed by SIGKILL" in log
    assert "restarting worker 0 in" in log
    for dev in devices.values():
        dev.close()
    sup.proc.send_signal(signal.SIGTERM)
    assert sup.wait() == 0
    assert sup.proc.stdout.read().strip() == "stopped after 1 restarts"


@pytest.mark.slow  # starts processes
def test_sigterm_drains_every_worker_and_exits_0(supervised):
    sup = supervised()
    sup.ready()
    pids = {sup.pid(0, 0), sup.pid(1, 0)}
    devices = devices_on_every_worker(sup, pids)
    sup.proc.send_signal(signal.SIGTERM)
    for name, dev in devices.items():
        frames = dev.until_closed()
        assert [f.TYPE for f in frames] == [protocol.GOAWAY], name
        assert frames[0].reason == Reason.SHUTTING_DOWN
    assert sup.wait() == 0
    assert all(gone(pid) for pid in pids)
    with pytest.raises(OSError):
        socket.create_connection(sup.address, timeout=2).close()
    log = sup.log.read_text()
    for index, pid in ((0, sup.pid(0, 0)), (1, sup.pid(1, 0))):
        assert f"worker {index} (pid {pid}): signal 15, draining" in log
        assert f"worker {index} (pid {pid}, incarnation 0) exited: exit status 0" in log


@pytest.mark.slow  # starts processes
def test_a_worker_that_cannot_start_makes_the_supervisor_give_up(supervised):
    sup = supervised("fail")
    started = time.monotonic()
    assert sup.wait(timeout=20) == 1
    assert time.monotonic() - started < 15
    out = sup.proc.stdout.read()
    assert out.startswith("gave up: worker 1 could not start (3 attempts in a row; last: "
                          "RuntimeError: this worker's factory always fails): giving up"), out
    assert [p.name for p in sorted(sup.dir.glob("worker-1-*"))] == ["worker-1-0", "worker-1-1", "worker-1-2"]
    assert gone(sup.pid(0, 0))  # the worker that did start was stopped


@pytest.mark.slow  # starts processes
def test_embedding_start_workers_stop(supervised):
    sup = supervised("embed", workers=3)
    states = json.loads(sup.proc.stdout.readline())
    assert [(s["index"], s["incarnation"], s["alive"], s["ready"], s["restarts"]) for s in states] == [
        (i, 0, True, True, 0) for i in range(3)]
    assert [s["pid"] for s in states] == [sup.pid(i, 0) for i in range(3)]
    done = json.loads(sup.proc.stdout.readline())
    assert done == {"statuses": {"0": 0, "1": 0, "2": 0}, "alive": [False, False, False]}
    assert sup.wait() == 0


def test_a_taken_port_is_refused_before_any_fork():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        supervisor = Supervisor(lambda info: None, 2, port=port)  # type: ignore[arg-type, return-value]
        with pytest.raises(PortUnavailable) as exc:
            supervisor.start()
    assert (exc.value.name, exc.value.port) == ("device", port)
    assert "cannot bind the device port" in str(exc.value)
    assert all(not w.alive for w in supervisor.workers())


def test_bad_arguments():
    for workers in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="workers"):
            Supervisor(lambda info: None, workers)  # type: ignore[arg-type, return-value]
    with pytest.raises(ValueError, match="drain_timeout"):
        Supervisor(lambda info: None, 1, drain_timeout=0)  # type: ignore[arg-type, return-value]
    assert Supervisor(lambda info: None).count == (os.cpu_count() or 1)  # type: ignore[arg-type, return-value]
