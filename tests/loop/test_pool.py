"""The slab chunk pool (ext/pc_pool.h through pushcore._pool.ChunkPool)."""
import pytest

from pushcore._pool import ChunkPool


def test_acquire_release_counts():
    with ChunkPool(chunk_size=1024, chunks_per_slab=4, max_empty_slabs=1) as pool:
        s = pool.stats()
        assert (s["in_use"], s["free"], s["total_allocated"], s["slabs"]) == (0, 0, 0, 0)
        handles = [pool.acquire() for _ in range(6)]  # two slabs
        s = pool.stats()
        assert s["in_use"] == 6 and s["free"] == 2 and s["slabs"] == 2
        assert s["high_water"] == 6 and s["total_allocated"] == 8
        for h in handles[:3]:
            pool.release(h)
        s = pool.stats()
        assert s["in_use"] == 3 and s["high_water"] == 6
        for h in handles[3:]:
            pool.release(h)
        s = pool.stats()
        assert s["in_use"] == 0 and s["acquired"] == 6
        # at most one wholly free slab is kept; the other went back to malloc
        assert s["slabs"] == 1 and s["slabs_released"] == 1 and s["free"] == 4


def test_chunk_size_and_data_survive_reuse():
    with ChunkPool(chunk_size=100, chunks_per_slab=2) as pool:
        assert pool.stats()["chunk_size"] == 112  # rounded up to 16
        a = pool.acquire()
        b = pool.acquire()
        assert a != b and pool.capacity(a) == 112
        pool.write(a, b"hello ")
        pool.write(a, b"world")
        pool.write(b, b"x" * 112)
        assert pool.read(a) == b"hello world"
        assert pool.read(b) == b"x" * 112
        with pytest.raises(ValueError):
            pool.write(b, b"y")
        pool.release(a)
        c = pool.acquire()
        assert c == a and pool.read(c) == b""  # reused, reset
        pool.release(b)
        pool.release(c)


def test_partial_slabs_preferred_over_new_ones():
    with ChunkPool(chunk_size=64, chunks_per_slab=8, max_empty_slabs=0) as pool:
        hs = [pool.acquire() for _ in range(16)]
        for h in hs[::2]:
            pool.release(h)
        assert pool.stats()["slabs"] == 2
        again = [pool.acquire() for _ in range(8)]
        assert pool.stats()["slabs"] == 2  # refilled the holes, no new slab
        for h in hs[1::2] + again:
            pool.release(h)
        s = pool.stats()
        assert s["slabs"] == 0 and s["free"] == 0 and s["in_use"] == 0


def test_decay_unmaps_only_slabs_unused_for_a_whole_period():
    with ChunkPool(chunk_size=64, chunks_per_slab=2, max_empty_slabs=100) as pool:
        hs = [pool.acquire() for _ in range(8)]  # 4 slabs
        for h in hs:
            pool.release(h)  # max_empty_slabs=100: all 4 stay cached
        assert pool.stats()["empty_slabs"] == 4
        assert pool.decay() == 0  # first period: none was seen idle for a whole period
        again = [pool.acquire() for _ in range(2)]  # one slab in use again
        assert pool.decay() == 3  # the three never touched since the last decay
        for h in again:
            pool.release(h)
        s = pool.stats()
        assert s["slabs"] == 1 and s["empty_slabs"] == 1
        assert pool.decay(keep=1) == 0 and pool.trim() == 1
        assert pool.stats()["slabs"] == 0


def test_big_buffers_are_counted_apart():
    with ChunkPool(chunk_size=64) as pool:
        h = pool.acquire(big_size=100_000)
        assert pool.capacity(h) == 100_000
        pool.write(h, b"z" * 100_000)
        s = pool.stats()
        assert s["big_in_use"] == 1 and s["big_bytes"] == 100_000 and s["in_use"] == 0
        pool.release(h)
        s = pool.stats()
        assert s["big_in_use"] == 0 and s["big_bytes"] == 0 and s["big_acquired"] == 1


def test_bad_handles_are_value_errors():
    pool = ChunkPool(chunk_size=64)
    h = pool.acquire()
    pool.release(h)
    with pytest.raises(ValueError):
        pool.release(h)  # double release
    with pytest.raises(ValueError):
        pool.read(12345)
    with pytest.raises(ValueError):
        ChunkPool(chunk_size=0)
    assert pool.close() == 0
    with pytest.raises(ValueError):
        pool.acquire()


def test_close_reports_leaked_chunks():
    pool = ChunkPool(chunk_size=64)
    pool.acquire()
    pool.acquire(big_size=1000)
    assert pool.close() == 2
