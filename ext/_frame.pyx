# cython: language_level=3
"""C-level frame codec (compiled to ``pushcore._frame``).

The API is docs/CODEC.md's, byte for byte the same as the pure-Python
reference ``pushcore.protocol``; docs/PROTOCOL.md is the wire specification.
The C-level functions declared in ext/_frame.pxd (``header_error``,
``parse_length``, ``decode_body``, ``push_frame``, ``uvarint_size``,
``write_uvarint``) are cimported by the connection loop.

How it is fast:

* frames are ``cdef class`` objects with C-typed integer fields; the decoder
  creates them with ``tp_new`` and fills the C fields directly (no
  ``__init__``, no keyword parsing, no intermediate Python ints);
* encoders compute the exact frame size first, allocate the result ``bytes``
  once and write into it;
* decoders read straight from the caller's buffer: the payload is one
  ``PyBytes_FromStringAndSize`` from the body, text one strict
  ``PyUnicode_DecodeUTF8``;
* the streaming :class:`Decoder` decodes every frame that lies wholly inside
  a chunk without copying it, and buffers only the one partial frame at the
  chunk's end (at most ``max_frame_size`` body bytes, allocated only after the
  body length passed the size check).

Integer fields are C integers: assigning an out-of-range value to a frame's
attribute raises ``OverflowError`` at once (the constructors and encoders
raise ``ValueError`` as docs/CODEC.md says).

Errors: decoding errors raise :class:`pushcore.errors.ProtocolError`,
imported directly (as msgpack's ``_unpacker.pyx`` imports its exceptions):
``pushcore.errors`` and ``pushcore.wire`` are leaf modules, the only
Python-level pushcore code this module imports. The wire numbers come from
``ext/pc_wire.h``.
"""

from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_CheckExact
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyObject_CheckBuffer, PyBUF_SIMPLE
from cpython.ref cimport PyObject, Py_INCREF, Py_DECREF
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM
from cpython.exc cimport PyErr_ExceptionMatches, PyErr_Clear
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy

from pushcore.errors import ProtocolError

ctypedef unsigned long long u64

cdef extern from "Python.h":
    # Declared with raw PyObject* so a UnicodeDecodeError can be turned into
    # INVALID_UTF8 without the cost of a try/except block per text field.
    PyObject* pc_decode_utf8 "PyUnicode_DecodeUTF8"(const char* s, Py_ssize_t size, const char* errors)
    const char* pc_as_utf8 "PyUnicode_AsUTF8AndSize"(object s, Py_ssize_t* size) except NULL
    bint PyUnicode_Check(object o)
    bint PyUnicode_CheckExact(object o)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)
    bint PyLong_Check(object o)
    bint PyTuple_Check(object o)
    Py_ssize_t PyTuple_GET_SIZE(object o)

cdef extern from *:
    """
    /* Returns -1 so that Cython propagates the Python error already set. */
    static CYTHON_INLINE int pc_propagate_error(void) { return -1; }
    """
    int pc_propagate_error() except -1


__all__ = [
    "PROTOCOL_VERSION", "DEFAULT_MAX_FRAME_SIZE", "PRIORITY_LOW", "PRIORITY_HIGH",
    "HELLO", "WELCOME", "PING", "PONG", "PUSH", "NOTIFY", "FETCH", "ACK",
    "SUBSCRIBE", "UNSUBSCRIBE", "UPSTREAM", "UPSTREAM_ACK", "REDIRECT", "GOAWAY",
    "ERROR", "PING_BYTES", "PONG_BYTES",
    "Hello", "Welcome", "Ping", "Pong", "Push", "Notify", "Fetch", "Ack",
    "Subscribe", "Unsubscribe", "Upstream", "UpstreamAck", "Redirect", "Goaway",
    "ErrorFrame",
    "encode", "decode", "encode_push", "encode_ack", "Decoder",
]

# ----------------------------------------------------------------------------
# constants (docs/CODEC.md)

# The numbers come from ext/pc_wire.h (declared in the .pxd); these Python names
# are the module's public API (pushcore.wire has the same values).
PROTOCOL_VERSION = PC_PROTOCOL_VERSION
DEFAULT_MAX_FRAME_SIZE = PC_DEFAULT_MAX_FRAME_SIZE
PRIORITY_LOW = PC_PRIORITY_LOW
PRIORITY_HIGH = PC_PRIORITY_HIGH

HELLO = PC_HELLO
WELCOME = PC_WELCOME
PING = PC_PING
PONG = PC_PONG
PUSH = PC_PUSH
NOTIFY = PC_NOTIFY
FETCH = PC_FETCH
ACK = PC_ACK
SUBSCRIBE = PC_SUBSCRIBE
UNSUBSCRIBE = PC_UNSUBSCRIBE
UPSTREAM = PC_UPSTREAM
UPSTREAM_ACK = PC_UPSTREAM_ACK
REDIRECT = PC_REDIRECT
GOAWAY = PC_GOAWAY
ERROR = PC_ERROR

# the very object used as the default argument (so decode() can skip converting it)
cdef object _DEFAULT_MAX_FRAME_SIZE = DEFAULT_MAX_FRAME_SIZE

PING_BYTES = bytes((PC_PING_HEADER, 0))
PONG_BYTES = bytes((PC_PONG_HEADER, 0))

cdef enum:
    # A Decoder keeps its body buffer for the next partial frame only up to
    # this size: small frames reuse it, and an idle decoder that once saw a
    # large frame does not hold the large buffer.
    KEEP_BUFFER = 1024

# the largest body an encoder writes (docs/CODEC.md)
cdef Py_ssize_t MAX_BODY = PC_MAX_BODY_LENGTH

cdef tuple _TYPE_NAMES = (
    "TYPE0", "HELLO", "WELCOME", "PING", "PONG", "PUSH", "NOTIFY", "FETCH", "ACK",
    "SUBSCRIBE", "UNSUBSCRIBE", "UPSTREAM", "UPSTREAM_ACK", "REDIRECT", "GOAWAY", "ERROR",
)


# ----------------------------------------------------------------------------
# varints and fixed-width integers

cdef inline int _uvsize(u64 v) noexcept nogil:
    cdef int n = 1
    while v >= 0x80:
        v >>= 7
        n += 1
    return n


cdef inline int _wr_uvarint(unsigned char* p, u64 v) noexcept nogil:
    cdef int n = 0
    while v >= 0x80:
        p[n] = <unsigned char>((v & 0x7F) | 0x80)
        v >>= 7
        n += 1
    p[n] = <unsigned char>v
    return n + 1


cdef inline void _wr_u64le(unsigned char* p, u64 v) noexcept nogil:
    cdef int i
    for i in range(8):
        p[i] = <unsigned char>(v >> (8 * i))


cdef inline void _wr_u32le(unsigned char* p, u64 v) noexcept nogil:
    p[0] = <unsigned char>v
    p[1] = <unsigned char>(v >> 8)
    p[2] = <unsigned char>(v >> 16)
    p[3] = <unsigned char>(v >> 24)


cdef int uvarint_size(unsigned long long v) noexcept nogil:
    return _uvsize(v)


