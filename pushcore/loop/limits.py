"""The defaults of the loop's abuse limits, importable without the compiled loop.

``pushcore._loop`` defines the same numbers (``DEFAULT_*``; ``Loop.set_limits``
explains each limit); tests/loop/test_loop_limits.py checks both agree. The
command line (``pushcore serve --help``) reads them from here, so that its
help needs no compiled extension. docs/SECURITY.md lists them with their flags.
"""
from __future__ import annotations

__all__ = [
    "DEFAULT_PREAUTH_FRAME_MAX", "DEFAULT_PREAUTH_BUDGET", "DEFAULT_OUTBOUND_BUDGET",
    "DEFAULT_CONNECT_RATE", "DEFAULT_SOURCE_CONNECT_RATE",
]

#: largest frame body (bytes) before authentication: the HELLO
DEFAULT_PREAUTH_FRAME_MAX = 2048
#: bytes of partial-frame buffers all unauthenticated connections may hold together
DEFAULT_PREAUTH_BUDGET = 16 * 1024 * 1024
#: bytes queued for output, all connections together
DEFAULT_OUTBOUND_BUDGET = 256 * 1024 * 1024
#: connections accepted a second, all sources (burst: one second's worth)
DEFAULT_CONNECT_RATE = 20000.0
#: connections accepted a second from one IPv4 address or IPv6 /64 (loopback not counted)
DEFAULT_SOURCE_CONNECT_RATE = 200.0
