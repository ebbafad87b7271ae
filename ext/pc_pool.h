/* pc_pool.h -- a slab pool of fixed-size byte chunks for the connection loop.
 *
 * A connection holds chunks only while bytes are in flight (a partial frame
 * being read, output the kernel has not taken yet) and gives them back when
 * drained, so an idle connection holds none. Chunks are carved from slabs of
 * `chunks_per_slab` chunks; each slab keeps its own free list and sits on one
 * of three lists (partial / full / empty). Allocation prefers partial slabs so
 * memory concentrates in few slabs.
 *
 * Slabs come straight from mmap, so a slab given back really leaves the
 * process (glibc's heap would keep it resident) and pages of a slab that were
 * never touched cost nothing. Wholly free slabs are cached, not unmapped at
 * once: a fan-out that needs the same slabs every loop turn must not mmap and
 * fault them in again each time. The owner calls pc_pool_decay() now and then
 * (the loop: once a second); it unmaps the empty slabs that stayed unused for
 * the whole period, beyond `max_empty_slabs`, so a burst does not pin its
 * peak for long.
 *
 * Buffers larger than a chunk (a frame bigger than the chunk size being read)
 * come from malloc as "big" chunks with the same header (slab == NULL); they
 * are counted separately and freed on release.
 *
 * Everything here is static inline: ext/_pool.pyx (the Python-visible pool,
 * used by tests) and ext/_loop.pyx (which embeds one pool per Loop) compile
 * their own copies. No Python API is used; all functions are safe without
 * the GIL as long as one pool is used by one thread at a time.
 */
#ifndef PC_POOL_H
#define PC_POOL_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

typedef struct pc_chunk pc_chunk;
typedef struct pc_slab pc_slab;
typedef struct pc_pool pc_pool;

struct pc_chunk {
    pc_chunk *next;     /* free-list link, or the next chunk of a queue */
    pc_slab *slab;      /* owning slab; NULL for a big (malloc'd) chunk */
    uint32_t start;     /* first byte not yet consumed */
    uint32_t end;       /* one past the last byte filled */
    uint32_t cap;       /* bytes available in data[] */
    uint32_t refs;      /* reserved for shared buffers; 1 while owned */
    unsigned char data[];
};

enum { PC_SLAB_PARTIAL = 0, PC_SLAB_FULL = 1, PC_SLAB_EMPTY = 2 };

struct pc_slab {
    pc_slab *prev, *next;   /* links in the list named by `list` */
    pc_pool *pool;          /* owner: a chunk goes back to its own pool */
    pc_chunk *free;         /* this slab's free chunks */
    size_t bytes;           /* mapping size */
    uint32_t nfree;
    uint32_t nchunks;
    int list;
    int _pad;
};

struct pc_pool {
    pc_slab *heads[3];       /* partial, full, empty */
    uint32_t chunk_size;     /* data bytes per chunk */
    uint32_t unit;           /* bytes per chunk including its header */
    uint32_t chunks_per_slab;
    uint32_t max_empty_slabs;
    uint64_t in_use;         /* chunks handed out */
    uint64_t free;           /* chunks sitting in slab free lists */
    uint64_t high_water;     /* max in_use ever */
    uint64_t slabs;          /* slabs currently allocated */
    uint64_t empty_slabs;    /* slabs on the empty list */
    uint64_t empty_low;      /* fewest empty slabs since the last decay */
    uint64_t acquired;       /* chunks handed out, cumulative */
    uint64_t slabs_released; /* slabs given back to the allocator, cumulative */
    uint64_t big_in_use;     /* big chunks handed out */
    uint64_t big_bytes;      /* data bytes of big chunks handed out */
    uint64_t big_acquired;   /* big chunks handed out, cumulative */
};

static inline void pc_slab_unlink(pc_pool *p, pc_slab *s) {
    if (s->prev) s->prev->next = s->next; else p->heads[s->list] = s->next;
    if (s->next) s->next->prev = s->prev;
    s->prev = s->next = NULL;
    if (s->list == PC_SLAB_EMPTY) {
        p->empty_slabs--;
        if (p->empty_slabs < p->empty_low) p->empty_low = p->empty_slabs;
    }
}

static inline void pc_slab_link(pc_pool *p, pc_slab *s, int list) {
    s->list = list;
    s->prev = NULL;
    s->next = p->heads[list];
    if (s->next) s->next->prev = s;
    p->heads[list] = s;
    if (list == PC_SLAB_EMPTY) p->empty_slabs++;
}

/* Set up an empty pool. chunk_size is rounded up to a multiple of 16. */
static inline void pc_pool_init(pc_pool *p, uint32_t chunk_size,
                                uint32_t chunks_per_slab, uint32_t max_empty_slabs) {
    memset(p, 0, sizeof(*p));
    if (chunk_size < 64) chunk_size = 64;
    chunk_size = (chunk_size + 15u) & ~15u;
    if (chunks_per_slab < 1) chunks_per_slab = 1;
    p->chunk_size = chunk_size;
    p->unit = (uint32_t)(sizeof(pc_chunk) + chunk_size);
    p->chunks_per_slab = chunks_per_slab;
    p->max_empty_slabs = max_empty_slabs;
}

static inline size_t pc_slab_header(void) {
    return (sizeof(pc_slab) + 15u) & ~(size_t)15u;
}

