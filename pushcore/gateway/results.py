"""What ``push_batch`` and ``publish`` return: per-item outcomes.

One device's failure (today only :class:`pushcore.store.SeqExhausted`) must
never fail another device's message, so a batch or a fan-out that meets one
stores everything else and reports the failed items here. Both types are
the plain ``list`` / ``int`` the methods always returned, so callers that
only read seqs or a count keep working.
"""
from __future__ import annotations

__all__ = ["BatchResult", "FanOut"]


class BatchResult(list[int]):
    """The seqs of a ``push_batch``, in the order given; ``0`` for an item that failed.

    ``errors`` maps the index of each failed item to why (a stored seq is
    never 0, so ``0`` is unambiguous). ``ok`` is True when nothing failed.
    """

    def __init__(self, seqs: list[int], errors: dict[int, str] | None = None) -> None:
        super().__init__(seqs)
        self.errors: dict[int, str] = errors or {}

    @property
    def ok(self) -> bool:
        """True when every item was stored."""
        return not self.errors

    def __repr__(self) -> str:
        if not self.errors:
            return f"BatchResult({list(self)!r})"
        return f"BatchResult({list(self)!r}, errors={self.errors!r})"


class FanOut(int):
    """How many devices a fan-out (``publish``, durable ``broadcast``) was stored for.

    ``failed`` maps each device it could not be stored for to why; those
    devices are not counted.
    """

    failed: dict[str, str]

    def __new__(cls, stored: int, failed: dict[str, str] | None = None) -> FanOut:
        self = super().__new__(cls, stored)
        self.failed = failed or {}
        return self

    def __str__(self) -> str:  # print()/f-strings show the number, as for a plain int
        return int.__repr__(self)

    def __repr__(self) -> str:
        if not self.failed:
            return f"FanOut({int(self)})"
        return f"FanOut({int(self)}, failed={self.failed!r})"
