"""Python view of the slab chunk pool (ext/pc_pool.h).

The connection loop embeds its own pool and uses the C functions directly
(``from pushcore._pool cimport ...``); this module wraps the same code in a
small class so the pool can be tested and inspected on its own. Chunks are
named by opaque integer handles that the pool checks, so a wrong handle is a
``ValueError``, never a crash.
"""
from libc.stdint cimport uint32_t, uintptr_t
from libc.string cimport memcpy

from pushcore._pool cimport (
    pc_chunk, pc_pool, pc_pool_init, pc_chunk_get, pc_big_get, pc_chunk_put,
    pc_pool_decay, pc_pool_destroy, pc_pool_trim, pool_stats_dict,
)

DEFAULT_CHUNK_SIZE = 16384
DEFAULT_CHUNKS_PER_SLAB = 16
DEFAULT_MAX_EMPTY_SLABS = 2


cdef class ChunkPool:
    """A slab pool of fixed-size chunks.

    ``chunk_size`` data bytes per chunk (rounded up to a multiple of 16),
    ``chunks_per_slab`` chunks per mmap'd slab. Wholly free slabs are cached;
    :meth:`release` (this class only: the loop decays instead) unmaps those
    beyond ``max_empty_slabs`` at once.
    """

    cdef pc_pool pool
    cdef set handles      # addresses of chunks handed out through acquire()
    cdef bint closed

    def __cinit__(self, int chunk_size=DEFAULT_CHUNK_SIZE,
                  int chunks_per_slab=DEFAULT_CHUNKS_PER_SLAB,
                  int max_empty_slabs=DEFAULT_MAX_EMPTY_SLABS):
        if chunk_size <= 0 or chunks_per_slab <= 0 or max_empty_slabs < 0:
            raise ValueError("chunk_size and chunks_per_slab must be > 0, max_empty_slabs >= 0")
        pc_pool_init(&self.pool, <uint32_t>chunk_size, <uint32_t>chunks_per_slab,
                     <uint32_t>max_empty_slabs)
        self.handles = set()
        self.closed = False

    def __dealloc__(self):
        if not self.closed:
            pc_pool_destroy(&self.pool)

    cdef pc_chunk* _chunk(self, handle) except NULL:
        if self.closed:
            raise ValueError("the pool is closed")
        if handle not in self.handles:
            raise ValueError(f"{handle!r} is not a chunk handed out by this pool")
        return <pc_chunk*><uintptr_t>handle

    def acquire(self, big_size=None):
        """Take one chunk (or a big malloc'd buffer of ``big_size`` bytes); returns its handle."""
        cdef pc_chunk* c
        if self.closed:
            raise ValueError("the pool is closed")
        if big_size is None:
            c = pc_chunk_get(&self.pool)
        else:
            if not 0 < big_size < 2**31:
                raise ValueError("big_size must be in 1 .. 2**31-1")
            c = pc_big_get(&self.pool, <uint32_t>big_size)
        if c == NULL:
            raise MemoryError()
        handle = <uintptr_t>c
        self.handles.add(handle)
        return handle

    def release(self, handle):
        """Give a chunk back to the pool."""
        cdef pc_chunk* c = self._chunk(handle)
        self.handles.discard(handle)
        pc_chunk_put(&self.pool, c)
        pc_pool_trim(&self.pool, self.pool.max_empty_slabs)

    def trim(self, keep=0):
        """Unmap empty slabs beyond *keep* now; returns how many."""
        return pc_pool_trim(&self.pool, keep)

    def decay(self, keep=0):
        """Unmap the empty slabs unused since the previous decay(), beyond *keep*."""
        return pc_pool_decay(&self.pool, keep)

    def write(self, handle, const unsigned char[::1] data not None):
        """Append *data* to the chunk; ``ValueError`` if it does not fit."""
        cdef pc_chunk* c = self._chunk(handle)
        cdef Py_ssize_t n = data.shape[0]
        if n > c.cap - c.end:
            raise ValueError(f"{n} bytes do not fit ({c.cap - c.end} free)")
        if n:
            memcpy(&c.data[c.end], &data[0], n)
        c.end += <uint32_t>n

    def read(self, handle):
        """The bytes written to the chunk so far."""
        cdef pc_chunk* c = self._chunk(handle)
        return (<char*>&c.data[c.start])[:c.end - c.start]

    def capacity(self, handle):
        """Data bytes the chunk can hold."""
        return self._chunk(handle).cap

    def stats(self):
        """Counters: chunk_size, in_use, free, high_water, total_allocated, slabs, ..."""
        return pool_stats_dict(&self.pool)

    def close(self):
        """Free every slab. Returns the number of chunks still handed out (leaked)."""
        if self.closed:
            return 0
        self.closed = True
        for handle in self.handles:
            if (<pc_chunk*><uintptr_t>handle).slab == NULL:
                pc_chunk_put(&self.pool, <pc_chunk*><uintptr_t>handle)
        leaked = len(self.handles)
        self.handles.clear()
        pc_pool_destroy(&self.pool)
        return leaked

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
