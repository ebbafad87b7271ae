"""``pushcore demo``: a gateway and a fleet of simulated devices in one process, then the report.

What it shows, in well under a minute on the defaults:

* a :class:`pushcore.Server` on a temporary SQLite store and its admin API;
* 2,000 simulated devices on one C-level loop (:class:`pushcore.Simulator`)
  with the published adaptive heartbeat run 250x faster, a NAT that drops
  idle connections after 1.45 s in front of a fifth of them, churn and a few
  link resets;
* pushes at a fixed rate, each checked on arrival: the report says whether
  every device got every message once and in order, the end-to-end latency,
  connect times, and the heartbeat interval the NAT'd devices settled on;
* a few of the gateway's own Prometheus metrics, scraped from its admin API.
"""
from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
import time

from ..sim.profiles import DEMO_PROFILE, Profile
from . import demo_cluster
from .common import CommandError, raise_fd_limit
from .flags import store_target
from .simulate import DEVICES, DURATION, RATE, add_profile_arguments, profile_from_args, write_report

__all__ = ["add_arguments", "run", "metrics_summary"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--devices", type=DEVICES, default=None,
                        help="simulated devices (default 2000; 600 with --cluster)")
    parser.add_argument("--duration", type=DURATION, default=None,
                        help="seconds of traffic (default 12; 30 with --cluster)")
    parser.add_argument("--rate", type=RATE, default=None, help="pushes per second (default 400; 300 with --cluster)")
    parser.add_argument("--store", type=store_target, default=None, metavar="STORE",
                        help="gateway store: memory, or a SQLite file: PATH.db, sqlite:PATH, ./NAME "
                             "(default: a temporary SQLite file)")
    parser.add_argument("--seed", type=int, default=None, help="make the random choices repeatable")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the report as JSON (- for stdout)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="show a progress bar on stderr (default: when stderr is a terminal)")
    add_profile_arguments(parser, DEMO_PROFILE)
    demo_cluster.add_arguments(parser)


def metrics_summary(text: str) -> list[str]:
    """A few lines about the gateway from its Prometheus text (exposition 0.0.4)."""
    values: dict[str, float] = {}
    by_reason: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, _, value = line.rpartition(" ")
        try:
            number = float(value)
        except ValueError:
            continue
        name, _, labels = name_labels.partition("{")
        if labels and 'reason="' in labels:
            reason = labels.split('reason="', 1)[1].split('"', 1)[0]
            by_reason.setdefault(name, {})[reason] = number
        elif not labels:
            values[name] = number
    g = values.get
    lines = [
        f"frames in/out {g('pushcore_frames_received_total', 0):,.0f} / {g('pushcore_frames_sent_total', 0):,.0f}, "
        f"bytes in/out {g('pushcore_bytes_received_total', 0):,.0f} / {g('pushcore_bytes_sent_total', 0):,.0f}, "
        f"PINGs answered in C {g('pushcore_pings_answered_total', 0):,.0f}",
    ]
    acked = g("pushcore_push_ack_seconds_count", 0)
    if acked:
        mean_ms = g("pushcore_push_ack_seconds_sum", 0) / acked * 1000
        lines.append(f"push->ack: {acked:,.0f} messages acked, mean {mean_ms:.1f} ms "
                     f"(ACKs are batched for up to 50 ms); store backlog {g('pushcore_store_messages', 0):,.0f}")
    closed = by_reason.get("pushcore_connections_closed_total", {})
    if closed:
        lines.append("connections closed: " + ", ".join(
            f"{k} {v:,.0f}" for k, v in sorted(closed.items(), key=lambda kv: -kv[1])))
        if closed.get("REPLACED"):
            lines.append("  (REPLACED: a device reconnected while the gateway still held its old connection, "
                         "as after a silent NAT drop, which the devices count as IDLE_TIMEOUT)")
    errors = {k: v for k, v in by_reason.get("pushcore_errors_total", {}).items() if v}
    lines.append("errors: " + (", ".join(f"{k} {v:,.0f}" for k, v in sorted(errors.items())) or "none"))
    rss = g("process_resident_memory_bytes")
    if rss:
        lines.append(f"process: {rss / 2**20:,.0f} MiB resident (gateway and devices together), "
                     f"{g('process_cpu_seconds_total', 0):.1f} s CPU")
    return lines


