"""The metrics of one gateway (:class:`pushcore.Server`), read at scrape time.

Nothing here runs per frame. The C loop counts connections, frames, bytes,
errors and queue sizes in C (``loop.stats()``); the server counts HELLOs and
refusals; the store knows its backlog. :class:`GatewayMetrics` reads all of
them when Prometheus scrapes and turns them into metric families. The loop
may only be touched from its own thread, so the reading is handed to the
loop with ``call_soon_threadsafe`` and the scrape waits (a loop turn: well
under a millisecond on an idle gateway).

The push→ack latency histogram comes from :mod:`pushcore.admin.ack_latency`
(attached to the server's store by :meth:`GatewayMetrics.track_push_ack`).

Metric names (all prefixed ``pushcore_``) are listed in docs/OPERATIONS.md.
"""
from __future__ import annotations

import os
import resource
import time
from typing import TYPE_CHECKING, Any

from ..errors import Reason, reason_name
from ..loop.handover import LoopUnavailable, call_on_loop
from .ack_latency import PushAckTracker, store_tracker, track_store
from .prometheus import LATENCY_BUCKETS, Histogram, MetricFamily, Registry, format_value

if TYPE_CHECKING:
    from ..gateway.server import Server

__all__ = ["GatewayMetrics", "ERROR_REASONS", "AUTH_REASONS", "process_start_time"]

# Close reasons that mean something went wrong (not an orderly close, a
# replaced connection or a shutdown): they make up pushcore_errors_total.
ERROR_REASONS = frozenset(
    {
        Reason.FRAME_TOO_LARGE, Reason.UNKNOWN_TYPE, Reason.TRUNCATED, Reason.VARINT_OVERRUN,
        Reason.INVALID_UTF8, Reason.TRAILING_BYTES, Reason.BAD_FLAGS, Reason.INVALID_VALUE,
        Reason.NOT_AUTHENTICATED, Reason.AUTH_FAILED, Reason.TOKEN_EXPIRED,
        Reason.UNSUPPORTED_VERSION, Reason.AUTH_TIMEOUT, Reason.IDLE_TIMEOUT,
        Reason.SLOW_CONSUMER, Reason.OVERLOADED, Reason.PEER_RESET, Reason.INTERNAL_ERROR,
        Reason.CONNECT_FAILED,
    }
)
# Close reasons that are a refused or missing authentication.
AUTH_REASONS = frozenset(
    {Reason.AUTH_FAILED, Reason.TOKEN_EXPIRED, Reason.UNSUPPORTED_VERSION,
     Reason.NOT_AUTHENTICATED, Reason.AUTH_TIMEOUT}
)

# server.stats keys -> (metric name, help)
_SERVER_COUNTERS = {
    "hello": ("pushcore_hellos_total", "HELLO frames received."),
    "welcome": ("pushcore_welcomes_total", "Devices welcomed (authenticated sessions started)."),
    "refused": ("pushcore_refusals_total", "Frames or sessions refused by the server with an ERROR."),
    "replaced": ("pushcore_replaced_total", "Connections replaced by a newer one of the same device."),
    "upstream": ("pushcore_upstream_total", "UPSTREAM messages received from devices."),
    "store_unavailable": ("pushcore_server_store_unavailable_total",
                          "Device frames skipped or refused because the store could not write "
                          "(a SUBSCRIBE's new topics; a HELLO whose counter raise could not be kept)."),
}

# loop.stats() counters exposed one to one: key -> (metric name, help)
_LOOP_COUNTERS = {
    "accepted": ("pushcore_connections_accepted_total", "Connections accepted."),
    "frames_in": ("pushcore_frames_received_total", "Frames received (PING included)."),
    "frames_out": ("pushcore_frames_sent_total", "Frames queued for sending."),
    "bytes_in": ("pushcore_bytes_received_total", "Bytes read from sockets."),
    "bytes_out": ("pushcore_bytes_sent_total", "Bytes written to sockets."),
    "pings_answered": ("pushcore_pings_answered_total", "PINGs answered with PONG (in C)."),
    "pauses": ("pushcore_send_pauses_total", "Times a connection's send queue went over the high watermark."),
    "callback_errors": ("pushcore_callback_errors_total", "Exceptions raised by Python handlers on the loop."),
    "accept_errors": ("pushcore_accept_errors_total", "Failed accept() calls (e.g. out of file descriptors)."),
    "turns": ("pushcore_loop_turns_total", "Turns of the connection loop."),
}


