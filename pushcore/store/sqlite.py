"""SQLiteStore: the default offline store, one SQLite file in WAL mode.

Durability. The file is opened in WAL mode. With ``synchronous="NORMAL"``
(the default) every committed call survives a crash or kill of the process;
a power loss or OS crash may lose the last few commits (SQLite does not
fsync the WAL at each commit) but never corrupts the file. With
``synchronous="FULL"`` each commit is fsynced and survives power loss too,
at a cost per commit (see benchmarks/store_bench.py).

Layout (``PRAGMA user_version`` = 2; a version-1 file, from before
idempotency keys, gains the ``idempotency_keys`` table when it is opened)::

    devices(device TEXT PRIMARY KEY, last_seq INTEGER, stored INTEGER)
        -- the seq counter, and how many messages the device has stored
    messages(device, seq, message_id, payload, priority, expiry,
             collapse_key, topic, created, PRIMARY KEY (device, seq))
        + index (device, collapse_key) where collapse_key != ''
        + index (expiry, device) where expiry != 0       -- purge_expired
        + index (device, expiry) where expiry != 0       -- the cap's expired-first step
    subscriptions(topic, device, PRIMARY KEY (topic, device))
        + index (device, topic)
    seq_floor(id = 0, value)   -- the highest counter of a dropped device record
    idempotency_keys(key PRIMARY KEY, device, seq, message_id, digest, created, expires)
        + index (expires)                                -- purge_expired
        -- written in the append's transaction; digest = what the key names

The counter lives apart from the messages, so acking every message (or
dropping them) never lets a seq come back, also across restarts. ``stored``
is kept equal to the device's row count in ``messages`` by every statement
that adds or deletes rows (in the same transaction), so the cap check and
``stats()`` never count rows: an append is two statements, also for a
device sitting at its cap.

``drop_empty_devices`` deletes the records of devices with ``stored = 0``
(a sweep in device order, a bounded number of rows per call) and raises
``seq_floor`` to the highest counter it deleted, in the same transaction; a
new record starts above the floor (read once per append transaction), so
several processes sharing the file agree on it.

Each writing call is one transaction (``BEGIN IMMEDIATE``: it takes the
write lock up front, so several processes may share one file and wait up to
*timeout* seconds for each other instead of failing on a lock upgrade). The
wait blocks the calling thread (in a gateway the store pipeline's writer,
not the loop), and *timeout* is short (1 s by default).
:meth:`~pushcore.store.Store.group` makes many calls one transaction (group
commit: one ``BEGIN IMMEDIATE`` ... ``COMMIT``, a savepoint per call, so a
call that fails undoes only itself); ``commits`` counts the commits. A write that
still cannot take the lock, or that fails on I/O, a full disk or a
read-only file, raises :class:`~pushcore.store.StoreUnavailable` and marks
the store unwritable (:meth:`~pushcore.store.Store.health`); until a write
or :meth:`~pushcore.store.Store.probe` succeeds again, writes do not wait
for the lock at all (busy timeout 0), so an outage stalls the loop at most
once, not at every write. Reads go on (WAL readers do not need the lock). A
commit costs far more than a row, hence ``append_batch`` / ``append_many``.
Worker processes each open their own store after ``fork()``; a store object
must not cross a fork. The same SQL strings
are reused so the sqlite3 module's statement cache keeps them prepared.
``message_id`` (u64) is stored as the signed 64-bit integer with the same
bits, since SQLite integers are signed.
"""
from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .base import (
    DEFAULT_IDEMPOTENCY_WINDOW,
    DEFAULT_MAX_MESSAGES,
    KeyPlan,
    KeyRecord,
    MessageFields,
    SeqExhausted,
    Store,
    StoredMessage,
    StoreError,
    StoreHealth,
    StoreUnavailable,
    plan_keys,
)

__all__ = ["SQLiteStore"]