static inline pc_slab *pc_slab_new(pc_pool *p) {
    size_t bytes = pc_slab_header() + (size_t)p->unit * p->chunks_per_slab;
    pc_slab *s;
    uint32_t i;
    bytes = (bytes + 4095u) & ~(size_t)4095u;
    s = (pc_slab *)mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (s == (pc_slab *)MAP_FAILED) return NULL;
    s->prev = s->next = NULL;
    s->pool = p;
    s->free = NULL;
    s->bytes = bytes;
    s->nchunks = p->chunks_per_slab;
    s->nfree = p->chunks_per_slab;
    /* thread the free list back to front so chunks go out in address order */
    for (i = p->chunks_per_slab; i-- > 0;) {
        pc_chunk *c = (pc_chunk *)((char *)s + pc_slab_header() + (size_t)p->unit * i);
        c->slab = s;
        c->cap = p->chunk_size;
        c->next = s->free;
        s->free = c;
    }
    p->slabs++;
    p->free += p->chunks_per_slab;
    pc_slab_link(p, s, PC_SLAB_EMPTY);
    return s;
}

static inline void pc_slab_unmap(pc_pool *p, pc_slab *s) {
    pc_slab_unlink(p, s);
    p->free -= s->nchunks;
    p->slabs--;
    p->slabs_released++;
    munmap(s, s->bytes);
}

/* One chunk with start == end == 0, or NULL when memory is exhausted. */
static inline pc_chunk *pc_chunk_get(pc_pool *p) {
    pc_slab *s = p->heads[PC_SLAB_PARTIAL];
    pc_chunk *c;
    if (!s) {
        s = p->heads[PC_SLAB_EMPTY];
        if (!s && !(s = pc_slab_new(p))) return NULL;
    }
    c = s->free;
    s->free = c->next;
    s->nfree--;
    if (s->nfree == 0) {
        pc_slab_unlink(p, s);
        pc_slab_link(p, s, PC_SLAB_FULL);
    } else if (s->list == PC_SLAB_EMPTY) {
        pc_slab_unlink(p, s);
        pc_slab_link(p, s, PC_SLAB_PARTIAL);
    }
    c->next = NULL;
    c->start = c->end = 0;
    c->refs = 1;
    p->free--;
    p->in_use++;
    p->acquired++;
    if (p->in_use > p->high_water) p->high_water = p->in_use;
    return c;
}

/* A malloc'd chunk with room for `cap` data bytes (frames bigger than a chunk). */
static inline pc_chunk *pc_big_get(pc_pool *p, uint32_t cap) {
    pc_chunk *c = (pc_chunk *)malloc(sizeof(pc_chunk) + (size_t)cap);
    if (!c) return NULL;
    c->next = NULL;
    c->slab = NULL;
    c->start = c->end = 0;
    c->cap = cap;
    c->refs = 1;
    p->big_in_use++;
    p->big_bytes += cap;
    p->big_acquired++;
    return c;
}

/* Give a chunk back: a pooled chunk to the pool that owns its slab (so one
 * call serves several size classes), a big chunk to malloc (counted in *p).
 * A slab that becomes wholly free is cached on the empty list (see
 * pc_pool_decay / pc_pool_trim). */
static inline void pc_chunk_put(pc_pool *p, pc_chunk *c) {
    pc_slab *s = c->slab;
    if (s) p = s->pool;
    if (!s) {
        p->big_in_use--;
        p->big_bytes -= c->cap;
        free(c);
        return;
    }
    c->next = s->free;
    s->free = c;
    s->nfree++;
    p->in_use--;
    p->free++;
    if (s->nfree == s->nchunks) {
        pc_slab_unlink(p, s);
        pc_slab_link(p, s, PC_SLAB_EMPTY);
    } else if (s->list == PC_SLAB_FULL) {
        pc_slab_unlink(p, s);
        pc_slab_link(p, s, PC_SLAB_PARTIAL);
    }
}

/* Unmap empty slabs beyond `keep`, now. Returns how many were unmapped. */
static inline uint64_t pc_pool_trim(pc_pool *p, uint64_t keep) {
    uint64_t n = 0;
    while (p->empty_slabs > keep) {
        pc_slab_unmap(p, p->heads[PC_SLAB_EMPTY]);
        n++;
    }
    return n;
}

/* Unmap the empty slabs that stayed unused since the previous call, keeping
 * at least `keep` empty ones. Call it periodically. */
static inline uint64_t pc_pool_decay(pc_pool *p, uint64_t keep) {
    uint64_t idle = p->empty_low < p->empty_slabs ? p->empty_low : p->empty_slabs;
    uint64_t n = 0;
    while (idle > keep && p->empty_slabs > keep) {
        pc_slab_unmap(p, p->heads[PC_SLAB_EMPTY]);
        idle--;
        n++;
    }
    p->empty_low = p->empty_slabs;
    return n;
}

/* Give back a whole queue linked through `next`. */
static inline void pc_chunk_put_list(pc_pool *p, pc_chunk *c) {
    while (c) {
        pc_chunk *next = c->next;
        pc_chunk_put(p, c);
        c = next;
    }
}

/* Free every slab, including slabs whose chunks are still handed out (their
 * holders must be gone). Returns how many chunks were still in use (a leak). */
static inline uint64_t pc_pool_destroy(pc_pool *p) {
    uint64_t leaked = p->in_use;
    int i;
    for (i = 0; i < 3; i++) {
        pc_slab *s = p->heads[i];
        while (s) {
            pc_slab *next = s->next;
            munmap(s, s->bytes);
            s = next;
        }
        p->heads[i] = NULL;
    }
    p->slabs = p->empty_slabs = p->empty_low = 0;
    p->in_use = p->free = 0;
    return leaked;
}

#endif /* PC_POOL_H */
