# Small C helpers of the loop: int vectors, the clock, timeout arguments.
# (Included by ext/_loop.pyx.)


cdef inline int vec_push(IntVec* a, int32_t x) except -1:
    cdef int32_t* v
    cdef uint32_t cap
    if a.n == a.cap:
        cap = a.cap * 2 if a.cap else 64
        v = <int32_t*>realloc(a.v, cap * sizeof(int32_t))
        if v == NULL:
            raise MemoryError()
        a.v = v
        a.cap = cap
    a.v[a.n] = x
    a.n += 1
    return 0


cdef inline void vec_swap(IntVec* a, IntVec* b) noexcept:
    cdef IntVec t = a[0]
    a[0] = b[0]
    b[0] = t


cdef inline uint64_t monotonic_ms() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <uint64_t>ts.tv_sec * 1000 + <uint64_t>(ts.tv_nsec // 1000000)


cdef inline uint64_t monotonic_us() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <uint64_t>ts.tv_sec * 1000000 + <uint64_t>(ts.tv_nsec // 1000)


cdef inline double monotonic_s() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <double>ts.tv_sec + <double>ts.tv_nsec * 1e-9


cdef inline uint64_t widen(uint64_t now, uint32_t t) noexcept nogil:
    # a 32-bit ms stamp back to 64 bits, assuming it is within 24 days of now
    return now + <uint64_t><int64_t><int32_t>(t - <uint32_t>now)


cdef inline uint32_t timeout_ms(object seconds, str what) except? 0:
    if seconds is None:
        return 0
    cdef double s = seconds
    if not (0.0 <= s <= MAX_TIMEOUT_MS / 1000.0):
        raise ValueError(f"{what} must be between 0 and {MAX_TIMEOUT_MS // 1000} seconds, got {seconds!r}")
    cdef uint32_t ms = <uint32_t>(s * 1000.0 + 0.5)
    if ms == 0 and s > 0:
        ms = 1
    return ms


def _oserror(int err, str what):
    return OSError(err, f"{what}: {os.strerror(err)}")
