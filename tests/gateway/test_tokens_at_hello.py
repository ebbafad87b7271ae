"""Tokens at HELLO over real loopback: revocation (Server.revoke) and the documented token format."""
from __future__ import annotations

import base64
import hashlib
import hmac
import struct
import time

import pytest

from pushcore.codec import reference as protocol
from pushcore.device.client import Client, ClientState
from pushcore.errors import Reason
from pushcore.tokens import AuthError
from serverkit import (
    SECRET,
    RawDevice,
    running_server,
    stop_what_the_test_started,  # noqa: F401  (autouse: stops leftovers)
    token,
    wait_for,
)


def refused(server, device_id: str, tok: bytes) -> int | None:
    """The ERROR code a HELLO with *tok* gets (None: welcomed); the connection is closed either way."""
    with RawDevice(server.address) as dev:
        answer = dev.hello(device_id, tok)
        if answer.TYPE == protocol.ERROR:
            assert dev.until_closed() == []
            return answer.code
        assert answer.TYPE == protocol.WELCOME
    wait_for(lambda: not server.connected(device_id), what="the server to see the close")
    return None


# ---- revocation -------------------------------------------------------------------------------


def test_revoked_tokens_are_refused_at_hello_and_newer_ones_accepted():
    # finding 7: there was no way to end a leaked token before its expiry
    now = time.time()
    old = token("d1", now=now - 60)
    with running_server() as server:
        assert refused(server, "d1", old) is None
        assert server.revoke("d1", before=now - 30) is False  # not connected: nothing to kick
        assert server.revoked_before("d1") == now - 30
        assert refused(server, "d1", old) == Reason.AUTH_FAILED
        assert refused(server, "d1", token("d1", now=now - 30)) is None  # issued at `before`: valid
        assert refused(server, "d1", token("d1")) is None
        assert refused(server, "d2", token("d2", now=now - 60)) is None  # other devices untouched


def test_revoke_defaults_to_now_and_never_lifts_an_earlier_revocation():
    with running_server() as server:
        before = time.time()
        server.revoke("d1")
        assert before <= server.revoked_before("d1") <= time.time()
        first = server.revoked_before("d1")
        server.revoke("d1", before=1.0)
        assert server.revoked_before("d1") == first
        assert refused(server, "d1", token("d1", now=first - 1)) == Reason.AUTH_FAILED


@pytest.mark.parametrize(
    "args, error",
    [(("", None), ValueError), (("d1", "soon"), TypeError), (("d1", float("inf")), ValueError),
     (("d1", -1.0), ValueError),
     (("d1", time.time() * 1000), ValueError)],  # milliseconds for seconds: would never be lifted
)
def test_revoke_arguments_are_checked(args, error):
    with running_server() as server:
        with pytest.raises(error):
            server.revoke(*args)


def test_revoke_closes_the_live_connection_with_goaway_auth_failed():
    with running_server() as server:
        tok = token("d1", now=time.time() - 1)
        victim = RawDevice(server.address)
        bystander = RawDevice(server.address)
        assert victim.hello("d1", tok).TYPE == protocol.WELCOME
        assert bystander.hello("d2").TYPE == protocol.WELCOME
        wait_for(lambda: server.connected("d1") and server.connected("d2"))
        assert server.revoke("d1") is True
        goaway = victim.expect(protocol.GOAWAY)
        assert goaway.reason == Reason.AUTH_FAILED
        assert victim.until_closed() == []
        wait_for(lambda: not server.connected("d1"), what="the revoked device's route to go")
        assert refused(server, "d1", tok) == Reason.AUTH_FAILED
        server.push("d2", b"still here")
        assert bystander.expect(protocol.PUSH).payload == b"still here"
        victim.close()
        bystander.close()


def test_a_revoked_client_stops_with_auth_failed():
    with running_server() as server:
        client = Client("d1", token("d1", now=time.time() - 1), [f"{server.address[0]}:{server.address[1]}"],
                        backoff=(0.05, 0.2))
        client.start()
        server.revoke("d1")
        wait_for(lambda: client.state is ClientState.FAILED, what="the client to give up")
        assert isinstance(client.error, AuthError) and client.error.reason is Reason.AUTH_FAILED
        assert "revoked" in str(client.error)
        client.stop()


def test_a_client_with_a_token_function_comes_back_with_a_fresh_token_after_revoke():
    minted = []

    def fresh_token() -> bytes:  # what an app asking its backend at each attempt does
        minted.append(token("d1"))
        return minted[-1]

    with running_server() as server:
        client = Client("d1", fresh_token, [f"{server.address[0]}:{server.address[1]}"], backoff=(0.05, 0.2))
        client.start()
        time.sleep(0.002)  # the next token's issue time (milliseconds) is after `before`
        server.revoke("d1", before=time.time() - 0.001)
        wait_for(lambda: client.stats["connects"] == 2, what="the client back with a new token")
        assert client.is_connected and len(minted) >= 2
        client.stop()


def test_revocations_survive_a_restart_on_sqlite(tmp_path):
    path = str(tmp_path / "pushcore.db")
    now = time.time()
    old = token("d1", now=now - 60)
    with running_server(store=path) as server:
        server.revoke("d1", before=now - 30)
    with running_server(store=path) as server:
        assert server.revoked_before("d1") == now - 30
        assert refused(server, "d1", old) == Reason.AUTH_FAILED
        assert refused(server, "d1", token("d1")) is None


def _v1_token(device_id: str, expires_ms: int) -> bytes:
    header = bytes([1]) + expires_ms.to_bytes(8, "little")
    return header + hmac.new(SECRET, b"pushcore-token\x00" + header + device_id.encode(), hashlib.sha256).digest()


def test_version_1_tokens_are_accepted_until_any_revocation_of_their_device():
    v1 = _v1_token("d1", int((time.time() + 600) * 1000))
    with running_server() as server:
        assert refused(server, "d1", v1) is None
        server.revoke("d1", before=1.0)  # long ago, but a v1 token's issue time is unknown
        assert refused(server, "d1", v1) == Reason.AUTH_FAILED


# ---- the token format of docs/PROTOCOL.md §8, minted with nothing from pushcore -----------------


def backend_mint(secret: bytes, device_id: str, ttl_seconds: int) -> str:
    """What a backend in another language does from the doc: the token as base64url text."""
    issued_ms = int(time.time() * 1000)
    expires_ms = issued_ms + ttl_seconds * 1000
    header = b"\x02" + struct.pack("<QQ", issued_ms, expires_ms)
    mac = hmac.new(secret, b"pushcore-token\x00" + header + device_id.encode("utf-8"), hashlib.sha256)
    return base64.urlsafe_b64encode(header + mac.digest()).rstrip(b"=").decode("ascii")


def device_decode(text: str) -> bytes:
    """The device side: back to the raw bytes HELLO carries."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_a_token_minted_from_the_protocol_doc_is_accepted():
    with running_server() as server:
        text = backend_mint(SECRET, "téléphone-7", 3600)
        assert refused(server, "téléphone-7", device_decode(text)) is None
        assert refused(server, "téléphone-8", device_decode(text)) == Reason.AUTH_FAILED
        expired = device_decode(backend_mint(SECRET, "d1", -1))
        assert refused(server, "d1", expired) == Reason.TOKEN_EXPIRED
        forged = device_decode(backend_mint(b"not-the-server-secret-0123456789", "d1", 3600))
        assert refused(server, "d1", forged) == Reason.AUTH_FAILED
