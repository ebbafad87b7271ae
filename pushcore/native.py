"""The compiled extensions, found once, with the cause when one is missing.

``ext/`` compiles to ``pushcore._frame`` (codec), ``pushcore._pool`` (buffer
pool) and ``pushcore._loop`` (the connection loop). They are imported here,
once; a missing one is remembered with the reason Python gave (never guessed),
so that :mod:`pushcore.codec` can warn once and name it, and so that
``Server()``, ``Client()``, ``Simulator()`` and ``pushcore.Loop`` fail with a
message that says which extension is missing, why, and how to build it —
instead of a bare ``ModuleNotFoundError`` later.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from .errors import PushcoreError

__all__ = ["EXTENSIONS", "ExtensionMissing", "loaded", "missing", "require", "describe_missing"]

#: The compiled modules, in dependency order (the loop cimports the codec and the pool).
EXTENSIONS = ("_frame", "_pool", "_loop")
BUILD_HINT = "build them with `pip install -e .` (needs a C compiler and the Python headers)"


class ExtensionMissing(PushcoreError, ImportError):
    """A C-level extension that this call needs is not built or failed to import."""


loaded: dict[str, ModuleType] = {}
#: extension name -> the ImportError its import raised
missing: dict[str, ImportError] = {}

for _name in EXTENSIONS:
    try:
        # import_module, not `from . import _frame`: inside a package that is
        # still initialising, the latter reports a missing module as a
        # "circular import", which is not the cause.
        loaded[_name] = importlib.import_module(f"{__package__}.{_name}")
    except ImportError as _exc:
        missing[_name] = _exc
del _name


def describe_missing() -> str:
    """One line per missing extension: its module name and the import error."""
    return "; ".join(f"pushcore.{name}: {exc}" for name, exc in missing.items())


def require(name: str, needed_by: str) -> ModuleType:
    """The compiled module ``pushcore.<name>``, or :class:`ExtensionMissing`
    naming *needed_by* (what the caller was building), the cause and the fix."""
    module = loaded.get(name)
    if module is None:
        raise ExtensionMissing(
            f"{needed_by} needs the C-level extension pushcore.{name}, which is not available "
            f"({missing[name]}); {BUILD_HINT}. Only the standalone codec API works without it "
            f"(pushcore.encode/decode/Decoder with the pure-Python reference codec)."
        )
    return module
