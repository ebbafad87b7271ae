"""pushcore: mobile push gateways and device simulators with a C-level core.

The public API (docs/ARCHITECTURE.md is the map of the package):

* the wire: ``PROTOCOL_VERSION``, ``Reason``, ``ProtocolError``, the frame
  classes (``Push``, ``Hello``, …) — the C-level classes that ``Server`` and
  ``Client`` hand out, in every mode;
* the standalone codec: ``encode``, ``decode``, ``Decoder``, ``encode_push``,
  ``encode_ack`` — C-level, or the pure-Python reference when
  ``PUSHCORE_BACKEND=python``; ``BACKEND`` says which (docs/CODEC.md);
* the gateway (``Server``, ``Store``, ``open_store``, tokens) and the device
  (``Client``, ``Cause``, ``HeartbeatPolicy``);
* loaded on first use, so that ``import pushcore`` stays light: ``Loop``,
  ``Simulator``, ``Profile``, ``AdminAPI``, and the cluster (docs/CLUSTER.md):
  ``RedisStore``, ``ClusterLink``, ``Supervisor``, ``WorkerInfo`` (they need
  the ``redis`` extra: redis-py and hiredis).
"""
from typing import TYPE_CHECKING, Any

from .codec import BACKEND, Decoder, decode, encode, encode_ack, encode_push
from .codec import frames as _frames
from .device.cause import Cause, CauseKind
from .device.client import Client, ClientState, ConnectError, NotConnected
from .device.heartbeat import HeartbeatPolicy
from .errors import MessageTooLarge, ProtocolError, PushcoreError, Reason
from .gateway.awaiting import HookTimeout
from .gateway.results import BatchResult, FanOut
from .gateway.server import Server
from .store import IdempotencyConflict, Store, StoreError, StoreUnavailable, open_store
from .tokens import AuthError, TokenSigner, mint_token, verify_token
from .version import __version__ as __version__
from .wire import DEFAULT_MAX_FRAME_SIZE, PRIORITY_HIGH, PRIORITY_LOW, PROTOCOL_VERSION

if TYPE_CHECKING:
    from ._loop import Loop
    from .admin.api import AdminAPI
    from .cluster.link import ClusterLink
    from .cluster.supervisor import Supervisor, WorkerInfo
    from .sim.profiles import Profile
    from .sim.simulator import Simulator
    from .store.redis import RedisStore

Hello = _frames.Hello
Welcome = _frames.Welcome
Ping = _frames.Ping
Pong = _frames.Pong
Push = _frames.Push
Notify = _frames.Notify
Fetch = _frames.Fetch
Ack = _frames.Ack
Subscribe = _frames.Subscribe
Unsubscribe = _frames.Unsubscribe
Upstream = _frames.Upstream
UpstreamAck = _frames.UpstreamAck
Redirect = _frames.Redirect
Goaway = _frames.Goaway
ErrorFrame = _frames.ErrorFrame


# name -> (module, attribute): imported on first use (PEP 562).
_LAZY = {
    "Loop": ("pushcore.loop", "Loop"),
    "Simulator": ("pushcore.sim.simulator", "Simulator"),
    "Profile": ("pushcore.sim.profiles", "Profile"),
    "AdminAPI": ("pushcore.admin.api", "AdminAPI"),
    "RedisStore": ("pushcore.store.redis", "RedisStore"),
    "ClusterLink": ("pushcore.cluster.link", "ClusterLink"),
    "Supervisor": ("pushcore.cluster.supervisor", "Supervisor"),
    "WorkerInfo": ("pushcore.cluster.supervisor", "WorkerInfo"),
}


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'pushcore' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(target[0]), target[1])
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "BACKEND", "PROTOCOL_VERSION", "DEFAULT_MAX_FRAME_SIZE", "PRIORITY_LOW", "PRIORITY_HIGH",
    "ProtocolError", "PushcoreError", "Reason", "MessageTooLarge", "BatchResult", "FanOut",
    "Hello", "Welcome", "Ping", "Pong", "Push", "Notify", "Fetch", "Ack", "Subscribe",
    "Unsubscribe", "Upstream", "UpstreamAck", "Redirect", "Goaway", "ErrorFrame",
    "Decoder", "encode", "decode", "encode_push", "encode_ack",
    "AuthError", "TokenSigner", "mint_token", "verify_token", "Store", "open_store",
    "StoreError", "StoreUnavailable", "IdempotencyConflict",
    "HeartbeatPolicy", "Server", "HookTimeout", "Client", "ClientState", "Cause", "CauseKind", "ConnectError", "NotConnected",
    "Loop",
    "Simulator", "Profile", "AdminAPI",
    "RedisStore", "ClusterLink", "Supervisor", "WorkerInfo",
]
