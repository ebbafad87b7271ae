"""Type stub of ``pushcore._frame``, the C-level frame codec (ext/_frame.pyx).

The API is docs/CODEC.md's; tests/test_stubs.py checks that this stub and the
compiled module declare the same names, constructor and function signatures,
and constant values.
"""

from collections.abc import Iterable
from typing import Any, ClassVar, Final, Literal, Protocol, TypeAlias

from _typeshed import ReadableBuffer

__all__ = [
    "PROTOCOL_VERSION", "DEFAULT_MAX_FRAME_SIZE", "PRIORITY_LOW", "PRIORITY_HIGH",
    "HELLO", "WELCOME", "PING", "PONG", "PUSH", "NOTIFY", "FETCH", "ACK",
    "SUBSCRIBE", "UNSUBSCRIBE", "UPSTREAM", "UPSTREAM_ACK", "REDIRECT", "GOAWAY",
    "ERROR", "PING_BYTES", "PONG_BYTES",
    "Hello", "Welcome", "Ping", "Pong", "Push", "Notify", "Fetch", "Ack",
    "Subscribe", "Unsubscribe", "Upstream", "UpstreamAck", "Redirect", "Goaway",
    "ErrorFrame",
    "encode", "decode", "encode_push", "encode_ack", "Decoder",
]

# -- constants (ext/pc_wire.h; pushcore.wire has the same values) --

PROTOCOL_VERSION: Final = 1
DEFAULT_MAX_FRAME_SIZE: Final = 65536
PRIORITY_LOW: Final = 0
PRIORITY_HIGH: Final = 1

HELLO: Final = 1
WELCOME: Final = 2
PING: Final = 3
PONG: Final = 4
PUSH: Final = 5
NOTIFY: Final = 6
FETCH: Final = 7
ACK: Final = 8
SUBSCRIBE: Final = 9
UNSUBSCRIBE: Final = 10
UPSTREAM: Final = 11
UPSTREAM_ACK: Final = 12
REDIRECT: Final = 13
GOAWAY: Final = 14
ERROR: Final = 15

PING_BYTES: Final = b"\x30\x00"
PONG_BYTES: Final = b"\x40\x00"

#: A server in REDIRECT / GOAWAY: ``(host, port, load)``.
_Server: TypeAlias = tuple[str, int, int]

class _FrameLike(Protocol):
    """A frame of either backend: what :func:`encode` accepts."""

    @property
    def TYPE(self) -> int: ...
    def fields(self) -> tuple[Any, ...]: ...

# -- frame classes --

class Frame:
    """Base class of this backend's frame classes (not hashable)."""

    TYPE: ClassVar[int]
    _FIELDS: ClassVar[tuple[str, ...]]
    # Frames compare by TYPE and fields() and set __hash__ = None, as typeshed
    # spells an unhashable class.
    __hash__: ClassVar[None]  # type: ignore[assignment]  # object.__hash__ is a method; None marks unhashable
    def encode(self) -> bytes: ...
    def fields(self) -> tuple[Any, ...]: ...
    def __eq__(self, other: object) -> bool: ...
    def __ne__(self, other: object) -> bool: ...
    def __reduce__(self) -> tuple[type[Frame], tuple[Any, ...]]: ...

class Hello(Frame):
    TYPE: ClassVar[Literal[1]]
    versions: tuple[int, ...]
    device_id: str
    token: bytes
    last_seq: int
    heartbeat: int
    def __init__(
        self,
        versions: Iterable[int] = (1,),
        device_id: str = "",
        token: ReadableBuffer = b"",
        last_seq: int = 0,
        heartbeat: int = 0,
    ) -> None: ...
    def fields(self) -> tuple[tuple[int, ...], str, bytes, int, int]: ...

class Welcome(Frame):
    TYPE: ClassVar[Literal[2]]
    version: int
    heartbeat_min: int
    heartbeat_max: int
    server_time: int
    def __init__(self, version: int = 1, heartbeat_min: int = 0, heartbeat_max: int = 0, server_time: int = 0) -> None: ...
    def fields(self) -> tuple[int, int, int, int]: ...

