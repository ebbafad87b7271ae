"""Signed device tokens: HMAC-SHA256 with an issue time and an expiry (the default ``authenticate`` hook).

A token proves that whoever holds the server's secret allowed one device id
to connect from a given time until a given time. The device sends it in
HELLO's ``token`` field (a ``bytes`` field, so the token is raw bytes, not
base64). The byte layout is written out for other languages in
docs/PROTOCOL.md §8 ("Token format"); in short, version 2 (49 bytes)::

    offset  size  field
    0       1     version = 0x02
    1       8     issued_at: u64 little-endian, milliseconds since the Unix epoch
    9       8     expires_at: u64 little-endian, milliseconds since the Unix
                  epoch; 0 = the token never expires
    17      32    HMAC-SHA256(secret, b"pushcore-token\\x00" + bytes 0..16 + device_id as UTF-8)

The device id is not carried in the token (HELLO already carries it) but is
covered by the MAC, so a token minted for one device fails for every other.
The ``pushcore-token`` prefix separates these MACs from anything else the
same secret might sign. ``issued_at`` is what :meth:`pushcore.Server.revoke`
compares against ("refuse this device's tokens issued before T").

Version 1 tokens (41 bytes: version 0x01, expires_at, MAC over bytes 0..8 +
device id; no issue time) still verify, so devices holding one keep working
until it expires; their issue time is unknown, so *any* revocation of the
device refuses them. :func:`mint_token` only makes version 2.

Lifetime: :func:`mint_token` (``pushcore.mint_token``) makes tokens valid for :data:`DEFAULT_TTL` (30 days)
unless given ``ttl=`` or ``expires_at=``. A token that never expires is made
only when asked for by name, ``ttl=NO_EXPIRY``; ``ttl=None`` is refused
(``TypeError``) because it reads as "no ttl given" as easily as "no expiry".

:func:`verify_token` (``pushcore.verify_token``) checks the format, then the MAC with :func:`hmac.compare_digest`
(constant time), and only then the expiry: a forged token is always
``AUTH_FAILED``, never ``TOKEN_EXPIRED``, so expiry answers leak nothing to a
forger. Failures raise :class:`AuthError` whose ``reason`` is the
:class:`pushcore.errors.Reason` the server sends back.

Not covered here (yet): rotating secrets (verify against a list of secrets);
an ``authenticate`` hook can add it.
"""
from __future__ import annotations

import enum
import hashlib
import hmac
import math
import struct
import time
import warnings
from dataclasses import dataclass
from typing import Final, Literal

from .errors import PushcoreError, Reason

__all__ = [
    "AuthError",
    "TokenClaims",
    "TokenSigner",
    "mint_token",
    "verify_token",
    "DEFAULT_TTL",
    "NO_EXPIRY",
    "TOKEN_VERSION",
    "TOKEN_LENGTH",
    "TOKEN_V1_LENGTH",
    "MIN_SECRET_LENGTH",
]


class _NoExpiry(enum.Enum):
    """Type of :data:`NO_EXPIRY` (an enum member, so ``mypy`` can name it in a Literal)."""

    NO_EXPIRY = "NO_EXPIRY"

    def __repr__(self) -> str:
        return "pushcore.tokens.NO_EXPIRY"


#: Pass as ``ttl=NO_EXPIRY`` for a token that never expires (only ever by name).
NO_EXPIRY: Final = _NoExpiry.NO_EXPIRY
#: Seconds a token is valid for when :func:`mint_token` gets neither ``ttl`` nor ``expires_at``.
DEFAULT_TTL: Final = 30 * 24 * 3600.0

TOKEN_VERSION = 2
MIN_SECRET_LENGTH = 16  # bytes; 128 bits is the least we accept for an HMAC key
_MAC_LENGTH = 32
_HEADER = struct.Struct("<BQQ")  # version, issued_at, expires_at (milliseconds)
TOKEN_LENGTH = _HEADER.size + _MAC_LENGTH  # 49
_HEADER_V1 = struct.Struct("<BQ")  # version 1: version, expires_at
TOKEN_V1_LENGTH = _HEADER_V1.size + _MAC_LENGTH  # 41
_DOMAIN = b"pushcore-token\x00"
_MAX_MS = 2**64 - 1


class _Unset(enum.Enum):
    """Type of the default of ``ttl=``: "not given", which means :data:`DEFAULT_TTL`."""

    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "DEFAULT_TTL"


_UNSET: Final = _Unset.UNSET

#: What ``ttl=`` takes: seconds (> 0), or :data:`NO_EXPIRY`.
TTL = float | Literal[_NoExpiry.NO_EXPIRY]


