"""Why a Client is not connected: :class:`Cause` (what ``on_state``, ``ConnectError`` and the log carry).

A cause is a small frozen value: its :class:`CauseKind` (refused, timed out,
the server's ERROR or GOAWAY, ...), the reason code when there is one (a
:class:`pushcore.Reason`, printed by name), the server's message, the
address, and the OS errno of a failed connect or a broken connection.
``str(cause)`` is one line for a person: ``connection refused by
127.0.0.1:5222``, ``GOAWAY SHUTTING_DOWN from 127.0.0.1:5222: server
shutting down``, ``127.0.0.1:5222 refused: AUTH_FAILED: bad token``.
"""
from __future__ import annotations

import dataclasses
import enum
import os

from ..errors import Reason, reason_name

__all__ = ["Cause", "CauseKind"]


class CauseKind(enum.StrEnum):
    """What kind of failure a :class:`Cause` describes."""

    REFUSED = "refused"  # the TCP connect was refused: nothing listens there (errno ECONNREFUSED)
    TIMED_OUT = "timed out"  # the TCP connect, or the WELCOME after HELLO, did not come in time
    NETWORK = "network"  # another OS error at connect (unreachable, ...): see errno
    NO_SERVER = "no server"  # no address to try: empty list, no name resolved, list URL failed
    AUTH = "auth"  # the server refused the token (AUTH_FAILED, TOKEN_EXPIRED): see reason, message
    ERROR = "error"  # the server sent ERROR (OVERLOADED, SHUTTING_DOWN at HELLO, UNSUPPORTED_VERSION, ...)
    GOAWAY = "goaway"  # the server sent GOAWAY (SHUTTING_DOWN on a drain, REPLACED, a revoked token, ...)
    REDIRECT = "redirect"  # the server sent REDIRECT: the client moves to the servers named
    PEER_CLOSED = "peer closed"  # the server closed the connection without a word
    PEER_RESET = "peer reset"  # the connection was reset or broke (see errno)
    LOCAL = "local"  # the client closed it: IDLE_TIMEOUT (no PONG in time), a bad frame, ...


def _where(address: tuple[str, int] | None) -> str:
    if address is None:
        return "the server"
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _os_error(errno: int | None) -> str:
    return f" ([Errno {errno}] {os.strerror(errno)})" if errno else ""


@dataclasses.dataclass(frozen=True, slots=True)
class Cause:
    """Why a connection attempt failed or a connection closed (see the module doc).

    ``reason`` is a :class:`pushcore.Reason`, the plain int of a code this
    version does not know, or None (a timeout, no address); ``message`` the
    server's text (ERROR, GOAWAY) or a detail; ``address`` the ``(host,
    port)`` concerned; ``errno`` the OS error number of a failed connect or
    a broken connection (0/None when there is none).
    """

    kind: CauseKind
    reason: Reason | int | None = None
    message: str = ""
    address: tuple[str, int] | None = None
    errno: int | None = None

    @property
    def reason_name(self) -> str | None:
        """The reason as a name (``"SHUTTING_DOWN"``; ``"UNKNOWN_<n>"`` for a code this version lacks), or None."""
        return None if self.reason is None else reason_name(self.reason)

    def __str__(self) -> str:
        kind, where = self.kind, _where(self.address)
        # the loop's own ERROR frames carry the reason name as their message: said once
        detail = f": {self.message}" if self.message and self.message != self.reason_name else ""
        if kind is CauseKind.REFUSED:
            return f"connection refused by {where}"
        if kind is CauseKind.TIMED_OUT:
            return f"{where} timed out{detail}" if self.message else f"connect to {where} timed out"
        if kind is CauseKind.NETWORK:
            return f"connect to {where} failed{_os_error(self.errno)}"
        if kind is CauseKind.NO_SERVER:
            return f"no server address to try{detail}"
        if kind in (CauseKind.AUTH, CauseKind.ERROR):
            return f"{where} refused: {self.reason_name}{detail}"
        if kind is CauseKind.GOAWAY:
            return f"GOAWAY {self.reason_name} from {where}{detail}"
        if kind is CauseKind.REDIRECT:
            return f"{where} redirected the client{detail}"
        if kind is CauseKind.PEER_CLOSED:
            return f"{where} closed the connection"
        if kind is CauseKind.PEER_RESET:
            return f"the connection to {where} was reset{_os_error(self.errno)}"
        name = f" ({self.reason_name})" if self.reason is not None else ""
        return f"the client closed the connection to {where}{name}{detail}"
