"""Process metrics carry the standard Prometheus names (issue 10, item 10c).

The Prometheus client libraries export ``process_cpu_seconds_total``,
``process_resident_memory_bytes``, ``process_virtual_memory_bytes``,
``process_open_fds``, ``process_max_fds`` and ``process_start_time_seconds``
(the process's start, Unix seconds); dashboards and alerts written for any
exporter work with ours only under those names.
"""
from __future__ import annotations

import http.client
import os
import resource
import subprocess
import sys
import textwrap
import time

import pytest

from prometheus_text import parse_exposition, sample
from pushcore.admin.api import AdminAPI
from serverkit import make_server

ADMIN_TOKEN = "test-admin-token-0123456789"
STANDARD = ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_virtual_memory_bytes",
            "process_open_fds", "process_max_fds", "process_start_time_seconds")


def scrape(address) -> str:
    conn = http.client.HTTPConnection(*address, timeout=10)
    try:
        conn.request("GET", "/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        resp = conn.getresponse()
        assert resp.status == 200
        return resp.read().decode()
    finally:
        conn.close()


@pytest.fixture
def metrics_text():
    server = make_server()
    server.start()
    admin = AdminAPI(server, ADMIN_TOKEN, port=0)
    admin.start()
    try:
        yield scrape(admin.address)
    finally:
        admin.stop()
        server.stop(timeout=5.0)


def test_process_metrics_have_the_standard_names(metrics_text):
    families = parse_exposition(metrics_text)
    for name in STANDARD:
        assert f"# TYPE {name} " in metrics_text, name
        assert sample(families, name) > 0, name
    assert "# TYPE process_cpu_seconds_total counter" in metrics_text
    assert "pushcore_process_" not in metrics_text


def test_process_metric_values_are_this_process(metrics_text):
    families = parse_exposition(metrics_text)
    assert sample(families, "process_max_fds") == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert sample(families, "process_resident_memory_bytes") > 1_000_000
    assert sample(families, "process_virtual_memory_bytes") >= sample(families, "process_resident_memory_bytes")
    assert 0 < sample(families, "process_open_fds") <= len(os.listdir("/proc/self/fd")) + 16


@pytest.mark.slow
def test_start_time_is_when_the_process_started_not_when_metrics_were_set_up():
    # A process that waits 2 s before it sets up the metrics: the start time must be the process's.
    code = textwrap.dedent("""
        import time
        began = time.time()
        time.sleep(2.0)
        from pushcore.admin.gateway_metrics import GatewayMetrics
        from pushcore.gateway.server import Server
        server = Server("127.0.0.1", 0, secret=b"s" * 32, store="memory:")
        text = GatewayMetrics(server).registry.render()
        line = next(l for l in text.splitlines() if l.startswith("process_start_time_seconds "))
        print(began, line.split()[1])
    """)
    before = time.time()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stderr
    began, started = map(float, done.stdout.split())
    # /proc/stat's boot time is whole seconds: the start time is known to within a second
    assert before - 1.0 <= started <= began + 1.0
