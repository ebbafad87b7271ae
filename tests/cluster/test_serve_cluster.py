"""``pushcore serve`` as a cluster: workers on one port and separate nodes on one real Redis.

The case that started the cluster work: two gateway processes on one store,
a push through one to a device connected to the other. Here it must be
delivered at once, exactly once, and presence must answer for every node.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from tests.redisd import RedisServer
from tests.serverkit import RawDevice, free_port, wait_for

from pushcore.codec import reference as protocol
from pushcore.errors import Reason

pytestmark = pytest.mark.slow

SECRET_HEX = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
ADMIN_TOKEN = "cluster-test-admin-token-0123456789"
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "PUSHCORE_SECRET": SECRET_HEX,
       "PUSHCORE_ADMIN_TOKEN": ADMIN_TOKEN}


def serve(tmp: Path, store: str, *args: str) -> tuple[subprocess.Popen[str], list[str]]:
    proc = subprocess.Popen([sys.executable, "-m", "pushcore", "serve", "--store", store, "--log-level", "warning",
                             *args], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=tmp, env=ENV)
    banner: list[str] = []
    while not banner or not banner[-1].startswith("Ctrl-C or SIGTERM"):
        line = proc.stderr.readline() if proc.stderr else ""
        if not line:
            proc.kill()
            raise AssertionError(f"pushcore serve exited: {''.join(banner)}")
        banner.append(line)
    return proc, banner


def admin(url: str, path: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(url + path, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {ADMIN_TOKEN}",
                                              "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    _, rest = proc.communicate(timeout=30)
    assert proc.returncode == 0, rest
    return rest


def hello(address: tuple[str, int], device_id: str) -> RawDevice:
    from pushcore import mint_token

    dev = RawDevice(address)
    welcome = dev.hello(device_id, mint_token(bytes.fromhex(SECRET_HEX), device_id))
    assert welcome.TYPE == protocol.WELCOME, welcome
    return dev


def test_two_workers_deliver_pushes_to_each_others_devices(tmp_path):
    redis_server = RedisServer(tmp_path / "redis").start()
    port, admin_port = free_port(), free_port()
    proc, _banner = serve(tmp_path, redis_server.url, "--workers", "2", "--port", str(port),
                          "--admin-port", str(admin_port))
    url = f"http://127.0.0.1:{admin_port}"
    try:
        devices = {f"phone-{i}": hello(("127.0.0.1", port), f"phone-{i}") for i in range(16)}
        # the kernel spread them over both workers (SO_REUSEPORT): the registry says so
        wait_for(lambda: admin(url, "/v1/devices")["cluster"] == {"connected": 16, "nodes": 2},
                 what="16 devices on 2 nodes in the registry")
        # one address for both workers (they share the port), its load the workers' mean
        assert admin(url, "/servers") == {"servers": [{"host": "127.0.0.1", "port": port, "load": 8.0}]}
        holders = {node for node in (admin(url, f"/v1/devices/{d}")["node"] for d in devices)}
        assert len(holders) == 2, holders  # the kernel spread 16 devices over both workers
        for device_id in devices:  # each request lands on either worker
            assert admin(url, "/v1/push", {"device": device_id, "payload": f"hi {device_id}"})["seq"] == 1
        for device_id, dev in devices.items():
            push = dev.expect(protocol.PUSH)
            assert (push.seq, push.payload) == (1, f"hi {device_id}".encode())
        for dev in devices.values():
            assert dev.silent_for(0.05)
        info = admin(url, "/v1/devices/phone-3")
        assert info["connected"] is True and info["node"]
        for dev in devices.values():
            dev.close()
        rest = stop(proc)
        assert "0 worker restarts" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
        redis_server.stop()


def test_two_nodes_on_one_redis_replace_and_route_like_one(tmp_path):
    redis_server = RedisServer(tmp_path / "redis").start()
    ports = [(free_port(), free_port()) for _ in range(2)]
    procs = []
    try:
        for i, (port, admin_port) in enumerate(ports):
            (tmp_path / f"n{i}").mkdir()
            procs.append(serve(tmp_path / f"n{i}", redis_server.url, "--port", str(port), "--admin-port",
                               str(admin_port))[0])
        a, b = (("127.0.0.1", p) for p, _ in ports)
        url_a, url_b = (f"http://127.0.0.1:{q}" for _, q in ports)
        dev = hello(a, "phone-1")
        assert admin(url_b, "/v1/push", {"device": "phone-1", "payload": "through B"})["seq"] == 1
        assert dev.expect(protocol.PUSH).payload == b"through B"
        dev.send(protocol.Ack(1))
        moved = hello(b, "phone-1")  # the same phone, now on B: A's connection is replaced
        goaway = dev.expect(protocol.GOAWAY)
        assert goaway.reason == Reason.REPLACED
        assert admin(url_a, "/v1/push", {"device": "phone-1", "payload": "through A"})["seq"] == 2
        push = moved.expect(protocol.PUSH)
        assert (push.seq, push.payload) == (2, b"through A")
        assert f"-{ports[1][0]}-w" in admin(url_a, "/v1/devices/phone-1")["node"]  # a worker of B (2 per node)
        moved.close()
        dev.close()
        for proc in procs:
            stop(proc)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        redis_server.stop()


def test_token_free_servers_endpoint_answers_on_one_node(tmp_path):
    port, admin_port = free_port(), free_port()
    proc, _ = serve(tmp_path, "memory", "--port", str(port), "--admin-port", str(admin_port))
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/servers", timeout=10) as response:
            assert json.loads(response.read()) == {"servers": [{"host": "127.0.0.1", "port": port, "load": 0}]}
        stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
