"""The reference notification, and the same messages in every compared format.

One :class:`Case` is one message (push, heartbeat or ack) in one wire format
(pushcore Cython, pushcore pure Python, XMPP via slixmpp, MQTT 3.1.1,
msgpack, JSON). A case holds its encode and decode steps as Python
expressions evaluated in the case's namespace: the benchmark times exactly
those expressions (with :mod:`timeit`, so no wrapper call is added to any
of them), and :func:`build_cases` evaluates the very same expressions once
first to check that each decode gives back the fields that went in. Every
decode produces the fields as Python values — not just a parse tree — so the
formats are compared on equal work.

Optional competitors (slixmpp, msgpack) are left out when not installed;
:func:`build_cases` says which were missing.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from . import mqtt311
from .options import OPERATIONS

__all__ = [
    "Notification", "REFERENCE", "REFERENCE_PAYLOAD", "OPERATIONS", "Case",
    "CaseCheckError", "build_cases", "BENCH_EXTRA_HINT",
]

BENCH_EXTRA_HINT = "pip install -e '.[bench]'"

REFERENCE_PAYLOAD = b'{"title":"Flash sale","body":"50% off today only","url":"app://sale/42"}'


@dataclass(frozen=True)
class Notification:
    """The fields of one push, as pushcore's PUSH frame carries them."""

    seq: int
    message_id: int
    priority: int  # 1 = high, 0 = low
    expiry: int  # Unix seconds, 0 = never
    topic: str
    payload: bytes

    def as_tuple(self) -> tuple[int, int, int, int, str, bytes]:
        return (self.seq, self.message_id, self.priority, self.expiry, self.topic, self.payload)


REFERENCE = Notification(
    seq=42,
    message_id=0x8F3A6B2C1D4E5F60,
    priority=1,
    expiry=1_800_000_000,
    topic="news",
    payload=REFERENCE_PAYLOAD,
)
"""The notification every format encodes: the same in benchmarks, bench and demo."""

MQTT_PACKET_ID = 42  # a 16-bit per-session id: MQTT's only message identifier
PING_IQ_ID = "ping-1"


class CaseCheckError(AssertionError):
    """A format's decode did not give back what its encode put in."""


@dataclass
class Case:
    """One message in one wire format, with its timed encode/decode expressions.

    ``encode_expr`` evaluates to the wire bytes; ``decode_expr`` decodes the
    name ``frame`` (bound to those bytes) into Python values; ``normalize``
    maps that result to ``expected``'s shape for the check (it is not timed).
    ``None`` in ``expected`` marks a field the format does not carry.
    A case with no expressions is measured in bytes only.
    """

    operation: str
    encoder: str
    carries: str
    encode_expr: str | None
    decode_expr: str | None
    namespace: dict[str, Any]
    expected: Any
    normalize: Callable[[Any], Any] = lambda value: value
    frame: bytes = b""
    baseline: bool = False  # the XMPP row that ratios of this operation are taken against
    note: str = ""

    def __post_init__(self) -> None:
        # Own copy: several cases start from one namespace, and each binds its own ``frame``.
        self.namespace = dict(self.namespace)

    @property
    def timed(self) -> bool:
        return self.encode_expr is not None

    def encode(self) -> bytes:
        if self.encode_expr is None:
            raise TypeError(f"{self.operation}/{self.encoder} is measured in bytes only: no encode expression")
        frame: bytes = eval(self.encode_expr, self.namespace)  # noqa: S307 - our own constant expressions
        return frame

    def decode(self) -> Any:
        if self.decode_expr is None:
            raise TypeError(f"{self.operation}/{self.encoder} is measured in bytes only: no decode expression")
        return eval(self.decode_expr, self.namespace)  # noqa: S307

    def accepts(self, decoded: Any) -> bool:
        """Whether *decoded* (a result of ``decode_expr``) holds the expected fields."""
        return _matches(self.normalize(decoded), self.expected)

    def check(self) -> None:
        """Encode, decode, and compare with ``expected``; bind ``frame``."""
        if not self.timed:
            return
        self.frame = self.encode()
        self.namespace["frame"] = self.frame
        got = self.normalize(self.decode())
        if not _matches(got, self.expected):
            raise CaseCheckError(
                f"{self.operation}/{self.encoder}: decode gave {got!r}, expected {self.expected!r}"
            )


def _matches(got: Any, expected: Any) -> bool:
    if isinstance(expected, tuple):
        return isinstance(got, tuple) and len(got) == len(expected) and all(
            e is None or g == e for g, e in zip(got, expected)
        )
    return bool(got == expected)


