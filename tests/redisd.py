"""Real Redis servers for tests: standalone and a 3-master Redis Cluster on loopback.

Every server is a ``redis-server`` process (the Debian package) started on a
free 127.0.0.1 port with its own directory under the test's temp dir, and
stopped when the test (or session) is done. Nothing here fakes Redis.

When ``redis-server`` is missing, :func:`ensure_redis_installed` installs the
Debian package with ``apt-get`` (so the README's test command sets everything
up on a fresh machine, as ``.ci/run`` does); if that is impossible it raises
with the command to run, and the tests that need Redis fail rather than skip.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["RedisServer", "RedisCluster", "ensure_redis_installed", "free_ports"]

START_TIMEOUT = 15.0


def ensure_redis_installed() -> str:
    """The path of ``redis-server``; installs the ``redis-server`` Debian package when missing."""
    path = shutil.which("redis-server")
    if path:
        return path
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise RuntimeError("redis-server is not installed: run `apt-get install -y redis-server` (Debian package)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-q", "redis-server"]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=True)
        subprocess.run(install, env=env, capture_output=True, check=True)
    # The package starts a system service on 6379; tests never use it (each picks a free port).
    path = shutil.which("redis-server")
    if not path:
        raise RuntimeError("apt-get install redis-server did not provide redis-server")
    return path


def free_ports(n: int) -> list[int]:
    """*n* distinct free loopback ports (a cluster also needs port + 10000 free: checked)."""
    ports: list[int] = []
    socks = []
    try:
        while len(ports) < n:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            if port + 10000 > 65535:
                s.close()
                continue
            try:
                with socket.socket() as bus:
                    bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                s.close()
                continue
            socks.append(s)
            ports.append(port)
    finally:
        for s in socks:
            s.close()
    return ports


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class RedisServer:
    """One ``redis-server`` process on 127.0.0.1:*port* with its data in *directory*."""

    directory: Path
    port: int = 0
    appendonly: bool = True
    appendfsync: str = "everysec"
    cluster: bool = False
    extra: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = ensure_redis_installed()
        if not self.port:
            self.port = free_ports(1)[0]
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [
            binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
            "--save", "", "--daemonize", "no", "--protected-mode", "yes",
            "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", self.appendfsync,
            "--logfile", str(self.directory / "redis.log"),
        ]
        if self.cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file", str(self.directory / "nodes.conf"),
                     "--cluster-node-timeout", "2000"]
        args += self.extra
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while not _ping(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = (self.directory / "redis.log")
                tail = log.read_text()[-2000:] if log.exists() else ""
                self.stop()
                raise RuntimeError(f"redis-server on port {self.port} did not start:\n{tail}")
            time.sleep(0.02)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the process (SIGTERM: a clean shutdown that flushes the AOF; SIGKILL: a crash)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None

    def restart(self, sig: int = signal.SIGTERM) -> RedisServer:
        """Stop and start again on the same port and directory (the AOF brings the data back)."""
        self.stop(sig)
        return self.start()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class RedisCluster:
    """Three (or *masters*) ``redis-server --cluster-enabled yes`` joined by ``redis-cli --cluster create``."""

    directory: Path
    masters: int = 3
    servers: list[RedisServer] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.servers[0].port}/0"

    @property
    def ports(self) -> list[int]:
        return [s.port for s in self.servers]

    def start(self) -> RedisCluster:
        ensure_redis_installed()
        for i, port in enumerate(free_ports(self.masters)):
            self.servers.append(RedisServer(self.directory / f"node{i}", port, cluster=True).start())
        nodes = [f"127.0.0.1:{p}" for p in self.ports]
        create = subprocess.run(["redis-cli", "--cluster", "create", *nodes, "--cluster-replicas", "0",
                                 "--cluster-yes"], capture_output=True, text=True, timeout=60)
        if create.returncode != 0:
            self.stop()
            raise RuntimeError(f"redis-cli --cluster create failed:\n{create.stdout}\n{create.stderr}")
        deadline = time.monotonic() + START_TIMEOUT
        while not all(self._state_ok(p) for p in self.ports):
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the Redis Cluster did not reach cluster_state:ok")
            time.sleep(0.05)
        return self

    @staticmethod
    def _state_ok(port: int) -> bool:
        out = subprocess.run(["redis-cli", "-p", str(port), "cluster", "info"], capture_output=True, text=True)
        return "cluster_state:ok" in out.stdout

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    def __enter__(self) -> RedisCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