class AuthError(PushcoreError):
    """A token (or credential) was refused.

    ``reason`` is :attr:`Reason.AUTH_FAILED` (bad format, bad signature,
    wrong device, wrong secret, revoked) or :attr:`Reason.TOKEN_EXPIRED`; the
    server sends it in its ERROR frame. ``code`` is the same value, named as in
    :class:`pushcore.ProtocolError` so error handlers can treat both alike.
    """

    def __init__(self, reason: int, message: str) -> None:
        reason = Reason(reason)
        super().__init__(f"{reason.name}: {message}")
        self.reason = reason
        self.message = message

    @property
    def code(self) -> Reason:
        return self.reason

    def __reduce__(self) -> tuple[type[AuthError], tuple[int, str]]:
        return (type(self), (int(self.reason), self.message))


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """What a valid token says: the device it was minted for, until when, since when.

    ``expires_at`` is Unix seconds (millisecond precision), or ``None`` for a
    token that never expires. ``issued_at`` is Unix seconds (millisecond
    precision), or ``None`` for a version-1 token (it carries no issue time).
    """

    device_id: str
    expires_at: float | None
    issued_at: float | None = None


def _check_secret(secret: object) -> bytes:
    if not isinstance(secret, (bytes, bytearray, memoryview)):
        raise TypeError(f"token secret must be bytes, not {type(secret).__name__}")
    secret = bytes(secret)
    if len(secret) < MIN_SECRET_LENGTH:
        raise ValueError(
            f"token secret is {len(secret)} bytes; use at least {MIN_SECRET_LENGTH} random "
            f"bytes (e.g. os.urandom(32))"
        )
    return secret


def _check_device_id(device_id: object) -> str:
    if not isinstance(device_id, str):
        raise TypeError(f"device_id must be str, not {type(device_id).__name__}")
    return device_id


def _check_seconds(name: str, value: object) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)


def _expires_ms(ttl: object, expires_at: float | None, issued: float) -> int:
    """The expires_at field (0 = never) for :meth:`TokenSigner.mint`'s arguments."""
    if ttl is None:
        raise TypeError(
            "ttl=None is ambiguous: give ttl=<seconds>, expires_at=<Unix seconds>, "
            "or ttl=pushcore.tokens.NO_EXPIRY for a token that never expires "
            f"(with no ttl at all a token lasts DEFAULT_TTL = {DEFAULT_TTL:.0f} s)"
        )
    if ttl is not _UNSET and expires_at is not None:
        raise TypeError("give ttl or expires_at, not both")
    if ttl is NO_EXPIRY:
        return 0
    if expires_at is None:
        seconds = DEFAULT_TTL if ttl is _UNSET else _check_seconds("ttl", ttl)
        if seconds <= 0:
            raise ValueError(f"ttl must be a finite number of seconds > 0, got {ttl!r}")
        expires_at = issued + seconds
    expires_at = _check_seconds("expires_at", expires_at)
    expires_ms = math.ceil(expires_at * 1000)
    if not 1 <= expires_ms <= _MAX_MS:
        raise ValueError(
            f"expires_at must be Unix seconds between 0.001 and "
            f"{_MAX_MS / 1000:.0f}, got {expires_at!r}"
        )
    return expires_ms