def _fields_namespace(n: Notification) -> dict[str, Any]:
    return {
        "seq": n.seq, "message_id": n.message_id, "priority": n.priority,
        "expiry": n.expiry, "topic": n.topic, "payload": n.payload,
    }


def _push_fields_in_notification_order(
    values: tuple[int, int, bytes, int, int, str, str],
) -> tuple[int, int, int, int, str, bytes]:
    """Reorder ``Push.fields()`` (constructor order) to ``Notification.as_tuple()``'s order."""
    seq, message_id, payload, priority, expiry, _collapse_key, topic = values
    return (seq, message_id, priority, expiry, topic, payload)


def _pushcore_cases(name: str, module: Any, n: Notification) -> list[Case]:
    base = {"decode": module.decode, **_fields_namespace(n)}
    return [
        Case(
            "push", name, "all",
            "encode_push(seq, message_id, payload, priority, expiry, '', topic)",
            # fields() is the frame API's "every field as a Python value" call,
            # the counterpart of itemgetter() on msgpack's and JSON's dicts.
            "decode(frame).fields()",
            {**base, "encode_push": module.encode_push},
            n.as_tuple(),
            normalize=_push_fields_in_notification_order,
        ),
        Case(
            "heartbeat", name, "PING",
            "Ping().encode()",
            "decode(frame).TYPE",
            {**base, "Ping": module.Ping},
            module.PING,
        ),
        Case(
            "ack", name, "cumulative seq",
            "encode_ack(seq)",
            "decode(frame).seq",
            {**base, "encode_ack": module.encode_ack},
            n.seq,
        ),
    ]


_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def _json_fields(d: dict[str, Any]) -> tuple[Any, ...]:
    return (d["seq"], d["id"], d["prio"], d["exp"], d["topic"], d["payload"].encode("utf-8"))


def _mqtt_json_fields(packet: mqtt311.Publish) -> tuple[Any, ...]:
    d = json.loads(packet.payload)
    return (d["seq"], d["id"], d["prio"], d["exp"], packet.topic, d["payload"].encode("utf-8"))


def _mqtt_cases(n: Notification) -> list[Case]:
    ns = {
        "encode_publish": mqtt311.encode_publish, "encode_puback": mqtt311.encode_puback,
        "encode_pingreq": mqtt311.encode_pingreq, "decode_packet": mqtt311.decode_packet,
        "packet_id": MQTT_PACKET_ID, "dumps": _COMPACT_JSON, "loads": json.loads,
        "mqtt_json_fields": _mqtt_json_fields, **_fields_namespace(n),
    }
    return [
        Case(
            "push", "mqtt-3.1.1", "topic, payload; not seq/id/priority/expiry",
            "encode_publish(topic, payload, packet_id)",
            "decode_packet(frame)",
            ns, (None, None, None, None, n.topic, n.payload),
            normalize=lambda p: (None, None, None, None, p.topic, p.payload),
            note="QoS 1 PUBLISH, payload = the JSON; MQTT 3.1.1 has no field for seq, "
                 "a 64-bit id, priority or expiry (its 16-bit packet id is per session), "
                 "so they are not carried at all",
        ),
        Case(
            "push", "mqtt-3.1.1+json", "all (seq/id/priority/expiry in a JSON payload)",
            "encode_publish(topic, dumps({'seq': seq, 'id': message_id, 'prio': priority, "
            "'exp': expiry, 'payload': payload.decode()}).encode(), packet_id)",
            "mqtt_json_fields(decode_packet(frame))",
            ns, n.as_tuple(),
            note="QoS 1 PUBLISH whose payload is a JSON envelope carrying the fields MQTT lacks",
        ),
        Case(
            "heartbeat", "mqtt-3.1.1", "PINGREQ",
            "encode_pingreq()", "decode_packet(frame)",
            ns, "ping", normalize=lambda p: "ping" if isinstance(p, mqtt311.PingReq) else p,
        ),
        Case(
            "ack", "mqtt-3.1.1", "one packet id (not cumulative)",
            "encode_puback(packet_id)", "decode_packet(frame).packet_id",
            ns, MQTT_PACKET_ID, note="PUBACK acknowledges one QoS 1 PUBLISH by its packet id",
        ),
    ]