cdef int write_uvarint(unsigned char* p, unsigned long long v) noexcept nogil:
    return _wr_uvarint(p, v)


cdef int header_error(unsigned char header) noexcept nogil:
    cdef unsigned int kind = header >> 4
    cdef unsigned int flags = header & 0x0F
    if kind == 0:
        return PC_R_UNKNOWN_TYPE
    if flags == 0 or kind == PC_PUSH:
        return 0
    if kind == PC_UPSTREAM and flags == PC_UPSTREAM_HAS_TOPIC:
        return 0
    if kind == PC_GOAWAY and flags == PC_GOAWAY_HAS_SERVERS:
        return 0
    return PC_R_BAD_FLAGS


cdef int parse_length(const unsigned char* p, Py_ssize_t n, unsigned long long* out) noexcept nogil:
    cdef u64 value = 0
    cdef int i
    cdef unsigned char b
    for i in range(PC_LENGTH_VARINT_MAX_BYTES):
        if i >= n:
            return 0
        b = p[i]
        value |= (<u64>(b & 0x7F)) << (7 * i)
        if b < 0x80:
            out[0] = value
            return i + 1
    return -1


# ----------------------------------------------------------------------------
# argument checks shared by the constructors and the encoders

cdef inline u64 _u64(object value, str name) except? 0xFFFFFFFFFFFFFFFF:
    """*value* as an unsigned 64-bit int; ValueError when out of range."""
    if not PyLong_Check(value):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    # Cython's own conversion reads the int's digits inline (fast for 64-bit
    # ids, unlike PyLong_AsUnsignedLongLong); a try block costs a few
    # instructions when nothing is raised.
    try:
        return <u64>value
    except OverflowError:
        raise ValueError(f"{name} must be in 0 .. 2**64-1, got {value!r}") from None


cdef unsigned int _u32(object value, str name) except? 0xFFFFFFFF:
    cdef u64 v = _u64(value, name)
    if v > 0xFFFFFFFF:
        raise ValueError(f"{name} must be in 0 .. 2**32-1, got {value!r}")
    return <unsigned int>v


cdef int _priority(object value) except -1:
    cdef u64 v = _u64(value, "priority")
    if v > 1:
        raise ValueError(f"priority must be PRIORITY_LOW (0) or PRIORITY_HIGH (1), got {value!r}")
    return <int>v


cdef inline str _text(object value, str name):
    if PyUnicode_Check(value):
        return value
    raise TypeError(f"{name} must be str, not {type(value).__name__}")


cdef bytes _bytes(object value, str name):
    if PyBytes_CheckExact(value):
        return value
    if PyUnicode_Check(value) or not PyObject_CheckBuffer(value):
        raise TypeError(f"{name} must be bytes, not {type(value).__name__}")
    return bytes(value)


cdef inline const char* _utf8(object value, Py_ssize_t* n, str name) except NULL:
    if not PyUnicode_Check(value):
        raise TypeError(f"{name} must be str, not {type(value).__name__}")
    return pc_as_utf8(value, n)


cdef inline Py_ssize_t _bytes_len(object value, str name) except -1:
    if not isinstance(value, bytes):
        raise TypeError(f"{name} must be bytes, not {type(value).__name__}")
    return PyBytes_GET_SIZE(value)


cdef inline tuple _seq(object value, str name):
    if isinstance(value, (str, bytes, bytearray)):
        raise TypeError(f"{name} must be an iterable of items, not {type(value).__name__}")
    return tuple(value)


cdef tuple _servers(object value):
    cdef list out = []
    for server in _seq(value, "servers"):
        out.append(tuple(server))
    return tuple(out)


# ----------------------------------------------------------------------------
# encoding

cdef bytes _new_frame(int header, Py_ssize_t body, unsigned char** body_start):
    """A fresh bytes object for a frame with a *body*-byte body; the header
    and length are written, ``*body_start`` points at the body."""
    if body > MAX_BODY:
        raise ValueError(f"a frame body of {body} bytes is over the 2**32-1 byte limit")
    cdef int ls = _uvsize(<u64>body)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, 1 + ls + body)
    cdef unsigned char* p = <unsigned char*>PyBytes_AS_STRING(out)
    p[0] = <unsigned char>header
    _wr_uvarint(p + 1, <u64>body)
    body_start[0] = p + 1 + ls
    return out


cdef inline unsigned char* _wr_bytes(unsigned char* p, const char* data, Py_ssize_t n) noexcept nogil:
    p += _wr_uvarint(p, <u64>n)
    memcpy(p, data, n)
    return p + n


cdef bytes _encode_push(u64 seq, u64 message_id, object payload, int priority, unsigned int expiry,
                        object collapse_key, object topic):
    """PUSH frame bytes; payload must be bytes, texts str (checked here)."""
    cdef Py_ssize_t plen = _bytes_len(payload, "payload")
    cdef Py_ssize_t cklen = 0, tlen = 0
    cdef const char* ck = NULL
    cdef const char* tp = NULL
    cdef int flags = priority
    cdef Py_ssize_t body = _uvsize(seq) + 8 + plen
    if expiry:
        flags |= PC_PUSH_HAS_EXPIRY
        body += 4
    if not PyUnicode_CheckExact(collapse_key) or PyUnicode_GET_LENGTH(collapse_key):
        ck = _utf8(collapse_key, &cklen, "collapse_key")
        if cklen:
            flags |= PC_PUSH_HAS_COLLAPSE_KEY
            body += _uvsize(cklen) + cklen
    if not PyUnicode_CheckExact(topic) or PyUnicode_GET_LENGTH(topic):
        tp = _utf8(topic, &tlen, "topic")
        if tlen:
            flags |= PC_PUSH_HAS_TOPIC
            body += _uvsize(tlen) + tlen
    cdef unsigned char* p
    cdef bytes out = _new_frame((PC_PUSH << 4) | flags, body, &p)
    p += _wr_uvarint(p, seq)
    _wr_u64le(p, message_id)
    p += 8
    if expiry:
        _wr_u32le(p, expiry)
        p += 4
    if flags & PC_PUSH_HAS_COLLAPSE_KEY:
        p = _wr_bytes(p, ck, cklen)
    if flags & PC_PUSH_HAS_TOPIC:
        p = _wr_bytes(p, tp, tlen)
    memcpy(p, PyBytes_AS_STRING(payload), plen)
    return out


cdef bytes _encode_uvarints(int kind, u64 a, u64 b, u64 c, u64 d, int count):
    """A frame whose body is *count* (0-4) uvarints a, b, c, d."""
    cdef Py_ssize_t body = 0
    if count > 0:
        body += _uvsize(a)
    if count > 1:
        body += _uvsize(b)
    if count > 2:
        body += _uvsize(c)
    if count > 3:
        body += _uvsize(d)
    cdef unsigned char* p
    cdef bytes out = _new_frame(kind << 4, body, &p)
    if count > 0:
        p += _wr_uvarint(p, a)
    if count > 1:
        p += _wr_uvarint(p, b)
    if count > 2:
        p += _wr_uvarint(p, c)
    if count > 3:
        p += _wr_uvarint(p, d)
    return out


