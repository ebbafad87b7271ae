"""Shared pieces of the ``pushcore`` subcommands: secrets, tokens, addresses, limits, errors.

Every problem a user can cause (a busy port, a bad address, a missing token
or secret, too few file descriptors) becomes a :class:`CommandError` whose
message says what to do; the command line prints it without a traceback.
"""
from __future__ import annotations

import errno
import ipaddress
import os
import resource
import secrets
import socket
from pathlib import Path

__all__ = [
    "CommandError", "SECRET_ENV", "ADMIN_TOKEN_ENV", "DEFAULT_SECRET_FILE", "DEFAULT_TOKEN_FILE",
    "load_secret", "load_admin_token", "parse_hostport", "bind_error", "raise_fd_limit",
]

SECRET_ENV = "PUSHCORE_SECRET"
ADMIN_TOKEN_ENV = "PUSHCORE_ADMIN_TOKEN"
DEFAULT_SECRET_FILE = "pushcore.secret"
DEFAULT_TOKEN_FILE = "pushcore.admin-token"


class CommandError(Exception):
    """A problem the user can fix; the message says how. ``status`` is the exit status."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


def _write_private(path: Path, text: str) -> None:
    """Create *path* readable by its owner only (it holds a secret); never overwrite."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")


def load_secret(path: str | None, *, create: bool = False) -> tuple[bytes, str]:
    """The device-token secret and where it came from.

    ``$PUSHCORE_SECRET`` (hex) wins; else the file *path* (hex, one line).
    With *create*, a missing file is made with 32 random bytes (the gateway
    does this on its first start; devices then read the same file).
    """
    env = os.environ.get(SECRET_ENV)
    if env:
        try:
            secret = bytes.fromhex(env.strip())
        except ValueError:
            raise CommandError(f"${SECRET_ENV} must be hex (e.g. from `python -c \"import os; "
                               f"print(os.urandom(32).hex())\"`)") from None
        where = f"${SECRET_ENV}"
    else:
        file = Path(path or DEFAULT_SECRET_FILE)
        if not file.exists():
            if not create:
                raise CommandError(
                    f"no token secret: {file} does not exist. Give the gateway's secret with "
                    f"--secret-file FILE or ${SECRET_ENV} (hex); `pushcore serve` creates "
                    f"{DEFAULT_SECRET_FILE} in its directory on its first start")
            try:
                _write_private(file, secrets.token_hex(32))
            except OSError as exc:
                raise CommandError(f"cannot create the token secret {file}: {exc.strerror}") from None
        try:
            text = file.read_text().strip()
            secret = bytes.fromhex(text)
        except OSError as exc:
            raise CommandError(f"cannot read the token secret {file}: {exc.strerror}") from None
        except ValueError:
            raise CommandError(f"{file} must hold the secret as hex on one line") from None
        where = str(file)
    if len(secret) < 16:
        raise CommandError(f"the token secret from {where} is {len(secret)} bytes; use at least 16 (32 is usual)")
    return secret, where


def load_admin_token(token: str | None, path: str | None, *, create: bool = False) -> tuple[str, str]:
    """The admin API token and where it came from: *token*, ``$PUSHCORE_ADMIN_TOKEN``, or the file."""
    if token:
        return token, "--admin-token"
    env = os.environ.get(ADMIN_TOKEN_ENV)
    if env:
        return env.strip(), f"${ADMIN_TOKEN_ENV}"
    file = Path(path or DEFAULT_TOKEN_FILE)
    if not file.exists():
        if not create:
            raise CommandError(
                f"no admin token: pass --admin-token TOKEN, set ${ADMIN_TOKEN_ENV}, or run where "
                f"`pushcore serve` wrote {DEFAULT_TOKEN_FILE} (--admin-token-file FILE)")
        try:
            _write_private(file, secrets.token_urlsafe(24))
        except OSError as exc:
            raise CommandError(f"cannot create the admin token file {file}: {exc.strerror}") from None
    try:
        value = file.read_text().strip()
    except OSError as exc:
        raise CommandError(f"cannot read the admin token file {file}: {exc.strerror}") from None
    if not value:
        raise CommandError(f"the admin token file {file} is empty")
    return value, str(file)


def parse_hostport(text: str, *, what: str = "address", default_port: int | None = None) -> tuple[str, int]:
    """``(host, port)`` from ``host:port`` / ``[v6]:port`` (or ``host`` with *default_port*)."""
    text = text.strip()
    host, port_text = text, None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise CommandError(f"{what} {text!r}: missing ']' after the IPv6 address")
        host, rest = text[1:end], text[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise CommandError(f"{what} {text!r}: use [IPv6]:PORT")
            port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif text.count(":") > 1:
        raise CommandError(f"{what} {text!r}: write an IPv6 address as [ADDRESS]:PORT")
    if not host:
        raise CommandError(f"{what} {text!r} has no host (use HOST:PORT, e.g. 127.0.0.1:5222)")
    if port_text is None:
        if default_port is None:
            raise CommandError(f"{what} {text!r} has no port (use HOST:PORT, e.g. 127.0.0.1:5222)")
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise CommandError(f"{what} {text!r}: the port must be a number in 1..65535")
    return host, int(port_text)


def bind_error(exc: OSError, host: str, port: int, what: str, option: str) -> CommandError:
    """A :class:`CommandError` that explains why listening on *host*:*port* failed."""
    if isinstance(exc, socket.gaierror):
        return CommandError(f"{what}: {host!r} is not an IP address or a name this machine can resolve")
    if exc.errno == errno.EADDRINUSE:
        return CommandError(f"{what}: port {port} on {host} is already in use "
                            f"(another pushcore serve?); choose another with {option}")
    if exc.errno == errno.EADDRNOTAVAIL:
        return CommandError(f"{what}: {host} is not an address of this machine")
    if exc.errno == errno.EACCES:
        return CommandError(f"{what}: not allowed to listen on port {port} (ports below 1024 need privileges)")
    return CommandError(f"{what}: cannot listen on {host}:{port}: {exc.strerror or exc}")


def check_ip(host: str, what: str) -> str:
    """*host* if it is an IP literal or resolves; else a :class:`CommandError`."""
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    try:
        socket.getaddrinfo(host, None)
    except socket.gaierror:
        raise CommandError(f"{what}: {host!r} is not an IP address or a name this machine can resolve") from None
    return host


def raise_fd_limit(needed: int, what: str) -> int:
    """Raise the soft file descriptor limit towards the hard one; error out if *needed* cannot fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, needed)
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if needed > soft:
        raise CommandError(
            f"{what} needs about {needed:,} file descriptors but this process may open {soft:,} "
            f"(hard limit {hard:,}); use fewer, or run several processes (e.g. pushcore simulate "
            f"with different --id-prefix), or raise the limit (ulimit -n)")
    return soft
