"""Shared fixtures.

Codec fixtures: every codec test runs once per backend module. The Cython
parameter is never skipped: when ``pushcore._frame`` is not built, its tests
fail loudly (build it with ``pip install -e .``).
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings

from pushcore.codec import select_backend

# The machine is shared and has 2 cores: a per-example time limit would fail
# tests for the machine's load, not for pushcore. Tests set their own
# max_examples; everything else comes from this profile.
settings.register_profile(
    "pushcore", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile("pushcore")

CODEC_BACKENDS = ["python", "cython"]


def load_codec(name: str):
    """The codec module of backend *name* (``pushcore.codec.reference`` or ``pushcore._frame``)."""
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
    """The pure-Python reference codec (``pushcore.codec.reference``)."""
    return load_codec("python")


@pytest.fixture(scope="session")
def cython_codec():
    """The C-level codec (``pushcore._frame``), initialised with ProtocolError."""
    return load_codec("cython")


@pytest.fixture(scope="session")
def both_codecs(python_codec, cython_codec):
    """``(python_module, cython_module)`` for differential tests."""
    return python_codec, cython_codec


# ---------------------------------------------------------------------------
# Connection loop (loop helper): leak check after every test, and a factory
# for Loops whose handler batches are recorded.

class LoopEvents:
    """Every handler batch a Loop delivered, flattened per handler."""

    def __init__(self, loop) -> None:
        self.loop = loop
        self.frames: list = []     # (cid, frame)
        self.opened: list = []     # (cid, listener_id)
        self.closed: list = []     # (cid, reason)
        self.paused: list = []     # cid
        self.resumed: list = []    # cid
        self.awake: list = []      # cid
        self.batches = {"frames": 0, "open": 0, "close": 0, "awake": 0}
        loop.set_handlers(
            on_frames=self._on("frames", self.frames), on_open=self._on("open", self.opened),
            on_close=self._on("close", self.closed), on_pause=self.paused.extend,
            on_resume=self.resumed.extend, on_awake=self._on("awake", self.awake),
        )

    def _on(self, name, target):
        def handler(batch):
            self.batches[name] += 1
            target.extend(batch)
        return handler

    def reason_of(self, cid):
        """The reason on_close reported for *cid* (None if not closed)."""
        for c, reason in self.closed:
            if c == cid:
                return reason
        return None

    def run_until(self, predicate, timeout: float = 5.0) -> None:
        """Run turns until ``predicate()``; fail the test after *timeout* seconds."""
        from pushcore.loop import run_until

        assert run_until(self.loop, predicate, timeout), f"condition not met within {timeout}s"


@pytest.fixture
def make_loop():
    """``make_loop(**Loop_kwargs) -> (loop, LoopEvents)``; closed after the test."""
    from pushcore._loop import Loop

    made = []

    def factory(**kwargs):
        loop = Loop(**kwargs)
        made.append(loop)
        return loop, LoopEvents(loop)

    yield factory
    for loop in made:
        if not loop.running:
            loop.close()


@pytest.fixture(autouse=True)
def _loop_leak_check():
    """After each test: every Loop was closed and no pool chunk leaked."""
    try:
        from pushcore import _loop
    except ImportError:  # the extension is not built: the loop tests fail on their own
        yield
        return
    leaked_before = _loop._leaked_chunks()
    yield
    live = _loop._live_loops()
    for loop in live:
        if not loop.running:
            loop.close()
    assert not live, f"{len(live)} Loop(s) left open by the test (call loop.close())"
    assert _loop._leaked_chunks() == leaked_before, "pool chunks leaked (still in use when a Loop closed)"


# One real redis-server and one 3-master Redis Cluster for the whole session (tests/redisd.py):
# the store contract suites and the cluster tests share them, each test in a key prefix of its own.
@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """One standalone redis-server (AOF on) for the session."""
    from tests.redisd import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory):
    """One 3-master Redis Cluster for the session."""
    from tests.redisd import RedisCluster

    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster")).start()
    yield cluster
    cluster.stop()