cdef Py_ssize_t _text_list_size(tuple items, str name) except -1:
    """Encoded size of a ``list<text>``; checks every item is a str."""
    cdef Py_ssize_t size = _uvsize(<u64>len(items)), n
    for item in items:
        if not PyUnicode_Check(item):
            raise TypeError(f"every item of {name} must be str, not {type(item).__name__}")
        pc_as_utf8(item, &n)
        size += _uvsize(<u64>n) + n
    return size


cdef unsigned char* _wr_text_list(unsigned char* p, tuple items) except NULL:
    cdef Py_ssize_t n
    cdef const char* s
    p += _wr_uvarint(p, <u64>len(items))
    for item in items:
        s = pc_as_utf8(item, &n)
        p = _wr_bytes(p, s, n)
    return p


cdef Py_ssize_t _server_list_size(tuple servers) except -1:
    """Encoded size of a ``list<server>``; checks every server (host, port, load)."""
    cdef Py_ssize_t size = _uvsize(<u64>len(servers)), n
    cdef u64 port
    cdef tuple server
    for item in servers:
        if not PyTuple_Check(item):
            raise TypeError(f"a server must be a (host, port, load) tuple, not {type(item).__name__}")
        server = <tuple>item
        if PyTuple_GET_SIZE(server) != 3:
            raise TypeError(f"a server must be a (host, port, load) tuple, got {server!r}")
        # Items by index, never through a tuple subclass's __iter__: no Python
        # code may run between the size pass and the write pass.
        host = server[0]
        port_obj = server[1]
        load = server[2]
        _utf8(host, &n, "server host")
        port = _u64(port_obj, "server port")
        if port > PC_MAX_PORT:
            raise ValueError(f"server port must be in 0 .. 65535, got {port_obj!r}")
        size += _uvsize(<u64>n) + n + _uvsize(port) + _uvsize(_u64(load, "server load"))
    return size


cdef unsigned char* _wr_server_list(unsigned char* p, tuple servers) except NULL:
    cdef Py_ssize_t n
    cdef const char* s
    cdef tuple server
    p += _wr_uvarint(p, <u64>len(servers))
    for item in servers:
        server = <tuple>item
        s = pc_as_utf8(server[0], &n)
        p = _wr_bytes(p, s, n)
        p += _wr_uvarint(p, <u64>server[1])
        p += _wr_uvarint(p, <u64>server[2])
    return p


# ----------------------------------------------------------------------------
# frame classes

cdef class Frame:
    """Base class of the frame classes of this backend.

    ``a == b`` holds when both are frames (of either backend) with the same
    ``TYPE`` and equal ``fields()``. Frames are not hashable.
    """

    TYPE = 0
    _FIELDS = ()

    # Subclasses implement the encoding in two passes: _body_size checks every
    # field and returns the exact body size (and the header's flags), then
    # _write_body writes exactly that many bytes. No Python code may run
    # between the passes (sequences are read by index from tuples, texts are
    # immutable str, ints are read without __index__), so the sizes agree.
    cdef int _kind(self) noexcept:
        return 0

    cdef Py_ssize_t _body_size(self, int* flags) except -1:
        raise TypeError(f"{type(self).__name__} cannot be encoded")

    cdef unsigned char* _write_body(self, unsigned char* p) except NULL:
        raise TypeError(f"{type(self).__name__} cannot be encoded")

    cdef bytes _encode(self):
        cdef int flags = 0
        cdef Py_ssize_t body = self._body_size(&flags)
        cdef unsigned char* p
        cdef bytes out = _new_frame((self._kind() << 4) | flags, body, &p)
        if self._write_body(p) != p + body:
            raise SystemError("pushcore._frame: encoded size mismatch")
        return out

    def encode(self):
        """The frame's bytes on the wire."""
        return self._encode()

    def fields(self):
        """The field values, in constructor order."""
        return ()

    def __eq__(self, other):
        if type(other) is type(self):
            return self.fields() == other.fields()
        try:
            other_type = other.TYPE
            other_fields = other.fields
        except AttributeError:
            return NotImplemented
        if other_type != self.TYPE or not callable(other_fields):
            return False
        return self.fields() == other_fields()

    def __ne__(self, other):
        result = self.__eq__(other)
        if result is NotImplemented:
            return result
        return not result

    __hash__ = None

    def __repr__(self):
        values = self.fields()
        inner = ", ".join(f"{name}={value!r}" for name, value in zip(self._FIELDS, values))
        return f"{type(self).__name__}({inner})"

    def __reduce__(self):
        return (type(self), self.fields())


cdef class Hello(Frame):
    """HELLO: first frame of every connection (client to server)."""

    TYPE = PC_HELLO
    _FIELDS = ("versions", "device_id", "token", "last_seq", "heartbeat")

    cdef public tuple versions
    cdef public str device_id
    cdef public bytes token
    cdef public u64 last_seq
    cdef public u64 heartbeat

    def __init__(self, versions=(1,), device_id="", token=b"", last_seq=0, heartbeat=0):
        self.versions = _seq(versions, "versions")
        self.device_id = _text(device_id, "device_id")
        self.token = _bytes(token, "token")
        self.last_seq = _u64(last_seq, "last_seq")
        self.heartbeat = _u64(heartbeat, "heartbeat")

    def fields(self):
        return (self.versions, self.device_id, self.token, self.last_seq, self.heartbeat)

    cdef int _kind(self) noexcept:
        return PC_HELLO

    cdef Py_ssize_t _body_size(self, int* flags) except -1:
        cdef Py_ssize_t n, size
        if self.versions is None:
            raise TypeError("versions must be a tuple of ints")
        n = len(self.versions)
        if n < 1 or n > PC_MAX_VERSIONS:
            raise ValueError(f"HELLO needs 1 to 8 versions, got {n}")
        size = _uvsize(<u64>n)
        for v in self.versions:
            size += _uvsize(_u64(v, "version"))
        _utf8(self.device_id, &n, "device_id")
        size += _uvsize(<u64>n) + n
        n = _bytes_len(self.token, "token")
        size += _uvsize(<u64>n) + n
        return size + _uvsize(self.last_seq) + _uvsize(self.heartbeat)

    cdef unsigned char* _write_body(self, unsigned char* p) except NULL:
        cdef Py_ssize_t n
        cdef const char* s
        p += _wr_uvarint(p, <u64>len(self.versions))
        for v in self.versions:
            p += _wr_uvarint(p, <u64>v)
        s = pc_as_utf8(self.device_id, &n)
        p = _wr_bytes(p, s, n)
        p = _wr_bytes(p, PyBytes_AS_STRING(self.token), PyBytes_GET_SIZE(self.token))
        p += _wr_uvarint(p, self.last_seq)
        p += _wr_uvarint(p, self.heartbeat)
        return p


