/* Wire constants of docs/PROTOCOL.md: the one source for the C level.
 *
 * pushcore/wire.py holds the same numbers for Python; tests/test_wire_header.py
 * reads this file and checks every constant here against it (and the other
 * way round). The Cython code declares these names in ext/pushcore._frame.pxd
 * (`cdef extern from "pc_wire.h"`) and spells no wire number itself.
 *
 * Keep every value a plain decimal or hex literal: the test reads them with a
 * regular expression, not a C compiler.
 */
#ifndef PC_WIRE_H
#define PC_WIRE_H

/* Frame types: the header byte is (type << 4) | flags (PROTOCOL.md section 1). */
enum pc_frame_type {
    PC_HELLO = 1,
    PC_WELCOME = 2,
    PC_PING = 3,
    PC_PONG = 4,
    PC_PUSH = 5,
    PC_NOTIFY = 6,
    PC_FETCH = 7,
    PC_ACK = 8,
    PC_SUBSCRIBE = 9,
    PC_UNSUBSCRIBE = 10,
    PC_UPSTREAM = 11,
    PC_UPSTREAM_ACK = 12,
    PC_REDIRECT = 13,
    PC_GOAWAY = 14,
    PC_ERROR = 15
};

/* Reason codes: ERROR code, GOAWAY reason, close reason (section 4). */
enum pc_reason {
    PC_R_NORMAL = 0,
    /* codec errors */
    PC_R_FRAME_TOO_LARGE = 1,
    PC_R_UNKNOWN_TYPE = 2,
    PC_R_TRUNCATED = 3,
    PC_R_VARINT_OVERRUN = 4,
    PC_R_INVALID_UTF8 = 5,
    PC_R_TRAILING_BYTES = 6,
    PC_R_BAD_FLAGS = 7,
    PC_R_INVALID_VALUE = 8,
    /* session and connection reasons */
    PC_R_NOT_AUTHENTICATED = 16,
    PC_R_AUTH_FAILED = 17,
    PC_R_TOKEN_EXPIRED = 18,
    PC_R_UNSUPPORTED_VERSION = 19,
    PC_R_AUTH_TIMEOUT = 20,
    PC_R_IDLE_TIMEOUT = 21,
    PC_R_REPLACED = 22,
    PC_R_SLOW_CONSUMER = 23,
    PC_R_SHUTTING_DOWN = 24,
    PC_R_OVERLOADED = 25,
    PC_R_PEER_RESET = 26,
    PC_R_INTERNAL_ERROR = 27,
    PC_R_CONNECT_FAILED = 28,
    PC_R_PEER_CLOSED = 29,
    PC_R_LAST_SEQ_AHEAD = 30
};

/* Flag bits: the low nibble of the header (section 3). Any bit a type does
 * not define is BAD_FLAGS. */
enum pc_flag {
    PC_PUSH_HIGH_PRIORITY = 0x1,
    PC_PUSH_HAS_EXPIRY = 0x2,
    PC_PUSH_HAS_COLLAPSE_KEY = 0x4,
    PC_PUSH_HAS_TOPIC = 0x8,
    PC_UPSTREAM_HAS_TOPIC = 0x8,
    PC_GOAWAY_HAS_SERVERS = 0x1
};

/* PUSH priority values (PUSH flag bit 0). */
enum pc_priority {
    PC_PRIORITY_LOW = 0,
    PC_PRIORITY_HIGH = 1
};

/* The header bytes of a heartbeat and its answer; the frame is the header
 * and a zero body length. */
enum {
    PC_PING_HEADER = 0x30,
    PC_PONG_HEADER = 0x40
};

/* Limits. */
enum {
    PC_PROTOCOL_VERSION = 1,            /* the version this code speaks (HELLO / WELCOME) */
    PC_DEFAULT_MAX_FRAME_SIZE = 65536,  /* a decoder's default max_frame_size */
    PC_MAX_VERSIONS = 8,                /* a HELLO lists 1 to 8 versions */
    PC_MAX_PORT = 65535,
    PC_LENGTH_VARINT_MAX_BYTES = 5,     /* the body length varint */
    PC_FIELD_VARINT_MAX_BYTES = 10      /* every other uvarint */
};

/* Message field limits (pushcore/wire.py, docs/SECURITY.md): a stored message
 * always fits one PUSH frame under PC_DEFAULT_MAX_FRAME_SIZE. */
enum {
    PC_MAX_DEVICE_ID_BYTES = 256,
    PC_MAX_TOPIC_BYTES = 256,
    PC_MAX_COLLAPSE_KEY_BYTES = 256,
    PC_MAX_PAYLOAD_BYTES = 64000
};

/* The largest body an encoder writes (docs/CODEC.md); not an int, so a macro. */
#define PC_MAX_BODY_LENGTH 0xFFFFFFFFu

#endif /* PC_WIRE_H */
