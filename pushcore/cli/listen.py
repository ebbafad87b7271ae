"""``pushcore listen``: one device on the command line, printing what it receives (like ``mosquitto_sub``).

::

    pushcore listen phone-1                               # 127.0.0.1:5222, token from ./pushcore.secret
    pushcore listen phone-1 --server gw.example:5222 --token "$(pushcore token phone-1)"

Each message is one line on stdout, flushed at once: ``SEQ TOPIC PAYLOAD``
(``-`` for no topic; seq 0 for a broadcast that was not stored). A UTF-8
payload is printed as text, with line breaks and other control characters
escaped (``\\n``) so a message stays on one line; anything else as
``base64:...`` (what ``pushcore push --b64`` takes). Connecting, failures
with their cause, and the stop go to stderr.

After printing a message it records the message's seq in the state file
(``--state-file``, default ``pushcore.listen-DEVICE.json``; written
atomically); the next start resumes after it, so a restart, even after
``kill -9``, does not print a message twice. Ctrl-C or SIGTERM stop it
cleanly (the last ACK is sent); a refused token ends it with status 1.
"""
from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from .common import DEFAULT_SECRET_FILE, CommandError, load_secret, parse_hostport
from .serve import DEFAULT_PORT

if TYPE_CHECKING:
    from .._frame import Push
    from ..device.client import Client, ClientState

__all__ = ["add_arguments", "run", "format_message", "StateFile"]

_SAFE_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("device", metavar="DEVICE", help="the device id to connect as")
    parser.add_argument("--server", default=f"127.0.0.1:{DEFAULT_PORT}", metavar="HOST:PORT",
                        help=f"the gateway (default 127.0.0.1:{DEFAULT_PORT}, where `pushcore serve` listens)")
    parser.add_argument("--state-file", default=None, metavar="PATH",
                        help="where the last seq printed is kept, to resume after a restart "
                             "(default pushcore.listen-DEVICE.json)")
    parser.add_argument("--token", default=None, metavar="HEX",
                        help="the device's token, hex as `pushcore token` prints it (default: minted "
                             "from the gateway's secret)")
    parser.add_argument("--secret-file", default=DEFAULT_SECRET_FILE,
                        help=f"without --token: the gateway's token secret (default {DEFAULT_SECRET_FILE}; "
                             f"$PUSHCORE_SECRET wins)")


def format_message(push: Push) -> str:
    """The line ``pushcore listen`` prints for *push*: ``SEQ TOPIC PAYLOAD``."""
    payload = bytes(push.payload)
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        text = "base64:" + base64.b64encode(payload).decode("ascii")
    else:
        if not text.isprintable():
            text = json.dumps(text, ensure_ascii=False)[1:-1]  # \n, \t, \u0000 ... and \" \\
    return f"{push.seq} {push.topic or '-'} {text}"


