# C-level interface of the chunk pool (ext/pc_pool.h), for the loop to cimport.
# Only extern declarations: cimporting this module needs no runtime import.
from libc.stdint cimport uint32_t, uint64_t

cdef extern from "pc_pool.h" nogil:
    ctypedef struct pc_slab:
        pass

    ctypedef struct pc_chunk:
        pc_chunk* next
        pc_slab* slab
        uint32_t start
        uint32_t end
        uint32_t cap
        uint32_t refs
        unsigned char data[1]

    ctypedef struct pc_pool:
        uint32_t chunk_size
        uint32_t chunks_per_slab
        uint32_t max_empty_slabs
        uint64_t in_use
        uint64_t free
        uint64_t high_water
        uint64_t slabs
        uint64_t empty_slabs
        uint64_t empty_low
        uint64_t acquired
        uint64_t slabs_released
        uint64_t big_in_use
        uint64_t big_bytes
        uint64_t big_acquired

    void pc_pool_init(pc_pool* p, uint32_t chunk_size, uint32_t chunks_per_slab,
                      uint32_t max_empty_slabs)
    pc_chunk* pc_chunk_get(pc_pool* p)
    pc_chunk* pc_big_get(pc_pool* p, uint32_t cap)
    void pc_chunk_put(pc_pool* p, pc_chunk* c)
    void pc_chunk_put_list(pc_pool* p, pc_chunk* c)
    uint64_t pc_pool_trim(pc_pool* p, uint64_t keep)
    uint64_t pc_pool_decay(pc_pool* p, uint64_t keep)
    uint64_t pc_pool_destroy(pc_pool* p)


cdef inline dict pool_stats_dict(pc_pool* p):
    """The pool counters as the dict that ``pool_stats()`` returns (docs/LOOP.md)."""
    return {
        "chunk_size": p.chunk_size,
        "chunks_per_slab": p.chunks_per_slab,
        "in_use": p.in_use,
        "free": p.free,
        "high_water": p.high_water,
        "total_allocated": p.in_use + p.free,
        "slabs": p.slabs,
        "empty_slabs": p.empty_slabs,
        "acquired": p.acquired,
        "slabs_released": p.slabs_released,
        "big_in_use": p.big_in_use,
        "big_bytes": p.big_bytes,
        "big_acquired": p.big_acquired,
    }
