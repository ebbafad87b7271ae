# Declarations of the connection loop (ext/_loop.pyx): the C externs it uses,
# its constants and C structs, and the fields of the Loop class. The code is
# split by concern into ext/loop/*.pxi, included by _loop.pyx; each private
# function there takes the Loop as its first argument (a direct C call).
# Nothing here is meant to be cimported by other modules.
cimport cython
from cpython.ref cimport PyObject
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t

from pushcore._pool cimport pc_chunk, pc_pool


cdef extern from "Python.h":
    PyObject* PyObject_CallOneArg(object callable, object arg)
    PyObject* PyObject_CallNoArgs(object callable)
    PyObject* PyObject_CallObject(object callable, object args)
    int PyErr_CheckSignals_ "PyErr_CheckSignals" ()
    void PyErr_WriteUnraisable(PyObject* obj)
    int PyErr_ExceptionMatches(PyObject* exc)
    PyObject* PyExc_Exception


cdef extern from "<sys/epoll.h>" nogil:
    ctypedef union epoll_data_t:
        void* ptr
        int fd
        uint32_t u32
        uint64_t u64

    struct epoll_event:
        uint32_t events
        epoll_data_t data

    int epoll_create1(int flags)
    int epoll_ctl(int epfd, int op, int fd, epoll_event* event)
    int epoll_wait(int epfd, epoll_event* events, int maxevents, int timeout)
    enum:
        EPOLLIN
        EPOLLOUT
        EPOLLRDHUP
        EPOLLERR
        EPOLLHUP
        EPOLLET
        EPOLL_CTL_ADD
        EPOLL_CTL_MOD
        EPOLL_CTL_DEL
        EPOLL_CLOEXEC


cdef extern from "<unistd.h>" nogil:
    int pipe2(int* pipefd, int flags)   # Linux; Python.h defines _GNU_SOURCE
    int dup3(int oldfd, int newfd, int flags)

cdef extern from "<sys/eventfd.h>" nogil:
    int eventfd(unsigned int initval, int flags)
    enum:
        EFD_NONBLOCK
        EFD_CLOEXEC


cdef extern from "<sys/uio.h>" nogil:
    struct iovec:
        void* iov_base
        size_t iov_len


cdef extern from "<sys/socket.h>" nogil:
    int shutdown(int fd, int how)
    int c_socket "socket" (int domain, int type, int protocol)
    enum:
        SHUT_WR
        AF_INET
        SOCK_STREAM
        SOCK_NONBLOCK
        SOCK_CLOEXEC


cdef extern from "pc_net.h" nogil:
    ctypedef struct pc_addr:
        pass
    int pc_addr_parse(const char* host, int port, pc_addr* a)
    int pc_addr_format(const pc_addr* a, char* host, size_t hostlen, int* port)
    int pc_sock_addr(int fd, int peer, pc_addr* a)
    void pc_set_linger0(int fd)
    int pc_so_error(int fd)
    int pc_listen(const pc_addr* a, int backlog, int reuse_port)
    int pc_accept(int lfd, pc_addr* peer)
    int pc_addr_key(const pc_addr* a, unsigned char* key)
    void pc_refuse(int fd, const unsigned char* frame, size_t n, unsigned char* scratch,
                   size_t scratch_size)
    int pc_connect(const pc_addr* a, const pc_addr* src, int* failed)
    ssize_t pc_writev(int fd, iovec* iov, int iovcnt)


# ----------------------------------------------------------------------------
# constants

cdef enum:
    TICK_MS = 10              # timing-wheel resolution
    WHEEL_SLOTS = 4096        # 41 s per revolution; longer deadlines wait rounds
    WHEEL_MASK = WHEEL_SLOTS - 1
    IOV_BATCH = 1024          # Linux IOV_MAX
    # A turn writes for at most this long (µs) before it lets the next turn read: a fan-out
    # to many connections then leaves gaps in which a PING is read and answered.
    FLUSH_SLICE_US = 1000
    LISTENER_RETRY_MS = 100   # back-off after accept() ran out of fds/memory
    POOL_DECAY_MS = 1000      # give back pool slabs unused for this long
    MAX_TIMEOUT_MS = 1000000000   # ~11.6 days: keeps wrap-safe 32-bit ms arithmetic valid
    SOURCE_SLOTS = 8192       # per-source connect buckets (256 KiB, made on first use)
    SOURCE_MASK = SOURCE_SLOTS - 1
    SOURCE_WAYS = 4           # a source lives in one of 4 neighbouring slots
    LAG_BUCKETS = 14          # loop-lag histogram bounds (LAG_BOUNDS in timers.pxi), + one for +Inf
    LAG_RECENT = 1024         # loop-lag samples kept for the recent percentiles

