"""Typed errors and the reason-code table shared by every layer.

Reason codes are the numbers of docs/PROTOCOL.md section 4. The C-level
codec raises :class:`ProtocolError` too: this class is handed to it at import
(``pushcore._frame`` never imports Python-level pushcore code).
"""
from __future__ import annotations

import enum

__all__ = ["Reason", "PushcoreError", "ProtocolError"]


class Reason(enum.IntEnum):
    """Why a frame was refused or a connection closed (docs/PROTOCOL.md §4)."""

    NORMAL = 0
    # codec errors (raised by the decoders as ProtocolError)
    FRAME_TOO_LARGE = 1
    UNKNOWN_TYPE = 2
    TRUNCATED = 3
    VARINT_OVERRUN = 4
    INVALID_UTF8 = 5
    TRAILING_BYTES = 6
    BAD_FLAGS = 7
    INVALID_VALUE = 8
    # session and connection reasons (ERROR code / GOAWAY reason / close reason)
    NOT_AUTHENTICATED = 16
    AUTH_FAILED = 17
    TOKEN_EXPIRED = 18
    UNSUPPORTED_VERSION = 19
    AUTH_TIMEOUT = 20
    IDLE_TIMEOUT = 21
    REPLACED = 22
    SLOW_CONSUMER = 23
    SHUTTING_DOWN = 24
    OVERLOADED = 25
    PEER_RESET = 26
    INTERNAL_ERROR = 27
    CONNECT_FAILED = 28
    PEER_CLOSED = 29


def reason_name(code: int) -> str:
    """``Reason`` name for *code*, or ``"UNKNOWN_<n>"`` for a code this version lacks."""
    try:
        return Reason(code).name
    except ValueError:
        return f"UNKNOWN_{code}"


class PushcoreError(Exception):
    """Base class of every error pushcore raises on purpose."""


class ProtocolError(PushcoreError, ValueError):
    """Bytes that break docs/PROTOCOL.md.

    ``code`` is a :class:`Reason` (1-8 for codec errors); ``frames`` holds the
    frames a streaming decoder completed in the same ``feed()`` call before it
    met the bad bytes, so nothing decoded is lost.
    """

    def __init__(self, code: int, message: str, frames: list | None = None) -> None:
        try:
            code = Reason(code)
        except ValueError:
            pass
        super().__init__(f"{reason_name(code)}: {message}")
        self.code = code
        self.message = message
        self.frames = frames if frames is not None else []

    def __reduce__(self):
        return (type(self), (int(self.code), self.message, self.frames))
