"""The frame codec, and the one backend switch.

Two implementations of docs/PROTOCOL.md share one API, byte for byte:
``pushcore._frame`` (C-level, built from ``ext/_frame.pyx``) and
:mod:`pushcore.codec.reference` (pure Python: the readable definition, the
fallback, and the oracle of the differential tests).

Two separate things are chosen here (docs/CODEC.md):

* :data:`frames` — the frame classes the connection loop, ``Server`` and
  ``Client`` hand out: always the C-level ones when the extension is built,
  whatever ``PUSHCORE_BACKEND`` says. ``pushcore.Push`` and friends are these.
* :data:`backend` / :data:`BACKEND` — the *standalone* codec API
  (``pushcore.encode``, ``decode``, ``Decoder``, ``encode_push``,
  ``encode_ack``): the C-level codec, or the reference when
  ``PUSHCORE_BACKEND=python`` (strictly parsed) or when the extension is missing
  (then a ``RuntimeWarning`` says so once, naming the cause).
"""
from __future__ import annotations

import os
import warnings
from types import ModuleType

from .. import native
from . import reference

__all__ = ["ENV_VAR", "BACKEND", "backend", "frames", "select_backend",
           "encode", "decode", "Decoder", "encode_push", "encode_ack"]

ENV_VAR = "PUSHCORE_BACKEND"
_CHOICES = ("auto", "cython", "python")
_warned = False


def select_backend(choice: str | None = None) -> tuple[str, ModuleType]:
    """Return ``(name, module)`` of the standalone codec backend for *choice*.

    *choice* defaults to the ``PUSHCORE_BACKEND`` environment variable;
    ``""`` and ``"auto"`` mean "Cython, else warn once and use pure Python".
    """
    global _warned
    if choice is None:
        choice = os.environ.get(ENV_VAR, "")
    choice = choice or "auto"
    if choice not in _CHOICES:
        raise ValueError(
            f"{ENV_VAR}={choice!r} is not understood: use one of "
            f"{', '.join(_CHOICES)} (or leave it unset for auto)"
        )
    if choice == "python":
        return "python", reference
    frame = native.loaded.get("_frame")
    if frame is not None:
        return "cython", frame
    if choice == "cython":
        raise ImportError(
            f"{ENV_VAR}=cython but the C-level codec is not available "
            f"({native.describe_missing()}); {native.BUILD_HINT}"
        )
    if not _warned:
        _warned = True
        warnings.warn(
            f"pushcore: C-level extensions missing ({native.describe_missing()}). The standalone "
            f"codec uses the pure-Python reference (much slower); Server, Client, Simulator and "
            f"Loop need the extensions and will refuse to start. Fix: {native.BUILD_HINT}.",
            RuntimeWarning,
            stacklevel=3,
        )
    return "python", reference


BACKEND, backend = select_backend()

#: The frame classes the loop, Server and Client use and hand out.
frames: ModuleType = native.loaded.get("_frame", reference)

encode = backend.encode
decode = backend.decode
Decoder = backend.Decoder
encode_push = backend.encode_push
encode_ack = backend.encode_ack
