"""The loop's counters with reason codes turned into names."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..wire import reason_name

if TYPE_CHECKING:
    from .._loop import Loop

__all__ = ["named_stats"]


def named_stats(loop: Loop) -> dict[str, Any]:
    """``loop.stats()`` with the reason-code keys of ``closed_by_reason`` and
    ``errors_by_code`` turned into :class:`pushcore.Reason` names."""
    stats = loop.stats()
    for key in ("closed_by_reason", "errors_by_code"):
        stats[key] = {reason_name(code): n for code, n in stats[key].items()}
    return stats