def run(args: argparse.Namespace) -> int:
    from ..admin.api import AdminAPI
    from ..admin.client import AdminClient, AdminError
    from ..gateway.server import Server
    from ..sim.report import Progress
    from ..sim.simulator import Simulator
    from ..sim.traffic import Pusher, ServerSink
    from ..store import StoreError, open_store

    if args.cluster:
        if args.store is not None:
            raise CommandError("--cluster runs its own Redis store: leave out --store")
        return demo_cluster.run(args)
    args.devices = 2000 if args.devices is None else args.devices
    args.duration = 12.0 if args.duration is None else args.duration
    args.rate = 400.0 if args.rate is None else args.rate
    profile = profile_from_args(args, DEMO_PROFILE)
    raise_fd_limit(2 * args.devices + 128, f"--devices {args.devices} (gateway and devices in one process)")
    out = sys.stdout
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="pushcore-demo-") as tmp:
        store_target = args.store or os.path.join(tmp, "demo.db")
        try:
            store = open_store(store_target)
        except (StoreError, OSError, ValueError) as exc:
            raise CommandError(f"--store {store_target}: {exc}") from None
        secret = os.urandom(32)
        grant_max = max(5, int(profile.heartbeat_cap * profile.heartbeat_scale) + 1)
        server = Server("127.0.0.1", 0, secret=secret, store=store, heartbeat=(0, grant_max), idle_grace=5.0)
        host, port = server.start()
        admin_token = secrets.token_urlsafe(24)
        admin = AdminAPI(server, admin_token, port=0)
        admin.start()
        sim = pusher = None
        try:
            sim = Simulator([(host, port)], devices=args.devices, secret=secret, profile=profile,
                            seed=args.seed)
            if args.rate > 0:
                pusher = Pusher(ServerSink(server, sim.id_prefix, sim.run_id), args.devices, args.rate,
                                seed=args.seed)
            print(f"pushcore demo: gateway on {host}:{port} (SQLite store {'in a temporary directory' if not args.store else store_target}), "
                  f"admin API on {admin.url}", file=out)
            print(f"  {args.devices:,} simulated devices on one loop; {args.rate:g} pushes/s for "
                  f"{args.duration:g} s; {_behaviour(profile)}", file=out, flush=True)
            report = sim.run(args.duration, pusher=pusher, drain_timeout=15.0,
                             progress=Progress(enabled=args.progress))
            print("", file=out)
            write_report(report, args.json, out)
            if args.json != "-":
                try:
                    with AdminClient(admin.url, admin_token) as client:
                        text = client.metrics()
                    print("\ngateway metrics (scraped from its admin API, /metrics):", file=out)
                    for line in metrics_summary(text):
                        print(f"  {line}", file=out)
                except AdminError as exc:
                    print(f"(gateway metrics unavailable: {exc.message})", file=out)
                print(f"\ndone in {time.monotonic() - started:.1f} s", file=out)
            return 0 if report.ok else 1
        finally:
            if pusher is not None:
                pusher.stop()
            if sim is not None:
                sim.close()
            admin.stop()
            server.stop(timeout=5.0)


def _behaviour(profile: Profile) -> str:
    parts = []
    if profile.heartbeat == "adaptive":
        s = profile.heartbeat_scale
        parts.append(f"adaptive heartbeat from {profile.heartbeat_floor * s:.2f} s "
                     f"(the published 210 s x {s:g})")
    elif profile.heartbeat == "fixed":
        parts.append(f"heartbeat every {profile.heartbeat_fixed:g} s")
    if profile.nat_timeout is not None:
        parts.append(f"a NAT drops idle connections after {profile.nat_timeout:g} s "
                     f"for {profile.nat_fraction:.0%} of them")
    if profile.churn_online is not None:
        parts.append(f"churn (online ~{profile.churn_online:g} s, away ~{profile.churn_offline:g} s)")
    if profile.reset_rate:
        parts.append(f"link resets ({profile.reset_rate:g}/device/s)")
    return "; ".join(parts) or "steady devices"