cdef class Welcome(Frame):
    """WELCOME: the server accepted the device (server to client)."""

    TYPE = PC_WELCOME
    _FIELDS = ("version", "heartbeat_min", "heartbeat_max", "server_time")

    cdef public u64 version
    cdef public u64 heartbeat_min
    cdef public u64 heartbeat_max
    cdef public u64 server_time

    def __init__(self, version=1, heartbeat_min=0, heartbeat_max=0, server_time=0):
        self.version = _u64(version, "version")
        self.heartbeat_min = _u64(heartbeat_min, "heartbeat_min")
        self.heartbeat_max = _u64(heartbeat_max, "heartbeat_max")
        self.server_time = _u64(server_time, "server_time")

    def fields(self):
        return (self.version, self.heartbeat_min, self.heartbeat_max, self.server_time)

    cdef bytes _encode(self):
        return _encode_uvarints(PC_WELCOME, self.version, self.heartbeat_min,
                                self.heartbeat_max, self.server_time, 4)


cdef class Ping(Frame):
    """PING: heartbeat; the other side answers PONG."""

    TYPE = PC_PING

    def __init__(self):
        pass

    cdef bytes _encode(self):
        return PING_BYTES


cdef class Pong(Frame):
    """PONG: the answer to PING."""

    TYPE = PC_PONG

    def __init__(self):
        pass

    cdef bytes _encode(self):
        return PONG_BYTES


cdef class Push(Frame):
    """PUSH: one message for the device (server to client)."""

    TYPE = PC_PUSH
    _FIELDS = ("seq", "message_id", "payload", "priority", "expiry", "collapse_key", "topic")

    cdef public u64 seq
    cdef public u64 message_id
    cdef public bytes payload
    cdef public int priority
    cdef public unsigned int expiry
    cdef public str collapse_key
    cdef public str topic

    def __init__(self, seq=0, message_id=0, payload=b"", priority=PRIORITY_HIGH, expiry=0,
                 collapse_key="", topic=""):
        self.seq = _u64(seq, "seq")
        self.message_id = _u64(message_id, "message_id")
        self.payload = _bytes(payload, "payload")
        self.priority = _priority(priority)
        self.expiry = _u32(expiry, "expiry")
        self.collapse_key = _text(collapse_key, "collapse_key")
        self.topic = _text(topic, "topic")

    def fields(self):
        return (self.seq, self.message_id, self.payload, self.priority, self.expiry,
                self.collapse_key, self.topic)

    cdef bytes _encode(self):
        if self.priority != 0 and self.priority != 1:
            raise ValueError(f"priority must be PRIORITY_LOW (0) or PRIORITY_HIGH (1), got {self.priority}")
        return _encode_push(self.seq, self.message_id, self.payload, self.priority, self.expiry,
                            self.collapse_key, self.topic)


cdef class Notify(Frame):
    """NOTIFY: messages up to latest_seq are waiting; the client FETCHes."""

    TYPE = PC_NOTIFY
    _FIELDS = ("latest_seq",)

    cdef public u64 latest_seq

    def __init__(self, latest_seq=0):
        self.latest_seq = _u64(latest_seq, "latest_seq")

    def fields(self):
        return (self.latest_seq,)

    cdef bytes _encode(self):
        return _encode_uvarints(PC_NOTIFY, self.latest_seq, 0, 0, 0, 1)


cdef class Fetch(Frame):
    """FETCH: send up to max_count messages with seq > after_seq."""

    TYPE = PC_FETCH
    _FIELDS = ("after_seq", "max_count")

    cdef public u64 after_seq
    cdef public u64 max_count

    def __init__(self, after_seq=0, max_count=0):
        self.after_seq = _u64(after_seq, "after_seq")
        self.max_count = _u64(max_count, "max_count")

    def fields(self):
        return (self.after_seq, self.max_count)

    cdef bytes _encode(self):
        return _encode_uvarints(PC_FETCH, self.after_seq, self.max_count, 0, 0, 2)


cdef class Ack(Frame):
    """ACK: the client has every message with seq <= seq (cumulative)."""

    TYPE = PC_ACK
    _FIELDS = ("seq",)

    cdef public u64 seq

    def __init__(self, seq=0):
        self.seq = _u64(seq, "seq")

    def fields(self):
        return (self.seq,)

    cdef bytes _encode(self):
        return _encode_uvarints(PC_ACK, self.seq, 0, 0, 0, 1)


cdef class _TopicList(Frame):
    """Shared body of SUBSCRIBE and UNSUBSCRIBE: ``list<text> topics``."""

    _FIELDS = ("topics",)

    cdef public tuple topics

    def __init__(self, topics=()):
        self.topics = _seq(topics, "topics")

    def fields(self):
        return (self.topics,)

    cdef Py_ssize_t _body_size(self, int* flags) except -1:
        if self.topics is None:
            raise TypeError("topics must be a tuple of str")
        if len(self.topics) == 0:
            raise ValueError(f"{type(self).__name__} needs at least one topic")
        return _text_list_size(self.topics, "topics")

    cdef unsigned char* _write_body(self, unsigned char* p) except NULL:
        return _wr_text_list(p, self.topics)


cdef class Subscribe(_TopicList):
    """SUBSCRIBE: join one or more topics."""

    TYPE = PC_SUBSCRIBE

    cdef int _kind(self) noexcept:
        return PC_SUBSCRIBE


cdef class Unsubscribe(_TopicList):
    """UNSUBSCRIBE: leave one or more topics."""

    TYPE = PC_UNSUBSCRIBE

    cdef int _kind(self) noexcept:
        return PC_UNSUBSCRIBE


cdef class Upstream(Frame):
    """UPSTREAM: a message from the device to the server."""

    TYPE = PC_UPSTREAM
    _FIELDS = ("upstream_id", "payload", "topic")

    cdef public u64 upstream_id
    cdef public bytes payload
    cdef public str topic

    def __init__(self, upstream_id=0, payload=b"", topic=""):
        self.upstream_id = _u64(upstream_id, "upstream_id")
        self.payload = _bytes(payload, "payload")
        self.topic = _text(topic, "topic")

    def fields(self):
        return (self.upstream_id, self.payload, self.topic)

    cdef int _kind(self) noexcept:
        return PC_UPSTREAM

    cdef Py_ssize_t _body_size(self, int* flags) except -1:
        cdef Py_ssize_t n
        cdef Py_ssize_t size = _uvsize(self.upstream_id) + _bytes_len(self.payload, "payload")
        _utf8(self.topic, &n, "topic")
        if n:
            flags[0] = PC_UPSTREAM_HAS_TOPIC
            size += _uvsize(<u64>n) + n
        return size

    cdef unsigned char* _write_body(self, unsigned char* p) except NULL:
        cdef Py_ssize_t n
        cdef const char* s
        p += _wr_uvarint(p, self.upstream_id)
        s = pc_as_utf8(self.topic, &n)
        if n:
            p = _wr_bytes(p, s, n)
        n = PyBytes_GET_SIZE(self.payload)
        memcpy(p, PyBytes_AS_STRING(self.payload), n)
        return p + n


cdef class UpstreamAck(Frame):
    """UPSTREAM_ACK: the server received the UPSTREAM with this id."""

    TYPE = PC_UPSTREAM_ACK
    _FIELDS = ("upstream_id",)

    cdef public u64 upstream_id

    def __init__(self, upstream_id=0):
        self.upstream_id = _u64(upstream_id, "upstream_id")

    def fields(self):
        return (self.upstream_id,)

    cdef bytes _encode(self):
        return _encode_uvarints(PC_UPSTREAM_ACK, self.upstream_id, 0, 0, 0, 1)


