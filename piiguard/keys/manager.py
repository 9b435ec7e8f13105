"""KeyManager: the key table, the in-memory key cache and the key lifecycle.

The KMS is called per key, never per value: a key is unwrapped once and then served
from memory within :class:`~piiguard.keys.cache.CacheLimits`. The hot paths
(:meth:`KeyManager.active_dek` for writes, :meth:`KeyManager.dek` for reads) are a dict
lookup and a clock read; everything else takes a lock and may touch the database or KMS.

Lifecycle of a key: ``active`` (encrypts; one per kind and scope) -> ``decrypt_only``
(after rotation) -> ``retired`` (no row uses it; kept for the record) or ``destroyed``
(crypto-shredded: the wrapped key is erased, data under it is unreadable for good).

Refreshes never make the hot path wait for a lock someone else holds (the application's
own write transaction on SQLite, a row lock on the key row elsewhere) while the cached key
may still be used: the key table is read with a brief lock wait and, if it is busy, the
cached key is kept until the next soft-TTL refresh. Use counts are bookkeeping: they are
written with the same brief wait and, if that fails, kept in memory and written at a later
refresh. Only what cannot fall back on the cache (a rotation at ``max_uses``, a reload at
the hard TTL) waits as long as the connection usually would, and fails closed.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Iterator

from sqlalchemy import and_, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError, SQLAlchemyError

from piiguard.crypto.aead import DataKey
from piiguard.crypto.blind_index import BlindIndexKey
from piiguard.errors import (ConfigurationError, KeyDestroyedError, KeyInUseError, KMSError,
                             KMSUnavailableError, UnknownKeyError)
from piiguard.keys.cache import CacheLimits, Entry
from piiguard.keys.table import (ACTIVE, DECRYPT_ONLY, DEFAULT_TABLE_NAME, DESTROYED, KINDS,
                                 RETIRED, key_table)

log = logging.getLogger("piiguard.keys")

# How long a refresh that can fall back on the cached key, or a write of use counts, waits
# for a lock held by another connection. It runs inside whatever encryption or decryption
# found the cache stale, so it must stay far below the connection's usual wait (SQLite's
# busy timeout is 5 s by default); giving up only postpones the work to the next refresh.
_BRIEF_WAIT_MS = 50


@contextmanager
def _brief_lock_waits(conn: Connection) -> Iterator[Connection]:
    """A transaction on ``conn`` in which waiting for a lock held by another connection
    ends after about ``_BRIEF_WAIT_MS`` with an ``OperationalError``, instead of after the
    connection's usual wait (SQLite: the busy timeout; PostgreSQL: ``lock_timeout``, none
    by default; MariaDB/MySQL: ``innodb_lock_wait_timeout``, 50 s by default).

    PostgreSQL gets ``SET LOCAL``, which ends with the transaction. SQLite and
    MariaDB/MySQL set the wait for the session and put the connection's own value back
    afterwards, because pooled connections are reused. Other databases keep their waits.
    """
    dialect = conn.dialect
    if dialect.name == "postgresql":
        with conn.begin():
            conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{_BRIEF_WAIT_MS}ms'")
            yield conn
        return
    if dialect.name == "sqlite":
        get, put, brief = "PRAGMA busy_timeout", "PRAGMA busy_timeout = {}", _BRIEF_WAIT_MS
    elif dialect.name in ("mysql", "mariadb"):
        get = "SELECT @@SESSION.innodb_lock_wait_timeout"
        put = "SET SESSION innodb_lock_wait_timeout = {}"
        # Whole seconds: MariaDB takes 0 (do not wait at all); MySQL's least is 1.
        brief = 0 if getattr(dialect, "is_mariadb", False) else 1
    else:
        with conn.begin():
            yield conn
        return
    try:
        before = int(conn.exec_driver_sql(get).scalar())
        conn.exec_driver_sql(put.format(brief))
        conn.commit()
    except SQLAlchemyError:
        # A server without this setting (a MySQL look-alike): its own waits apply. If the
        # database is unreachable instead, the statements below fail as they would anyway.
        conn.rollback()
        with conn.begin():
            yield conn
        return
    try:
        with conn.begin():
            yield conn
    finally:
        try:
            conn.exec_driver_sql(put.format(before))
            conn.commit()
        except SQLAlchemyError:
            conn.invalidate()  # never hand the pool a connection that gives up early


@dataclass(frozen=True)
class KeyInfo:
    """One key table row, without key material (what ``keys status`` shows)."""

    id: int
    kind: str
    scope: str
    state: str
    master_key_id: str
    created_at: datetime
    state_changed_at: datetime | None
    destroyed_at: datetime | None
    encryption_count: int


def kms_context(kind: str, scope: str) -> dict[str, str]:
    """The encryption context the KMS binds to a wrapped key."""
    return {"piiguard:kind": kind, "piiguard:scope": scope}


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class KeyManager:
    """Owns one key table in one database and the plaintext keys cached from it."""

    def __init__(self, kms: Any, *, limits: CacheLimits | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], datetime] = _utcnow,
                 nonce_source: Callable[[int], bytes] | None = None,
                 table_name: str = DEFAULT_TABLE_NAME,
                 on_event: Callable[..., None] | None = None) -> None:
        self.kms = kms
        self.limits = limits or CacheLimits()
        self._clock = clock
        self.clock = clock
        self._wall = wall_clock
        self._nonce = nonce_source
        self.table = key_table(table_name)
        self.engine: Engine | None = None
        self._lock = threading.RLock()
        self._by_id: dict[int, Entry] = {}
        self._active: dict[tuple[str, str], Entry] = {}
        # scope -> (active index entry, fresh until, [usable index keys])
        self._index_sets: dict[str, tuple] = {}
        # ids of keys whose use count could not be written at the last try (warned once)
        self._unrecorded: set[int] = set()
        self._on_event = on_event or (lambda *a, **k: None)

    def __repr__(self) -> str:
        return (f"KeyManager(table={self.table.name!r}, cached={len(self._by_id)}, "
                f"kms={self.kms!r})")

    # -- binding ---------------------------------------------------------------------------
    def bind(self, engine: Engine) -> None:
        """Use ``engine``'s database for the key table, creating the table if missing."""
        try:
            self.table.create(engine, checkfirst=True)
        except (OperationalError, ProgrammingError, IntegrityError):
            # Another process created it between our check and our CREATE.
            with engine.connect() as conn:
                if not engine.dialect.has_table(conn, self.table.name):
                    raise
        self.engine = engine

    def _engine(self) -> Engine:
        if self.engine is None:
            raise ConfigurationError("this Guard is not bound to a database: call "
                                     "guard.bind(engine) first", operation="key lookup")
        return self.engine

    # -- hot paths -------------------------------------------------------------------------
    # An entry is fresh while clock() < entry.expires (soft TTL since the key table was
    # last consulted, hard TTL since the KMS unwrapped it); entry.wexpires is the same
    # for writing and -inf once the key is no longer the active one.
    def write_entry(self, scope: str, kind: str = "dek") -> Entry:
        """The cache entry of the active key of ``kind`` in ``scope`` (no use counted)."""
        entry = self._active.get((kind, scope))
        if entry is not None and entry.uses < self.limits.max_uses \
                and self._clock() < entry.wexpires:
            return entry
        return self._refresh_active(kind, scope)

    def read_entry(self, key_id: int, kind: str = "dek") -> Entry:
        """The cache entry of key ``key_id`` for decryption (any state but destroyed)."""
        entry = self._by_id.get(key_id)
        if entry is not None and entry.kind == kind and self._clock() < entry.expires:
            return entry
        return self._load(key_id, kind)

    def active_dek(self, scope: str) -> DataKey:
        """The DEK that encrypts new values in ``scope`` (counts one use)."""
        entry = self.write_entry(scope)
        entry.uses += 1
        return entry.key

    def dek(self, key_id: int) -> DataKey:
        """The DEK with ``key_id``, for decryption (any state but destroyed)."""
        return self.read_entry(key_id).key

    def active_index_key(self, scope: str) -> BlindIndexKey:
        return self.write_entry(scope, "index").key

    def index_key(self, key_id: int) -> BlindIndexKey:
        return self.read_entry(key_id, "index").key

    def usable_index_keys(self, scope: str) -> list[BlindIndexKey]:
        """Index keys that lookups consult: the active one first, then every
        decrypt-only one (the blind-index rotation window)."""
        active = self.write_entry(scope, "index")
        cached = self._index_sets.get(scope)
        now = self._clock()
        if cached is not None and cached[0] is active and now < cached[1]:
            return cached[2]
        t = self.table
        q = select(t.c.id).where(t.c.kind == "index", t.c.scope == scope,
                                 t.c.state == DECRYPT_ONLY).order_by(t.c.id)
        try:
            with self._engine().connect() as conn:
                # With a set to fall back on, never wait for another connection's lock
                # (a lookup would stall for SQLite's busy timeout).
                with _brief_lock_waits(conn) if cached is not None else conn.begin():
                    ids = conn.execute(q).scalars().all()
        except SQLAlchemyError:
            if cached is None:
                raise
            log.warning("key table busy or unreachable; lookups keep the cached index "
                        "keys of scope %s until the next refresh", scope)
            ids = [k.id for k in cached[2] if k.id != active.key.id]
        keys = [active.key, *(self.index_key(i) for i in ids)]
        self._index_sets[scope] = (active, now + self.limits.soft_ttl, keys)
        return keys

    def cached_index_key_count(self, scope: str) -> int | None:
        """How many index keys lookups in ``scope`` consult, if the cache knows it right
        now without asking the key table or the KMS; else None."""
        active = self._active.get(("index", scope))
        cached = self._index_sets.get(scope)
        now = self._clock()
        if active is None or cached is None or cached[0] is not active \
                or now >= active.wexpires or now >= cached[1]:
            return None
        return len(cached[2])

    def pseudonym_key(self, scope: str = "default") -> BlindIndexKey:
        return self.active_index_like("pseudonym", scope)

    def active_index_like(self, kind: str, scope: str) -> BlindIndexKey:
        return self.write_entry(scope, kind).key

    # -- slow paths ------------------------------------------------------------------------
    def _make_key(self, kind: str, key_id: int, material: bytes):
        if kind == "dek":
            if self._nonce is not None:
                return DataKey(key_id, material, nonce_source=self._nonce)
            return DataKey(key_id, material)
        return BlindIndexKey(key_id, material)

    def _unwrap(self, row: Any, prev: Entry | None = None) -> Entry:
        if row.state == DESTROYED or row.wrapped_key is None:
            raise KeyDestroyedError("key was destroyed (crypto-shredded)", key_id=row.id,
                                    operation="decrypt")
        material = self.kms.decrypt_data_key(bytes(row.wrapped_key), row.master_key_id,
                                             kms_context(row.kind, row.scope))
        persisted = row.encryption_count or 0
        if prev is not None and prev.id == row.id:
            # prev.flushed_uses also counts what we wrote after ``row`` was read
            persisted = max(persisted, prev.flushed_uses)
        entry = Entry(self._make_key(row.kind, row.id, material), row.kind, row.scope,
                      row.state, self._clock(), self.limits, persisted)
        if prev is not None and prev.id == row.id and prev.uses > prev.flushed_uses:
            entry.uses += prev.uses - prev.flushed_uses  # counted, not yet in the table
            prev.flushed_uses = prev.uses  # the new entry writes them, not the old one
        self._by_id[row.id] = entry
        return entry

    def _row(self, conn, key_id: int):
        return conn.execute(select(self.table).where(self.table.c.id == key_id)).first()

    def _load(self, key_id: int, kind: str) -> Entry:
        with self._lock:
            cached = self._by_id.get(key_id)
            now = self._clock()
            # Within the hard TTL the cached key may serve if the key table is busy.
            can_wait_less = cached is not None and now - cached.loaded < self.limits.hard_ttl
            try:
                with self._engine().connect() as conn:
                    if can_wait_less:
                        with _brief_lock_waits(conn):
                            row = self._row(conn, key_id)
                    else:
                        row = self._row(conn, key_id)
            except SQLAlchemyError:
                if can_wait_less and cached.kind == kind:
                    log.warning("key table busy or unreachable; using cached key id=%s "
                                "until the next refresh", key_id)
                    cached.touch(now)  # retry after the soft TTL, not on every read
                    return cached
                raise
            if row is None or row.kind != kind:
                self._forget(key_id)
                raise UnknownKeyError(f"no {kind} key with this id", key_id=key_id,
                                      operation="decrypt")
            if row.state == DESTROYED:
                self._forget(key_id)
                raise KeyDestroyedError("key was destroyed (crypto-shredded)", key_id=key_id,
                                        operation="decrypt")
            if cached is not None and now - cached.loaded < self.limits.hard_ttl:
                cached.set_state(row.state)
                cached.touch(now)
                return cached
            self._forget(key_id)
            return self._unwrap(row, cached)

    def has_key(self, key_id: int, kind: str = "dek") -> bool:
        """True if the key table has (or had: destroyed keys count) this key."""
        entry = self._by_id.get(key_id)
        if entry is not None:
            return entry.kind == kind
        with self._engine().connect() as conn:
            row = self._row(conn, key_id)
        return row is not None and row.kind == kind

    def _forget(self, key_id: int) -> None:
        entry = self._by_id.pop(key_id, None)
        if entry is not None:
            entry.invalidate()
            if self._active.get((entry.kind, entry.scope)) is entry:
                del self._active[(entry.kind, entry.scope)]

    def _refresh_active(self, kind: str, scope: str) -> Entry:
        with self._lock:
            old = self._active.get((kind, scope))
            now = self._clock()
            if old is not None and (now - old.checked < self.limits.soft_ttl
                                    and now - old.loaded < self.limits.hard_ttl
                                    and old.uses < self.limits.max_uses):
                return old  # another thread refreshed it while we waited
            # While the cached key may still encrypt, a busy key table is no reason to
            # wait: read it briefly, or keep the cached key until the next refresh.
            can_wait_less = old is not None and now - old.loaded < self.limits.hard_ttl \
                and old.uses < self.limits.max_uses
            try:
                row = self._active_row(kind, scope, brief=can_wait_less)
                if row is not None and kind == "dek":
                    used = row.encryption_count or 0
                    if old is not None and row.id == old.id:
                        if used > old.flushed_uses:  # other Guards/processes count too
                            old.uses += used - old.flushed_uses
                            old.flushed_uses = used
                        used = old.uses
                    self._flush_uses(old, brief=True)  # before a rotation: its final count
                    if used >= self.limits.max_uses:
                        row = self._rotate(kind, scope, expect_id=row.id, reason="max_uses")
                elif row is None:
                    self._flush_uses(old, brief=True)
                    row = self._create_active(kind, scope)
            except SQLAlchemyError:
                if old is not None and now - old.loaded < self.limits.hard_ttl \
                        and old.uses < self.limits.max_uses:
                    log.warning("key table busy or unreachable; keeping cached %s key id=%s "
                                "until the next refresh", kind, old.id)
                    old.touch(now)
                    return old
                raise
            if old is not None and row.id == old.id and now - old.loaded < self.limits.hard_ttl:
                old.touch(now)
                return old
            cached = self._by_id.get(row.id)
            if cached is not None and now - cached.loaded < self.limits.hard_ttl:
                entry = cached
                entry.touch(now)
            else:
                try:
                    entry = self._unwrap(row, cached)
                except KMSUnavailableError:
                    # A new active key we cannot unwrap yet: keep writing under the
                    # previous key (still decryptable) until the hard TTL.
                    if old is not None and now - old.loaded < self.limits.hard_ttl \
                            and old.uses < self.limits.max_uses:
                        log.warning("KMS unavailable; still encrypting under key id=%s",
                                    old.id)
                        old.touch(now)  # retry after the soft TTL, not on every write
                        return old
                    raise
            if old is not None and old is not entry:
                old.set_state(DECRYPT_ONLY)
            entry.set_state(ACTIVE)
            entry.touch(now)
            self._active[(kind, scope)] = entry
            return entry

    def _active_row(self, kind: str, scope: str, *, brief: bool = False):
        """The row of the active key of ``kind``/``scope`` (None if there is none); with
        ``brief``, waiting for another connection's lock is cut short (OperationalError)."""
        t = self.table
        query = select(t).where(t.c.active_slot == f"{kind}:{scope}")
        with self._engine().connect() as conn:
            if brief:
                with _brief_lock_waits(conn):
                    return conn.execute(query).first()
            return conn.execute(query).first()

    def _create_active(self, kind: str, scope: str, conn=None):
        """Insert a new active key for ``kind``/``scope``; on a race, use the winner's."""
        if kind not in KINDS:
            raise ConfigurationError(f"unknown key kind {kind!r}")
        pair = self.kms.generate_data_key(kms_context(kind, scope))
        values = dict(kind=kind, scope=scope, state=ACTIVE, active_slot=f"{kind}:{scope}",
                      wrapped_key=pair.wrapped, master_key_id=pair.master_key_id,
                      created_at=self._wall(), encryption_count=0)
        try:
            if conn is not None:
                new_id = conn.execute(self.table.insert().values(**values)).inserted_primary_key[0]
            else:
                with self._engine().begin() as c:
                    new_id = c.execute(self.table.insert().values(**values)).inserted_primary_key[0]
        except IntegrityError:
            if conn is not None:
                raise
            row = self._active_row(kind, scope)
            if row is None:
                raise
            return row
        self._on_event("key.create", key_id=new_id, kind=kind, scope=scope,
                       master_key_id=pair.master_key_id)
        # Cache the plaintext we already hold: no KMS call to unwrap what we just made.
        entry = Entry(self._make_key(kind, new_id, pair.plaintext), kind, scope, ACTIVE,
                      self._clock(), self.limits)
        self._by_id[new_id] = entry
        with self._engine().connect() as c:
            return self._row(c, new_id)

    def _flush_uses(self, entry: Entry | None, *, brief: bool = False) -> bool:
        """Add the encryptions counted in ``entry`` but not yet in the key table to its
        row's ``encryption_count``. True once they are there.

        With ``brief`` (a refresh on the hot path) the write gives up after a short wait
        for a lock held elsewhere and returns False: the count stays pending in memory
        (``uses - flushed_uses``) for the next refresh. Otherwise errors propagate."""
        if entry is None or entry.kind != "dek":
            return True
        delta = entry.uses - entry.flushed_uses
        if delta <= 0:
            return True
        t = self.table
        bump = update(t).where(t.c.id == entry.id) \
            .values(encryption_count=t.c.encryption_count + delta)
        if not brief:
            with self._engine().begin() as conn:
                conn.execute(bump)
        else:
            try:
                with self._engine().connect() as conn, _brief_lock_waits(conn):
                    conn.execute(bump)
            except SQLAlchemyError:
                # Once per streak: a long transaction would repeat it every soft TTL.
                level = logging.DEBUG if entry.id in self._unrecorded else logging.WARNING
                self._unrecorded.add(entry.id)
                log.log(level, "could not write the use count of key id=%s without waiting "
                        "(key table busy?); %d uses stay counted in memory and are written "
                        "at a later refresh", entry.id, delta)
                return False
        if self._unrecorded:
            self._unrecorded.discard(entry.id)
        # += delta, not = uses: encryptions counted while the UPDATE ran stay pending.
        entry.flushed_uses += delta
        return True

    def flush(self) -> None:
        """Record in the key table how many encryptions each cached DEK has done."""
        with self._lock:
            for entry in list(self._by_id.values()):
                try:
                    self._flush_uses(entry)
                except SQLAlchemyError:
                    log.warning("could not record the use count of key id=%s", entry.id)

    def clear_cache(self) -> None:
        """Drop every plaintext key from memory (next use unwraps through the KMS)."""
        with self._lock:
            self.flush()
            for entry in self._by_id.values():
                entry.invalidate()
            self._by_id.clear()
            self._active.clear()

    # -- lifecycle -------------------------------------------------------------------------
    def ensure_active(self, kind: str, scope: str) -> int:
        """Make sure ``kind``/``scope`` has an active key (no KMS call if it has one)."""
        with self._lock:
            row = self._active_row(kind, scope)
            if row is None:
                row = self._create_active(kind, scope)
            return row.id

    def _rotate(self, kind: str, scope: str, *, expect_id: int | None, reason: str):
        t = self.table
        pair = self.kms.generate_data_key(kms_context(kind, scope))
        now = self._wall()
        with self._engine().begin() as conn:
            cond = t.c.active_slot == f"{kind}:{scope}"
            if expect_id is not None:
                cond = and_(cond, t.c.id == expect_id)
            demoted = conn.execute(update(t).where(cond).values(
                state=DECRYPT_ONLY, active_slot=None, state_changed_at=now)).rowcount
            if expect_id is not None and demoted == 0:
                new_row = None  # someone else rotated first; use theirs
            else:
                new_id = conn.execute(t.insert().values(
                    kind=kind, scope=scope, state=ACTIVE, active_slot=f"{kind}:{scope}",
                    wrapped_key=pair.wrapped, master_key_id=pair.master_key_id,
                    created_at=now, encryption_count=0)).inserted_primary_key[0]
                new_row = self._row(conn, new_id)
        if new_row is None:
            return self._active_row(kind, scope)
        for entry in self._by_id.values():
            if entry.kind == kind and entry.scope == scope and entry.id != new_row.id:
                entry.set_state(DECRYPT_ONLY)
        self._by_id[new_row.id] = Entry(self._make_key(kind, new_row.id, pair.plaintext),
                                        kind, scope, ACTIVE, self._clock(), self.limits)
        self._active[(kind, scope)] = self._by_id[new_row.id]
        self._on_event("key.rotate", key_id=new_row.id, kind=kind, scope=scope,
                       previous_key_id=expect_id, reason=reason)
        return new_row

    def rotate(self, kind: str = "dek", scope: str = "default") -> int:
        """Create a new active key; the previous one becomes decrypt-only."""
        with self._lock:
            self._flush_uses(self._active.get((kind, scope)))
            return self._rotate(kind, scope, expect_id=None, reason="requested").id

    def keys(self, *, kind: str | None = None, scope: str | None = None,
             states: Iterable[str] | None = None) -> list[KeyInfo]:
        t = self.table
        q = select(t).order_by(t.c.id)
        if kind is not None:
            q = q.where(t.c.kind == kind)
        if scope is not None:
            q = q.where(t.c.scope == scope)
        if states is not None:
            q = q.where(t.c.state.in_(list(states)))
        with self._engine().connect() as conn:
            rows = conn.execute(q).all()
        return [KeyInfo(r.id, r.kind, r.scope, r.state, r.master_key_id, r.created_at,
                        r.state_changed_at, r.destroyed_at, r.encryption_count or 0)
                for r in rows]

    def set_state(self, key_id: int, state: str, *, expect: Iterable[str]) -> None:
        self._index_sets.clear()
        t = self.table
        values: dict[str, Any] = dict(state=state, state_changed_at=self._wall(),
                                      active_slot=None)
        if state == DESTROYED:
            values.update(wrapped_key=None, destroyed_at=self._wall())
        with self._engine().begin() as conn:
            n = conn.execute(update(t).where(t.c.id == key_id, t.c.state.in_(list(expect)))
                             .values(**values)).rowcount
            if n == 0:
                row = self._row(conn, key_id)
                if row is None:
                    raise UnknownKeyError("no key with this id", key_id=key_id,
                                          operation=f"set state {state}")
                raise KeyInUseError(f"key is {row.state}; cannot become {state}",
                                    key_id=key_id, operation=f"set state {state}")
        with self._lock:
            if state in (DESTROYED, RETIRED):
                self._forget(key_id)

    def retire(self, key_id: int) -> None:
        """Mark a decrypt-only key retired (the caller checks no row uses it)."""
        self.set_state(key_id, RETIRED, expect=(DECRYPT_ONLY,))
        self._on_event("key.retire", key_id=key_id)

    def destroy(self, key_id: int) -> None:
        """Crypto-shred: erase the wrapped key; data under it can never be read again."""
        self.set_state(key_id, DESTROYED, expect=(ACTIVE, DECRYPT_ONLY, RETIRED))
        self._on_event("key.destroy", key_id=key_id)

    def rewrap(self, dest_master_key_id: str, *, batch: int = 100,
               progress: Callable[[int], None] | None = None) -> int:
        """Rewrap every stored key under ``dest_master_key_id``; resumable (rows already
        under the destination key are skipped). Returns how many keys were rewrapped."""
        t = self.table
        done = 0
        while True:
            with self._engine().connect() as conn:
                rows = conn.execute(select(t).where(
                    t.c.master_key_id != dest_master_key_id, t.c.wrapped_key.is_not(None))
                    .order_by(t.c.id).limit(batch)).all()
            if not rows:
                break
            for row in rows:
                try:
                    wrapped = self.kms.rewrap(bytes(row.wrapped_key), row.master_key_id,
                                              dest_master_key_id,
                                              kms_context(row.kind, row.scope))
                except KMSError:
                    raise
                with self._engine().begin() as conn:
                    conn.execute(update(t).where(t.c.id == row.id,
                                                 t.c.master_key_id == row.master_key_id)
                                 .values(wrapped_key=wrapped, master_key_id=dest_master_key_id))
                done += 1
                self._on_event("key.rewrap", key_id=row.id, master_key_id=dest_master_key_id,
                               previous_master_key_id=row.master_key_id)
                if progress:
                    progress(1)
        return done