class StateFile:
    """The device's last printed seq, in a small JSON file replaced atomically on each update."""

    def __init__(self, path: Path, device_id: str) -> None:
        self.path = path
        self.device_id = device_id

    def load(self) -> int:
        """The recorded seq (0 when the file does not exist yet)."""
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise CommandError(f"cannot read the state file {self.path}: {exc.strerror}") from None
        except ValueError:
            raise CommandError(f"the state file {self.path} is not JSON; remove it to start over") from None
        if not isinstance(data, dict) or not isinstance(data.get("last_seq"), int) or data["last_seq"] < 0:
            raise CommandError(f"the state file {self.path} has no last_seq; remove it to start over")
        if data.get("device") != self.device_id:
            raise CommandError(f"the state file {self.path} belongs to device {data.get('device')!r}, "
                               f"not {self.device_id!r}; give another --state-file")
        seq: int = data["last_seq"]
        return seq

    def save(self, seq: int) -> None:
        """Record *seq*; raises OSError when the file cannot be written."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps({"device": self.device_id, "last_seq": seq}) + "\n")
        os.replace(tmp, self.path)


def _token_source(args: argparse.Namespace) -> bytes | Callable[[], bytes]:
    if args.token is not None:
        try:
            token = bytes.fromhex(args.token.strip())
        except ValueError:
            raise CommandError("--token: give the token as hex, as `pushcore token DEVICE` prints it") from None
        if not token:
            raise CommandError("--token is empty")
        return token
    from ..tokens import mint_token

    secret, _where = load_secret(args.secret_file)
    device_id = args.device
    return lambda: mint_token(secret, device_id)  # a fresh token for each connection attempt


def _default_state_path(device_id: str) -> Path:
    name = device_id if _SAFE_NAME.fullmatch(device_id) else device_id.encode("utf-8").hex()[:100]
    return Path(f"pushcore.listen-{name}.json")


class _Listener:
    """The Client's callbacks: print each message, record its seq, report connection changes."""

    def __init__(self, state: StateFile, server: str) -> None:
        self.state = state
        self.server = server
        self.client: Client | None = None
        self.last: ClientState | None = None
        self.output_failed: OSError | None = None
        self.state_failed: OSError | None = None
        self.stop = threading.Event()

    def on_message(self, push: Push) -> None:
        if self.output_failed is not None or self.state_failed is not None:
            return
        try:
            print(format_message(push), file=sys.stdout, flush=True)
        except OSError as exc:  # stdout closed (`pushcore listen x | head -1`)
            self.output_failed = exc
            self.stop.set()
            return
        if push.seq:
            try:
                self.state.save(push.seq)
            except OSError as exc:  # disk full, directory gone: stop rather than print it again
                self.state_failed = exc
                self.stop.set()

    def on_state(self, state: ClientState, reason: object) -> None:
        from ..device.client import ClientState

        client = self.client
        assert client is not None
        cause = f" ({_cause(reason)})" if reason is not None else ""
        previous, self.last = self.last, state
        if state is ClientState.CONNECTING and previous is None:
            _say(f"{client.device_id} connecting to {self.server}")
        elif state is ClientState.CONNECTED:
            where = f"{client.server[0]}:{client.server[1]}" if client.server else self.server
            resume = f", resuming after seq {client.last_seq}" if client.last_seq else ""
            _say(f"{client.device_id} connected to {where}{resume}")
        elif state is ClientState.DISCONNECTED:
            _say(f"disconnected{cause}")
        elif state is ClientState.BACKOFF:
            delay = f"{client.retry_delay:.1f} s" if client.retry_delay is not None else "a moment"
            if previous is ClientState.DISCONNECTED:
                _say(f"reconnecting in {delay}")
            else:
                _say(f"cannot connect to {self.server}{cause}; retrying in {delay}")
        elif state is ClientState.FAILED:
            _say(f"refused for good{cause}: {client.error}")
        elif state is ClientState.REPLACED:
            _say("another connection of this device took over; stopping")


def _cause(reason: object) -> str:
    """A close code as its name (``CONNECT_FAILED``); any other cause the client gives, as text."""
    from ..errors import reason_name

    if isinstance(reason, int) and not isinstance(reason, bool):
        return reason_name(reason)
    return str(reason)


def _say(text: str) -> None:
    print(f"pushcore listen: {text}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from ..device.client import Client
    from ..errors import PushcoreError

    if not args.device:
        raise CommandError("DEVICE must not be empty")
    host, port = parse_hostport(args.server, what="--server", default_port=DEFAULT_PORT)
    token = _token_source(args)
    state = StateFile(Path(args.state_file) if args.state_file else _default_state_path(args.device), args.device)
    last_seq = state.load()
    try:
        state.save(last_seq)  # a state file that cannot be written would make every message come again
    except OSError as exc:
        raise CommandError(f"cannot write the state file {state.path}: {exc.strerror or exc}; "
                           f"give a writable --state-file") from None
    logging.basicConfig(level=logging.WARNING, format="pushcore listen: %(message)s")
    # The client's own warnings (a backoff's cause) would repeat the state lines
    # printed below; its errors (an on_message failure: none here) still show.
    logging.getLogger("pushcore.device.client").setLevel(logging.ERROR)
    listener = _Listener(state, f"{host}:{port}" if ":" not in host else f"[{host}]:{port}")
    try:
        client = Client(args.device, token, [(host, port)], last_seq=last_seq, backoff=(0.5, 10.0),
                        on_message=listener.on_message, on_state=listener.on_state)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    listener.client = client
    failure: list[BaseException] = []

    def body() -> None:
        try:
            client.run()
        except PushcoreError as exc:
            failure.append(exc)  # refused for good: on_state said why
        finally:
            listener.stop.set()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        listener.stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    thread = threading.Thread(target=body, name="pushcore-listen", daemon=True)
    try:
        thread.start()
        listener.stop.wait()
        while thread.is_alive():  # again if the signal came before the client's loop was up
            client.stop()
            thread.join(timeout=0.5)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if failure:
        return 1
    if listener.state_failed is not None:
        _say(f"stopped: cannot write the state file {state.path}: "
             f"{listener.state_failed.strerror or listener.state_failed}")
        return 1
    if listener.output_failed is not None:
        return 1
    _say(f"stopped; last seq {client.last_seq}" + (f" recorded in {state.path}" if client.last_seq else ""))
    return 0
