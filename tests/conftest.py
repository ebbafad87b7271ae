"""Shared fixtures.

Codec fixtures: every codec test runs once per backend module. The Cython
parameter is never skipped: when ``pushcore._frame`` is not built, its tests
fail loudly (build it with ``pip install -e .``).
"""
from __future__ import annotations

import pytest

from pushcore.codec import select_backend

CODEC_BACKENDS = ["python", "cython"]


def load_codec(name: str):
    """The codec module of backend *name* (``pushcore.protocol`` or ``pushcore._frame``)."""
    selected, module = select_backend(name)
    assert selected == name, f"asked for the {name} codec, got {selected}"
    return module


# Session scope: the fixtures only hand out modules, and hypothesis tests may
# use them without the function-scoped-fixture health check.
@pytest.fixture(scope="session", params=CODEC_BACKENDS, ids=CODEC_BACKENDS)
def codec(request):
    """The codec module under test, once per backend."""
    return load_codec(request.param)


@pytest.fixture(scope="session")
def python_codec():
    """The pure-Python reference codec (``pushcore.protocol``)."""
    return load_codec("python")


@pytest.fixture(scope="session")
def cython_codec():
    """The C-level codec (``pushcore._frame``), initialised with ProtocolError."""
    return load_codec("cython")


@pytest.fixture(scope="session")
def both_codecs(python_codec, cython_codec):
    """``(python_module, cython_module)`` for differential tests."""
    return python_codec, cython_codec