cdef class Redirect(Frame):
    """REDIRECT: servers to use instead, as (host, port, load), by ascending load."""

    TYPE = PC_REDIRECT
    _FIELDS = ("servers",)

    cdef public tuple servers

    def __init__(self, servers=()):
        self.servers = _servers(servers)

    def fields(self):
        return (self.servers,)

    cdef int _kind(self) noexcept:
        return PC_REDIRECT

    cdef Py_ssize_t _body_size(self, int* flags) except -1:
        if self.servers is None:
            raise TypeError("servers must be a tuple of (host, port, load) tuples")
        return _server_list_size(self.servers)

    cdef unsigned char* _write_body(self, unsigned char* p) except NULL:
        return _wr_server_list(p, self.servers)


cdef class Goaway(Frame):
    """GOAWAY: the server closes the connection for reason; servers, if any, are where to go."""

    TYPE = PC_GOAWAY
    _FIELDS = ("reason", "message", "servers")

    cdef public u64 reason
    cdef public str message
    cdef public tuple servers

    def __init__(self, reason=0, message="", servers=()):
        self.reason = _u64(reason, "reason")
        self.message = _text(message, "message")
        self.servers = _servers(servers)

    def fields(self):
        return (self.reason, self.message, self.servers)

    cdef int _kind(self) noexcept:
        return PC_GOAWAY

    cdef Py_ssize_t _body_size(self, int* flags) except -1:
        cdef Py_ssize_t n
        cdef Py_ssize_t size = _uvsize(self.reason)
        _utf8(self.message, &n, "message")
        size += _uvsize(<u64>n) + n
        if self.servers is None:
            raise TypeError("servers must be a tuple of (host, port, load) tuples")
        if len(self.servers):
            flags[0] = PC_GOAWAY_HAS_SERVERS
            size += _server_list_size(self.servers)
        return size

    cdef unsigned char* _write_body(self, unsigned char* p) except NULL:
        cdef Py_ssize_t n
        cdef const char* s
        p += _wr_uvarint(p, self.reason)
        s = pc_as_utf8(self.message, &n)
        p = _wr_bytes(p, s, n)
        if len(self.servers):
            p = _wr_server_list(p, self.servers)
        return p


cdef class ErrorFrame(Frame):
    """ERROR: a reason code and a human-readable message; the sender then closes."""

    TYPE = PC_ERROR
    _FIELDS = ("code", "message")

    cdef public u64 code
    cdef public str message

    def __init__(self, code=0, message=""):
        self.code = _u64(code, "code")
        self.message = _text(message, "message")

    def fields(self):
        return (self.code, self.message)

    cdef int _kind(self) noexcept:
        return PC_ERROR

    cdef Py_ssize_t _body_size(self, int* flags) except -1:
        cdef Py_ssize_t n
        _utf8(self.message, &n, "message")
        return _uvsize(self.code) + _uvsize(<u64>n) + n

    cdef unsigned char* _write_body(self, unsigned char* p) except NULL:
        cdef Py_ssize_t n
        cdef const char* s
        p += _wr_uvarint(p, self.code)
        s = pc_as_utf8(self.message, &n)
        return _wr_bytes(p, s, n)


cdef tuple _CLASSES = (None, Hello, Welcome, Ping, Pong, Push, Notify, Fetch, Ack, Subscribe,
                       Unsubscribe, Upstream, UpstreamAck, Redirect, Goaway, ErrorFrame)


# ----------------------------------------------------------------------------
# public encoders

def encode(frame):
    """The bytes of *frame* (same as ``frame.encode()``).

    A frame of the other backend (any object with ``TYPE`` and ``fields()``)
    is encoded too, through this backend's class of the same type.
    """
    if isinstance(frame, Frame):
        return (<Frame>frame)._encode()
    kind = getattr(frame, "TYPE", None)
    if type(kind) is not int or not 1 <= kind <= 15:
        raise TypeError(f"encode() needs a pushcore frame, not {type(frame).__name__}")
    return (<Frame>_CLASSES[kind](*frame.fields()))._encode()


cdef bytes push_frame(object seq, object message_id, object payload, object priority, object expiry,
                      object collapse_key, object topic, u64* seq_out):
    cdef u64 s = _u64(seq, "seq")
    cdef u64 m = _u64(message_id, "message_id")
    cdef int prio = _priority(priority)
    cdef unsigned int exp = _u32(expiry, "expiry")
    if not PyBytes_CheckExact(payload):
        payload = _bytes(payload, "payload")
    seq_out[0] = s
    return _encode_push(s, m, payload, prio, exp, collapse_key, topic)


def encode_push(seq, message_id, payload, priority=PRIORITY_HIGH, expiry=0, collapse_key="", topic=""):
    """PUSH frame bytes straight from the field values, without building a Push."""
    cdef u64 s
    return push_frame(seq, message_id, payload, priority, expiry, collapse_key, topic, &s)


def encode_ack(seq):
    """ACK frame bytes for *seq*."""
    return _encode_uvarints(PC_ACK, _u64(seq, "seq"), 0, 0, 0, 1)


# ----------------------------------------------------------------------------
# decoding a body

cdef struct Reader:
    const unsigned char* p     # next unread body byte
    const unsigned char* end   # one past the body's last byte
    int err                    # 0, or the reason code of the first bad field
    const char* what           # the field that decided err (for the message)


cdef inline void _bad(Reader* r, int code, const char* what) noexcept nogil:
    r.err = code
    r.what = what


cdef inline u64 _rd_uvarint(Reader* r, const char* what) noexcept nogil:
    cdef const unsigned char* p = r.p
    cdef u64 value = 0, b
    cdef int i
    if p < r.end and p[0] < 0x80:
        r.p = p + 1
        return p[0]
    for i in range(PC_FIELD_VARINT_MAX_BYTES):
        if p >= r.end:
            _bad(r, PC_R_TRUNCATED, what)
            return 0
        b = p[0]
        p += 1
        if i == PC_FIELD_VARINT_MAX_BYTES - 1 and b > 1:
            _bad(r, PC_R_VARINT_OVERRUN, what)
            return 0
        value |= (b & 0x7F) << (7 * i)
        if b < 0x80:
            break
    r.p = p
    return value


cdef inline u64 _rd_fixed(Reader* r, int width, const char* what) noexcept nogil:
    """A little-endian unsigned int of *width* (4 or 8) bytes."""
    cdef u64 value = 0
    cdef int i
    if r.end - r.p < width:
        _bad(r, PC_R_TRUNCATED, what)
        return 0
    for i in range(width):
        value |= (<u64>r.p[i]) << (8 * i)
    r.p += width
    return value


