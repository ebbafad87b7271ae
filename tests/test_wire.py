"""ext/pc_wire.h (the C level's wire constants) equals pushcore.wire (the Python ones).

The header is read with a regular expression, not compiled: every
``PC_NAME = value`` enumerator and ``#define PC_NAME value`` macro. Each must
match pushcore.wire, and every constant of pushcore.wire must be in the header,
so neither side can gain a number the other lacks. The compiled codec's Python
constants (derived from the header's values) must equal pushcore.wire's too.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from pushcore import wire

HEADER = Path(__file__).resolve().parent.parent / "ext" / "pc_wire.h"

_ENUMERATOR = re.compile(r"^\s*(PC_\w+)\s*=\s*(0[xX][0-9A-Fa-f]+|\d+)\s*,?\s*(?:/\*.*\*/)?\s*$")
_DEFINE = re.compile(r"^\s*#\s*define\s+(PC_\w+)\s+(0[xX][0-9A-Fa-f]+|\d+)[uU]?[lL]{0,2}\s*(?:/\*.*\*/)?\s*$")

# header names that are not "PC_" + a pushcore.wire name
_HEADER_BYTES = {"PC_PING_HEADER": wire.PING_BYTES[0], "PC_PONG_HEADER": wire.PONG_BYTES[0]}


def header_constants() -> dict[str, int]:
    constants: dict[str, int] = {}
    for line in HEADER.read_text().splitlines():
        m = _ENUMERATOR.match(line) or _DEFINE.match(line)
        if m:
            name, value = m.group(1), int(m.group(2), 0)
            assert name not in constants, f"{name} defined twice in pc_wire.h"
            constants[name] = value
    return constants


def wire_ints() -> dict[str, int]:
    """Every scalar int constant pushcore.wire exports (frame type short names included)."""
    return {
        name: value for name in wire.__all__
        if type(value := getattr(wire, name)) is int
    }


@pytest.fixture(scope="module")
def header():
    constants = header_constants()
    assert len(constants) > 50, "the regex found almost nothing: did pc_wire.h change style?"
    return constants


def test_every_reason_is_in_the_header(header):
    reasons = {name[len("PC_R_"):]: value for name, value in header.items() if name.startswith("PC_R_")}
    assert reasons == {r.name: r.value for r in wire.Reason}


def test_every_frame_type_is_in_the_header(header):
    for t in wire.FrameType:
        assert header[f"PC_{t.name}"] == t.value == getattr(wire, t.name)


def test_flags_limits_and_versions(header):
    for name in ("PUSH_HIGH_PRIORITY", "PUSH_HAS_EXPIRY", "PUSH_HAS_COLLAPSE_KEY", "PUSH_HAS_TOPIC",
                 "UPSTREAM_HAS_TOPIC", "GOAWAY_HAS_SERVERS", "PROTOCOL_VERSION",
                 "DEFAULT_MAX_FRAME_SIZE", "PRIORITY_LOW", "PRIORITY_HIGH", "MAX_VERSIONS",
                 "MAX_PORT", "MAX_BODY_LENGTH", "LENGTH_VARINT_MAX_BYTES", "FIELD_VARINT_MAX_BYTES"):
        assert header[f"PC_{name}"] == getattr(wire, name), name
    # the flags each type defines, as the header spells them
    assert wire.FLAGS == {
        wire.PUSH: header["PC_PUSH_HIGH_PRIORITY"] | header["PC_PUSH_HAS_EXPIRY"]
        | header["PC_PUSH_HAS_COLLAPSE_KEY"] | header["PC_PUSH_HAS_TOPIC"],
        wire.UPSTREAM: header["PC_UPSTREAM_HAS_TOPIC"],
        wire.GOAWAY: header["PC_GOAWAY_HAS_SERVERS"],
    }


def test_ping_and_pong_header_bytes(header):
    assert bytes((header["PC_PING_HEADER"], 0)) == wire.PING_BYTES == bytes((wire.PING << 4, 0))
    assert bytes((header["PC_PONG_HEADER"], 0)) == wire.PONG_BYTES == bytes((wire.PONG << 4, 0))


def test_nothing_on_one_side_only(header):
    expected = {f"PC_{name}": value for name, value in wire_ints().items()}
    expected.update({f"PC_R_{r.name}": r.value for r in wire.Reason})
    expected.update(_HEADER_BYTES)
    assert header == expected


def test_compiled_codec_constants_equal_wire():
    frame = pytest.importorskip("pushcore._frame")
    for name in ("PROTOCOL_VERSION", "DEFAULT_MAX_FRAME_SIZE", "PRIORITY_LOW", "PRIORITY_HIGH",
                 "PING_BYTES", "PONG_BYTES", *(t.name for t in wire.FrameType)):
        assert getattr(frame, name) == getattr(wire, name), name
        assert type(getattr(frame, name)) is type(getattr(wire, name)), name
