"""``pushcore demo-codec``: the codec on one notification, in a few seconds.

Encodes the reference notification (:data:`pushcore.bench.comparison.REFERENCE`)
with the active codec backend, prints the frame byte by byte, decodes it
back, sets its size next to XMPP, MQTT 3.1.1, msgpack and JSON, and times a
few thousand encodes and decodes of each. Works with the core install alone;
the XMPP and msgpack comparisons need ``pip install -e '.[bench]'``.
"""
from __future__ import annotations

import datetime
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

from .comparison import BENCH_EXTRA_HINT, REFERENCE, Case, build_cases

if TYPE_CHECKING:
    from .table import Result

__all__ = ["push_layout", "run_demo"]

# PUSH flag bits (docs/PROTOCOL.md section 3)
_HIGH_PRIORITY, _EXPIRY, _COLLAPSE_KEY, _TOPIC = 0x1, 0x2, 0x4, 0x8

# Size rows of the demo, in this order: (case encoder name, label).
_SIZE_ROWS = (
    ("pushcore-python", "pushcore PUSH frame"),
    ("mqtt-3.1.1", "MQTT 3.1.1 PUBLISH, QoS 1 (topic + payload only)"),
    ("mqtt-3.1.1+json", "MQTT 3.1.1 PUBLISH + JSON envelope (all fields)"),
    ("msgpack", "msgpack map"),
    ("json", "JSON object"),
    ("xmpp-slixmpp", "XMPP <message> stanza (slixmpp)"),
)


def _uvarint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def push_layout(frame: bytes) -> list[tuple[bytes, str]]:
    """Split a PUSH *frame* into ``(bytes, what they are)`` parts, for display.

    Follows docs/PROTOCOL.md; it is a reader for people, not a decoder (it
    trusts the frame, which the codec made).
    """
    header = frame[0]
    flags = header & 0x0F
    names = [name for bit, name in ((_HIGH_PRIORITY, "high priority"), (_EXPIRY, "expiry"),
                                    (_COLLAPSE_KEY, "collapse key"), (_TOPIC, "topic"))
             if flags & bit]
    parts = [(frame[:1], f"header: type {header >> 4} (PUSH), flags {flags:#x} = "
                         f"{' | '.join(names) or 'none'}")]
    length, pos = _uvarint(frame, 1)
    parts.append((frame[1:pos], f"body length {length}"))
    seq, end = _uvarint(frame, pos)
    parts.append((frame[pos:end], f"seq {seq}"))
    pos = end
    parts.append((frame[pos:pos + 8],
                  f"message id {int.from_bytes(frame[pos:pos + 8], 'little'):#018x} (u64le)"))
    pos += 8
    if flags & _EXPIRY:
        expiry = int.from_bytes(frame[pos:pos + 4], "little")
        parts.append((frame[pos:pos + 4], f"expiry {expiry} (u32le)"))
        pos += 4
    for bit, name in ((_COLLAPSE_KEY, "collapse key"), (_TOPIC, "topic")):
        if flags & bit:
            size, start = _uvarint(frame, pos)
            text = frame[start:start + size].decode("utf-8", "replace")
            parts.append((frame[pos:start + size], f"{name} {text!r} (length {size})"))
            pos = start + size
    parts.append((frame[pos:], f"payload, {len(frame) - pos} bytes (rest of the body)"))
    return parts


def _hex(data: bytes, limit: int = 8) -> str:
    shown = data[:limit].hex(" ")
    return shown + (f" ... (+{len(data) - limit})" if len(data) > limit else "")


def _expiry_text(expiry: int) -> str:
    when = datetime.datetime.fromtimestamp(expiry, datetime.UTC)
    return when.strftime("%Y-%m-%d %H:%M UTC")