class Ping(Frame):
    TYPE: ClassVar[Literal[3]]
    def __init__(self) -> None: ...
    def fields(self) -> tuple[()]: ...

class Pong(Frame):
    TYPE: ClassVar[Literal[4]]
    def __init__(self) -> None: ...
    def fields(self) -> tuple[()]: ...

class Push(Frame):
    TYPE: ClassVar[Literal[5]]
    seq: int
    message_id: int
    payload: bytes
    priority: int
    expiry: int
    collapse_key: str
    topic: str
    def __init__(
        self,
        seq: int = 0,
        message_id: int = 0,
        payload: ReadableBuffer = b"",
        priority: int = 1,
        expiry: int = 0,
        collapse_key: str = "",
        topic: str = "",
    ) -> None: ...
    def fields(self) -> tuple[int, int, bytes, int, int, str, str]: ...

class Notify(Frame):
    TYPE: ClassVar[Literal[6]]
    latest_seq: int
    def __init__(self, latest_seq: int = 0) -> None: ...
    def fields(self) -> tuple[int]: ...

class Fetch(Frame):
    TYPE: ClassVar[Literal[7]]
    after_seq: int
    max_count: int
    def __init__(self, after_seq: int = 0, max_count: int = 0) -> None: ...
    def fields(self) -> tuple[int, int]: ...

class Ack(Frame):
    TYPE: ClassVar[Literal[8]]
    seq: int
    def __init__(self, seq: int = 0) -> None: ...
    def fields(self) -> tuple[int]: ...

class _TopicList(Frame):
    """Shared body of SUBSCRIBE and UNSUBSCRIBE."""

    topics: tuple[str, ...]
    def __init__(self, topics: Iterable[str] = ()) -> None: ...
    def fields(self) -> tuple[tuple[str, ...]]: ...

class Subscribe(_TopicList):
    TYPE: ClassVar[Literal[9]]

class Unsubscribe(_TopicList):
    TYPE: ClassVar[Literal[10]]

class Upstream(Frame):
    TYPE: ClassVar[Literal[11]]
    upstream_id: int
    payload: bytes
    topic: str
    def __init__(self, upstream_id: int = 0, payload: ReadableBuffer = b"", topic: str = "") -> None: ...
    def fields(self) -> tuple[int, bytes, str]: ...

class UpstreamAck(Frame):
    TYPE: ClassVar[Literal[12]]
    upstream_id: int
    def __init__(self, upstream_id: int = 0) -> None: ...
    def fields(self) -> tuple[int]: ...

class Redirect(Frame):
    TYPE: ClassVar[Literal[13]]
    servers: tuple[_Server, ...]
    def __init__(self, servers: Iterable[_Server] = ()) -> None: ...
    def fields(self) -> tuple[tuple[_Server, ...]]: ...

class Goaway(Frame):
    TYPE: ClassVar[Literal[14]]
    reason: int
    message: str
    servers: tuple[_Server, ...]
    def __init__(self, reason: int = 0, message: str = "", servers: Iterable[_Server] = ()) -> None: ...
    def fields(self) -> tuple[int, str, tuple[_Server, ...]]: ...

class ErrorFrame(Frame):
    TYPE: ClassVar[Literal[15]]
    code: int
    message: str
    def __init__(self, code: int = 0, message: str = "") -> None: ...
    def fields(self) -> tuple[int, str]: ...

# -- functions --

def encode(frame: _FrameLike) -> bytes: ...
def decode(data: ReadableBuffer, *, max_frame_size: int = 65536) -> Frame: ...
def encode_push(
    seq: int,
    message_id: int,
    payload: ReadableBuffer,
    priority: int = 1,
    expiry: int = 0,
    collapse_key: str = "",
    topic: str = "",
) -> bytes: ...
def encode_ack(seq: int) -> bytes: ...

class Decoder:
    """Split a byte stream into frames, whatever the chunking."""

    def __init__(self, max_frame_size: int = 65536) -> None: ...
    @property
    def max_frame_size(self) -> int: ...
    @property
    def pending(self) -> int: ...
    def feed(self, data: ReadableBuffer) -> list[Frame]: ...
