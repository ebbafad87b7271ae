"""Choose the codec backend (C-level Cython or pure-Python reference).

The choice is explicit and never silent: ``PUSHCORE_BACKEND`` is parsed
strictly (see docs/CODEC.md) and a failed import of the extension warns.
"""
from __future__ import annotations

import os
import warnings
from types import ModuleType

from ..errors import ProtocolError

ENV_VAR = "PUSHCORE_BACKEND"
_CHOICES = ("auto", "cython", "python")


def _load_cython() -> ModuleType:
    from .. import _frame  # the compiled ext/_frame.pyx

    _frame._init(ProtocolError)
    return _frame


def select_backend(choice: str | None = None) -> tuple[str, ModuleType]:
    """Return ``(name, module)`` of the codec backend for *choice*.

    *choice* defaults to the ``PUSHCORE_BACKEND`` environment variable;
    ``""`` and ``"auto"`` mean "Cython, else warn and use pure Python".
    """
    if choice is None:
        choice = os.environ.get(ENV_VAR, "")
    choice = choice or "auto"
    if choice not in _CHOICES:
        raise ValueError(
            f"{ENV_VAR}={choice!r} is not understood: use one of "
            f"{', '.join(_CHOICES)} (or leave it unset for auto)"
        )
    if choice == "python":
        from . import reference as protocol

        return "python", protocol
    try:
        return "cython", _load_cython()
    except ImportError as exc:
        if choice == "cython":
            raise ImportError(
                f"{ENV_VAR}=cython but the compiled codec pushcore._frame could not be "
                f"imported ({exc}); build it with `pip install -e .`"
            ) from exc
        warnings.warn(
            f"pushcore: the C-level codec pushcore._frame is not available ({exc}); "
            f"using the pure-Python codec, which is much slower. Build the extension "
            f"with `pip install -e .`, or set {ENV_VAR}=python to silence this.",
            RuntimeWarning,
            stacklevel=3,
        )
        from . import reference as protocol

        return "python", protocol


BACKEND, backend = select_backend()