SCHEMA_VERSION = 2
_MIN_SQLITE = (3, 35, 0)
_SYNCHRONOUS = ("NORMAL", "FULL")
#: Seconds a write waits for another connection's write lock (while the store is writable).
DEFAULT_BUSY_TIMEOUT = 1.0
_U64 = 2**64
_I64_MAX = 2**63 - 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    device   TEXT PRIMARY KEY,
    last_seq INTEGER NOT NULL,
    stored   INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages (
    device       TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    message_id   INTEGER NOT NULL,
    payload      BLOB NOT NULL,
    priority     INTEGER NOT NULL,
    expiry       INTEGER NOT NULL,
    collapse_key TEXT NOT NULL,
    topic        TEXT NOT NULL,
    created      REAL NOT NULL,
    PRIMARY KEY (device, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS messages_by_collapse_key
    ON messages (device, collapse_key) WHERE collapse_key != '';
CREATE INDEX IF NOT EXISTS messages_by_expiry
    ON messages (expiry, device) WHERE expiry != 0;
CREATE INDEX IF NOT EXISTS messages_by_device_expiry
    ON messages (device, expiry) WHERE expiry != 0;
CREATE TABLE IF NOT EXISTS subscriptions (
    topic  TEXT NOT NULL,
    device TEXT NOT NULL,
    PRIMARY KEY (topic, device)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS subscriptions_by_device ON subscriptions (device, topic);
"""

# Version 2: idempotency keys (also run on a version-1 file to migrate it).
_SCHEMA_V2 = """
CREATE TABLE IF NOT EXISTS idempotency_keys (
    key        TEXT PRIMARY KEY,
    device     TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    message_id INTEGER NOT NULL,
    digest     BLOB NOT NULL,
    created    REAL NOT NULL,
    expires    REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idempotency_keys_by_expiry ON idempotency_keys (expires);
"""
_KEY_CHUNK = 64  # keys looked up per statement (padded with NULLs, so the statement is always the same)
_KEY_LOOKUP = (
    "SELECT key, device, seq, message_id, digest, created, expires FROM idempotency_keys "
    f"WHERE key IN ({', '.join('?' * _KEY_CHUNK)}) AND expires > ?"
)
_KEY_INSERT = "INSERT OR REPLACE INTO idempotency_keys VALUES (?, ?, ?, ?, ?, ?, ?)"
_KEY_EXPIRED = "SELECT 1 FROM idempotency_keys WHERE expires <= ? LIMIT 1"
_KEY_PURGE = (
    "DELETE FROM idempotency_keys WHERE key IN "
    "(SELECT key FROM idempotency_keys WHERE expires <= ? ORDER BY expires LIMIT ?)"
)

# Statements (kept as constants: identical strings hit the prepared-statement cache).
_NEXT_SEQ = (  # counts the row about to be inserted in `stored` already; ?2 is the seq floor
    "INSERT INTO devices (device, last_seq, stored) VALUES (?1, ?2 + 1, 1) "
    "ON CONFLICT (device) DO UPDATE SET last_seq = last_seq + 1, stored = stored + 1 "
    f"WHERE last_seq < {_I64_MAX} RETURNING last_seq, stored"
)
_SET_STORED = "UPDATE devices SET stored = ? WHERE device = ?"
# The set-based fan-out (SQLiteStore._append_fanout): ?1 is a JSON array of distinct device ids.
_FANOUT_CHUNK = 20_000  # devices per statement pair (bounds the JSON text and the answer)
_FANOUT_MIN = 8  # fewer devices: the row path is as fast
_FANOUT_NEXT_SEQS = (  # "WHERE true": an upsert's SELECT needs a WHERE to parse
    "INSERT INTO devices (device, last_seq, stored) SELECT value, ?2 + 1, 1 FROM json_each(?1) WHERE true "
    "ON CONFLICT (device) DO UPDATE SET last_seq = last_seq + 1, stored = stored + 1 "
    f"WHERE last_seq < {_I64_MAX} RETURNING device, last_seq, stored"
)
# A publish walked in pages of the subscriptions index (SQLiteStore._append_topic). Each
# statement has a first-page form and a "after device ?2" form: one WHERE with "?2 IS NULL OR"
# would make SQLite search the index from the topic's first row on every page (quadratic).
def _topic_statements(after: bool) -> tuple[str, str, str, str]:
    lower = "AND device > ?2 " if after else "AND ?2 IS NULL "
    s_lower = "AND s.device > ?2 " if after else "AND ?2 IS NULL "
    return (
        "INSERT INTO devices (device, last_seq, stored) "
        f"SELECT device, ?4 + 1, 1 FROM subscriptions WHERE topic = ?1 {lower}"
        "ORDER BY device LIMIT ?3 "
        "ON CONFLICT (device) DO UPDATE SET last_seq = last_seq + 1, stored = stored + 1 "
        f"WHERE last_seq < {_I64_MAX} RETURNING device, last_seq, stored",
        f"SELECT count(*) FROM subscriptions WHERE topic = ?1 {lower}",
        f"SELECT count(*) FROM subscriptions WHERE topic = ?1 {lower}AND device <= ?3",
        "INSERT INTO messages SELECT s.device, d.last_seq, ?4, ?5, ?6, ?7, '', ?1, ?8 "
        "FROM subscriptions AS s JOIN devices AS d ON d.device = s.device "
        f"WHERE s.topic = ?1 {s_lower}AND s.device <= ?3",
    )


_TOPIC_FIRST = _topic_statements(after=False)
_TOPIC_NEXT = _topic_statements(after=True)
_TOPIC_EXHAUSTED = (
    "SELECT s.device FROM subscriptions AS s JOIN devices AS d ON d.device = s.device "
    f"WHERE s.topic = ?1 AND d.last_seq >= {_I64_MAX} ORDER BY s.device LIMIT 1"
)
_FANOUT_INSERT = (
    "INSERT INTO messages SELECT d.device, d.last_seq, ?2, ?3, ?4, ?5, ?6, ?7, ?8 "
    "FROM json_each(?1) AS j JOIN devices AS d ON d.device = j.value"
)
_SUBTRACT_STORED = "UPDATE devices SET stored = stored - ? WHERE device = ?"
_COLLAPSE = "DELETE FROM messages WHERE device = ? AND collapse_key = ? AND collapse_key != ''"
_INSERT = "INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
_DELETE_EXPIRED_OF_DEVICE = (
    "DELETE FROM messages WHERE device = ? AND expiry != 0 AND expiry <= ?"
)
_NTH_OLDEST_SEQ = "SELECT seq FROM messages WHERE device = ? ORDER BY seq LIMIT 1 OFFSET ?"
_DELETE_UP_TO = "DELETE FROM messages WHERE device = ? AND seq <= ?"
_RANGE = (
    "SELECT seq, message_id, payload, priority, expiry, collapse_key, topic, created "
    "FROM messages WHERE device = ? AND seq > ? AND (expiry = 0 OR expiry > ?) "
    "ORDER BY seq LIMIT ?"
)
_BACKLOG = (
    "SELECT count(*) FROM messages WHERE device = ? AND seq > ? AND (expiry = 0 OR expiry > ?)"
)
_LAST_SEQ = "SELECT last_seq FROM devices WHERE device = ?"
_ADVANCE_SEQ = (  # a new record starts at the seq floor if that is higher: no seq is handed out twice
    "INSERT INTO devices (device, last_seq, stored) "
    "VALUES (?1, max(?2, coalesce((SELECT value FROM seq_floor WHERE id = 0), 0)), 0) "
    "ON CONFLICT (device) DO UPDATE SET last_seq = max(last_seq, ?2) RETURNING last_seq"
)
_EXPIRED_PER_DEVICE = (
    "SELECT count(*), device FROM messages INDEXED BY messages_by_expiry "
    "WHERE expiry != 0 AND expiry <= ? GROUP BY device"
)
_PURGE = "DELETE FROM messages WHERE expiry != 0 AND expiry <= ?"
_PURGE_SOME = (
    "DELETE FROM messages WHERE (device, seq) IN (SELECT device, seq FROM messages "
    "INDEXED BY messages_by_expiry WHERE expiry != 0 AND expiry <= ? ORDER BY expiry LIMIT ?) "
    "RETURNING device"
)
_FLOOR_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS seq_floor (id INTEGER PRIMARY KEY CHECK (id = 0), value INTEGER NOT NULL)"
)
_FLOOR = "SELECT coalesce((SELECT value FROM seq_floor WHERE id = 0), 0)"
_RAISE_FLOOR = (
    "INSERT INTO seq_floor (id, value) VALUES (0, ?1) "
    "ON CONFLICT (id) DO UPDATE SET value = max(value, ?1)"
)
_SWEEP_DEVICES = "SELECT device, stored FROM devices WHERE device > ? ORDER BY device LIMIT ?"
_DROP_EMPTY_DEVICE = "DELETE FROM devices WHERE device = ? AND stored = 0 RETURNING last_seq"
_DROP_ALL_EMPTY_DEVICES = "DELETE FROM devices WHERE stored = 0 RETURNING last_seq"
_EXPIRED_AGAINST_STORED = (
    "SELECT e.n, d.stored FROM (SELECT device, count(*) AS n FROM messages INDEXED BY messages_by_expiry "
    "WHERE expiry != 0 AND expiry <= ? GROUP BY device) AS e JOIN devices AS d ON d.device = e.device"
)
_DEVICES_WITH_BACKLOG = (
    "SELECT device FROM devices WHERE stored > 0 AND EXISTS (SELECT 1 FROM messages "
    "WHERE messages.device = devices.device AND (expiry = 0 OR expiry > ?)) ORDER BY device"
)
_SIZES = "SELECT coalesce(sum(stored), 0), count(*) FILTER (WHERE stored > 0) FROM devices"
_SUBSCRIBE = "INSERT OR IGNORE INTO subscriptions (topic, device) VALUES (?, ?)"
_UNSUBSCRIBE = "DELETE FROM subscriptions WHERE topic = ? AND device = ?"
_SUBSCRIBERS = "SELECT device FROM subscriptions WHERE topic = ?"
_TOPICS = "SELECT topic FROM subscriptions WHERE device = ?"


def _signed(message_id: int) -> int:
    return message_id - _U64 if message_id > _I64_MAX else message_id


def _fanout_fields(pairs: list[tuple[str, MessageFields]]) -> MessageFields | None:
    """The one message of an append that may take the set-based fan-out, else None.

    That is: enough pairs, every one the same message (one ``MessageFields``),
    no collapse key or idempotency key (they need per-device steps), distinct
    devices, and no NUL in an id (SQLite's text comparisons stop there).
    """
    if len(pairs) < _FANOUT_MIN:
        return None
    fields = pairs[0][1]
    if fields.collapse_key or fields.idempotency_key:
        return None
    for _device, other in pairs:
        if other is not fields:
            return None
    devices = {device for device, _fields in pairs}
    if len(devices) != len(pairs) or any("\x00" in device for device in devices):
        return None
    return fields


def _message(row: tuple[Any, ...]) -> StoredMessage:
    seq, message_id, payload, priority, expiry, collapse_key, topic, created = row
    if message_id < 0:
        message_id += _U64
    return StoredMessage(seq, message_id, payload, priority, expiry, collapse_key, topic, created)


def _create_private(path: str) -> None:
    """Create *path* empty with mode 0600 if it does not exist yet.

    The store holds payloads and device ids, so other local users must not
    read it (the secret files are 0600 too). SQLite gives the -wal and -shm
    files it creates the mode of the database file. An existing file keeps
    its mode: the operator chose it.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError:
        return  # sqlite3.connect reports the real problem (missing directory, ...)
    os.close(fd)


class SQLiteStore(Store):
    """Durable :class:`~pushcore.store.Store` in one SQLite file (WAL). Thread-safe (one lock).

    *path* is a file path (created if missing; ``":memory:"`` gives a
    private in-memory database, not durable and not in WAL mode).
    *synchronous* is ``"NORMAL"`` (survives a process crash) or ``"FULL"``
    (survives power loss); *timeout* is how long a write waits, in seconds,
    for another connection holding the write lock (default 1 s; 0 while the
    store is unwritable, see the module doc).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_messages: int = DEFAULT_MAX_MESSAGES,
        synchronous: str = "NORMAL",
        timeout: float = DEFAULT_BUSY_TIMEOUT,
        idempotency_window: float = DEFAULT_IDEMPOTENCY_WINDOW,
    ) -> None:
        super().__init__(max_messages=max_messages, idempotency_window=idempotency_window)
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or os.PathLike, not {type(path).__name__}")
        path = os.fspath(path)
        if not path:
            raise ValueError("path must not be empty (use ':memory:' for a throwaway database)")
        if synchronous not in _SYNCHRONOUS:
            raise ValueError(f"synchronous must be 'NORMAL' or 'FULL', got {synchronous!r}")
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout < 0:
            raise ValueError(f"timeout must be seconds >= 0, got {timeout!r}")
        if sqlite3.sqlite_version_info < _MIN_SQLITE:
            raise StoreError(
                f"SQLiteStore needs SQLite >= 3.35 (UPSERT ... RETURNING); this Python links "
                f"SQLite {sqlite3.sqlite_version}"
            )
        self.path = path
        self.synchronous = synchronous
        self._busy_ms = int(timeout * 1000)
        if path != ":memory:":
            _create_private(path)
        try:
            self._db = sqlite3.connect(
                path,
                timeout=timeout,
                isolation_level=None,  # we issue BEGIN/COMMIT ourselves
                check_same_thread=False,  # guarded by self._lock instead
                cached_statements=64,
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the SQLite store {path!r}: {exc}") from exc
        try:
            self._setup()
        except sqlite3.Error as exc:
            self._db.close()
            hint = ("another process holds its write lock (a running gateway migrating or writing it?); "
                    "try again once it is done" if "locked" in str(exc)
                    else "is it a SQLite file? is its directory writable?")
            raise StoreError(f"cannot use {path!r} as a pushcore SQLite store: {exc} ({hint})") from exc
        except BaseException:
            self._db.close()
            raise

    def _setup(self) -> None:
        db = self._db
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, 1, SCHEMA_VERSION):
            raise StoreError(
                f"{self.path!r} has pushcore store schema version {version}; this pushcore "
                f"reads versions 1 to {SCHEMA_VERSION} (1 is migrated on open): use a newer "
                f"pushcore or a new file"
            )
        if self.path != ":memory:":
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise StoreError(f"{self.path!r} could not be switched to WAL mode (got {mode!r})")
        db.execute(f"PRAGMA synchronous={self.synchronous}")
        db.execute(_FLOOR_SCHEMA)  # also in files made before records were dropped: no version bump
        if version != SCHEMA_VERSION:
            # A new file gets the whole layout; a version-1 file only what version 2 added.
            script = (_SCHEMA if version == 0 else "") + _SCHEMA_V2
            db.execute("BEGIN IMMEDIATE")
            try:
                for statement in script.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def __repr__(self) -> str:
        return (
            f"SQLiteStore({self.path!r}, max_messages={self.max_messages}, "
            f"synchronous={self.synchronous!r})"
        )

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: commit on success, roll back on any error.

        An error that says the file cannot be written now (locked past the
        busy timeout, I/O error, disk full, read-only, corrupt) marks the
        store unwritable and raises :class:`StoreUnavailable`; while it is
        unwritable the busy timeout is 0 (a write tries the lock once), and
        the first commit that works restores it and marks the store writable.
        Inside a :meth:`~pushcore.store.Store.group` it is a savepoint of the
        group's transaction instead: an error undoes this call alone, an
        outage fails the whole group.
        """
        db = self._db
        if self._group_depth:
            yield from self._savepoint(db)
            return
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self._write_failed(exc) from exc
        try:
            yield db
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise self._write_failed(exc) from exc
        except BaseException:
            self._rollback()
            raise
        self._commits += 1
        if not self._health.writable:
            self._db.execute(f"PRAGMA busy_timeout={self._busy_ms}")
            self._writable()

    def _savepoint(self, db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        """One call inside a group: a savepoint, released on success, rolled back to on error.

        Once the group has failed, nothing more runs in it: some errors
        (SQLITE_FULL, I/O errors) make SQLite roll back the group's whole
        transaction, and a ``SAVEPOINT`` outside a transaction would begin a
        new one that its ``RELEASE`` commits, so the calls after the failure
        would commit one by one, and then run again when the pipeline retries
        the failed group call by call (a push stored twice).
        """
        if self._group_error is not None:
            raise self._group_error
        if not db.in_transaction:
            self._group_error = self._unwritable("the group's transaction was rolled back by SQLite")
            raise self._group_error
        try:
            db.execute("SAVEPOINT pc_call")
        except sqlite3.Error as exc:
            error = self._write_failed(exc)
            if isinstance(error, StoreUnavailable):
                self._group_error = error
            raise error from exc
        try:
            yield db
        except BaseException as exc:
            try:
                if db.in_transaction:  # else SQLite already rolled the whole group back (disk full)
                    db.execute("ROLLBACK TO pc_call")
                    db.execute("RELEASE pc_call")
            except sqlite3.Error as undo:
                if self._group_error is None:
                    error = self._write_failed(undo)
                    if isinstance(error, StoreUnavailable):
                        self._group_error = error
            if isinstance(exc, sqlite3.Error):
                error = self._write_failed(exc)
                if isinstance(error, StoreUnavailable):
                    self._group_error = error
                raise error from exc
            raise
        try:
            db.execute("RELEASE pc_call")
        except sqlite3.Error as exc:
            error = self._write_failed(exc)
            if isinstance(error, StoreUnavailable):
                self._group_error = error
            raise error from exc

    def _group_begin(self) -> None:
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self._write_failed(exc) from exc

    def _group_end(self, *, commit: bool) -> None:
        if not commit:
            self._rollback()
            return
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise self._write_failed(exc) from exc
        if not self._health.writable:
            self._db.execute(f"PRAGMA busy_timeout={self._busy_ms}")
            self._writable()

    def _rollback(self) -> None:
        db = self._db
        if db.in_transaction:
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:  # an I/O error may fail the rollback too; SQLite rolls back on close
                pass

    def _write_failed(self, exc: sqlite3.Error) -> StoreError:
        """The error to raise for a failed write: :class:`StoreUnavailable` for an outage."""
        if not isinstance(exc, sqlite3.OperationalError) and type(exc) is not sqlite3.DatabaseError:
            return StoreError(f"SQLite store {self.path!r}: {exc}")  # a bug (IntegrityError, ...), not an outage
        if self._health.writable:
            try:
                self._db.execute("PRAGMA busy_timeout=0")
            except sqlite3.Error:
                pass
        return self._unwritable(str(exc))

    def _probe(self) -> None:
        # Rewriting the schema version is a real write (one page into the WAL) that changes nothing.
        with self._write() as db:
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    _watch_db: sqlite3.Connection | None = None

    def check_writable(self) -> StoreHealth:
        # A connection of its own (the watcher's thread only), so a lock held by another
        # process stalls this thread for the busy timeout, never the loop's writes.
        if self.path == ":memory:" or self.closed or not self._health.writable:
            return self._health
        try:
            db = self._watch_db
            if db is None:
                db = self._watch_db = sqlite3.connect(self.path, timeout=self._busy_ms / 1000,
                                                      isolation_level=None, check_same_thread=False)
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            if isinstance(exc, sqlite3.OperationalError) or type(exc) is sqlite3.DatabaseError:
                with self._lock:
                    if not self.closed:
                        self._unwritable(str(exc))
                        self._db.execute("PRAGMA busy_timeout=0")  # as after a failed write: no waits
        return self._health

    # -- messages --

    def _append(self, pairs: list[tuple[str, MessageFields]], now: float) -> list[StoredMessage]:
        try:
            return self._append_written(pairs, now)
        except StoreUnavailable:
            # A retry whose every item repeats a remembered key needs no write: answer it
            # from a read (WAL readers are not blocked by a writer), also during an outage.
            replays = self._replays_only(pairs, now)
            if replays is None:
                raise
            return replays

    def _replays_only(self, pairs: list[tuple[str, MessageFields]], now: float) -> list[StoredMessage] | None:
        """The answers of an append whose items all repeat remembered keys; None if it must write."""
        if not any(fields.idempotency_key for _device, fields in pairs):
            return None
        try:
            keys = plan_keys(pairs, self._lookup_keys(self._db, pairs, now).get)  # conflicts raise
        except sqlite3.Error:
            return None
        if keys is None or keys.new or len(keys.replays) != len(pairs):
            return None
        out: list[StoredMessage] = []
        for i, (_device, fields) in enumerate(pairs):
            out.append(keys.replayed(i, fields, out))
        return out

    def _append_written(self, pairs: list[tuple[str, MessageFields]], now: float) -> list[StoredMessage]:
        cap = self._max_messages
        collapsed = dropped = expired = 0
        out: list[StoredMessage] = []
        fanout = _fanout_fields(pairs)
        with self._write() as db:
            execute = db.execute
            floor = execute(_FLOOR).fetchone()[0]  # once per transaction: a new record starts above it
            if fanout is not None:
                return self._append_fanout(db, pairs, fanout, floor, now)
            keys = plan_keys(pairs, self._lookup_keys(db, pairs, now).get)
            replays = keys.replays if keys is not None else None
            for i, (device_id, fields) in enumerate(pairs):
                if replays and i in replays:
                    assert keys is not None
                    out.append(keys.replayed(i, fields, out))
                    continue
                row = execute(_NEXT_SEQ, (device_id, floor)).fetchone()
                if row is None:
                    raise SeqExhausted(device_id)
                seq, stored = row
                key = fields.collapse_key
                changed = False
                if key:
                    gone = execute(_COLLAPSE, (device_id, key)).rowcount
                    if gone:
                        collapsed += gone
                        stored -= gone
                        changed = True
                execute(
                    _INSERT,
                    (
                        device_id,
                        seq,
                        _signed(fields.message_id),
                        fields.payload,
                        fields.priority,
                        fields.expiry,
                        key,
                        fields.topic,
                        now,
                    ),
                )
                if stored > cap:
                    e, d = self._make_room(db, device_id, stored, now)
                    expired += e
                    dropped += d
                    stored -= e + d
                    changed = True
                if changed:
                    execute(_SET_STORED, (stored, device_id))
                out.append(
                    StoredMessage(
                        seq,
                        fields.message_id,
                        fields.payload,
                        fields.priority,
                        fields.expiry,
                        key,
                        fields.topic,
                        now,
                    )
                )
            if keys is not None and keys.new:
                self._remember(db, pairs, out, keys, now)
        self._collapsed += collapsed
        self._dropped_by_cap += dropped
        self._expired += expired
        return out

    def _append_fanout(self, db: sqlite3.Connection, pairs: list[tuple[str, MessageFields]],
                       fields: MessageFields, floor: int, now: float) -> list[StoredMessage]:
        """One message for many distinct devices, set-based: two statements per chunk, not two per device.

        The counters of a chunk are raised in one upsert (``RETURNING`` the
        new seqs), and the rows are inserted by one ``INSERT ... SELECT``
        joining the chunk's ids to their raised counters, so SQLite does the
        per-device work in C. A device at the last seq is left out of the
        upsert's answer: the call then raises :class:`SeqExhausted` and the
        transaction rolls back (the caller's per-device path follows). The
        cap is applied to the devices the upsert says are over it.
        """
        execute = db.execute
        seqs: dict[str, int] = {}
        over: list[tuple[str, int]] = []
        cap = self._max_messages
        message_id = _signed(fields.message_id)
        for start in range(0, len(pairs), _FANOUT_CHUNK):
            chunk = [device for device, _fields in pairs[start:start + _FANOUT_CHUNK]]
            ids = json.dumps(chunk)
            rows = execute(_FANOUT_NEXT_SEQS, (ids, floor)).fetchall()
            if len(rows) != len(chunk):
                raised = {device for device, _seq, _stored in rows}
                raise SeqExhausted(next(device for device in chunk if device not in raised))
            for device, seq, stored in rows:
                seqs[device] = seq
                if stored > cap:
                    over.append((device, stored))
            execute(_FANOUT_INSERT, (ids, message_id, fields.payload, fields.priority, fields.expiry,
                                     fields.collapse_key, fields.topic, now))
        expired = dropped = 0
        for device, stored in over:
            e, d = self._make_room(db, device, stored, now)
            expired += e
            dropped += d
            execute(_SET_STORED, (stored - e - d, device))
        self._dropped_by_cap += dropped
        self._expired += expired
        payload, priority, expiry, key, topic = (
            fields.payload, fields.priority, fields.expiry, fields.collapse_key, fields.topic)
        return [StoredMessage(seqs[device], fields.message_id, payload, priority, expiry, key, topic, now)
                for device, _fields in pairs]

    def _append_topic(self, topic: str, fields: MessageFields, now: float,
                      keep: Callable[[str], bool] | None) -> tuple[int, list[str], list[int]]:
        """A publish without listing the subscribers in Python: SQLite walks them in pages.

        Per page of ``_FANOUT_CHUNK`` subscribers (keyset order of the
        subscriptions index): one upsert raises their counters straight from
        the subscriptions table (``RETURNING`` the new seqs, of which only the
        kept devices' are held), and one ``INSERT ... SELECT`` joins the same
        range to the raised counters. So memory is one page plus the kept
        devices, whatever the topic's size. A collapse key (a per-device
        delete) or observers (told per stored message) take the listing path.
        """
        if fields.collapse_key or self._observers:
            return super()._append_topic(topic, fields, now, keep)
        cap = self._max_messages
        message_id = _signed(fields.message_id)
        count = expired = dropped = 0
        kept_devices: list[str] = []
        kept_seqs: list[int] = []
        with self._write() as db:
            execute = db.execute
            floor = execute(_FLOOR).fetchone()[0]
            after: str | None = None
            while True:
                next_seqs, count_after, count_range, insert = _TOPIC_FIRST if after is None else _TOPIC_NEXT
                rows = execute(next_seqs, (topic, after, _FANOUT_CHUNK, floor)).fetchall()
                if len(rows) < _FANOUT_CHUNK:  # the last page: every subscriber left must be in it
                    left = execute(count_after, (topic, after)).fetchone()[0]
                    if left != len(rows):
                        raise SeqExhausted(execute(_TOPIC_EXHAUSTED, (topic,)).fetchone()[0])
                if not rows:
                    break
                last = max(device for device, _seq, _stored in rows)
                if len(rows) == _FANOUT_CHUNK:
                    within = execute(count_range, (topic, after, last)).fetchone()[0]
                    if within != len(rows):
                        raise SeqExhausted(execute(_TOPIC_EXHAUSTED, (topic,)).fetchone()[0])
                execute(insert, (topic, after, last, message_id, fields.payload, fields.priority,
                                        fields.expiry, now))
                count += len(rows)
                for device, seq, stored in rows:
                    if stored > cap:
                        e, d = self._make_room(db, device, stored, now)
                        expired += e
                        dropped += d
                        execute(_SET_STORED, (stored - e - d, device))
                    if keep is None or keep(device):
                        kept_devices.append(device)
                        kept_seqs.append(seq)
                if len(rows) < _FANOUT_CHUNK:
                    break
                after = last
        self._dropped_by_cap += dropped
        self._expired += expired
        return count, kept_devices, kept_seqs

    @staticmethod
    def _lookup_keys(db: sqlite3.Connection, pairs: list[tuple[str, MessageFields]],
                     now: float) -> dict[str, KeyRecord]:
        """The unexpired records of the keys *pairs* carry (none: no query)."""
        wanted = [fields.idempotency_key for _device, fields in pairs if fields.idempotency_key]
        found: dict[str, KeyRecord] = {}
        for start in range(0, len(wanted), _KEY_CHUNK):
            chunk: list[str | float | None] = list(wanted[start:start + _KEY_CHUNK])
            chunk += [None] * (_KEY_CHUNK - len(chunk))
            chunk.append(now)
            for key, device, seq, message_id, digest, created, expires in db.execute(_KEY_LOOKUP, chunk):
                found[key] = KeyRecord(device, seq, message_id + _U64 if message_id < 0 else message_id,
                                       digest, created, expires)
        return found

    def _remember(self, db: sqlite3.Connection, pairs: list[tuple[str, MessageFields]],
                  out: list[StoredMessage], keys: KeyPlan, now: float) -> None:
        expires = now + self._idempotency_window
        db.executemany(_KEY_INSERT, [
            (pairs[i][1].idempotency_key, pairs[i][0], out[i].seq, _signed(out[i].message_id), digest, now, expires)
            for i, digest in keys.new.items()
        ])

    def _purge_keys(self, now: float, limit: int | None) -> int:
        if self._db.execute(_KEY_EXPIRED, (now,)).fetchone() is None:
            return 0  # nothing to forget: no write lock taken
        with self._write() as db:
            return db.execute(_KEY_PURGE, (now, -1 if limit is None else limit)).rowcount

    def _make_room(self, db: sqlite3.Connection, device_id: str, stored: int, now: float) -> tuple[int, int]:
        """Apply the cap policy to a device holding *stored* (> cap) messages.

        Deletes its expired messages first, then its oldest; returns
        ``(expired deleted, dropped by the cap)``. The caller fixes ``stored``.
        """
        expired = db.execute(_DELETE_EXPIRED_OF_DEVICE, (device_id, now)).rowcount
        excess = stored - expired - self._max_messages
        if excess <= 0:
            return expired, 0
        cut = db.execute(_NTH_OLDEST_SEQ, (device_id, excess - 1)).fetchone()[0]
        return expired, db.execute(_DELETE_UP_TO, (device_id, cut)).rowcount

    def _range(self, device_id: str, after_seq: int, limit: int, now: float) -> list[StoredMessage]:
        rows = self._db.execute(_RANGE, (device_id, after_seq, now, limit)).fetchall()
        return [_message(row) for row in rows]

    def _ack(self, device_id: str, seq: int) -> int:
        with self._write() as db:
            removed = db.execute(_DELETE_UP_TO, (device_id, seq)).rowcount
            if removed:
                db.execute(_SUBTRACT_STORED, (removed, device_id))
            return removed

    def _ack_many(self, acks: list[tuple[str, int]]) -> int:
        total = 0
        with self._write() as db:
            for device_id, seq in acks:
                removed = db.execute(_DELETE_UP_TO, (device_id, seq)).rowcount
                if removed:
                    db.execute(_SUBTRACT_STORED, (removed, device_id))
                    total += removed
        return total

    def _last_seq(self, device_id: str) -> int:
        row = self._db.execute(_LAST_SEQ, (device_id,)).fetchone()
        if row is None:
            return 0
        seq: int = row[0]
        return seq

    def _advance_seq(self, device_id: str, seq: int) -> int:
        if seq == 0:
            return self._last_seq(device_id)
        with self._write() as db:
            advanced: int = db.execute(_ADVANCE_SEQ, (device_id, seq)).fetchone()[0]
            return advanced

    def _backlog(self, device_id: str, after_seq: int, now: float) -> int:
        count: int = self._db.execute(_BACKLOG, (device_id, after_seq, now)).fetchone()[0]
        return count

    def _purge_expired(self, now: float, limit: int | None) -> int:
        with self._write() as db:
            if limit is not None:
                per_device: dict[str, int] = {}
                for (device_id,) in db.execute(_PURGE_SOME, (now, limit)).fetchall():
                    per_device[device_id] = per_device.get(device_id, 0) + 1
                db.executemany(_SUBTRACT_STORED, [(n, d) for d, n in per_device.items()])
                return sum(per_device.values())
            expired = db.execute(_EXPIRED_PER_DEVICE, (now,)).fetchall()
            if not expired:
                return 0
            db.executemany(_SUBTRACT_STORED, expired)
            removed: int = db.execute(_PURGE, (now,)).rowcount
            return removed

    _sweep_from = ""  # the device the sweep of drop_empty_devices goes on after

    def _drop_empty_devices(self, limit: int | None) -> tuple[int, bool]:
        with self._write() as db:
            if limit is None:
                counters = [row[0] for row in db.execute(_DROP_ALL_EMPTY_DEVICES).fetchall()]
                more = False
            else:
                looks = 8 * limit  # rows looked at per call, most of them usually not empty
                rows = db.execute(_SWEEP_DEVICES, (self._sweep_from, looks)).fetchall()
                empty = [device for device, stored in rows if stored == 0]
                counters = []
                for device in empty[:limit]:
                    row = db.execute(_DROP_EMPTY_DEVICE, (device,)).fetchone()
                    if row is not None:
                        counters.append(row[0])
                more = len(rows) == looks or len(empty) > limit
                if len(empty) > limit:
                    self._sweep_from = empty[limit - 1]
                else:
                    self._sweep_from = rows[-1][0] if more else ""
            if counters:
                db.execute(_RAISE_FLOOR, (max(counters),))
            return len(counters), more

    def _backlog_sizes(self, now: float) -> tuple[int, int]:
        messages, devices = self._sizes()
        for expired, stored in self._db.execute(_EXPIRED_AGAINST_STORED, (now,)):
            messages -= expired
            if expired == stored:
                devices -= 1
        return messages, devices

    def _devices_with_backlog(self, now: float) -> list[str]:
        return [row[0] for row in self._db.execute(_DEVICES_WITH_BACKLOG, (now,))]

    def _sizes(self) -> tuple[int, int]:
        messages: int
        devices: int
        messages, devices = self._db.execute(_SIZES).fetchone()
        return messages, devices

    # -- subscriptions --

    def _subscribe(self, device_id: str, topics: list[str]) -> int:
        with self._write() as db:
            return db.executemany(_SUBSCRIBE, [(t, device_id) for t in topics]).rowcount

    def _unsubscribe(self, device_id: str, topics: list[str]) -> int:
        with self._write() as db:
            return db.executemany(_UNSUBSCRIBE, [(t, device_id) for t in topics]).rowcount

    def _subscribers(self, topic: str) -> set[str]:
        return {row[0] for row in self._db.execute(_SUBSCRIBERS, (topic,))}

    def _topics(self, device_id: str) -> set[str]:
        return {row[0] for row in self._db.execute(_TOPICS, (device_id,))}

    def _close(self) -> None:
        self._db.close()
        if self._watch_db is not None:
            self._watch_db.close()

    # -- token revocations --
    # Their own table, created on first use with IF NOT EXISTS: a store file made
    # before revocations existed gains it without a schema-version bump.

    _revocations_ready = False

    def _revocations_table(self, *, create: bool) -> bool:
        """Whether the table exists; with *create*, make it first if it does not.

        Looked up with a read first: HELLO reads revocations, and must not need
        a write (which fails while the store is unwritable) once the table exists.
        """
        if not self._revocations_ready:
            if self._db.execute(_REVOCATIONS_EXIST).fetchone() is None:
                if not create:
                    return False
                with self._write() as db:
                    db.execute(_REVOCATIONS_SCHEMA)
                # Inside a group the table exists only if the group commits.
                self.on_rollback(self._forget_revocations_table)
            self._revocations_ready = True
        return True

    def _forget_revocations_table(self) -> None:
        self._revocations_ready = False

    def _set_revoked_before(self, device_id: str, ts: float) -> None:
        self._revocations_table(create=True)
        with self._write() as db:
            db.execute(_SET_REVOKED, (device_id, ts))

    def _revoked_before(self, device_id: str) -> float | None:
        if not self._revocations_table(create=False):
            return None  # no revocation was ever recorded in this file
        try:
            row = self._db.execute(_REVOKED, (device_id,)).fetchone()
        except sqlite3.OperationalError as exc:
            if "no such table" not in str(exc):
                raise
            # Another connection's rollback (or a restore of an older file) took the table away.
            self._revocations_ready = False
            return None
        return None if row is None else float(row[0])


_REVOCATIONS_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS revocations (device TEXT PRIMARY KEY, before REAL NOT NULL) WITHOUT ROWID"
)
_SET_REVOKED = (
    "INSERT INTO revocations (device, before) VALUES (?1, ?2) "
    "ON CONFLICT (device) DO UPDATE SET before = ?2"
)
_REVOKED = "SELECT before FROM revocations WHERE device = ?"
_REVOCATIONS_EXIST = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'revocations'"
