"""Type stub of ``pushcore._loop``, the C-level connection loop (ext/_loop.pyx).

docs/LOOP.md describes the API; tests/test_stubs.py checks that this stub and
the compiled module declare the same names and signatures.
"""

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, Self, TypeAlias, TypeVarTuple, final, overload

from _typeshed import ReadableBuffer

from ._frame import Frame

_Ts = TypeVarTuple("_Ts")

#: ``(host, port)``
_Address: TypeAlias = tuple[str, int]

DEFAULT_MAX_FRAME_SIZE: Final = 65536
DEFAULT_CHUNK_SIZE: Final = 4064
DEFAULT_CHUNKS_PER_SLAB: Final = 32
DEFAULT_MAX_EMPTY_SLABS: Final = 2
SMALL_CHUNK_SIZE: Final = 224
SMALL_CHUNKS_PER_SLAB: Final = 512
DEFAULT_HIGH_WATER: Final = 262144
DEFAULT_LOW_WATER: Final = 65536
DEFAULT_WRITE_CAP: Final = 4194304
DEFAULT_PREAUTH_FRAME_MAX: Final = 2048
DEFAULT_PREAUTH_BUDGET: Final = 16777216
DEFAULT_OUTBOUND_BUDGET: Final = 268435456
DEFAULT_CONNECT_RATE: Final = 20000.0
DEFAULT_SOURCE_CONNECT_RATE: Final = 200.0

def sizeof_conn() -> int: ...
def _live_loops() -> list[Loop]: ...
def _leaked_chunks() -> int: ...

@final
class TimerHandle:
    """A callback scheduled by :meth:`Loop.call_soon` / :meth:`Loop.call_later`."""

    @property
    def when(self) -> float: ...
    def cancel(self) -> None: ...
    def cancelled(self) -> bool: ...

@final
class Loop:
    """An epoll connection loop with per-connection state in C (docs/LOOP.md)."""

    def __init__(
        self,
        *,
        max_frame_size: int = 65536,
        chunk_size: int = 4064,
        chunks_per_slab: int = 32,
        max_empty_slabs: int = 2,
        read_buffer_size: int = 65536,
        read_budget: int = 262144,
        max_events: int = 1024,
        close_timeout: float = 5.0,
        linger: float = 1.0,
        preauth_frame_max: int = 2048,
        preauth_budget: int = 16777216,
        outbound_budget: int = 268435456,
        connect_rate: float = 20000.0,
        connect_burst: float | None = None,
        source_connect_rate: float = 200.0,
        source_connect_burst: float | None = None,
        limit_loopback: bool = False,
    ) -> None: ...
    @property
    def max_frame_size(self) -> int: ...
    @property
    def running(self) -> bool: ...
    @property
    def closed(self) -> bool: ...
    @overload
    def close(self, cid: None = None, reason: int = 0) -> None: ...
    @overload
    def close(self, cid: int, reason: int = 0) -> bool: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, *exc: object) -> None: ...

    # running
    def run(self) -> None: ...
    def run_once(self, timeout: float | None = 0.0) -> None: ...
    def stop(self) -> None: ...
    def fileno(self) -> int: ...
    def next_timeout(self) -> float | None: ...
    def time(self) -> float: ...
    def flush(self) -> None: ...
    def signal_wakeup_fd(self) -> int: ...
    def _set_wakeup(self, callback: Callable[[], object] | None) -> None: ...
    def set_handlers(
        self,
        *,
        on_frames: Callable[[list[tuple[int, Frame]]], object] | None = None,
        on_open: Callable[[list[tuple[int, int]]], object] | None = None,
        on_close: Callable[[list[tuple[int, int]]], object] | None = None,
        on_pause: Callable[[list[int]], object] | None = None,
        on_resume: Callable[[list[int]], object] | None = None,
        on_awake: Callable[[list[int]], object] | None = None,
    ) -> None: ...

    # callbacks
    def call_soon(self, callback: Callable[[*_Ts], object], *args: *_Ts) -> TimerHandle: ...
    def call_later(self, delay: float, callback: Callable[[*_Ts], object], *args: *_Ts) -> TimerHandle: ...
    def call_soon_threadsafe(self, callback: Callable[[*_Ts], object], *args: *_Ts) -> TimerHandle: ...

    # sockets
    def listen(
        self,
        host: str,
        port: int,
        *,
        backlog: int = 1024,
        reuse_port: bool = False,
        auth_timeout: float | None = None,
        idle_timeout: float | None = None,
    ) -> int: ...
    def listen_address(self, lid: int) -> _Address: ...
    def unlisten(self, lid: int) -> None: ...
    def connect(
        self, host: str, port: int, source: str | _Address | None = None, timeout: float | None = None
    ) -> int: ...

    # per connection
    def send(self, cid: int, data: ReadableBuffer, frames: int = 1) -> bool: ...
    def send_many(self, cids: Iterable[int], data: ReadableBuffer, frames: int = 1) -> int: ...
    def close_conn(self, cid: int, reason: int = 0) -> bool: ...
    def abort(self, cid: int, reason: int = 0) -> bool: ...
    def authenticate(self, cid: int, idle_timeout: float | None = None) -> bool: ...
    def set_idle_timeout(self, cid: int, seconds: float | None) -> bool: ...
    def set_ping_interval(self, cid: int, seconds: float | None) -> bool: ...
    def watch_activity(self, cid: int) -> bool: ...
    def send_push(
        self,
        cid: int,
        seq: int,
        message_id: int,
        payload: ReadableBuffer,
        priority: int = 1,
        expiry: int = 0,
        collapse_key: str = "",
        topic: str = "",
    ) -> bool: ...
    def send_pushes(
        self,
        cids: Sequence[int],
        seqs: Sequence[int],
        message_ids: Sequence[int] | int,
        payload: ReadableBuffer,
        priority: int = 1,
        expiry: int = 0,
        collapse_key: str = "",
        topic: str = "",
        *,
        behind: list[int] | None = None,
    ) -> list[int]: ...
    def sent_seq(self, cid: int) -> int: ...
    def set_label(self, cid: int, label: object) -> None: ...
    def label(self, cid: int) -> Any: ...
    def set_sent_seq(self, cid: int, seq: int) -> None: ...
    def is_open(self, cid: int) -> bool: ...
    def set_write_limits(self, high: int | None = None, low: int | None = None, cap: int | None = None) -> None: ...
    def get_write_limits(self) -> tuple[int, int, int]: ...
    def set_limits(
        self,
        *,
        preauth_frame_max: int | None = None,
        preauth_budget: int | None = None,
        outbound_budget: int | None = None,
        connect_rate: float | None = None,
        connect_burst: float | None = None,
        source_connect_rate: float | None = None,
        source_connect_burst: float | None = None,
        limit_loopback: bool | None = None,
    ) -> None: ...
    def limits(self) -> dict[str, Any]: ...
    def conn_info(self, cid: int) -> dict[str, Any]: ...

    # counters
    def stats(self) -> dict[str, Any]: ...
    def pool_stats(self) -> dict[str, Any]: ...
    @staticmethod
    def sizeof_conn() -> int: ...