# why an accepted connection was turned away (Counters.refused)
cdef enum:
    REFUSE_CONNECT_RATE = 0   # the loop-wide connect-rate bucket is empty
    REFUSE_SOURCE_RATE = 1    # the source address's bucket is empty
    REFUSE_PREAUTH_BUDGET = 2  # no room left for one more pre-auth HELLO buffer
    REFUSE_KINDS = 3

# what an epoll event's data.u64 names (kind << 32 | index)
cdef enum:
    K_CONN = 0
    K_LISTENER = 1
    K_WAKE = 2
    K_SIGNAL = 3      # the read end of the signal wake-up pipe

# connection states (mutually exclusive)
cdef enum:
    S_FREE = 0        # slot unused (generation kept)
    S_CONNECTING = 1  # outbound connect in progress
    S_OPEN = 2        # established: frames are read
    S_CLOSING = 3     # graceful close: input discarded, output being flushed
    S_LINGER = 4      # FIN sent, on_close reported; input discarded until EOF or linger
    S_DEAD = 5        # fd closed and slot freed at the end of the turn

# connection flags
cdef enum:
    F_UNAUTH = 1 << 0     # auth gate on: only one HELLO allowed until authenticate()
    F_HELLO = 1 << 1      # the gate saw its HELLO
    F_DIRTY = 1 << 2      # on the dirty list (output to flush this turn)
    F_READY = 1 << 3      # on the ready list (read budget hit; more input waits)
    F_WANT_OUT = 1 << 4   # the kernel buffer is full; waiting for EPOLLOUT
    F_PAUSED = 1 << 5     # above the high watermark (on_pause reported)
    F_WATCH = 1 << 6      # watch_activity(): report the next frame to on_awake
    F_EOF = 1 << 7        # the peer sent FIN
    F_TIMER = 1 << 8      # linked in the timing wheel
    F_DEADLINE = 1 << 9   # `deadline` is set (auth / connect / close / linger)
    F_NOTIFIED = 1 << 10  # on_close queued
    F_RST = 1 << 11       # close with RST (SO_LINGER 0)
    F_REASON = 1 << 12    # `reason` decided (the first close reason wins)
    F_PREAUTH = 1 << 13   # rbuf.cap is counted in Counters.preauth_bytes (rbuf taken before auth)
    F_RESOLVING = 1 << 14  # connecting to a host name: the resolver thread has it (fd a placeholder)


# ----------------------------------------------------------------------------
# C structs

ctypedef struct Conn:
    # one per table slot; slot index == fd. Kept small: an idle connection
    # costs exactly this (plus the kernel's socket), no buffers.
    uint32_t gen          # bumped on each reuse of the slot (cid high half)
    uint32_t flags        # F_*
    uint8_t state         # S_*
    uint8_t reason        # close reason (Reason code)
    uint16_t err          # errno of a failed connect / read / write
    int32_t listener      # listener id, -1 for outbound
    int32_t t_next        # timing-wheel links (fds), valid with F_TIMER
    int32_t t_prev
    uint32_t t_when       # wheel tick (low 32 bits) the timer fires at
    uint32_t deadline     # ms (low 32 bits of monotonic ms), with F_DEADLINE
    uint32_t last_rx      # ms of the last bytes received
    uint32_t last_tx      # ms of the last bytes written (or PING queued)
    uint32_t idle_ms      # close IDLE_TIMEOUT after this long without input (0 = off)
    uint32_t ping_ms      # send PING after this long quiet both ways (0 = off)
    uint32_t last_pong    # ms of the last PONG received
    uint32_t pongs        # PONGs received
    uint32_t wq_bytes     # bytes queued for output
    uint32_t frames_in
    uint32_t frames_out
    pc_chunk* rbuf        # the trailing partial frame (NULL when none)
    pc_chunk* wq_head     # output queue (NULL when drained)
    pc_chunk* wq_tail
    uint64_t sent_seq     # highest PUSH seq sent on this connection (send_push / set_sent_seq)
    PyObject* label       # one owned reference set by set_label (the gateway: the device id), or NULL
    uint64_t bytes_in
    uint64_t bytes_out


ctypedef struct Listener:
    int fd                # -1 once closed
    uint32_t auth_ms      # auth gate + timeout for accepted conns (0 = no gate)
    uint32_t idle_ms      # idle timeout for accepted conns (0 = none)
    int paused            # accept() hit EMFILE & co: disarmed until paused_until
    uint64_t paused_until


ctypedef struct Bucket:
    # a token bucket: *rate* tokens a second up to *burst*; one per connection
    double tokens
    uint64_t last_ms      # when it was last refilled (0 = an unused source slot)


ctypedef struct SourceBucket:
    unsigned char key[16]  # pc_addr_key(): family byte, IPv4 address or IPv6 /64
    Bucket b


