# C-level interface of the frame codec (ext/_frame.pyx), for other extensions
# (the connection loop) to cimport. docs/PROTOCOL.md is the specification.

cdef extern from *:
    """
    /* frame type numbers: header = (type << 4) | flags */
    enum {
        PC_HELLO = 1, PC_WELCOME = 2, PC_PING = 3, PC_PONG = 4, PC_PUSH = 5,
        PC_NOTIFY = 6, PC_FETCH = 7, PC_ACK = 8, PC_SUBSCRIBE = 9,
        PC_UNSUBSCRIBE = 10, PC_UPSTREAM = 11, PC_UPSTREAM_ACK = 12,
        PC_REDIRECT = 13, PC_GOAWAY = 14, PC_ERROR = 15
    };
    /* reason codes (docs/PROTOCOL.md section 4) */
    enum {
        PC_R_NORMAL = 0, PC_R_FRAME_TOO_LARGE = 1, PC_R_UNKNOWN_TYPE = 2,
        PC_R_TRUNCATED = 3, PC_R_VARINT_OVERRUN = 4, PC_R_INVALID_UTF8 = 5,
        PC_R_TRAILING_BYTES = 6, PC_R_BAD_FLAGS = 7, PC_R_INVALID_VALUE = 8,
        PC_R_NOT_AUTHENTICATED = 16, PC_R_AUTH_FAILED = 17,
        PC_R_TOKEN_EXPIRED = 18, PC_R_UNSUPPORTED_VERSION = 19,
        PC_R_AUTH_TIMEOUT = 20, PC_R_IDLE_TIMEOUT = 21, PC_R_REPLACED = 22,
        PC_R_SLOW_CONSUMER = 23, PC_R_SHUTTING_DOWN = 24, PC_R_OVERLOADED = 25,
        PC_R_PEER_RESET = 26, PC_R_INTERNAL_ERROR = 27,
        PC_R_CONNECT_FAILED = 28, PC_R_PEER_CLOSED = 29
    };
    """
    enum:
        PC_HELLO, PC_WELCOME, PC_PING, PC_PONG, PC_PUSH, PC_NOTIFY, PC_FETCH,
        PC_ACK, PC_SUBSCRIBE, PC_UNSUBSCRIBE, PC_UPSTREAM, PC_UPSTREAM_ACK,
        PC_REDIRECT, PC_GOAWAY, PC_ERROR
    enum:
        PC_R_NORMAL, PC_R_FRAME_TOO_LARGE, PC_R_UNKNOWN_TYPE, PC_R_TRUNCATED,
        PC_R_VARINT_OVERRUN, PC_R_INVALID_UTF8, PC_R_TRAILING_BYTES,
        PC_R_BAD_FLAGS, PC_R_INVALID_VALUE, PC_R_NOT_AUTHENTICATED,
        PC_R_AUTH_FAILED, PC_R_TOKEN_EXPIRED, PC_R_UNSUPPORTED_VERSION,
        PC_R_AUTH_TIMEOUT, PC_R_IDLE_TIMEOUT, PC_R_REPLACED,
        PC_R_SLOW_CONSUMER, PC_R_SHUTTING_DOWN, PC_R_OVERLOADED,
        PC_R_PEER_RESET, PC_R_INTERNAL_ERROR, PC_R_CONNECT_FAILED,
        PC_R_PEER_CLOSED

# 0 when the header byte is a valid type with only defined flags, else
# PC_R_UNKNOWN_TYPE or PC_R_BAD_FLAGS.
cdef int header_error(unsigned char header) noexcept nogil

# Parse the body-length varint (at most 5 bytes) at p[0:n].
# Returns the number of bytes used (> 0) and stores the value in *out;
# 0 when more bytes are needed; -1 on overrun (PC_R_VARINT_OVERRUN).
# The caller compares *out with its maximum frame size (PC_R_FRAME_TOO_LARGE).
cdef int parse_length(const unsigned char* p, Py_ssize_t n, unsigned long long* out) noexcept nogil

# Decode one complete body for a header that passed header_error(): returns a
# new frame object, or raises the ProtocolError class handed to _init().
cdef object decode_body(unsigned char header, const unsigned char* body, Py_ssize_t n)

# Encoded sizes and writers used by the loop to build frames without Python
# objects: uvarint_size(v) bytes; write_uvarint returns the bytes written.
cdef int uvarint_size(unsigned long long v) noexcept nogil
cdef int write_uvarint(unsigned char* p, unsigned long long v) noexcept nogil