class TokenSigner:
    """Mints and verifies tokens with one secret.

    Keep one per server: it hashes the secret once, so each :meth:`verify`
    (one per HELLO, many per second during a reconnect storm) only hashes
    the 17 header bytes and the device id.
    """

    __slots__ = ("_keyed",)

    def __init__(self, secret: bytes) -> None:
        self._keyed = hmac.new(_check_secret(secret), _DOMAIN, hashlib.sha256)

    def _mac(self, header: bytes, device_bytes: bytes) -> bytes:
        mac = self._keyed.copy()
        mac.update(header)
        mac.update(device_bytes)
        return mac.digest()

    def mint(
        self,
        device_id: str,
        ttl: TTL | _Unset = _UNSET,
        *,
        expires_at: float | None = None,
        now: float | None = None,
    ) -> bytes:
        """Token for *device_id*, issued at *now*, valid for *ttl* seconds or until *expires_at*.

        Give at most one of *ttl* (seconds, > 0; or :data:`NO_EXPIRY` for a
        token that never expires) and *expires_at* (Unix seconds); with
        neither the token lasts :data:`DEFAULT_TTL` (30 days). ``ttl=None``
        raises ``TypeError``. *now* (default :func:`time.time`) is the issue
        time written in the token (what :meth:`pushcore.Server.revoke`
        compares) and the start of *ttl*.
        """
        device_id = _check_device_id(device_id)
        issued = time.time() if now is None else _check_seconds("now", now)
        expires_ms = _expires_ms(ttl, expires_at, issued)
        issued_ms = math.floor(issued * 1000)
        if not 0 <= issued_ms <= _MAX_MS:
            raise ValueError(f"now must be Unix seconds >= 0, got {issued!r}")
        try:
            device_bytes = device_id.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"device_id is not valid Unicode text: {exc}") from None
        header = _HEADER.pack(TOKEN_VERSION, issued_ms, expires_ms)
        return header + self._mac(header, device_bytes)

    def verify(self, device_id: str, token: bytes, *, now: float | None = None) -> TokenClaims:
        """Claims of *token* if it is valid for *device_id* at *now*; else :class:`AuthError`.

        Accepts version 2 tokens and, for devices minted before version 2,
        version 1 (``issued_at`` None). Raises ``TypeError`` only when
        *device_id* is not a ``str`` or *token* is not bytes-like (a bug in
        the caller, not bad input); every byte string gets either claims or
        an :class:`AuthError`.
        """
        device_id = _check_device_id(device_id)
        if not isinstance(token, (bytes, bytearray, memoryview)):
            raise TypeError(f"token must be bytes, not {type(token).__name__}")
        token = bytes(token)
        issued_ms: int | None
        if len(token) == TOKEN_LENGTH and token[0] == TOKEN_VERSION:
            header_size = _HEADER.size
            _, issued_ms, expires_ms = _HEADER.unpack_from(token)
        elif len(token) == TOKEN_V1_LENGTH and token[0] == 1:
            header_size = _HEADER_V1.size
            _, expires_ms = _HEADER_V1.unpack_from(token)
            issued_ms = None
        elif len(token) in (TOKEN_LENGTH, TOKEN_V1_LENGTH):
            raise AuthError(Reason.AUTH_FAILED, f"unknown token version {token[0]}")
        else:
            raise AuthError(
                Reason.AUTH_FAILED,
                f"token is {len(token)} bytes, a version-{TOKEN_VERSION} token is {TOKEN_LENGTH}",
            )
        try:
            device_bytes = device_id.encode("utf-8")
        except UnicodeEncodeError:
            raise AuthError(Reason.AUTH_FAILED, "device id is not valid Unicode text") from None
        expected = self._mac(token[:header_size], device_bytes)
        if not hmac.compare_digest(expected, token[header_size:]):
            raise AuthError(
                Reason.AUTH_FAILED,
                "bad token signature (minted for another device, with another secret, or altered)",
            )
        issued_at = None if issued_ms is None else issued_ms / 1000
        if expires_ms == 0:
            return TokenClaims(device_id, None, issued_at)
        if now is None:
            now = time.time()
        if now * 1000 >= expires_ms:
            raise AuthError(
                Reason.TOKEN_EXPIRED,
                f"token expired at {expires_ms / 1000:.3f} (now {now:.3f}); mint a new one",
            )
        return TokenClaims(device_id, expires_ms / 1000, issued_at)


def mint_token(
    secret: bytes,
    device_id: str,
    ttl: TTL | _Unset = _UNSET,
    *,
    expires_at: float | None = None,
    now: float | None = None,
) -> bytes:
    """Token for *device_id* signed with *secret*; see :meth:`TokenSigner.mint`.

    Exported as ``pushcore.mint_token``. ``mint_token(secret, "phone-1")``
    lasts 30 days; ``mint_token(secret, "phone-1", ttl=3600)`` an hour;
    ``mint_token(secret, "phone-1", ttl=NO_EXPIRY)`` forever.
    """
    return TokenSigner(secret).mint(device_id, ttl, expires_at=expires_at, now=now)


def verify_token(secret: bytes, device_id: str, token: bytes, *, now: float | None = None) -> TokenClaims:
    """Check *token* for *device_id* with *secret*; see :meth:`TokenSigner.verify`.

    Exported as ``pushcore.verify_token``.
    """
    return TokenSigner(secret).verify(device_id, token, now=now)


def mint(
    secret: bytes,
    device_id: str,
    ttl: TTL | _Unset = _UNSET,
    *,
    expires_at: float | None = None,
    now: float | None = None,
) -> bytes:
    """Deprecated alias of :func:`mint_token` (``pushcore.mint_token``); warns."""
    warnings.warn("pushcore.tokens.mint is deprecated; use pushcore.mint_token", DeprecationWarning, stacklevel=2)
    return mint_token(secret, device_id, ttl, expires_at=expires_at, now=now)


def verify(secret: bytes, device_id: str, token: bytes, *, now: float | None = None) -> TokenClaims:
    """Deprecated alias of :func:`verify_token` (``pushcore.verify_token``); warns."""
    warnings.warn("pushcore.tokens.verify is deprecated; use pushcore.verify_token", DeprecationWarning,
                  stacklevel=2)
    return verify_token(secret, device_id, token, now=now)
