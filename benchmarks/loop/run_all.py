"""Run every connection-loop benchmark and print one table.

    python benchmarks/loop/run_all.py            # everything, ~3 minutes
    python benchmarks/loop/run_all.py --quick    # fewer frames / shorter runs
    python benchmarks/loop/run_all.py --only fanout,ping --markdown

Benchmarks (see BENCHMARKS.md, "Connection loop", for what each measures):

* fanout: 1,000 connections x 2,000 PUSH frames of 105 bytes, counted by
  benchmarks/loop/count_client.c; deliveries/s from the first byte to the last.
* ping: PING/PONG round trips/s with one PING outstanding on each of 1,000
  connections.
* idle: server RSS growth per idle authenticated connection at 10,000.

Everything runs on 127.0.0.1; every child process is bounded in time and
stopped at the end.  Compare ratios within one run: the machine is shared.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import cbuild  # noqa: E402
from procs import (  # noqa: E402
    Child,
    cpu_seconds,
    python_child,
    rss_breakdown,
    rss_bytes,
    run_delay_seconds,
    wait_for_quiet,  # noqa: E402
)

from wire import FRAME_SIZE, hello_frame, push_frames  # noqa: E402

FANOUT_BASELINE = "uvloop, 1 frame/turn"
PING_BASELINE = "uvloop"
IDLE_BASELINE = "asyncio"
PATIENCE_BUDGET = 20.0
IDLE_SETTLE_SECONDS = 2.0   # after the first idle second, before the RSS that counts   # seconds of waiting for quiet CPUs, over the whole run


@dataclass
class Row:
    benchmark: str
    implementation: str
    value: float | None            # None: the run failed
    unit: str
    higher_is_better: bool = True
    note: str = ""
    detail: dict = field(default_factory=dict)


def have_pushcore_loop() -> bool:
    try:
        import pushcore._loop  # noqa: F401
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------- fan-out

def fanout_servers(frames_file: Path, conns: int, with_pushcore: bool) -> list[tuple[str, object, bool]]:
    """(implementation name, server factory, client sends HELLO first)."""
    c_server = cbuild.build("c_fanout_server")
    common = ["--mode", "fanout", "--conns", conns, "--frames-file", frames_file, "--handshake"]
    servers = [
        ("C, 1 send per delivery",
         lambda: Child([c_server, "-n", conns, "-k", 1, "-F", frames_file], "c k=1"), False),
        ("C, 16 frames per send",
         lambda: Child([c_server, "-n", conns, "-k", 16, "-F", frames_file], "c k=16"), False),
        ("asyncio, 1 frame/turn",
         lambda: python_child("aio_servers.py", ["--impl", "asyncio", *common], "asyncio"), True),
        ("uvloop, 1 frame/turn",
         lambda: python_child("aio_servers.py", ["--impl", "uvloop", *common], "uvloop"), True),
        ("uvloop, 16 frames/turn",
         lambda: python_child("aio_servers.py", ["--impl", "uvloop", *common, "--burst", 16],
                              "uvloop burst"), True),
    ]
    if with_pushcore:
        pc = ["--mode", "fanout", "--conns", conns, "--frames-file", frames_file]
        servers += [
            ("pushcore, 1 frame/turn",
             lambda: python_child("pushcore_servers.py", [*pc, "--burst", 1], "pushcore"), True),
            ("pushcore, 16 frames/turn",
             lambda: python_child("pushcore_servers.py", [*pc, "--burst", 16], "pushcore burst"), True),
        ]
    return servers


def run_fanout(name: str, start_server, send_hello: bool, conns: int, frames: int,
               timeout: float) -> Row:
    client_exe = cbuild.build("count_client")
    argv = [client_exe, "fanout", "-n", conns, "-f", frames, "-t", timeout]
    with start_server() as server:
        port = server.expect("listening", 15)
        argv += ["-p", port]
        if send_hello:
            argv += ["-H", hello_frame().hex()]
        cpu0 = cpu_seconds(server.pid)
        delay0 = run_delay_seconds(server.pid)
        with Child(argv, "count_client") as client:
            result = client.json_line(timeout + 10)
            rc = client.wait(5)
        server_result = server.json_line(10) if rc == 0 else {}
        server_result["cpu_seconds"] = cpu_seconds(server.pid) - cpu0
        # runnable but not running: CPU taken by neighbours (or by the client)
        server_result["run_delay_seconds"] = run_delay_seconds(server.pid) - delay0
        server_result["cpu_us_per_delivery"] = (server_result["cpu_seconds"]
                                                / max(1, result["deliveries"]) * 1e6)
    detail = {"client": result, "server": server_result}
    if rc != 0 or not result.get("exact"):
        return Row("fanout", name, None, "deliveries/s", note=f"FAILED rc={rc}", detail=detail)
    return Row("fanout", name, result["rate"], "deliveries/s", detail=detail)


# ---------------------------------------------------------------- ping/pong

def ping_servers(conns: int, with_pushcore: bool) -> list[tuple[str, object]]:
    common = ["--mode", "ping", "--conns", conns]
    servers = [
        ("asyncio", lambda: python_child("aio_servers.py", ["--impl", "asyncio", *common], "asyncio")),
        ("uvloop", lambda: python_child("aio_servers.py", ["--impl", "uvloop", *common], "uvloop")),
    ]
    if with_pushcore:
        servers.append(
            ("pushcore", lambda: python_child("pushcore_servers.py", common, "pushcore")))
    return servers


def run_ping(name: str, start_server, conns: int, seconds: float, timeout: float) -> Row:
    client_exe = cbuild.build("count_client")
    with start_server() as server:
        port = server.expect("listening", 15)
        argv = [client_exe, "ping", "-n", conns, "-p", port, "-d", seconds, "-w", 0.5,
                "-t", timeout, "-H", hello_frame().hex()]
        with Child(argv, "count_client") as client:
            client.expect("measuring", timeout)
            cpu0 = cpu_seconds(server.pid)
            delay0 = run_delay_seconds(server.pid)
            result = client.json_line(timeout + 10)
            cpu1 = cpu_seconds(server.pid)
            result["server_run_delay_seconds"] = run_delay_seconds(server.pid) - delay0
            rc = client.wait(5)
        # server CPU time per round trip over the measured window
        result["server_cpu_us_per_rt"] = (cpu1 - cpu0) / max(1, result["round_trips"]) * 1e6
    if rc != 0:
        return Row("ping", name, None, "round trips/s", note=f"FAILED rc={rc}", detail=result)
    return Row("ping", name, result["rate"], "round trips/s", detail=result)


# ---------------------------------------------------------------- idle memory

def idle_servers(conns: int, with_pushcore: bool) -> list[tuple[str, object]]:
    common = ["--mode", "idle", "--conns", conns]
    servers = [
        ("asyncio", lambda: python_child("aio_servers.py", ["--impl", "asyncio", *common], "asyncio")),
    ]
    if with_pushcore:
        servers.insert(
            0, ("pushcore", lambda: python_child("pushcore_servers.py", common, "pushcore")))
    return servers


def run_idle(name: str, start_server, conns: int, timeout: float) -> Row:
    """RSS growth of the server per idle authenticated connection."""
    client_exe = cbuild.build("count_client")
    hello = hello_frame().hex()
    with start_server() as server:
        port = server.expect("listening", 15)
        # warm-up: a few connections through the whole path (first-call
        # allocations, imports), then closed; the baseline is taken after
        warm = 50
        with Child([client_exe, "idle", "-n", warm, "-p", port, "-t", timeout, "-H", hello],
                   "warm-up client") as client:
            client.expect("handshaken", timeout)
            client.close_stdin()
            client.json_line(10)
        time.sleep(0.5)
        before = rss_bytes(server.pid)
        parts_before = rss_breakdown(server.pid)
        with Child([client_exe, "idle", "-n", conns, "-p", port, "-t", timeout, "-H", hello],
                   "idle client") as client:
            client.expect("handshaken", timeout)
            server_report = server.json_line(timeout)   # all authenticated, 0.5 s later
            time.sleep(0.5)   # idle: nothing in flight
            early = rss_bytes(server.pid)
            # steady state: pushcore's pool gives cached slabs back once a second
            time.sleep(IDLE_SETTLE_SECONDS)
            after = rss_bytes(server.pid)
            parts_after = rss_breakdown(server.pid)
            client.close_stdin()
            result = client.json_line(10)
    growth = (after - before) / conns
    detail = {"rss_before": before, "rss_after": after, "client": result,
              "growth_per_conn_1s": (early - before) / conns,
              "growth_per_conn_by_kind": {k: (parts_after[k] - parts_before[k]) / conns
                                          for k in parts_after},
              "server": server_report}
    return Row("idle memory", name, growth, "bytes/conn", higher_is_better=False, detail=detail)


# ---------------------------------------------------------------- rounds

def run_jobs(jobs: list, repeat: int, patience: float) -> list[Row]:
    """Run the jobs in interleaved rounds and keep each one's best round.

    The machine is shared and noisy: interleaving spreads a neighbour's burst
    over all implementations instead of one, and before each run we wait
    (briefly) for the CPUs to be quiet and record how busy they were.
    """
    results: dict[tuple[str, str], list[Row]] = {}
    budget = PATIENCE_BUDGET   # total seconds all waits for quiet may take
    for rnd in range(repeat):
        for benchmark, name, rounds, unit, higher, run in jobs:
            if rnd >= rounds:
                continue
            t_wait = time.monotonic()
            busy = wait_for_quiet(patience=min(patience, budget))
            budget = max(0.0, budget - (time.monotonic() - t_wait))
            print(f"{benchmark}: {name} (round {rnd + 1}, cpu busy before {busy:.0%}) ...",
                  file=sys.stderr, flush=True)
            try:
                row = run()
            except RuntimeError as exc:
                row = Row(benchmark, name, None, unit, higher_is_better=higher, note=f"FAILED: {exc}")
            row.detail["busy_before"] = round(busy, 3)
            results.setdefault((benchmark, name), []).append(row)
    rows = []
    for benchmark, name, _rounds, _unit, higher, _run in jobs:
        runs = results[(benchmark, name)]
        ok = [r for r in runs if r.value is not None]
        if not ok:
            rows.append(runs[0])
            continue
        best = (max if higher else min)(ok, key=lambda r: r.value)
        best.detail["all_rounds"] = [r.value for r in runs]
        rows.append(best)
    return rows


# ---------------------------------------------------------------- table

def ratios(rows: list[Row]) -> dict[int, float | None]:
    """Each row's value divided by its benchmark's baseline value.

    Rates: > 1 is faster than the baseline.  Memory: < 1 is smaller."""
    base = {}
    for r in rows:
        if (r.benchmark, r.implementation) in (("fanout", FANOUT_BASELINE), ("ping", PING_BASELINE),
                                               ("idle memory", IDLE_BASELINE)):
            base[r.benchmark] = r.value
    out = {}
    for i, r in enumerate(rows):
        b = base.get(r.benchmark)
        if r.value is None or not b:
            out[i] = None
        else:
            out[i] = r.value / b
    return out


def fmt_value(r: Row) -> str:
    if r.value is None:
        return r.note
    if r.unit == "bytes/conn":
        return f"{r.value:,.0f} {r.unit}"
    return f"{r.value:,.0f} {r.unit}"


def server_cpu(r: Row) -> str:
    """Server CPU time per operation: steadier than a rate on a shared machine."""
    if r.value is None:
        return ""
    if r.benchmark == "fanout":
        us = r.detail.get("server", {}).get("cpu_us_per_delivery")
        return "" if us is None else f"{us:.2f} us/delivery"
    if r.benchmark == "ping":
        us = r.detail.get("server_cpu_us_per_rt")
        return "" if us is None else f"{us:.2f} us/round trip"
    return ""


def server_waited(r: Row) -> str:
    """Share of the measured time the server was runnable but had no CPU."""
    if r.value is None:
        return ""
    if r.benchmark == "fanout":
        delay = r.detail.get("server", {}).get("run_delay_seconds")
        wall = r.detail.get("client", {}).get("seconds")
    elif r.benchmark == "ping":
        delay = r.detail.get("server_run_delay_seconds")
        wall = r.detail.get("seconds")
    else:
        return ""
    if delay is None or not wall or delay != delay:
        return ""
    return f"{min(1.0, delay / wall):.0%}"


def table(rows: list[Row], markdown: bool) -> str:
    rat = ratios(rows)
    header = ("benchmark", "implementation", "result", "ratio", "server CPU", "no CPU")
    body = []
    for i, r in enumerate(rows):
        ratio = rat[i]
        base = {"fanout": FANOUT_BASELINE, "ping": PING_BASELINE,
                "idle memory": IDLE_BASELINE}[r.benchmark]
        ratio_s = "" if ratio is None else f"{ratio:.2f}x {base.split(',')[0]}"
        body.append((r.benchmark, r.implementation, fmt_value(r), ratio_s, server_cpu(r),
                     server_waited(r)))
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|---|---|---:|---:|---:|---:|"]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines)
    widths = [max(len(x[i]) for x in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines.append("  ".join("-" * w for w in widths))
    for row in body:
        lines.append("  ".join([row[0].ljust(widths[0]), row[1].ljust(widths[1]),
                                *(c.rjust(w) for c, w in zip(row[2:], widths[2:]))]))
    return "\n".join(lines)


def machine() -> str:
    model = "unknown CPU"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return f"{model}, {os.cpu_count()} CPUs, Linux {platform.release()}, Python {platform.python_version()}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default="fanout,ping,idle", help="comma-separated: fanout,ping,idle")
    p.add_argument("--quick", action="store_true", help="500 frames, 1 s ping runs, 2,000 idle conns")
    p.add_argument("--conns", type=int, default=1000)
    p.add_argument("--frames", type=int, default=None)
    p.add_argument("--idle-conns", type=int, default=None)
    p.add_argument("--ping-seconds", type=float, default=None)
    p.add_argument("--no-pushcore", action="store_true", help="skip pushcore even if built")
    p.add_argument("--repeat", type=int, default=2,
                   help="rounds of fanout and ping (interleaved); the best round is reported")
    p.add_argument("--patience", type=float, default=4.0,
                   help="seconds to wait before each run for the shared CPUs to go quiet")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    p.add_argument("--json", help="also write every row with its details to this file")
    args = p.parse_args(argv)
    frames = args.frames or (500 if args.quick else 2000)
    idle_conns = args.idle_conns or (2000 if args.quick else 10000)
    ping_seconds = args.ping_seconds or (1.0 if args.quick else 2.0)
    only = set(args.only.split(","))
    with_pushcore = have_pushcore_loop() and not args.no_pushcore
    if not with_pushcore and not args.no_pushcore:
        print("note: pushcore._loop is not built; running the other implementations only",
              file=sys.stderr)

    jobs = []   # (benchmark, implementation, rounds, run() -> Row)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="loopbench-") as tmp:
        frames_file = Path(tmp) / "frames.bin"
        frames_file.write_bytes(b"".join(push_frames(frames)))
        if "fanout" in only:
            for name, start, hello in fanout_servers(frames_file, args.conns, with_pushcore):
                # uvloop in bursts is context (it does not coalesce), not a target: one round
                rounds = 1 if name == "uvloop, 16 frames/turn" else args.repeat
                jobs.append(("fanout", name, rounds, "deliveries/s", True,
                             lambda name=name, start=start, hello=hello:
                             run_fanout(name, start, hello, args.conns, frames, timeout=60)))
        if "ping" in only:
            for name, start in ping_servers(args.conns, with_pushcore):
                jobs.append(("ping", name, args.repeat, "round trips/s", True,
                             lambda name=name, start=start:
                             run_ping(name, start, args.conns, ping_seconds, timeout=30)))
        if "idle" in only:
            for name, start in idle_servers(idle_conns, with_pushcore):
                jobs.append(("idle memory", name, 1, "bytes/conn", False,
                             lambda name=name, start=start:
                             run_idle(name, start, idle_conns, timeout=60)))
        rows = run_jobs(jobs, args.repeat, args.patience)
    elapsed = time.monotonic() - t0
    busiest = max((r.detail.get("busy_before", 0) for r in rows), default=0)
    print(f"# {machine()}")
    if busiest > 0.15:
        print(f"# WARNING: other work used up to {busiest:.0%} of the CPUs before a run: "
              f"numbers are depressed and noisy")
    print(f"# fanout: {args.conns} conns x {frames} frames of {FRAME_SIZE} B; "
          f"ping: {args.conns} conns, {ping_seconds:g} s; idle: {idle_conns} conns; "
          f"total {elapsed:.0f} s")
    print(table(rows, args.markdown))
    print("# server CPU: server CPU time per operation (steadier than rates on a shared machine);\n"
          "# no CPU: share of the measured time the server was runnable but waiting for a CPU")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([r.__dict__ for r in rows], f, indent=1)
    return 0 if all(r.value is not None for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
