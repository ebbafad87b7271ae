# C-level interface of the frame codec (ext/_frame.pyx), for other extensions
# (the connection loop) to cimport. docs/PROTOCOL.md is the specification.

# The wire constants (ext/pc_wire.h, the one C source; pushcore/wire.py is the
# Python one and tests/test_wire_header.py holds the two equal).
cdef extern from "pc_wire.h" nogil:
    # frame types: header = (type << 4) | flags
    enum:
        PC_HELLO, PC_WELCOME, PC_PING, PC_PONG, PC_PUSH, PC_NOTIFY, PC_FETCH,
        PC_ACK, PC_SUBSCRIBE, PC_UNSUBSCRIBE, PC_UPSTREAM, PC_UPSTREAM_ACK,
        PC_REDIRECT, PC_GOAWAY, PC_ERROR
    # reason codes (docs/PROTOCOL.md section 4)
    enum:
        PC_R_NORMAL, PC_R_FRAME_TOO_LARGE, PC_R_UNKNOWN_TYPE, PC_R_TRUNCATED,
        PC_R_VARINT_OVERRUN, PC_R_INVALID_UTF8, PC_R_TRAILING_BYTES,
        PC_R_BAD_FLAGS, PC_R_INVALID_VALUE, PC_R_NOT_AUTHENTICATED,
        PC_R_AUTH_FAILED, PC_R_TOKEN_EXPIRED, PC_R_UNSUPPORTED_VERSION,
        PC_R_AUTH_TIMEOUT, PC_R_IDLE_TIMEOUT, PC_R_REPLACED,
        PC_R_SLOW_CONSUMER, PC_R_SHUTTING_DOWN, PC_R_OVERLOADED,
        PC_R_PEER_RESET, PC_R_INTERNAL_ERROR, PC_R_CONNECT_FAILED,
        PC_R_PEER_CLOSED
    # flag bits (section 3)
    enum:
        PC_PUSH_HIGH_PRIORITY, PC_PUSH_HAS_EXPIRY, PC_PUSH_HAS_COLLAPSE_KEY,
        PC_PUSH_HAS_TOPIC, PC_UPSTREAM_HAS_TOPIC, PC_GOAWAY_HAS_SERVERS
    enum:
        PC_PRIORITY_LOW, PC_PRIORITY_HIGH
    # header bytes of PING / PONG (a frame is the header and a zero length)
    enum:
        PC_PING_HEADER, PC_PONG_HEADER
    # limits
    enum:
        PC_PROTOCOL_VERSION, PC_DEFAULT_MAX_FRAME_SIZE, PC_MAX_VERSIONS, PC_MAX_PORT,
        PC_LENGTH_VARINT_MAX_BYTES, PC_FIELD_VARINT_MAX_BYTES
    const unsigned int PC_MAX_BODY_LENGTH

# 0 when the header byte is a valid type with only defined flags, else
# PC_R_UNKNOWN_TYPE or PC_R_BAD_FLAGS.
cdef int header_error(unsigned char header) noexcept nogil

# Parse the body-length varint (at most 5 bytes) at p[0:n].
# Returns the number of bytes used (> 0) and stores the value in *out;
# 0 when more bytes are needed; -1 on overrun (PC_R_VARINT_OVERRUN).
# The caller compares *out with its maximum frame size (PC_R_FRAME_TOO_LARGE).
cdef int parse_length(const unsigned char* p, Py_ssize_t n, unsigned long long* out) noexcept nogil

# Decode one complete body for a header that passed header_error(): returns a
# new frame object, or raises pushcore.errors.ProtocolError.
cdef object decode_body(unsigned char header, const unsigned char* body, Py_ssize_t n)

# PUSH frame bytes from Python field values, with encode_push()'s checks
# (TypeError / ValueError); *seq_out* gets the seq as a C integer. The loop's
# send_push() queues these bytes.
cdef bytes push_frame(object seq, object message_id, object payload, object priority, object expiry,
                      object collapse_key, object topic, unsigned long long* seq_out)

# Encoded sizes and writers used by the loop to build frames without Python
# objects: uvarint_size(v) bytes; write_uvarint returns the bytes written.
cdef int uvarint_size(unsigned long long v) noexcept nogil
cdef int write_uvarint(unsigned char* p, unsigned long long v) noexcept nogil