def _xmpp_cases(n: Notification) -> list[Case]:
    from . import xmpp as x

    ns = {
        "encode_push": x.encode_push, "decode_push": x.decode_push,
        "encode_ping": x.encode_ping, "decode_ping": x.decode_ping,
        "encode_stream_ack": x.encode_stream_ack, "decode_stream_ack": x.decode_stream_ack,
        "encode_receipt": x.encode_receipt, "decode_receipt": x.decode_receipt,
        "reader": x.StreamReader(), "ping_id": PING_IQ_ID, **_fields_namespace(n),
    }
    return [
        Case(
            "push", "xmpp-slixmpp", "all",
            "encode_push(seq, message_id, priority, expiry, topic, payload)",
            "decode_push(reader, frame)",
            ns, n.as_tuple(), baseline=True,
            note="<message id> with <body> = payload and a <push> child holding "
                 "seq/priority/expiry/topic; no to/from",
        ),
        Case(
            "heartbeat", "xmpp-slixmpp", "XEP-0199 ping iq",
            "encode_ping(ping_id)", "decode_ping(reader, frame)",
            ns, PING_IQ_ID, baseline=True,
        ),
        Case(
            "heartbeat", "xmpp-whitespace", "1 space (RFC 6120 4.6.1)",
            None, None, ns, None, frame=x.WHITESPACE_KEEPALIVE,
            note="one-way: nothing answers it, so it proves nothing to the sender; bytes only",
        ),
        Case(
            "ack", "xmpp-slixmpp", "XEP-0198 <a h> (cumulative)",
            "encode_stream_ack(seq)", "decode_stream_ack(reader, frame)",
            ns, n.seq, baseline=True,
        ),
        Case(
            "ack", "xmpp-receipt", "XEP-0184 receipt (one message)",
            "encode_receipt(message_id)", "decode_receipt(reader, frame)",
            ns, n.message_id,
        ),
    ]


def _msgpack_cases(n: Notification) -> list[Case]:
    import msgpack  # type: ignore[import-untyped]  # msgpack ships no type information

    ns = {
        "packb": msgpack.packb, "unpackb": msgpack.unpackb,
        "fields": itemgetter("seq", "id", "prio", "exp", "topic", "payload"),
        **_fields_namespace(n),
    }
    return [
        Case(
            "push", "msgpack", "all (map, payload as bin)",
            "packb({'seq': seq, 'id': message_id, 'prio': priority, 'exp': expiry, "
            "'topic': topic, 'payload': payload})",
            "fields(unpackb(frame))",
            ns, n.as_tuple(),
        ),
    ]


def _json_cases(n: Notification) -> list[Case]:
    ns = {"dumps": _COMPACT_JSON, "loads": json.loads, "json_fields": _json_fields,
          **_fields_namespace(n)}
    return [
        Case(
            "push", "json", "all (object, payload as string)",
            "dumps({'seq': seq, 'id': message_id, 'prio': priority, 'exp': expiry, "
            "'topic': topic, 'payload': payload.decode()}).encode()",
            "json_fields(loads(frame))",
            ns, n.as_tuple(),
        ),
    ]


def pushcore_backends() -> tuple[list[tuple[str, Any]], list[str]]:
    """``([(encoder name, codec module), …], [why a backend is missing, …])``."""
    from ..codec import select_backend

    found, missing = [], []
    try:
        found.append(("pushcore-cython", select_backend("cython")[1]))
    except ImportError as exc:
        missing.append(f"pushcore-cython (the extension is not built: {exc})")
    found.append(("pushcore-python", select_backend("python")[1]))
    return found, missing


def build_cases(
    n: Notification = REFERENCE,
    operations: tuple[str, ...] = OPERATIONS,
) -> tuple[list[Case], list[str]]:
    """Every available case for *operations*, each checked once.

    Returns ``(cases, missing)`` where *missing* names the formats left out
    and why. Raises :class:`CaseCheckError` if a format fails its round trip.
    """
    cases: list[Case] = []
    backends, missing = pushcore_backends()
    for name, module in backends:
        cases += _pushcore_cases(name, module, n)
    try:
        cases += _xmpp_cases(n)
    except ImportError:
        missing.append(f"xmpp-slixmpp (slixmpp is not installed: {BENCH_EXTRA_HINT})")
    cases += _mqtt_cases(n)
    try:
        cases += _msgpack_cases(n)
    except ImportError:
        missing.append(f"msgpack (msgpack is not installed: {BENCH_EXTRA_HINT})")
    cases += _json_cases(n)
    cases = [c for c in cases if c.operation in operations]
    for case in cases:
        case.check()
    order = {op: i for i, op in enumerate(OPERATIONS)}
    cases.sort(key=lambda c: order[c.operation])  # stable: keeps the format order within one
    return cases, missing
