"""End-to-end benchmarks: push latency at fixed rates, connection setup rate, connections held.

    python benchmarks/e2e/run_e2e.py            # everything, about 3 minutes on 2 cores
    python benchmarks/e2e/run_e2e.py --quick    # smaller, about 1 minute
    python benchmarks/e2e/run_e2e.py --only latency,setup,held

1. **Push latency** at fixed rates: 1,000 devices; each push carries its send
   time; the device takes ``receive time - send time``. Two set-ups:
   *admin API* — the gateway in its own process, pushes as
   ``POST /v1/push/batch`` requests every 20 ms (what an application server
   does); *in process* — gateway (its own thread and loop) and devices in
   this process, pushes made on the gateway's loop thread (no HTTP).
2. **Connection setup rate**: N devices connect at once (connect-rate limit
   high or none) to a gateway in its own process; HELLO→WELCOME per second
   over the whole ramp, and the connect time (TCP connect + HELLO → WELCOME)
   percentiles.
3. **Connections held per process with heartbeats flowing**: two simulator
   processes hold N connections to one gateway process (the fd limit is
   20,000 per process here); every device PINGs every 5 s. Gateway RSS per
   connection, gateway CPU while holding, PINGs answered per second, and
   heartbeat failures (there must be none).

All on 127.0.0.1; the gateway uses the SQLite store (the default) unless
said. Prints markdown tables (pasted into BENCHMARKS.md, "End to end").
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from gateway_proc import SECRET_HEX  # noqa: E402
from sim_proc import rss_bytes  # noqa: E402

SECRET = bytes.fromhex(SECRET_HEX)


class Child:
    """A child process that prints JSON lines; it exits when its stdin closes."""

    def __init__(self, argv: list[str], name: str) -> None:
        self.name = name
        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([sys.executable, *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._stderr, cwd=HERE)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def read_json(self, timeout: float) -> dict:
        result: list = []

        def read() -> None:
            result.append(self.proc.stdout.readline())

        t = threading.Thread(target=read, daemon=True)
        t.start()
        t.join(timeout)
        if not result or not result[0]:
            self._stderr.seek(0)
            tail = self._stderr.read()[-2000:].decode("utf-8", "replace")
            raise RuntimeError(f"{self.name}: no output within {timeout:.0f} s (rc={self.proc.poll()}): {tail}")
        return json.loads(result[0])

    def close(self, timeout: float = 20.0) -> dict | None:
        """Close stdin (the child's cue to finish); return its last JSON line, if any."""
        last = None
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout)  # its output is a few short lines: the pipe never fills
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        lines = [ln for ln in self.proc.stdout.read().decode().splitlines() if ln.strip()]
        if lines:
            last = json.loads(lines[-1])
        self.proc.stdout.close()
        return last


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def start_gateway(*extra: str) -> tuple[Child, dict]:
    gw = Child([str(HERE / "gateway_proc.py"), *extra], "gateway")
    info = gw.read_json(30)
    return gw, info


# ---- 1. latency -----------------------------------------------------------------------------


class RemotePusher:
    """The :class:`pushcore.sim.traffic.Pusher` interface the Simulator uses, backed by pusher_proc.py.

    Pushing from another process keeps the devices' process (which takes the
    receive time) free of the pusher's work and of contention for its GIL.
    """

    def __init__(self, gateway: dict, prefix: str, devices: int, rate: float, run_id: int) -> None:
        self.devices = devices
        self.rate = rate
        self._argv = [str(HERE / "pusher_proc.py"), "--admin", gateway["admin"], "--token", gateway["token"],
                      "--prefix", prefix, "--devices", str(devices), "--rate", str(rate), "--run-id", str(run_id)]
        self._child: Child | None = None
        self._result: dict | None = None
        self.sent = [0] * devices
        self.total = self.errors = 0
        self.achieved_rate = 0.0

    def start(self) -> None:
        self._child = Child(self._argv, "pusher")

    def request_stop(self) -> None:
        if self._child is not None and self._result is None:
            self._child.proc.stdin.close()

    @property
    def running(self) -> bool:
        if self._child is None or self._result is not None:
            return False
        if self._child.proc.poll() is None:
            return True
        self._result = self._child.close() or {}
        self.sent = self._result.get("sent", self.sent)
        self.total = self._result.get("total", 0)
        self.errors = self._result.get("errors", 0)
        self.achieved_rate = self._result.get("achieved", 0.0)
        return False

    def stop(self) -> None:
        self.request_stop()
        while self.running:
            time.sleep(0.01)