def _print_sizes(cases: Sequence[Case], out: TextIO) -> None:
    by_name = {c.encoder: c for c in cases if c.operation == "push"}
    xmpp = by_name.get("xmpp-slixmpp")
    print("\nthe same notification on the wire:", file=out)
    label_width = max(len(label) for _, label in _SIZE_ROWS)
    print(f"  {'format':{label_width}}  bytes" + ("  % of XMPP" if xmpp else ""), file=out)
    for name, label in _SIZE_ROWS:
        case = by_name.get(name)
        if case is None:
            continue
        size = len(case.frame)
        pct = f"  {100.0 * size / len(xmpp.frame):8.1f}%" if xmpp else ""
        print(f"  {label:{label_width}}  {size:5d}{pct}", file=out)


def _timed_ns(result: Result) -> tuple[float, float]:
    """``(encode ns, decode ns)`` of a timed case's result."""
    assert result.encode_ns is not None and result.decode_ns is not None  # measured: the case is timed
    return result.encode_ns, result.decode_ns


def _print_speed(cases: Sequence[Case], out: TextIO) -> None:
    from .table import measure

    push_cases = [c for c in cases if c.operation == "push" and c.timed]
    results = measure(push_cases, min_time=0.01, repeat=3)
    xmpp = next((r for r in results if r.case.baseline), None)
    print("\nquick speed, push (ns per operation, min of 3 short runs; "
          "`pushcore bench` for the full table):", file=out)
    width = max(len(r.case.encoder) for r in results)
    tail = "  (encode / decode vs XMPP)" if xmpp else ""
    print(f"  {'encoder':{width}}  {'encode':>8}  {'decode':>8}{tail}", file=out)
    for r in results:
        encode_ns, decode_ns = _timed_ns(r)
        line = f"  {r.case.encoder:{width}}  {encode_ns:8,.0f}  {decode_ns:8,.0f}"
        if xmpp:
            xmpp_encode_ns, xmpp_decode_ns = _timed_ns(xmpp)
            line += (f"  {xmpp_encode_ns / encode_ns:6.1f}x / "
                     f"{xmpp_decode_ns / decode_ns:.1f}x")
        print(line, file=out)


def run_demo(speed: bool = True, out: TextIO = sys.stdout) -> int:
    """Print the demo; returns the exit status."""
    from .. import codec
    from ..version import __version__

    n = REFERENCE
    print(f"pushcore {__version__} codec demo — backend: {codec.BACKEND}", file=out)
    print(f"\nreference notification: seq={n.seq} message_id={n.message_id:#x} "
          f"priority={'high' if n.priority else 'low'} expiry={n.expiry} "
          f"({_expiry_text(n.expiry)}) topic={n.topic!r}", file=out)
    print(f"  payload ({len(n.payload)} bytes): {n.payload.decode()}", file=out)

    frame = codec.encode_push(n.seq, n.message_id, n.payload, n.priority, n.expiry, "", n.topic)
    print(f"\nPUSH frame, {len(frame)} bytes:", file=out)
    for part, what in push_layout(frame):
        print(f"  {_hex(part):<36} {what}", file=out)
    decoded = codec.decode(frame)
    same = (decoded.seq, decoded.message_id, decoded.priority, decoded.expiry, decoded.topic,
            decoded.payload) == n.as_tuple()
    print(f"decoded back: {decoded.__class__.__name__}(seq={decoded.seq}, "
          f"message_id={decoded.message_id:#x}, ...) — equal to the input: "
          f"{'yes' if same else 'NO'}", file=out)
    ping = codec.frames.Ping().encode()
    ack = codec.encode_ack(n.seq)
    print(f"heartbeat PING: {ping.hex(' ')} ({len(ping)} bytes); "
          f"ACK of seq {n.seq}: {ack.hex(' ')} ({len(ack)} bytes)", file=out)

    cases, missing = build_cases(operations=("push",))
    _print_sizes(cases, out)
    if speed:
        _print_speed(cases, out)
    if missing:
        print("\nnot compared:", file=out)
        for why in missing:
            print(f"  - {why}", file=out)
        if any(BENCH_EXTRA_HINT in why for why in missing):
            print(f"for the XMPP and msgpack comparison, install the optional packages: "
                  f"{BENCH_EXTRA_HINT}", file=out)
    return 0 if same else 1