cdef inline Py_ssize_t _rd_len(Reader* r, const char* what) noexcept nogil:
    """The length of a ``bytes``/``text`` field, checked against the bytes left."""
    cdef u64 n = _rd_uvarint(r, what)
    if r.err:
        return 0
    if n > <u64>(r.end - r.p):
        _bad(r, PC_R_TRUNCATED, what)
        return 0
    return <Py_ssize_t>n


cdef str _rd_text(Reader* r, const char* what):
    cdef Py_ssize_t n = _rd_len(r, what)
    cdef PyObject* s
    if r.err:
        return None
    if n == 0:
        return ""
    s = pc_decode_utf8(<const char*>r.p, n, NULL)
    if s == NULL:
        if PyErr_ExceptionMatches(UnicodeDecodeError):
            PyErr_Clear()
            _bad(r, PC_R_INVALID_UTF8, what)
            return None
        pc_propagate_error()
    r.p += n
    text = <object>s
    Py_DECREF(text)
    return text


cdef bytes _rd_bytes(Reader* r, const char* what):
    cdef Py_ssize_t n = _rd_len(r, what)
    if r.err:
        return None
    r.p += n
    return PyBytes_FromStringAndSize(<const char*>(r.p - n), n)


cdef inline bytes _rd_rest(Reader* r):
    cdef Py_ssize_t n = r.end - r.p
    r.p = r.end
    return PyBytes_FromStringAndSize(<const char*>(r.end - n), n)


cdef tuple _rd_text_list(Reader* r, const char* what):
    cdef u64 count = _rd_uvarint(r, what)
    cdef Py_ssize_t i
    if r.err:
        return None
    if count > <u64>(r.end - r.p):
        _bad(r, PC_R_TRUNCATED, what)
        return None
    if count == 0:
        _bad(r, PC_R_INVALID_VALUE, "topics (a topic list needs at least one topic)")
        return None
    items = PyTuple_New(<Py_ssize_t>count)
    for i in range(<Py_ssize_t>count):
        item = _rd_text(r, what)
        if r.err:
            return None
        Py_INCREF(item)
        PyTuple_SET_ITEM(items, i, item)
    return items


cdef tuple _rd_server_list(Reader* r):
    cdef u64 count = _rd_uvarint(r, "servers count")
    cdef u64 port, load
    cdef Py_ssize_t i
    if r.err:
        return None
    if count > <u64>(r.end - r.p):
        _bad(r, PC_R_TRUNCATED, "servers")
        return None
    items = PyTuple_New(<Py_ssize_t>count)
    for i in range(<Py_ssize_t>count):
        host = _rd_text(r, "server host")
        if r.err:
            return None
        port = _rd_uvarint(r, "server port")
        if r.err:
            return None
        if port > PC_MAX_PORT:
            _bad(r, PC_R_INVALID_VALUE, "server port (over 65535)")
            return None
        load = _rd_uvarint(r, "server load")
        if r.err:
            return None
        server = (host, port, load)
        Py_INCREF(server)
        PyTuple_SET_ITEM(items, i, server)
    return items


cdef object _dec_hello(Reader* r):
    cdef u64 count = _rd_uvarint(r, "versions count")
    cdef Py_ssize_t i
    if r.err:
        return None
    if count > <u64>(r.end - r.p):
        _bad(r, PC_R_TRUNCATED, "versions")
        return None
    if count == 0 or count > PC_MAX_VERSIONS:
        _bad(r, PC_R_INVALID_VALUE, "versions count (must be 1 to 8)")
        return None
    cdef u64 v
    cdef object version
    versions = PyTuple_New(<Py_ssize_t>count)
    for i in range(<Py_ssize_t>count):
        v = _rd_uvarint(r, "versions")
        if r.err:
            return None
        version = v
        Py_INCREF(version)
        PyTuple_SET_ITEM(versions, i, version)
    device_id = _rd_text(r, "device_id")
    if r.err:
        return None
    token = _rd_bytes(r, "token")
    if r.err:
        return None
    cdef u64 last_seq = _rd_uvarint(r, "last_seq")
    if r.err:
        return None
    cdef u64 heartbeat = _rd_uvarint(r, "heartbeat")
    if r.err:
        return None
    cdef Hello f = Hello.__new__(Hello)
    f.versions = versions
    f.device_id = device_id
    f.token = token
    f.last_seq = last_seq
    f.heartbeat = heartbeat
    return f


cdef object _dec_push(unsigned int flags, Reader* r):
    cdef u64 seq = _rd_uvarint(r, "seq")
    if r.err:
        return None
    cdef u64 message_id = _rd_fixed(r, 8, "message_id")
    if r.err:
        return None
    cdef u64 expiry = 0
    if flags & PC_PUSH_HAS_EXPIRY:
        expiry = _rd_fixed(r, 4, "expiry")
        if r.err:
            return None
    cdef str collapse_key = ""
    if flags & PC_PUSH_HAS_COLLAPSE_KEY:
        collapse_key = _rd_text(r, "collapse_key")
        if r.err:
            return None
    cdef str topic = ""
    if flags & PC_PUSH_HAS_TOPIC:
        topic = _rd_text(r, "topic")
        if r.err:
            return None
    cdef Push f = Push.__new__(Push)
    f.seq = seq
    f.message_id = message_id
    f.payload = _rd_rest(r)
    f.priority = flags & PC_PUSH_HIGH_PRIORITY
    f.expiry = <unsigned int>expiry
    f.collapse_key = collapse_key
    f.topic = topic
    return f


cdef object _dec_upstream(unsigned int flags, Reader* r):
    cdef u64 upstream_id = _rd_uvarint(r, "upstream_id")
    if r.err:
        return None
    cdef str topic = ""
    if flags & PC_UPSTREAM_HAS_TOPIC:
        topic = _rd_text(r, "topic")
        if r.err:
            return None
    cdef Upstream f = Upstream.__new__(Upstream)
    f.upstream_id = upstream_id
    f.topic = topic
    f.payload = _rd_rest(r)
    return f


cdef object _dec_goaway(unsigned int flags, Reader* r):
    cdef u64 reason = _rd_uvarint(r, "reason")
    if r.err:
        return None
    message = _rd_text(r, "message")
    if r.err:
        return None
    servers = ()
    if flags & PC_GOAWAY_HAS_SERVERS:
        servers = _rd_server_list(r)
        if r.err:
            return None
    cdef Goaway f = Goaway.__new__(Goaway)
    f.reason = reason
    f.message = message
    f.servers = servers
    return f


