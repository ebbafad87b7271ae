"""PUSHCORE_BACKEND is parsed strictly and the choice is never silent (docs/CODEC.md).

It selects the standalone codec API only (encode, decode, Decoder, …); the
frame classes (pushcore.Push, …) are the C-level ones the loop hands out in
every mode.

Each case imports pushcore in a fresh interpreter, since the backend is chosen
once at import.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

import pushcore

PRINT_BACKEND = ("import pushcore; "
                 "print(pushcore.BACKEND, pushcore.Push.__module__, pushcore.Decoder.__module__)")

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
    assert pushcore.Decoder.__module__ == module
    assert pushcore.decode.__module__ == module
    # the frame classes are the loop's, whatever the backend
    assert pushcore.Push.__module__ == "pushcore._frame"


def test_python_forces_the_reference_codec():
    result = run_python(PRINT_BACKEND, "python", "-W", "error::RuntimeWarning")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["python", "pushcore._frame", "pushcore.codec.reference"]


@pytest.mark.parametrize("value", [None, "", "auto", "cython"])
def test_auto_and_cython_use_the_extension(value):
    """With the extension built, the default is Cython, without any warning."""
    result = run_python(PRINT_BACKEND, value, "-W", "error::RuntimeWarning")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["cython", "pushcore._frame", "pushcore._frame"]


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
    code = BLOCK_EXTENSION + PRINT_BACKEND + "; import pushcore.codec as c; c.select_backend()"
    result = run_python(code, value)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["python", "pushcore.codec.reference", "pushcore.codec.reference"]
    assert result.stderr.count("RuntimeWarning") == 1      # once, even when asked again
    assert "pushcore._frame: pushcore._frame blocked by the test" in result.stderr  # which, and why
    assert "circular import" not in result.stderr
    assert "pip install -e ." in result.stderr             # and the fix


def test_cython_without_the_extension_is_an_import_error():
    result = run_python(BLOCK_EXTENSION + PRINT_BACKEND, "cython")
    assert result.returncode != 0
    assert "ImportError" in result.stderr and "PUSHCORE_BACKEND=cython" in result.stderr


def test_python_without_the_extension_is_silent():
    result = run_python(BLOCK_EXTENSION + PRINT_BACKEND, "python", "-W", "error::RuntimeWarning")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["python", "pushcore.codec.reference", "pushcore.codec.reference"]


@pytest.mark.parametrize("make", ["pushcore.Server('127.0.0.1', 0, secret=b'x' * 16, store='memory:').start()",
                                  "pushcore.Client('d', b't', ['127.0.0.1:1']).start(timeout=0.1)",
                                  "pushcore.Simulator([\"127.0.0.1:1\"], devices=1, secret=b\"x\" * 16)",
                                  "pushcore.Loop"])
def test_without_the_extension_the_loop_users_fail_clearly(make):
    code = BLOCK_EXTENSION + f"import pushcore\ntry:\n    {make}\nexcept ImportError as e:\n    print(type(e).__name__, '|', e)\n"
    result = run_python(code, "python", "-W", "error::RuntimeWarning")
    assert result.returncode == 0, result.stderr
    name, message = result.stdout.split(" | ", 1)
    assert name == "ExtensionMissing"
    assert "pushcore._loop" in message and "blocked by the test" in message
    assert "pip install -e ." in message


def test_python_backend_client_receives_the_loop_push_class():
    """The Done-when case of the layout issue: with PUSHCORE_BACKEND=python a
    Client.on_message callback gets an instance of pushcore.Push."""
    code = """
import queue, pushcore
assert pushcore.BACKEND == "python"
secret = b"0123456789abcdef-test"
server = pushcore.Server("127.0.0.1", 0, secret=secret, store="memory:")
host, port = server.start()
got = queue.Queue()
device = pushcore.Client("phone-1", pushcore.mint_token(secret, "phone-1", ttl=600), [f"{host}:{port}"],
                         on_message=got.put)
device.start()
server.push("phone-1", b"hi")
m = got.get(timeout=10)
print(isinstance(m, pushcore.Push), m.payload)
device.stop(); server.stop()
"""
    result = run_python(code, "python")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "b'hi'"]


def test_reference_codec_never_imports_the_extension():
    code = BLOCK_EXTENSION + "import pushcore.codec.reference as p; print(p.decode(p.PING_BYTES))"
    result = run_python(code, "python")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Ping()"
