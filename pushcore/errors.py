"""Typed errors and the reason-code table shared by every layer.

Reason codes are the numbers of docs/PROTOCOL.md section 4 (defined in
:mod:`pushcore.wire`). The C-level codec imports :class:`ProtocolError` from
here and raises it directly, as msgpack's ``_unpacker.pyx`` imports its
exceptions: this module and :mod:`pushcore.wire` are leaves (they import
nothing else of pushcore), so the extensions can import them early.
"""
from __future__ import annotations

from typing import Any

from .wire import Reason, reason_name

__all__ = ["Reason", "reason_name", "PushcoreError", "ProtocolError", "MessageTooLarge"]


class PushcoreError(Exception):
    """Base class of every error pushcore raises on purpose."""


class ProtocolError(PushcoreError, ValueError):
    """Bytes that break docs/PROTOCOL.md.

    ``code`` is a :class:`Reason` (1-8 for codec errors); ``frames`` holds the
    frames a streaming decoder completed in the same ``feed()`` call before it
    met the bad bytes, so nothing decoded is lost.
    """

    def __init__(self, code: int, message: str, frames: list[Any] | None = None) -> None:
        try:
            code = Reason(code)
        except ValueError:
            pass
        super().__init__(f"{reason_name(code)}: {message}")
        #: a :class:`Reason`, or the plain int of a code this version does not know
        self.code: int = code
        self.message = message
        self.frames = frames if frames is not None else []

    def __reduce__(self) -> tuple[type[ProtocolError], tuple[int, str, list[Any]]]:
        return (type(self), (int(self.code), self.message, self.frames))


class MessageTooLarge(PushcoreError, ValueError):
    """A message field is longer than its limit (docs/SECURITY.md "Messages").

    Raised by ``push``, ``push_batch``, ``publish``, ``broadcast`` and the
    store before anything is stored; the admin API answers it with HTTP 413.
    ``field`` names the field (``payload``, ``topic``, ``collapse_key``,
    ``device_id``), ``size`` is what was given and ``limit`` the maximum,
    both in bytes.
    """

    def __init__(self, field: str, size: int, limit: int, where: str = "") -> None:
        self.field = field
        self.size = size
        self.limit = limit
        self.where = where
        prefix = f"{where}: " if where else ""
        super().__init__(f"{prefix}{field} is {size} bytes, the limit is {limit} bytes")

    def __reduce__(self) -> tuple[type[MessageTooLarge], tuple[str, int, int, str]]:
        return (type(self), (self.field, self.size, self.limit, self.where))
