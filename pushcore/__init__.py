"""pushcore: mobile push gateways and device simulators with a C-level core.

``pushcore.BACKEND`` is ``"cython"`` or ``"python"``: which codec is in use
(see docs/CODEC.md for ``PUSHCORE_BACKEND``).
"""
from __future__ import annotations

from .errors import ProtocolError, PushcoreError, Reason
from .codec import BACKEND, backend as _codec

PROTOCOL_VERSION: int = _codec.PROTOCOL_VERSION
DEFAULT_MAX_FRAME_SIZE: int = _codec.DEFAULT_MAX_FRAME_SIZE
PRIORITY_LOW: int = _codec.PRIORITY_LOW
PRIORITY_HIGH: int = _codec.PRIORITY_HIGH

Hello = _codec.Hello
Welcome = _codec.Welcome
Ping = _codec.Ping
Pong = _codec.Pong
Push = _codec.Push
Notify = _codec.Notify
Fetch = _codec.Fetch
Ack = _codec.Ack
Subscribe = _codec.Subscribe
Unsubscribe = _codec.Unsubscribe
Upstream = _codec.Upstream
UpstreamAck = _codec.UpstreamAck
Redirect = _codec.Redirect
Goaway = _codec.Goaway
ErrorFrame = _codec.ErrorFrame
Decoder = _codec.Decoder
encode = _codec.encode
decode = _codec.decode
encode_push = _codec.encode_push
encode_ack = _codec.encode_ack

from .tokens import AuthError, TokenSigner, mint as mint_token, verify as verify_token
from .store import Store, open_store
from .device.heartbeat import HeartbeatPolicy
from .gateway.server import Server
from .device.client import Client, ClientState, ConnectError, NotConnected
from .sim.simulator import Simulator
from .sim.profiles import Profile
from .admin.api import AdminAPI

__version__ = "0.1.0"


def __getattr__(name: str):
    # The C-level loop is imported on first use, so that `import pushcore`
    # works (with the pure-Python codec) where the extensions are not built.
    if name == "Loop":
        from .loop import Loop

        return Loop
    raise AttributeError(f"module 'pushcore' has no attribute {name!r}")

__all__ = [
    "BACKEND", "PROTOCOL_VERSION", "DEFAULT_MAX_FRAME_SIZE", "PRIORITY_LOW", "PRIORITY_HIGH",
    "ProtocolError", "PushcoreError", "Reason",
    "Hello", "Welcome", "Ping", "Pong", "Push", "Notify", "Fetch", "Ack", "Subscribe",
    "Unsubscribe", "Upstream", "UpstreamAck", "Redirect", "Goaway", "ErrorFrame",
    "Decoder", "encode", "decode", "encode_push", "encode_ack",
    "AuthError", "TokenSigner", "mint_token", "verify_token", "Store", "open_store",
    "HeartbeatPolicy", "Server", "Client", "ClientState", "ConnectError", "NotConnected", "Loop",
    "Simulator", "Profile", "AdminAPI",
]