def _lag_families(lag: dict[str, Any] | None) -> list[MetricFamily]:
    """The loop lag (``loop.stats()["lag"]``): a histogram, its max, and the p99 of the last samples."""
    if not lag:
        return []
    hist = MetricFamily("pushcore_loop_lag_seconds", "histogram",
                        "How late the loop's timers fired (one sample per loop turn that fired any: "
                        "its latest timer). High values mean something blocked the loop thread.")
    for bound, n in lag["buckets"].items():
        hist.add(n, {"le": format_value(float(bound))}, "_bucket")
    hist.add(lag["sum"], suffix="_sum").add(lag["count"], suffix="_count")
    return [
        hist,
        MetricFamily("pushcore_loop_lag_max_seconds", "gauge",
                     "The largest loop lag since the loop started.").add(lag["max"]),
        MetricFamily("pushcore_loop_lag_recent_p99_seconds", "gauge",
                     "The 99th percentile of the last 1,024 loop-lag samples.").add(lag["recent_p99"]),
    ]


def _reason_label(code: int) -> str:
    return reason_name(code)


class GatewayMetrics:
    """A :class:`Registry` with a collector over one server's loop, counters and store.

    ``registry`` may be shared with other instruments (the admin API adds
    its request counters). Call :meth:`track_push_ack` to get the push→ack
    latency histogram (it hooks the server's store, once per store).
    """

    def __init__(self, server: Server, registry: Registry | None = None, *, timeout: float = 5.0) -> None:
        self.server = server
        self.registry = registry if registry is not None else Registry()
        self.timeout = timeout
        self.tracker: PushAckTracker | None = None
        started = process_start_time()
        self._started = started if started is not None else time.time()
        self.registry.add_collector(self.collect)

    def track_push_ack(self, max_pending: int = 1000) -> PushAckTracker:
        """Expose ``pushcore_push_ack_seconds``, fed from the server's store (:mod:`pushcore.admin.ack_latency`).

        A store already tracked (by another :class:`GatewayMetrics` of the
        same server) keeps its tracker, which is shared.
        """
        if self.tracker is None:
            store = self.server.store
            tracker = store_tracker(store)
            if tracker is None:
                tracker = PushAckTracker(Histogram(
                    "pushcore_push_ack_seconds",
                    "Seconds from a message's append to the store until the device acked it "
                    "(includes time offline).",
                    buckets=LATENCY_BUCKETS,
                ), max_pending=max_pending)
                track_store(store, tracker)
            self.tracker = tracker
            self.registry.register(tracker.histogram)
        return self.tracker

    # -- reading ----------------------------------------------------------------

    def snapshot(self) -> dict[str, Any] | None:
        """The loop-side numbers, read on the loop thread; None when the loop is not running."""
        server = self.server

        def read() -> dict[str, Any]:
            loop = server.loop
            return {
                "loop": loop.stats(),
                "pool": loop.pool_stats(),
                "server": dict(server.stats),
                "devices": server.device_count(),
            }

        try:
            loop = server.loop
        except Exception:
            return None
        if getattr(loop, "closed", False):
            return None
        try:
            return call_on_loop(loop, read, timeout=self.timeout)
        except LoopUnavailable:
            return None

    def collect(self) -> list[MetricFamily]:
        """Every gateway family (called by the registry at each scrape)."""
        families: list[MetricFamily] = []
        snap = self.snapshot()
        up = MetricFamily("pushcore_up", "gauge", "1 when the gateway's loop answered this scrape.")
        families.append(up.add(1 if snap is not None else 0))
        if snap is not None:
            families.extend(self._loop_families(snap))
        families.extend(self._store_families())
        families.extend(self._process_families())
        return families

    def _loop_families(self, snap: dict[str, Any]) -> list[MetricFamily]:
        stats = snap["loop"]
        out = [
            MetricFamily("pushcore_devices_connected", "gauge",
                         "Authenticated device sessions.").add(snap["devices"]),
            MetricFamily("pushcore_connections_open", "gauge",
                         "Open connections (authenticated or not).").add(stats.get("open", 0)),
            MetricFamily("pushcore_send_queue_bytes", "gauge",
                         "Bytes queued for sending, all connections.").add(stats.get("send_queue_bytes", 0)),
            MetricFamily("pushcore_receive_queue_bytes", "gauge",
                         "Bytes of partial frames buffered, all connections.").add(
                stats.get("recv_partial_bytes", 0)),
        ]
        out += [
            MetricFamily("pushcore_outbound_bytes", "gauge",
                         "Bytes queued for output, all connections (counted against the outbound budget).").add(
                stats.get("outbound_bytes", 0)),
            MetricFamily("pushcore_outbound_budget_bytes", "gauge",
                         "The outbound budget: past it the largest queues are closed SLOW_CONSUMER "
                         "(0 = none).").add(stats.get("outbound_budget", 0)),
            MetricFamily("pushcore_outbound_budget_closes_total", "counter",
                         "Connections closed SLOW_CONSUMER by the outbound budget.").add(
                stats.get("outbound_budget_closes", 0)),
            MetricFamily("pushcore_preauth_bytes", "gauge",
                         "Buffer bytes held by partial frames of unauthenticated connections.").add(
                stats.get("preauth_bytes", 0)),
            MetricFamily("pushcore_preauth_budget_bytes", "gauge",
                         "The pre-auth buffer budget (0 = none).").add(stats.get("preauth_budget", 0)),
        ]
        refused = MetricFamily("pushcore_connections_refused_total", "counter",
                               "Connections turned away with ERROR OVERLOADED, by the limit that refused them.")
        for why, n in sorted((stats.get("refused", {}) or {}).items()):
            refused.add(n, {"reason": why})
        out.append(refused)
        for key, (name, help_text) in _LOOP_COUNTERS.items():
            if key in stats:
                out.append(MetricFamily(name, "counter", help_text).add(stats[key]))
        closed_by = stats.get("closed_by_reason", {}) or {}
        closed = MetricFamily("pushcore_connections_closed_total", "counter",
                              "Connections closed, by reason.")
        errors = MetricFamily("pushcore_errors_total", "counter",
                              "Connections closed because something went wrong, by reason.")
        auth = MetricFamily("pushcore_auth_failures_total", "counter",
                            "Sessions refused or never authenticated, by reason.")
        for code in sorted(closed_by):
            n = closed_by[code]
            label = {"reason": _reason_label(code)}
            closed.add(n, label)
            if code in ERROR_REASONS:
                errors.add(n, label)
            if code in AUTH_REASONS:
                auth.add(n, label)
        detected = MetricFamily("pushcore_protocol_errors_total", "counter",
                                "Protocol and session errors detected by the C loop, by reason.")
        for code, n in sorted((stats.get("errors_by_code", {}) or {}).items()):
            detected.add(n, {"reason": _reason_label(code)})
        out += [closed, errors, auth, detected]
        for key, n in snap["server"].items():
            name, help_text = _SERVER_COUNTERS.get(
                key, (f"pushcore_server_{key}_total", f"Server counter {key!r}."))
            out.append(MetricFamily(name, "counter", help_text).add(n))
        out += _lag_families(stats.get("lag"))
        pool = snap["pool"]
        chunk = pool.get("chunk_size", 0)
        out.append(MetricFamily("pushcore_buffer_chunks_in_use", "gauge",
                                "Pooled I/O buffer chunks holding bytes in flight.").add(pool.get("in_use", 0)))
        out.append(MetricFamily("pushcore_buffer_bytes", "gauge",
                                "Bytes of pooled I/O buffers allocated (chunks and large frames).").add(
            pool.get("total_allocated", 0) * chunk + pool.get("big_bytes", 0)))
        return out

    def _store_families(self) -> list[MetricFamily]:
        store = self.server.store
        writable = MetricFamily(
            "pushcore_store_writable", "gauge",
            "1 while the store can write; 0 since a write failed (locked, I/O error, disk full, read-only).",
        ).add(1 if store.health().writable else 0)
        try:
            stats = store.stats()
            # Unexpired only, as the admin API's backlog counts: expired messages
            # wait for the background purge but are never sent.
            messages, devices = store.backlog_sizes()
        except Exception:
            return [writable]
        out = [
            writable,
            MetricFamily("pushcore_store_messages", "gauge",
                         "Unexpired messages stored, waiting for an ack (the backlog).").add(messages),
            MetricFamily("pushcore_store_devices_with_backlog", "gauge",
                         "Devices with at least one unexpired stored message.").add(devices),
            MetricFamily("pushcore_store_dropped_by_cap_total", "counter",
                         "Oldest messages dropped to respect the per-device cap.").add(stats.dropped_by_cap),
            MetricFamily("pushcore_store_collapsed_total", "counter",
                         "Messages replaced by a newer one with the same collapse key.").add(stats.collapsed),
            MetricFamily("pushcore_store_expired_total", "counter",
                         "Expired messages deleted.").add(stats.expired),
        ]
        if self.tracker is not None:
            out.append(MetricFamily("pushcore_messages_stored_total", "counter",
                                    "Messages appended to the store.").add(self.tracker.appended))
            out.append(MetricFamily("pushcore_messages_acked_total", "counter",
                                    "Stored messages acked by their device.").add(self.tracker.acked))
        return out

    def _process_families(self) -> list[MetricFamily]:
        # The names and meanings of the Prometheus client libraries' process collector, so
        # dashboards and alerts written for any exporter read these as they are.
        usage = resource.getrusage(resource.RUSAGE_SELF)
        out = [
            MetricFamily("process_cpu_seconds_total", "counter",
                         "Total user and system CPU time spent in seconds.").add(usage.ru_utime + usage.ru_stime),
            MetricFamily("process_start_time_seconds", "gauge",
                         "Start time of the process since unix epoch in seconds.").add(self._started),
        ]
        try:
            with open("/proc/self/statm") as f:
                pages = f.read().split()
            page_size = os.sysconf("SC_PAGE_SIZE")
            out.append(MetricFamily("process_virtual_memory_bytes", "gauge",
                                    "Virtual memory size in bytes.").add(int(pages[0]) * page_size))
            out.append(MetricFamily("process_resident_memory_bytes", "gauge",
                                    "Resident memory size in bytes.").add(int(pages[1]) * page_size))
            out.append(MetricFamily("process_open_fds", "gauge",
                                    "Number of open file descriptors.").add(len(os.listdir("/proc/self/fd"))))
        except (OSError, ValueError, IndexError):
            pass
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        out.append(MetricFamily("process_max_fds", "gauge",
                                "Maximum number of open file descriptors.").add(soft))
        return out


def process_start_time() -> float | None:
    """When this process started, Unix seconds (Linux ``/proc``; to within a second); None elsewhere.

    ``starttime`` of ``/proc/self/stat`` (clock ticks since boot) plus
    ``btime`` of ``/proc/stat`` (boot time, whole seconds), as the Prometheus
    client libraries compute ``process_start_time_seconds``.
    """
    try:
        with open("/proc/self/stat") as f:
            stat = f.read()
        # fields after "pid (comm) ": state is field 3, starttime field 22
        start_ticks = int(stat[stat.rindex(")") + 2:].split()[19])
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime "))
        return boot + start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None
