"""Several gateway processes: workers on one machine (``supervisor``), nodes sharing one Redis (``link``, ``bus``).

Names load on first use, so importing a module of this package does not
load the others.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .link import ClusterLink, ClusterUnavailable, NodeInfo
    from .supervisor import PortUnavailable, Supervisor, SupervisorError, WorkerInfo, WorkerState

__all__ = ["PortUnavailable", "Supervisor", "SupervisorError", "WorkerInfo", "WorkerState",
           "ClusterLink", "ClusterUnavailable", "NodeInfo"]

#: name -> the module of this package that defines it
_LAZY = {**dict.fromkeys(("PortUnavailable", "Supervisor", "SupervisorError", "WorkerInfo", "WorkerState"),
                         "supervisor"),
         **dict.fromkeys(("ClusterLink", "ClusterUnavailable", "NodeInfo"), "link")}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