ctypedef struct IntVec:
    int32_t* v
    uint32_t n
    uint32_t cap


ctypedef struct Counters:
    uint64_t open               # connections not yet reported closed
    uint64_t connecting
    uint64_t accepted
    uint64_t connected
    uint64_t closed_total
    uint64_t bytes_in
    uint64_t bytes_out
    uint64_t frames_in
    uint64_t frames_out
    uint64_t pings_answered
    uint64_t pongs_received
    uint64_t pings_sent
    uint64_t send_queue_bytes   # sum of every conn's queued output
    uint64_t recv_partial_bytes  # sum of every conn's buffered partial frame
    uint64_t callback_errors
    uint64_t turns
    uint64_t flush_slices     # turns whose writes ran out of their slice (the rest went next turn)
    uint64_t stale_ops          # operations on a cid that is gone or closing
    uint64_t accept_errors
    uint64_t accept_paused
    uint64_t reads
    uint64_t writes
    uint64_t write_would_block
    uint64_t pauses
    uint64_t resumes
    uint64_t preauth_bytes      # buffer bytes (capacity) held by partial frames before auth
    uint64_t budget_closes      # connections closed SLOW_CONSUMER by the outbound budget
    uint64_t refused[REFUSE_KINDS]   # accepted then turned away with ERROR OVERLOADED
    uint64_t closed_by_reason[256]
    uint64_t errors_by_code[256]


# ----------------------------------------------------------------------------
# the loop

@cython.final
cdef class Loop:
    cdef int epfd
    cdef int evfd
    cdef int sig_rfd               # signal wake-up pipe (signal_wakeup_fd), -1 until asked for
    cdef int sig_wfd
    cdef Conn* conns
    cdef int32_t nconns
    cdef pc_pool pool              # page-sized chunks
    cdef pc_pool spool             # small chunks: the first of a queue, small partial frames
    cdef unsigned char* scratch
    cdef uint32_t scratch_size
    cdef uint32_t read_budget
    cdef epoll_event* events
    cdef int max_events
    cdef iovec* iov
    cdef IntVec dirty
    cdef IntVec ready
    cdef IntVec ready_swap
    cdef IntVec dead
    cdef IntVec dead_swap
    cdef IntVec tmp
    cdef int32_t* wheel
    cdef uint64_t cur_tick
    cdef uint64_t wheel_count
    cdef uint64_t now_ms
    cdef double now_s
    cdef uint64_t last_decay
    cdef Listener* listeners
    cdef int nlisteners
    cdef int paused_listeners
    cdef uint64_t resolving        # connections waiting for a host-name lookup (sockets.pxi)
    cdef Counters st
    cdef readonly uint64_t max_frame_size
    cdef uint64_t high_water
    cdef uint64_t low_water
    cdef uint64_t write_cap
    cdef uint32_t close_timeout_ms
    cdef uint32_t linger_ms
    # abuse limits (docs/SECURITY.md; set_limits())
    cdef uint64_t preauth_frame_max    # largest frame before authenticate() (auth-gated conns)
    cdef uint64_t preauth_budget       # all pre-auth partial-frame buffers together (0 = off)
    cdef uint64_t preauth_reserve      # the buffer one largest pre-auth frame takes
    cdef uint64_t outbound_budget      # all queued output together (0 = off)
    cdef double connect_rate, connect_burst
    cdef double source_rate, source_burst
    cdef bint limit_loopback           # the per-source limit also counts loopback sources
    cdef Bucket connect_bucket
    cdef SourceBucket* sources         # SOURCE_SLOTS, calloc'd on the first accept it limits
    cdef uint64_t source_seed
    cdef object on_frames, on_open, on_close, on_pause, on_resume, on_awake
    cdef list b_frames, b_open, b_close, b_pause, b_resume, b_awake
    cdef object callbacks          # deque of TimerHandle ready to run
    cdef object threadsafe         # deque filled by call_soon_threadsafe
    cdef list timers               # heap of (when, seq, TimerHandle)
    cdef uint64_t timer_seq
    # loop lag: how late timers (wheel slots, call_later) fire; one sample per
    # turn that fired any, the turn's largest (timers.pxi)
    cdef double lag_turn               # this turn's largest lateness so far, -1 = none fired
    cdef uint64_t lag_count
    cdef double lag_sum
    cdef double lag_max
    cdef uint64_t lag_hist[LAG_BUCKETS + 1]
    cdef uint32_t lag_recent[LAG_RECENT]   # microseconds, a ring
    cdef uint32_t lag_recent_n
    cdef uint32_t lag_recent_i
    cdef object wakeup
    cdef bint poked
    cdef bint in_turn
    cdef bint stopping
    cdef readonly bint running
    cdef readonly bint closed
    cdef object __weakref__