def latency_run(mode: str, rate: float, devices: int, duration: float, gateway: dict | None, tag: str) -> dict:
    from pushcore.sim.profiles import Profile
    from pushcore.sim.simulator import Simulator
    from pushcore.sim.traffic import Pusher, ServerSink

    profile = Profile(heartbeat="fixed", heartbeat_fixed=30.0, connect_rate=5000.0)
    server = None
    if mode == "admin":
        port = gateway["port"]
    else:
        from pushcore.gateway.server import Server

        tmp = tempfile.mkdtemp(prefix="pushcore-bench-")
        server = Server("127.0.0.1", 0, secret=SECRET, store=os.path.join(tmp, "g.db"), heartbeat=(0, 600))
        port = server.start()[1]
    sim = Simulator([("127.0.0.1", port)], devices=devices, secret=SECRET, id_prefix=f"{tag}-",
                    profile=profile, seed=1)
    if mode == "admin":
        pusher = RemotePusher(gateway, sim.id_prefix, devices, rate, sim.run_id)
    else:
        pusher = Pusher(ServerSink(server, sim.id_prefix, sim.run_id), devices, rate, tick=0.01, seed=2)
    cpu0 = cpu_seconds(gateway["pid"]) if mode == "admin" else None
    try:
        report = sim.run(duration, pusher=pusher, drain_timeout=20.0, settle=2.0)
        gateway_cpu = ((cpu_seconds(gateway["pid"]) - cpu0) / report.wall_time * 100) if cpu0 is not None else None
    finally:
        pusher.stop()
        sim.close()
        if server is not None:
            server.stop()
    lat = report.latency_ms
    return {"mode": mode, "rate": rate, "achieved": report.messages["sent_rate"], "sent": report.messages["sent"],
            "p50": lat.get("p50"), "p90": lat.get("p90"), "p99": lat.get("p99"), "max": lat.get("max"),
            "ok": report.ok, "gateway_cpu_pct": gateway_cpu}


def bench_latency(rates, devices, duration) -> list[dict]:
    rows = []
    gw, info = start_gateway()
    try:
        for rate in rates:
            rows.append(latency_run("admin", rate, devices, duration, info, f"la{int(rate)}"))
            print(f"  admin API, {rate:g}/s: p50 {rows[-1]['p50']:.2f} ms p99 {rows[-1]['p99']:.2f} ms",
                  file=sys.stderr, flush=True)
    finally:
        gw.close()
    for rate in rates:
        rows.append(latency_run("in-process", rate, devices, duration, None, f"li{int(rate)}"))
        print(f"  in process, {rate:g}/s: p50 {rows[-1]['p50']:.2f} ms p99 {rows[-1]['p99']:.2f} ms",
              file=sys.stderr, flush=True)
    return rows


# ---- 2. connection setup ---------------------------------------------------------------------


def bench_setup(cases) -> list[dict]:
    from pushcore.sim.profiles import Profile
    from pushcore.sim.simulator import Simulator

    rows = []
    for devices, connect_rate in cases:
        gw, info = start_gateway()
        try:
            profile = Profile(heartbeat="fixed", heartbeat_fixed=60.0, connect_rate=connect_rate,
                              connect_timeout=20.0, backoff=(0.5, 2.0))
            sim = Simulator([("127.0.0.1", info["port"])], devices=devices, secret=SECRET,
                            id_prefix=f"setup{devices}-", profile=profile, seed=1)
            cpu0 = cpu_seconds(info["pid"])
            try:
                report = sim.run(0.0, ramp_timeout=120.0, drain_timeout=1.0, settle=0.1)
            finally:
                sim.close()
            cpu = cpu_seconds(info["pid"]) - cpu0
        finally:
            gw.close()
        c = report.connect
        t = c["time_ms"]
        rows.append({"devices": devices, "limit": connect_rate, "ramp": c["ramp_seconds"], "rate": c["rate"],
                     "p50": t.get("p50"), "p99": t.get("p99"), "max": t.get("max"),
                     "failures": report.connections["connect_failures"],
                     "gateway_cpu_us": cpu / devices * 1e6})
        print(f"  {devices} devices, limit {connect_rate}: {c['rate'] or 0:,.0f}/s", file=sys.stderr, flush=True)
    return rows


# ---- 3. connections held -------------------------------------------------------------------------


def bench_held(per_process: int, processes: int, interval: float, hold: float) -> dict:
    from pushcore.admin.client import AdminClient

    gw, info = start_gateway()
    sims: list[Child] = []
    try:
        time.sleep(1.0)
        rss0 = rss_bytes(info["pid"])
        start = time.monotonic()
        for i in range(processes):
            sims.append(Child([str(HERE / "sim_proc.py"), "--port", str(info["port"]), "--devices",
                               str(per_process), "--prefix", f"held{i}-", "--interval", str(interval)],
                              f"simulator {i}"))
        ready = [s.read_json(120) for s in sims]
        ramp = time.monotonic() - start
        online = sum(r["online"] for r in ready)
        time.sleep(interval + 1.0)  # every connection has gone quiet once: PINGs are flowing
        with AdminClient(info["admin"], info["token"]) as client:
            m1 = client.metrics()
            cpu1, t1 = cpu_seconds(info["pid"]), time.monotonic()
            time.sleep(hold)
            m2 = client.metrics()
            cpu2, t2 = cpu_seconds(info["pid"]), time.monotonic()
        rss1 = rss_bytes(info["pid"])
        finals = [s.close() for s in sims]
        sims = []
    finally:
        for s in sims:
            s.close()
        gw.close()
    idle_timeouts = sum((f or {}).get("closes", {}).get("IDLE_TIMEOUT", 0) for f in finals)
    return {
        "connections": online, "processes": processes, "interval": interval, "ramp": ramp,
        "gateway_rss_mb": rss1 / 2**20,
        "bytes_per_conn": (rss1 - rss0) / max(online, 1),
        "gateway_cpu_pct": (cpu2 - cpu1) / (t2 - t1) * 100,
        "pings_per_s": (metric(m2, "pushcore_pings_answered_total") - metric(m1, "pushcore_pings_answered_total")) / (t2 - t1),
        "devices_connected": metric(m2, "pushcore_devices_connected"),
        "sim_rss_mb": [r["rss"] / 2**20 for r in ready],
        "heartbeat_failures": idle_timeouts,
    }


