"""PUSHCORE_BACKEND is parsed strictly and the choice is never silent (docs/CODEC.md).

Each case imports pushcore in a fresh interpreter, since the backend is chosen
once at import.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

import pushcore

PRINT_BACKEND = "import pushcore; print(pushcore.BACKEND, pushcore.Push.__module__)"

# Makes `import pushcore._frame` fail as if the extension were not built.
BLOCK_EXTENSION = """
import sys
class BlockCodecExtension:
    def find_spec(self, name, path=None, target=None):
        if name == "pushcore._frame":
            raise ImportError("pushcore._frame blocked by the test")
        return None
sys.meta_path.insert(0, BlockCodecExtension())
"""


def run_python(code: str, backend: str | None, *warning_options: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PUSHCORE_BACKEND"}
    if backend is not None:
        env["PUSHCORE_BACKEND"] = backend
    return subprocess.run([sys.executable, *warning_options, "-c", code], env=env,
                          capture_output=True, text=True, timeout=60)


def test_backend_is_one_of_the_two():
    assert pushcore.BACKEND in ("python", "cython")
    module = {"python": "pushcore.codec.reference", "cython": "pushcore._frame"}[pushcore.BACKEND]
    assert pushcore.Push.__module__ == module
    assert pushcore.Decoder.__module__ == module


def test_python_forces_the_reference_codec():
    result = run_python(PRINT_BACKEND, "python", "-W", "error::RuntimeWarning")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["python", "pushcore.codec.reference"]


@pytest.mark.parametrize("value", [None, "", "auto", "cython"])
def test_auto_and_cython_use_the_extension(value):
    """With the extension built, the default is Cython, without any warning."""
    result = run_python(PRINT_BACKEND, value, "-W", "error::RuntimeWarning")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["cython", "pushcore._frame"]


@pytest.mark.parametrize("value", ["bogus", "Python", "CYTHON", " python", "python ", "1", "pure", "c"])
def test_unknown_values_are_refused(value):
    result = run_python(PRINT_BACKEND, value)
    assert result.returncode != 0
    assert result.stdout == ""
    assert "ValueError" in result.stderr
    assert "PUSHCORE_BACKEND" in result.stderr
    assert repr(value) in result.stderr                  # says what it did not understand
    assert "auto, cython, python" in result.stderr        # and what it would accept


@pytest.mark.parametrize("value", [None, "auto"])
def test_auto_without_the_extension_warns_and_falls_back(value):
    result = run_python(BLOCK_EXTENSION + PRINT_BACKEND, value)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["python", "pushcore.codec.reference"]
    assert "RuntimeWarning" in result.stderr
    assert "blocked by the test" in result.stderr          # the warning says why


def test_cython_without_the_extension_is_an_import_error():
    result = run_python(BLOCK_EXTENSION + PRINT_BACKEND, "cython")
    assert result.returncode != 0
    assert "ImportError" in result.stderr and "PUSHCORE_BACKEND=cython" in result.stderr


def test_python_without_the_extension_is_silent():
    result = run_python(BLOCK_EXTENSION + PRINT_BACKEND, "python", "-W", "error::RuntimeWarning")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["python", "pushcore.codec.reference"]


def test_reference_codec_never_imports_the_extension():
    code = BLOCK_EXTENSION + "import pushcore.codec.reference as p; print(p.decode(p.PING_BYTES))"
    result = run_python(code, "python")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Ping()"
