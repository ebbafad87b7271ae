"""The MQTT 3.1.1 comparison codec follows the spec (it must be a fair comparison point)."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pushcore.bench import mqtt311
from pushcore.bench.mqtt311 import MalformedPacket, decode_packet


def test_publish_qos1_layout_matches_the_spec():
    # 3.3: fixed header 0x32 (PUBLISH, QoS 1), remaining length, topic (u16be length +
    # UTF-8), packet id (u16be), payload.
    packet = mqtt311.encode_publish("a/b", b"hi", packet_id=10)
    assert packet == bytes([0x32, 9, 0, 3]) + b"a/b" + bytes([0, 10]) + b"hi"


def test_publish_qos0_has_no_packet_id_and_flags_are_placed():
    assert mqtt311.encode_publish("t", b"", qos=0, retain=True) == bytes([0x31, 3, 0, 1]) + b"t"
    assert mqtt311.encode_publish("t", b"", 7, qos=2, dup=True)[0] == 0x3C


@pytest.mark.parametrize(
    ("length", "encoded"),
    [  # the boundary values of spec table 2.4
        (0, "00"), (127, "7f"), (128, "8001"), (16_383, "ff7f"), (16_384, "808001"),
        (2_097_151, "ffff7f"), (2_097_152, "80808001"), (268_435_455, "ffffff7f"),
    ],
)
def test_remaining_length_boundaries(length, encoded):
    assert mqtt311._remaining_length(length).hex() == encoded
    data = bytes([0xC0]) + bytes.fromhex(encoded)
    assert mqtt311._decode_remaining_length(data, len(data)) == (length, len(data))


def test_remaining_length_over_the_maximum_is_refused():
    with pytest.raises(ValueError):
        mqtt311._remaining_length(268_435_456)


def test_fixed_packets():
    assert mqtt311.encode_pingreq() == b"\xc0\x00"
    assert mqtt311.encode_pingresp() == b"\xd0\x00"
    assert mqtt311.encode_puback(0x1234) == b"\x40\x02\x12\x34"
    assert decode_packet(b"\xc0\x00") == mqtt311.PingReq()
    assert decode_packet(b"\xd0\x00") == mqtt311.PingResp()
    assert decode_packet(b"\x40\x02\x12\x34") == mqtt311.Puback(0x1234)


@settings(max_examples=300)
@given(
    topic=st.text(st.characters(blacklist_characters="+#\x00", blacklist_categories=("Cs",)),
                  min_size=1, max_size=40),
    payload=st.binary(max_size=300),
    qos=st.sampled_from([0, 1, 2]),
    packet_id=st.integers(1, 0xFFFF),
    retain=st.booleans(),
)
def test_publish_round_trip(topic, payload, qos, packet_id, retain):
    pid = packet_id if qos else 0
    packet = mqtt311.encode_publish(topic, payload, pid, qos=qos, retain=retain)
    assert decode_packet(packet) == mqtt311.Publish(topic, payload, qos, pid, False, retain)


@pytest.mark.parametrize(
    ("packet", "why"),
    [
        (b"", "truncated fixed header"),
        (b"\x32", "truncated fixed header"),
        (b"\x32\x80", "truncated remaining length"),
        (b"\x32\x80\x80\x80\x80\x01", "longer than 4 bytes"),
        (b"\x32\x05\x00\x01t\x00", "truncated packet"),
        (b"\x30\x03\x00\x01tX", "bytes after the packet"),
        (b"\x36\x05\x00\x01t\x00\x01", "QoS 3"),
        (b"\x38\x03\x00\x01t", "DUP set at QoS 0"),
        (b"\x32\x05\x00\x01t\x00\x00", "packet identifier 0"),
        (b"\x32\x04\x00\x01t\x00", "truncated packet identifier"),
        (b"\x30\x01\x00", "truncated topic name length"),
        (b"\x30\x03\x00\x05t", "truncated topic name"),
        (b"\x30\x03\x00\x01#", "invalid topic name"),
        (b"\x30\x02\x00\x00", "invalid topic name"),
        (b"\x30\x03\x00\x01\xff", "not UTF-8"),
        (b"\x42\x02\x00\x01", "reserved flags"),
        (b"\x40\x03\x00\x01\x00", "remaining length 3"),
        (b"\x40\x02\x00\x00", "packet identifier 0"),
        (b"\xc1\x00", "reserved flags"),
        (b"\xc0\x01\x00", "remaining length 1"),
        (b"\x10\x00", "not handled"),
    ],
)
def test_malformed_packets_are_refused(packet, why):
    with pytest.raises(MalformedPacket, match=why):
        decode_packet(packet)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"topic": "a/+", "payload": b"", "packet_id": 1},
        {"topic": "", "payload": b"", "packet_id": 1},
        {"topic": "t", "payload": b"", "packet_id": 0},
        {"topic": "t", "payload": b"", "packet_id": 65536},
        {"topic": "t", "payload": b"", "packet_id": 1, "qos": 0},
        {"topic": "t", "payload": b"", "packet_id": 1, "qos": 3},
        {"topic": "t", "payload": b"", "qos": 0, "dup": True},
    ],
)
def test_invalid_publish_arguments_are_refused(kwargs):
    with pytest.raises(ValueError):
        mqtt311.encode_publish(**kwargs)