cdef object _dec_body(unsigned char header, const unsigned char* body, Py_ssize_t n, Reader* r):
    """Decode one complete body of a frame whose header passed header_error().

    Returns the frame, or None with ``r.err``/``r.what`` saying what is wrong
    (the first bad field in body order, TRAILING_BYTES last). Raises only
    for errors that are not the peer's fault (MemoryError).
    """
    cdef unsigned int kind = header >> 4
    cdef unsigned int flags = header & 0x0F
    cdef u64 a, b, c, d
    r.p = body
    r.end = body + n
    r.err = 0
    r.what = NULL
    frame = None
    if kind == PC_PUSH:
        return _dec_push(flags, r)      # a rest field: nothing can trail
    elif kind == PC_UPSTREAM:
        return _dec_upstream(flags, r)  # idem
    elif kind == PC_PING:
        frame = Ping.__new__(Ping)
    elif kind == PC_PONG:
        frame = Pong.__new__(Pong)
    elif kind == PC_ACK:
        a = _rd_uvarint(r, "seq")
        if r.err:
            return None
        frame = Ack.__new__(Ack)
        (<Ack>frame).seq = a
    elif kind == PC_NOTIFY:
        a = _rd_uvarint(r, "latest_seq")
        if r.err:
            return None
        frame = Notify.__new__(Notify)
        (<Notify>frame).latest_seq = a
    elif kind == PC_UPSTREAM_ACK:
        a = _rd_uvarint(r, "upstream_id")
        if r.err:
            return None
        frame = UpstreamAck.__new__(UpstreamAck)
        (<UpstreamAck>frame).upstream_id = a
    elif kind == PC_FETCH:
        a = _rd_uvarint(r, "after_seq")
        if r.err:
            return None
        b = _rd_uvarint(r, "max_count")
        if r.err:
            return None
        frame = Fetch.__new__(Fetch)
        (<Fetch>frame).after_seq = a
        (<Fetch>frame).max_count = b
    elif kind == PC_WELCOME:
        a = _rd_uvarint(r, "version")
        if r.err:
            return None
        b = _rd_uvarint(r, "heartbeat_min")
        if r.err:
            return None
        c = _rd_uvarint(r, "heartbeat_max")
        if r.err:
            return None
        d = _rd_uvarint(r, "server_time")
        if r.err:
            return None
        frame = Welcome.__new__(Welcome)
        (<Welcome>frame).version = a
        (<Welcome>frame).heartbeat_min = b
        (<Welcome>frame).heartbeat_max = c
        (<Welcome>frame).server_time = d
    elif kind == PC_HELLO:
        frame = _dec_hello(r)
    elif kind == PC_SUBSCRIBE or kind == PC_UNSUBSCRIBE:
        topics = _rd_text_list(r, "topics")
        if r.err:
            return None
        if kind == PC_SUBSCRIBE:
            frame = Subscribe.__new__(Subscribe)
        else:
            frame = Unsubscribe.__new__(Unsubscribe)
        (<_TopicList>frame).topics = topics
    elif kind == PC_REDIRECT:
        servers = _rd_server_list(r)
        if r.err:
            return None
        frame = Redirect.__new__(Redirect)
        (<Redirect>frame).servers = servers
    elif kind == PC_GOAWAY:
        frame = _dec_goaway(flags, r)
    elif kind == PC_ERROR:
        a = _rd_uvarint(r, "code")
        if r.err:
            return None
        message = _rd_text(r, "message")
        if r.err:
            return None
        frame = ErrorFrame.__new__(ErrorFrame)
        (<ErrorFrame>frame).code = a
        (<ErrorFrame>frame).message = message
    if r.err:
        return None
    if r.p != r.end:
        _bad(r, PC_R_TRAILING_BYTES, "body")
        return None
    return frame


cdef str _body_error_message(unsigned char header, Py_ssize_t n, Reader* r):
    cdef str kind = _TYPE_NAMES[header >> 4]
    cdef str what = r.what.decode("ascii") if r.what != NULL else "field"
    cdef Py_ssize_t left = r.end - r.p
    if r.err == PC_R_TRUNCATED:
        return f"{kind} {what} runs past the end of the {n}-byte body"
    if r.err == PC_R_VARINT_OVERRUN:
        return f"{kind} {what} is a varint over 10 bytes or >= 2**64"
    if r.err == PC_R_INVALID_UTF8:
        return f"{kind} {what} is not valid UTF-8"
    if r.err == PC_R_TRAILING_BYTES:
        return f"{kind} body has {left} byte(s) after its last field"
    if r.err == PC_R_INVALID_VALUE:
        return f"{kind} {what}"
    return f"{kind} {what} is bad"


cdef str _header_error_message(unsigned char header, int code):
    if code == PC_R_UNKNOWN_TYPE:
        return f"header byte 0x{header:02x} has frame type 0, which is not a frame type"
    return (f"header byte 0x{header:02x}: {_TYPE_NAMES[header >> 4]} does not define "
            f"flag bits 0x{header & 0x0F:x}")


cdef object decode_body(unsigned char header, const unsigned char* body, Py_ssize_t n):
    cdef Reader r
    frame = _dec_body(header, body, n, &r)
    if r.err:
        raise ProtocolError(r.err, _body_error_message(header, n, &r))
    return frame


# ----------------------------------------------------------------------------
# one-shot decode

cdef u64 _max_frame_size(object value) except? 0:
    """A ``max_frame_size`` argument as a C limit (any int >= 0; huge ones
    mean "no limit" since a length varint cannot exceed 2**35 - 1)."""
    if not PyLong_Check(value):
        raise TypeError(f"max_frame_size must be an int, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"max_frame_size must be >= 0, got {value}")
    if value > 0xFFFFFFFFFFFFFFFF:
        return 0xFFFFFFFFFFFFFFFFULL
    return <u64>value


cdef object _decode_one(const unsigned char* p, Py_ssize_t n, u64 max_frame_size):
    cdef int code, k
    cdef u64 length
    cdef Reader r
    if n == 0:
        raise ProtocolError(PC_R_TRUNCATED, "no bytes: a frame needs at least 2")
    code = header_error(p[0])
    if code:
        raise ProtocolError(code, _header_error_message(p[0], code))
    k = parse_length(p + 1, n - 1, &length)
    if k < 0:
        raise ProtocolError(PC_R_VARINT_OVERRUN, "the body length varint is longer than 5 bytes")
    if k == 0:
        raise ProtocolError(PC_R_TRUNCATED, "the data ends inside the body length")
    if length > max_frame_size:
        raise ProtocolError(PC_R_FRAME_TOO_LARGE,
                            f"body length {length} is over the maximum frame size {max_frame_size}")
    if length > <u64>(n - 1 - k):
        raise ProtocolError(PC_R_TRUNCATED,
                            f"the data ends {length - <u64>(n - 1 - k)} byte(s) before the frame does")
    frame = _dec_body(p[0], p + 1 + k, <Py_ssize_t>length, &r)
    if r.err:
        raise ProtocolError(r.err, _body_error_message(p[0], <Py_ssize_t>length, &r))
    if <u64>(n - 1 - k) > length:
        raise ProtocolError(PC_R_TRAILING_BYTES,
                            f"{<u64>(n - 1 - k) - length} byte(s) follow the frame")
    return frame


def decode(data, *, max_frame_size=DEFAULT_MAX_FRAME_SIZE):
    """Decode exactly one whole frame from *data* (any bytes-like object).

    An incomplete frame is TRUNCATED, bytes after it TRAILING_BYTES; a body
    longer than *max_frame_size* is FRAME_TOO_LARGE.
    """
    cdef Py_buffer view
    cdef u64 limit = PC_DEFAULT_MAX_FRAME_SIZE
    if max_frame_size is not _DEFAULT_MAX_FRAME_SIZE:
        limit = _max_frame_size(max_frame_size)
    if PyBytes_CheckExact(data):
        return _decode_one(<const unsigned char*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), limit)
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        return _decode_one(<const unsigned char*>view.buf, view.len, limit)
    finally:
        PyBuffer_Release(&view)


