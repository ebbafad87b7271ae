"""Load the codec test vectors (format: tests/vectors/README.md).

Importable as ``vectors`` from the tests (pytest puts ``tests/`` on
``sys.path``). Frames are built with whichever codec module is passed in, so
the same vectors drive both backends.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

VECTOR_DIR = Path(__file__).parent

# File stem -> frame class name (docs/CODEC.md), in type-number order.
FRAME_FILES = {
    "hello": "Hello",
    "welcome": "Welcome",
    "ping": "Ping",
    "pong": "Pong",
    "push": "Push",
    "notify": "Notify",
    "fetch": "Fetch",
    "ack": "Ack",
    "subscribe": "Subscribe",
    "unsubscribe": "Unsubscribe",
    "upstream": "Upstream",
    "upstream_ack": "UpstreamAck",
    "redirect": "Redirect",
    "goaway": "Goaway",
    "error": "ErrorFrame",
}


def from_json(value: Any) -> Any:
    """JSON field value -> Python: ``{"hex": ...}`` is bytes, arrays are tuples."""
    if isinstance(value, dict):
        if set(value) != {"hex"}:
            raise ValueError(f"a JSON object in a vector must be {{'hex': ...}}, got {value!r}")
        return bytes.fromhex(value["hex"])
    if isinstance(value, list):
        return tuple(from_json(item) for item in value)
    return value


def to_json(value: Any) -> Any:
    """Python field value -> JSON (the inverse of :func:`from_json`)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"hex": bytes(value).hex()}
    if isinstance(value, (tuple, list)):
        return [to_json(item) for item in value]
    return value


def frame_kwargs(case: dict) -> dict:
    """The constructor keyword arguments of a valid case."""
    return {name: from_json(value) for name, value in case["frame"].items()}


def build_frame(codec, class_name: str, case: dict):
    """The frame of a valid *case*, built with *codec*'s class."""
    return getattr(codec, class_name)(**frame_kwargs(case))


def load_valid() -> list[tuple[str, dict]]:
    """Every valid case as ``(class_name, case)``, file by file in type order."""
    cases = []
    for stem, class_name in FRAME_FILES.items():
        with open(VECTOR_DIR / f"{stem}.json", encoding="utf-8") as f:
            for case in json.load(f):
                cases.append((class_name, case))
    return cases


def load_invalid() -> list[dict]:
    """Every case of invalid.json."""
    with open(VECTOR_DIR / "invalid.json", encoding="utf-8") as f:
        return json.load(f)
