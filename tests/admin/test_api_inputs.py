"""Admin API inputs (issue 10, item 9c/9d): batch errors name the item; JSON payloads are sent compact.

Real gateway, real admin API and real devices on 127.0.0.1.
"""
from __future__ import annotations

import http.client
import json

import pytest

from pushcore.admin.api import AdminAPI
from pushcore.admin.client import AdminClient
from pushcore.device.client import Client
from serverkit import Collector, fast_heartbeat, make_server, token

ADMIN_TOKEN = "test-admin-token-0123456789"


class Api:
    """POST JSON to the API under test, one connection per request: ``(status, None, body)``."""

    def __init__(self, address):
        self.address = address

    def post(self, path, body):
        conn = http.client.HTTPConnection(*self.address, timeout=10)
        try:
            conn.request("POST", path, body=json.dumps(body).encode(),
                         headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"})
            resp = conn.getresponse()
            return resp.status, None, json.loads(resp.read())
        finally:
            conn.close()


@pytest.fixture
def gateway():
    server = make_server()
    server.start()
    admin = AdminAPI(server, ADMIN_TOKEN, port=0)
    admin.start()
    try:
        yield server, Api(admin.address), admin
    finally:
        admin.stop()
        server.stop(timeout=5.0)


@pytest.fixture
def phone(gateway):
    server, _api, _admin = gateway
    collector = Collector()
    host, port = server.address
    client = Client("phone-1", token("phone-1"), [f"{host}:{port}"], heartbeat=fast_heartbeat(),
                    on_message=collector, ack_delay=0.01)
    client.start(timeout=10)
    try:
        yield collector
    finally:
        client.stop()


# ---- 9c: a batch error names the item --------------------------------------------------------


@pytest.mark.parametrize("bad,field,fragment", [
    ({"device": "b", "payload": 5}, "payload", "'payload' must be"),
    ({"device": "b", "payload": "x", "ttl": -1}, "ttl", "'ttl'"),
    ({"device": "b", "payload": "x", "priority": "urgent"}, "priority", "'priority'"),
    ({"device": "b", "payload": "x", "colour": "red"}, "colour", "unknown field"),
    ({"device": "b", "payload_b64": "***"}, "payload_b64", "base64"),
    ({"device": "b"}, "payload", "is required"),
    ({"device": "", "payload": "x"}, "device", "must not be empty"),
    ({"payload": "x"}, "device", "'device' is required"),
    ({"device": 7, "payload": "x"}, "device", "'device' must be a string"),
])
def test_a_malformed_batch_item_is_a_400_naming_its_index_and_field(gateway, bad, field, fragment):
    server, api, _admin = gateway
    messages = [{"device": "a", "payload": "ok"}, {"device": "a", "payload": "ok too"}, bad]
    status, _resp, body = api.post("/v1/push/batch", {"messages": messages})
    assert status == 400, body
    assert body["index"] == 2 and body["field"] == field, body
    assert body["error"].startswith("messages[2]: "), body
    assert fragment in body["error"], body
    if isinstance(bad.get("device"), str) and bad["device"]:
        assert body["device"] == "b"
    else:
        assert "device" not in body
    assert server.store.last_seq("a") == 0  # nothing of the batch was stored


def test_a_batch_item_that_is_not_an_object_names_its_index(gateway):
    _server, api, _admin = gateway
    status, _resp, body = api.post("/v1/push/batch", {"messages": [{"device": "a", "payload": "x"}, "hello"]})
    assert status == 400 and body["index"] == 1, body
    assert body["error"] == "messages[1]: a message must be a JSON object"


def test_a_batch_item_over_a_limit_is_a_413_naming_its_index_device_and_field(gateway):
    server, api, _admin = gateway
    messages = [{"device": "a", "payload": "ok"}, {"device": "big", "payload": "x" * 70_000}]
    status, _resp, body = api.post("/v1/push/batch", {"messages": messages})
    assert status == 413, body
    assert (body["index"], body["device"], body["field"]) == (1, "big", "payload"), body
    assert body["error"].startswith("messages[1]: payload is 70000 bytes"), body
    assert server.store.last_seq("a") == 0


def test_a_bad_device_id_found_by_the_gateway_names_its_index(gateway):
    _server, api, _admin = gateway
    messages = [{"device": "a", "payload": "ok"}, {"device": "x" * 300, "payload": "y"}]
    status, _resp, body = api.post("/v1/push/batch", {"messages": messages})
    assert status == 413, body
    assert body["index"] == 1 and body["field"] == "device_id", body


# ---- 9d: a JSON object or array payload is sent as its compact encoding ---------------------


def test_a_json_object_payload_reaches_the_device_as_compact_utf8_json(gateway, phone):
    _server, api, _admin = gateway
    payload = {"title": "héllo ☎", "n": [1, 2.5, None, True], "nested": {"a": "b"}}
    status, _resp, body = api.post("/v1/push", {"device": "phone-1", "payload": payload})
    assert status == 200, body
    status, _resp, body = api.post("/v1/push", {"device": "phone-1", "payload": ["a", {"b": 1}]})
    assert status == 200, body
    phone.wait(2)
    assert phone.payloads == [
        '{"title":"héllo ☎","n":[1,2.5,null,true],"nested":{"a":"b"}}'.encode(),
        b'["a",{"b":1}]',
    ]
    assert json.loads(phone.payloads[0]) == payload


def test_json_payloads_in_a_batch_a_publish_and_a_broadcast(gateway, phone):
    server, api, _admin = gateway
    messages = [{"device": "phone-1", "payload": {"i": i}} for i in range(3)]
    status, _resp, body = api.post("/v1/push/batch", {"messages": messages})
    assert status == 200 and body["seqs"] == [1, 2, 3], body
    server.subscribe("phone-1", "news")
    assert api.post("/v1/publish", {"topic": "news", "payload": {"k": "v"}})[0] == 200
    assert api.post("/v1/broadcast", {"payload": []})[0] == 200
    phone.wait(5)
    assert phone.payloads == [b'{"i":0}', b'{"i":1}', b'{"i":2}', b'{"k":"v"}', b"[]"]


def test_a_text_payload_is_still_sent_exactly_as_given(gateway, phone):
    _server, api, _admin = gateway
    assert api.post("/v1/push", {"device": "phone-1", "payload": '{"title": "hi"}'})[0] == 200
    phone.wait(1)
    assert phone.payloads == [b'{"title": "hi"}']  # a string is text: not re-encoded


@pytest.mark.parametrize("payload", [5, 2.5, True])
def test_other_json_values_are_400_saying_what_to_do(gateway, payload):
    _server, api, _admin = gateway
    status, _resp, body = api.post("/v1/push", {"device": "d", "payload": payload})
    assert status == 400 and body["field"] == "payload", body
    for form in ("string", "object", "array", "payload_b64"):
        assert form in body["error"], body


def test_admin_client_sends_a_dict_payload_as_json(gateway, phone):
    _server, _api, admin = gateway
    with AdminClient(admin.url, ADMIN_TOKEN) as client:
        assert client.push("phone-1", {"title": "hi"}) == 1
    phone.wait(1)
    assert phone.payloads == [b'{"title":"hi"}']