# ----------------------------------------------------------------------------
# streaming decoder

cdef enum DecoderState:
    AT_HEADER = 0    # the next byte is a header
    IN_LENGTH = 1    # header seen, body length varint incomplete
    IN_BODY = 2      # length known and checked, body incomplete


cdef class Decoder:
    """Split a byte stream into frames, whatever the chunking.

    ``feed(chunk)`` returns the frames completed by *chunk*. At most one
    partial frame is buffered, and its body only after the body length
    passed the ``max_frame_size`` check. On bad bytes ``feed`` raises
    ``ProtocolError`` with the frames completed earlier in the same call in
    ``.frames``; the decoder is then failed and every later ``feed`` raises
    the same code.
    """

    cdef unsigned char* _buf        # body buffer (malloc), _cap bytes
    cdef Py_ssize_t _cap
    cdef Py_ssize_t _have           # body bytes buffered
    cdef Py_ssize_t _need           # body length of the partial frame
    cdef u64 _length                # body length accumulated while IN_LENGTH
    cdef int _length_bytes          # bytes of the length varint seen
    cdef DecoderState _state
    cdef unsigned char _header
    cdef u64 _max                   # the limit in C
    cdef object _max_frame_size     # and as given
    cdef int _failed                # 0, or the reason code the decoder failed with
    cdef str _failed_message

    def __cinit__(self):
        self._buf = NULL
        self._cap = 0
        self._state = AT_HEADER

    def __init__(self, max_frame_size=DEFAULT_MAX_FRAME_SIZE):
        self._max = _max_frame_size(max_frame_size)
        self._max_frame_size = max_frame_size

    def __dealloc__(self):
        free(self._buf)

    @property
    def max_frame_size(self):
        """The largest body length accepted."""
        return self._max_frame_size

    @property
    def pending(self):
        """Bytes buffered towards the next frame (header, length and body bytes)."""
        if self._state == IN_LENGTH:
            return 1 + self._length_bytes
        if self._state == IN_BODY:
            return 1 + self._length_bytes + self._have
        return 0

    def feed(self, data):
        """Every frame completed by *data* (any bytes-like object), in order."""
        cdef Py_buffer view
        if PyBytes_CheckExact(data):
            return self._feed(<const unsigned char*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            return self._feed(<const unsigned char*>view.buf, view.len)
        finally:
            PyBuffer_Release(&view)

    cdef int _fail(self, int code, str message, list frames) except -1:
        """Fail the decoder for good and raise the error."""
        self._failed = code
        self._failed_message = message
        self._state = AT_HEADER
        self._have = 0
        self._need = 0
        self._release_buffer()
        raise ProtocolError(code, message, frames)

    cdef void _release_buffer(self) noexcept:
        free(self._buf)
        self._buf = NULL
        self._cap = 0

    cdef int _start_body(self, unsigned char header, u64 length, int length_bytes) except -1:
        """Enter IN_BODY for a body of *length* (already checked) bytes."""
        if self._cap < <Py_ssize_t>length:
            self._release_buffer()
            self._buf = <unsigned char*>malloc(<size_t>length)
            if self._buf == NULL:
                raise MemoryError(f"cannot allocate a {length}-byte frame buffer")
            self._cap = <Py_ssize_t>length
        self._header = header
        self._length_bytes = length_bytes
        self._need = <Py_ssize_t>length
        self._have = 0
        self._state = IN_BODY
        return 0

    cdef list _feed(self, const unsigned char* data, Py_ssize_t n):
        cdef list frames = []
        cdef Py_ssize_t pos = 0, avail, take
        cdef int code, k
        cdef u64 length = 0
        cdef unsigned char b
        cdef Reader r
        if self._failed:
            raise ProtocolError(self._failed, f"the decoder already failed ({self._failed_message}); "
                                              f"open a new connection", [])
        while pos < n:
            if self._state == AT_HEADER:
                b = data[pos]
                code = header_error(b)
                if code:
                    self._fail(code, _header_error_message(b, code), frames)
                k = parse_length(data + pos + 1, n - pos - 1, &length)
                if k < 0:
                    self._fail(PC_R_VARINT_OVERRUN, "the body length varint is longer than 5 bytes", frames)
                if k == 0:
                    # the length continues in a later chunk
                    self._header = b
                    self._length = 0
                    self._length_bytes = 0
                    self._state = IN_LENGTH
                    pos += 1
                    continue
                if length > self._max:
                    self._fail(PC_R_FRAME_TOO_LARGE,
                               f"body length {length} is over the maximum frame size {self._max}", frames)
                pos += 1 + k
                avail = n - pos
                if length <= <u64>avail:
                    # the whole frame is in this chunk: decode it in place
                    frame = _dec_body(b, data + pos, <Py_ssize_t>length, &r)
                    if r.err:
                        self._fail(r.err, _body_error_message(b, <Py_ssize_t>length, &r), frames)
                    frames.append(frame)
                    pos += <Py_ssize_t>length
                    continue
                self._start_body(b, length, k)
                memcpy(self._buf, data + pos, avail)
                self._have = avail
                return frames
            elif self._state == IN_LENGTH:
                b = data[pos]
                pos += 1
                self._length |= (<u64>(b & 0x7F)) << (7 * self._length_bytes)
                self._length_bytes += 1
                if b & 0x80:
                    if self._length_bytes == 5:
                        self._fail(PC_R_VARINT_OVERRUN, "the body length varint is longer than 5 bytes",
                                   frames)
                    continue
                length = self._length
                if length > self._max:
                    self._fail(PC_R_FRAME_TOO_LARGE,
                               f"body length {length} is over the maximum frame size {self._max}", frames)
                if length == 0:
                    self._state = AT_HEADER
                    frame = _dec_body(self._header, data, 0, &r)
                    if r.err:
                        self._fail(r.err, _body_error_message(self._header, 0, &r), frames)
                    frames.append(frame)
                    continue
                if length <= <u64>(n - pos):
                    # the body is wholly in this chunk: decode it in place
                    self._state = AT_HEADER
                    frame = _dec_body(self._header, data + pos, <Py_ssize_t>length, &r)
                    if r.err:
                        self._fail(r.err, _body_error_message(self._header, <Py_ssize_t>length, &r),
                                   frames)
                    frames.append(frame)
                    pos += <Py_ssize_t>length
                    continue
                self._start_body(self._header, length, self._length_bytes)
            else:  # IN_BODY
                take = self._need - self._have
                if take > n - pos:
                    take = n - pos
                memcpy(self._buf + self._have, data + pos, take)
                self._have += take
                pos += take
                if self._have < self._need:
                    break
                self._state = AT_HEADER
                frame = _dec_body(self._header, self._buf, self._need, &r)
                if r.err:
                    self._fail(r.err, _body_error_message(self._header, self._need, &r), frames)
                frames.append(frame)
                if self._cap > KEEP_BUFFER:
                    self._release_buffer()
        return frames