# ---- output ---------------------------------------------------------------------------------------


def machine() -> str:
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import pushcore

    return (f"{os.cpu_count()} CPUs ({model}), Linux {platform.release()}, Python {platform.python_version()}, "
            f"pushcore {pushcore.__version__} (codec backend {pushcore.BACKEND})")


def fmt(value, spec=",.2f") -> str:
    return "-" if value is None else format(value, spec)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller runs (about a minute)")
    parser.add_argument("--only", default="latency,setup,held", help="comma-separated: latency, setup, held")
    parser.add_argument("--json", default=None, help="also write the raw results here")
    args = parser.parse_args()
    only = set(args.only.split(","))
    unknown = only - {"latency", "setup", "held"}
    if unknown:
        parser.error(f"--only: unknown part(s) {sorted(unknown)}")
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    results: dict = {"machine": machine()}
    print(f"machine: {results['machine']}\n")

    if "latency" in only:
        rates = (200, 1000) if args.quick else (200, 1000, 5000)
        print("push latency ...", file=sys.stderr, flush=True)
        rows = results["latency"] = bench_latency(rates, devices=1000, duration=4.0 if args.quick else 10.0)
        print("### Push latency at a fixed rate (1,000 devices, SQLite store)\n")
        print("| pushes via | rate asked /s | achieved /s | sent | p50 ms | p90 ms | p99 ms | max ms | correct "
              "| gateway CPU % |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---|---:|")
        for r in rows:
            via = ("admin API, batch per 20 ms (3 processes: pusher, gateway, devices)" if r["mode"] == "admin"
                   else "gateway's loop thread (gateway, pusher and devices in one process)")
            print(f"| {via} | {r['rate']:,.0f} | {r['achieved']:,.0f} | {r['sent']:,} | {fmt(r['p50'])} | "
                  f"{fmt(r['p90'])} | {fmt(r['p99'])} | {fmt(r['max'])} | {'yes' if r['ok'] else 'NO'} | "
                  f"{fmt(r['gateway_cpu_pct'], '.0f')} |")
        print()

    if "setup" in only:
        cases = [(3000, 5000.0)] if args.quick else [
            (5000, 2000.0), (10000, 5000.0), (10000, 10000.0), (10000, 20000.0), (10000, None)]
        print("connection setup ...", file=sys.stderr, flush=True)
        rows = results["setup"] = bench_setup(cases)
        print("### Connection setup (HELLO → WELCOME), gateway in its own process\n")
        print("| devices | connect limit /s | all online in s | setups /s | connect p50 ms | p99 ms | max ms "
              "| failed attempts | gateway CPU µs / setup |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            limit = "none" if r["limit"] is None else f"{r['limit']:,.0f}"
            print(f"| {r['devices']:,} | {limit} | {fmt(r['ramp'])} | {fmt(r['rate'], ',.0f')} | {fmt(r['p50'])} | "
                  f"{fmt(r['p99'])} | {fmt(r['max'])} | {r['failures']:,} | {r['gateway_cpu_us']:,.0f} |")
        print()

    if "held" in only:
        per = 4000 if args.quick else 9000
        print("connections held ...", file=sys.stderr, flush=True)
        interval = 3.0 if args.quick else 5.0
        r = results["held"] = bench_held(per, 2, interval=interval, hold=2 * interval)
        print("### Connections held by one gateway process, heartbeats flowing\n")
        print("| connections | heartbeat | gateway RSS MiB | RSS per connection (bytes) | gateway CPU % "
              "| PINGs answered /s | heartbeat failures | simulator RSS MiB per process |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|")
        print(f"| {r['connections']:,} | every {r['interval']:g} s | {r['gateway_rss_mb']:,.1f} | "
              f"{r['bytes_per_conn']:,.0f} | {r['gateway_cpu_pct']:.1f} | {r['pings_per_s']:,.0f} | "
              f"{r['heartbeat_failures']} | {', '.join(f'{x:,.0f}' for x in r['sim_rss_mb'])} |")
        print()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
