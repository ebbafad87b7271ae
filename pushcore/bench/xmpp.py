"""XMPP stanzas for the same messages pushcore sends, built with slixmpp.

This is the XMPP side of the codec comparison (benchmarks, ``pushcore
bench``, ``pushcore demo-codec``). It needs the optional ``slixmpp`` package
(``pip install -e '.[bench]'``); importing this module without it raises
``ImportError``.

What is compared, and why it is a fair (if anything, generous) XMPP:

* push — a ``<message>`` whose ``id`` is the 64-bit message id in hex, whose
  ``<body>`` is the payload, with a ``<push xmlns="urn:pushcore:push:1">``
  child carrying seq, priority, expiry and topic as attributes (the way
  push-over-XMPP services put their metadata in a namespaced child). No
  ``to``/``from`` addresses: pushcore frames carry none either, and a real
  server would add them, making XMPP bigger still. The payload must be
  UTF-8 text (XMPP cannot carry raw bytes without base64).
* heartbeat — an XEP-0199 ping ``<iq type="get">``, and the 1-byte
  whitespace keepalive of RFC 6120 §4.6.1 (which no one answers, so it
  proves nothing to its sender).
* ack — an XEP-0198 ``<a h="…"/>`` (cumulative, like pushcore's ACK) and an
  XEP-0184 delivery receipt (one per message).

Bytes on the wire are what slixmpp itself sends inside a ``jabber:client``
stream: the stanza serialised against the stream's default namespace (so
``xmlns="jabber:client"`` is not repeated on every stanza).

Decoding is what slixmpp does on receipt: the bytes are fed to one
long-lived ``xml.etree.ElementTree.XMLPullParser`` that has already seen the
stream header, each depth-1 element becomes a slixmpp stanza object, and the
fields are read out of it and converted to Python values. The parser's root
is cleared after each stanza, as slixmpp does, so memory stays flat.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from typing import cast

from slixmpp import Iq, Message
from slixmpp.plugins.xep_0184.stanza import Received
from slixmpp.plugins.xep_0198.stanza import Ack as StreamAck
from slixmpp.plugins.xep_0199.stanza import Ping
from slixmpp.xmlstream import ElementBase, register_stanza_plugin, tostring

__all__ = [
    "PushElement", "StreamReader", "STREAM_HEADER", "WHITESPACE_KEEPALIVE",
    "encode_push", "decode_push", "encode_ping", "decode_ping",
    "encode_stream_ack", "decode_stream_ack", "encode_receipt", "decode_receipt",
]

CLIENT_NS = "jabber:client"
PUSH_NS = "urn:pushcore:push:1"
STREAM_HEADER = (
    b'<?xml version="1.0"?><stream:stream xmlns="jabber:client" '
    b'xmlns:stream="http://etherx.jabber.org/streams" version="1.0">'
)
WHITESPACE_KEEPALIVE = b" "
_PING_TAG = "{urn:xmpp:ping}ping"


class PushElement(ElementBase):
    """``<push xmlns="urn:pushcore:push:1" seq=… priority=… expiry=… topic=…/>``."""

    name = "push"
    namespace = PUSH_NS
    plugin_attrib = "push"
    interfaces = {"seq", "priority", "expiry", "topic"}


# slixmpp's Message and Iq constructors are unannotated: they are called through
# these typed names (the same classes).
_new_message: Callable[..., Message] = Message
_new_iq: Callable[..., Iq] = Iq
# A parser asked for start and end events yields only (event, element) pairs
# (typeshed's read_events also has the 1-tuples of the other event kinds).
_StartEnd = Iterator[tuple[str, ET.Element]]

register_stanza_plugin(Message, PushElement)
register_stanza_plugin(Message, Received)  # XEP-0184 receipts, as slixmpp's plugin does
register_stanza_plugin(Iq, Ping)  # XEP-0199, as slixmpp's plugin does


def _wire(stanza: ElementBase) -> bytes:
    """The bytes slixmpp sends for *stanza* inside a jabber:client stream."""
    return tostring(stanza.xml, xmlns=CLIENT_NS).encode("utf-8")


class StreamReader:
    """The receiving half of an XMPP stream, as slixmpp's XMLStream runs it.

    ``feed(data)`` returns the top-level (depth-1) elements completed by *data*.
    """

    def __init__(self) -> None:
        self._parser: ET.XMLPullParser[ET.Element] = ET.XMLPullParser(("start", "end"))
        self._parser.feed(STREAM_HEADER)
        ((event, root),) = cast(_StartEnd, self._parser.read_events())
        self._root = root
        self._depth = 1

    def feed(self, data: bytes) -> list[ET.Element]:
        """Parse *data*; return every stanza it completed."""
        self._parser.feed(data)
        stanzas = []
        depth = self._depth
        for event, element in cast(_StartEnd, self._parser.read_events()):
            if event == "start":
                depth += 1
            else:
                depth -= 1
                if depth == 1:
                    stanzas.append(element)
                    self._root.clear()  # slixmpp keeps the root empty too
        self._depth = depth
        return stanzas


def _one(reader: StreamReader, data: bytes) -> ET.Element:
    stanzas = reader.feed(data)
    if len(stanzas) != 1:
        raise ValueError(f"expected one whole stanza, got {len(stanzas)}")
    return stanzas[0]


def encode_push(seq: int, message_id: int, priority: int, expiry: int, topic: str,
                payload: bytes) -> bytes:
    """The push message stanza for these fields, as wire bytes."""
    msg = _new_message()
    msg["id"] = f"{message_id:016x}"
    msg["body"] = payload.decode("utf-8")
    push = msg["push"]
    push["seq"] = str(seq)
    push["priority"] = "high" if priority else "low"
    if expiry:
        push["expiry"] = str(expiry)
    if topic:
        push["topic"] = topic
    return _wire(msg)


def decode_push(reader: StreamReader, data: bytes) -> tuple[int, int, int, int, str, bytes]:
    """Parse a push stanza: ``(seq, message_id, priority, expiry, topic, payload)``."""
    msg = _new_message(xml=_one(reader, data), recv=True)
    push = msg["push"]
    expiry = push["expiry"]
    return (
        int(push["seq"]),
        int(msg["id"], 16),
        1 if push["priority"] == "high" else 0,
        int(expiry) if expiry else 0,
        push["topic"],
        msg["body"].encode("utf-8"),
    )


def encode_ping(iq_id: str) -> bytes:
    """An XEP-0199 ping from the client to its server."""
    iq = _new_iq()
    iq["type"] = "get"
    iq["id"] = iq_id
    iq.enable("ping")
    return _wire(iq)


def decode_ping(reader: StreamReader, data: bytes) -> str:
    """Parse an XEP-0199 ping: returns its iq id (ValueError if it is not a ping)."""
    iq = _new_iq(xml=_one(reader, data))
    if iq["type"] != "get" or iq.xml.find(_PING_TAG) is None:
        raise ValueError("not an XEP-0199 ping")
    iq_id: str = iq["id"]
    return iq_id


def encode_stream_ack(h: int) -> bytes:
    """An XEP-0198 ``<a h=…/>``: every stanza up to the h-th has arrived."""
    ack = StreamAck()
    ack["h"] = h
    return _wire(ack)


def decode_stream_ack(reader: StreamReader, data: bytes) -> int:
    """Parse an XEP-0198 ack: returns h."""
    h: int = StreamAck(xml=_one(reader, data))["h"]
    return h


def encode_receipt(message_id: int) -> bytes:
    """An XEP-0184 receipt for the message with this id."""
    msg = _new_message()
    msg["receipt"] = f"{message_id:016x}"
    return _wire(msg)


def decode_receipt(reader: StreamReader, data: bytes) -> int:
    """Parse an XEP-0184 receipt: returns the acknowledged message id."""
    receipt = _new_message(xml=_one(reader, data), recv=True)["receipt"]
    if not receipt:
        raise ValueError("not an XEP-0184 receipt")
    return int(receipt, 16)
