"""POST /v1/devices/<id>/revoke: the operator's revocation path, over a real gateway."""
from __future__ import annotations

import time

import pytest

from pushcore.admin.api import AdminAPI
from pushcore.admin.client import AdminClient, AdminError
from pushcore.codec import reference as protocol
from pushcore.errors import Reason
from serverkit import (
    RawDevice,
    running_server,
    stop_what_the_test_started,  # noqa: F401  (autouse: stops leftovers)
    token,
)

ADMIN_TOKEN = "revoke-route-token-0123456789"


def test_revoke_closes_the_device_and_refuses_its_old_token_but_not_a_new_one():
    with running_server() as server:
        api = AdminAPI(server, ADMIN_TOKEN, port=0)
        api.start()
        try:
            old = token("phone")
            with RawDevice(server.address) as dev, AdminClient(api.url, ADMIN_TOKEN) as admin:
                assert dev.hello("phone", old).TYPE == protocol.WELCOME
                time.sleep(0.01)  # the revocation is strictly after the old token's issue time
                result = admin.revoke("phone")
                assert result["disconnected"] is True and result["revoked_before"] > 0
                goaway = dev.expect(protocol.GOAWAY)
                assert goaway.reason == Reason.AUTH_FAILED
            with RawDevice(server.address) as dev:
                error = dev.hello("phone", old)
                assert error.TYPE == protocol.ERROR and error.code == Reason.AUTH_FAILED
                assert "revoked" in error.message
            time.sleep(0.01)
            with RawDevice(server.address) as dev:
                assert dev.hello("phone", token("phone")).TYPE == protocol.WELCOME
        finally:
            api.stop()


@pytest.mark.parametrize("body", [{"before": "yesterday"}, {"before": -1}, {"after": 5}, {"before": True}])
def test_revoke_refuses_a_bad_body_with_400(body):
    with running_server() as server:
        api = AdminAPI(server, ADMIN_TOKEN, port=0)
        api.start()
        try:
            with AdminClient(api.url, ADMIN_TOKEN) as admin, pytest.raises(AdminError) as caught:
                admin.request("POST", "/v1/devices/phone/revoke", body)
            assert caught.value.status == 400
            assert server.revoked_before("phone") is None
        finally:
            api.stop()
