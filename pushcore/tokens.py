"""Signed device tokens: HMAC-SHA256 with an expiry (the default ``authenticate`` hook).

A token proves that whoever holds the server's secret allowed one device id
to connect until a given time. The device sends it in HELLO's ``token`` field
(a ``bytes`` field, so the token is raw bytes, not base64).

Token format, version 1 (41 bytes)::

    offset  size  field
    0       1     version = 0x01
    1       8     expires_at: u64 little-endian, milliseconds since the Unix
                  epoch; 0 = the token never expires
    9       32    HMAC-SHA256(secret, b"pushcore-token\\x00" + bytes 0..8 + device_id as UTF-8)

The device id is not carried in the token (HELLO already carries it) but is
covered by the MAC, so a token minted for one device fails for every other.
The ``pushcore-token`` prefix separates these MACs from anything else the
same secret might sign.

:func:`verify` checks the format, then the MAC with :func:`hmac.compare_digest`
(constant time), and only then the expiry: a forged token is always
``AUTH_FAILED``, never ``TOKEN_EXPIRED``, so expiry answers leak nothing to a
forger. Failures raise :class:`AuthError` whose ``reason`` is the
:class:`pushcore.errors.Reason` the server sends back.

Not covered here (yet): rotating secrets (verify against a list of secrets)
and revocation before expiry; an ``authenticate`` hook can add both.
"""
from __future__ import annotations

import hashlib
import hmac
import math
import struct
import time
from dataclasses import dataclass

from .errors import PushcoreError, Reason

__all__ = [
    "AuthError",
    "TokenClaims",
    "TokenSigner",
    "mint",
    "verify",
    "TOKEN_VERSION",
    "TOKEN_LENGTH",
    "MIN_SECRET_LENGTH",
]

TOKEN_VERSION = 1
MIN_SECRET_LENGTH = 16  # bytes; 128 bits is the least we accept for an HMAC key
_MAC_LENGTH = 32
_HEADER = struct.Struct("<BQ")  # version, expires_at in milliseconds
TOKEN_LENGTH = _HEADER.size + _MAC_LENGTH
_DOMAIN = b"pushcore-token\x00"
_MAX_EXPIRES_MS = 2**64 - 1


class AuthError(PushcoreError):
    """A token (or credential) was refused.

    ``reason`` is :attr:`Reason.AUTH_FAILED` (bad format, bad signature,
    wrong device, wrong secret) or :attr:`Reason.TOKEN_EXPIRED`; the server
    sends it in its ERROR frame. ``code`` is the same value, named as in
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
    """What a valid token says: the device it was minted for and until when.

    ``expires_at`` is Unix seconds (millisecond precision), or ``None`` for a
    token that never expires.
    """

    device_id: str
    expires_at: float | None


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


class TokenSigner:
    """Mints and verifies tokens with one secret.

    Keep one per server: it hashes the secret once, so each :meth:`verify`
    (one per HELLO, many per second during a reconnect storm) only hashes
    the 9 header bytes and the device id.
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
        ttl: float | None = None,
        *,
        expires_at: float | None = None,
        now: float | None = None,
    ) -> bytes:
        """Token for *device_id*, valid for *ttl* seconds from *now* or until *expires_at*.

        Give at most one of *ttl* (seconds, > 0) and *expires_at* (Unix
        seconds); with neither the token never expires. *now* defaults to
        :func:`time.time` and only matters with *ttl*.
        """
        device_id = _check_device_id(device_id)
        if ttl is not None and expires_at is not None:
            raise TypeError("give ttl or expires_at, not both")
        if ttl is not None:
            if not isinstance(ttl, (int, float)) or isinstance(ttl, bool):
                raise TypeError(f"ttl must be a number of seconds, not {type(ttl).__name__}")
            if not math.isfinite(ttl) or ttl <= 0:
                raise ValueError(f"ttl must be a finite number of seconds > 0, got {ttl!r}")
            expires_at = (time.time() if now is None else now) + ttl
        if expires_at is None:
            expires_ms = 0
        else:
            if not isinstance(expires_at, (int, float)) or isinstance(expires_at, bool):
                raise TypeError(
                    f"expires_at must be Unix seconds, not {type(expires_at).__name__}"
                )
            if not math.isfinite(expires_at):
                raise ValueError(f"expires_at must be finite, got {expires_at!r}")
            expires_ms = math.ceil(expires_at * 1000)
            if not 1 <= expires_ms <= _MAX_EXPIRES_MS:
                raise ValueError(
                    f"expires_at must be Unix seconds between 0.001 and "
                    f"{_MAX_EXPIRES_MS / 1000:.0f}, got {expires_at!r}"
                )
        try:
            device_bytes = device_id.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"device_id is not valid Unicode text: {exc}") from None
        header = _HEADER.pack(TOKEN_VERSION, expires_ms)
        return header + self._mac(header, device_bytes)

    def verify(self, device_id: str, token: bytes, *, now: float | None = None) -> TokenClaims:
        """Claims of *token* if it is valid for *device_id* at *now*; else :class:`AuthError`.

        Raises ``TypeError`` only when *device_id* is not a ``str`` or
        *token* is not bytes-like (a bug in the caller, not bad input);
        every byte string gets either claims or an :class:`AuthError`.
        """
        device_id = _check_device_id(device_id)
        if not isinstance(token, (bytes, bytearray, memoryview)):
            raise TypeError(f"token must be bytes, not {type(token).__name__}")
        token = bytes(token)
        if len(token) != TOKEN_LENGTH:
            raise AuthError(
                Reason.AUTH_FAILED,
                f"token is {len(token)} bytes, a version-{TOKEN_VERSION} token is {TOKEN_LENGTH}",
            )
        version, expires_ms = _HEADER.unpack_from(token)
        if version != TOKEN_VERSION:
            raise AuthError(Reason.AUTH_FAILED, f"unknown token version {version}")
        try:
            device_bytes = device_id.encode("utf-8")
        except UnicodeEncodeError:
            raise AuthError(Reason.AUTH_FAILED, "device id is not valid Unicode text") from None
        expected = self._mac(token[: _HEADER.size], device_bytes)
        if not hmac.compare_digest(expected, token[_HEADER.size :]):
            raise AuthError(
                Reason.AUTH_FAILED,
                "bad token signature (minted for another device, with another secret, or altered)",
            )
        if expires_ms == 0:
            return TokenClaims(device_id, None)
        if now is None:
            now = time.time()
        if now * 1000 >= expires_ms:
            raise AuthError(
                Reason.TOKEN_EXPIRED,
                f"token expired at {expires_ms / 1000:.3f} (now {now:.3f}); mint a new one",
            )
        return TokenClaims(device_id, expires_ms / 1000)


def mint(
    secret: bytes,
    device_id: str,
    ttl: float | None = None,
    *,
    expires_at: float | None = None,
    now: float | None = None,
) -> bytes:
    """Token for *device_id* signed with *secret*; see :meth:`TokenSigner.mint`."""
    return TokenSigner(secret).mint(device_id, ttl, expires_at=expires_at, now=now)


def verify(secret: bytes, device_id: str, token: bytes, *, now: float | None = None) -> TokenClaims:
    """Check *token* for *device_id* with *secret*; see :meth:`TokenSigner.verify`."""
    return TokenSigner(secret).verify(device_id, token, now=now)
