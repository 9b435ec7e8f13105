"""KeyManager: serves plaintext keys from the cache and runs the key lifecycle.

The KMS is called per key-encryption key, never per value or per subject: data, index and
pseudonym keys are wrapped locally under a KEK (:mod:`~piiguard.keys.hierarchy`), unwrapped
once and then served from memory within :class:`~piiguard.keys.cache.CacheLimits`
(a bounded, least-recently-used cache). The hot paths
(:meth:`KeyManager.write_entry` / :meth:`~KeyManager.active_dek` for writes,
:meth:`~KeyManager.read_entry` for reads) are a dict lookup and a clock read; everything
else takes a lock and may touch the key table (:class:`~piiguard.keys.store.KeyStore`)
or the KMS. The manager decides *when*; the store owns the SQL, the cache the freshness
rules.

Lifecycle of a key: ``active`` (encrypts; one per kind and scope) -> ``decrypt_only``
(after rotation) -> ``retired`` (no row uses it; kept for the record) or ``destroyed``
(crypto-shredded: the wrapped key is erased, data under it is unreadable for good).

Refreshes never make the hot path wait for a lock someone else holds (the application's
own write transaction on SQLite, a row lock on the key row elsewhere) while the cached key
may still be used: the key table is read with a brief lock wait
(:func:`~piiguard.keys.locks.brief_lock_waits`) and, if it is busy, the cached key is kept
until the next soft-TTL refresh. Use counts are bookkeeping: they are written with the
same brief wait and, if that fails, kept in memory and written at a later refresh. Only
what cannot fall back on the cache (a rotation at ``max_uses``, a reload at the hard TTL)
waits as long as the connection usually would, and fails closed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import TypeVar

from sqlalchemy import Table
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from piiguard.crypto.aead import DataKey
from piiguard.crypto.blind_index import BlindIndexKey
from piiguard.errors import (ConfigurationError, KeyDestroyedError, KMSUnavailableError,
                             ScopeErasedError, UnknownKeyError)
from piiguard.keys.cache import CacheLimits, Entry, IndexKeySet, KeyCache
from piiguard.keys.hierarchy import KeyHierarchy, NewKeys, kms_context
from piiguard.keys.store import KeyInfo, KeyRow, KeyStore, LocalWrap, StaleKekError
from piiguard.keys.table import (ACTIVE, DECRYPT_ONLY, DEFAULT_TABLE_NAME, DESTROYED, ERASED,
                                 KEY_KINDS, RETIRED, key_table)
from piiguard.kms.base import KeyProvider

__all__ = ["KeyManager", "KeyInfo", "kms_context", "utcnow"]

log = logging.getLogger("piiguard.keys")
_T = TypeVar("_T")


def _erased(kind: str, scope: str, operation: str = "create key") -> ScopeErasedError:
    return ScopeErasedError("key scope was erased; re-open it explicitly (piiguard keys "
                            "reopen) before writing to it again",
                            scope=scope, operation=f"{operation} ({kind})")


def utcnow() -> datetime:
    """The current time in UTC (the default wall clock of the key table's timestamps)."""
    return datetime.now(timezone.utc)


class KeyManager:
    """Owns one key table in one database and the plaintext keys cached from it."""

    def __init__(self, kms: KeyProvider, *, limits: CacheLimits | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], datetime] = utcnow,
                 nonce_source: Callable[[int], bytes] | None = None,
                 table_name: str = DEFAULT_TABLE_NAME,
                 on_event: Callable[..., None] | None = None) -> None:
        self.kms = kms
        self.limits = limits or CacheLimits()
        #: Monotonic seconds; what the cache's TTLs are measured in (readers share it).
        self.clock = clock
        self._wall = wall_clock
        #: the key table's wall clock (UTC datetimes; injectable in tests)
        self.wall_clock = wall_clock
        self._nonce = nonce_source
        self.store = KeyStore(key_table(table_name))
        self.cache = KeyCache(self.limits.capacity)
        self._lock = threading.RLock()
        # ids of keys whose use count could not be written at the last try (warned once)
        self._unrecorded: set[int] = set()
        self._on_event = on_event or (lambda *a, **k: None)
        #: KEKs, and the local wrapping of every other key
        self.hierarchy = KeyHierarchy(kms, self.store, self.limits, clock, wall_clock,
                                      self._on_event)

    def __repr__(self) -> str:
        return (f"KeyManager(table={self.table.name!r}, cached={len(self.cache)}, "
                f"kms={self.kms!r})")

    # -- binding ---------------------------------------------------------------------------
    @property
    def table(self) -> Table:
        """The key table (a SQLAlchemy ``Table``)."""
        return self.store.table

    @property
    def engine(self) -> Engine | None:
        """The engine of the key table's database; None until :meth:`bind`."""
        return self.store.engine

    @engine.setter
    def engine(self, engine: Engine | None) -> None:
        self.store.engine = engine

    def bind(self, engine: Engine) -> None:
        """Use ``engine``'s database for the key table, creating the table if missing."""
        self.store.bind(engine)

    # -- hot paths -------------------------------------------------------------------------
    # An entry is fresh while clock() < entry.expires; entry.wexpires is the same for
    # writing and -inf once the key is no longer the active one (see keys.cache).
    def write_entry(self, scope: str, kind: str = "dek") -> Entry:
        """The cache entry of the active key of ``kind`` in ``scope`` (no use counted)."""
        entry = self.cache.active.get((kind, scope))
        if entry is not None and entry.uses < self.limits.max_uses \
                and self.clock() < entry.wexpires:
            return self.cache.used(entry)
        return self._refresh_active(kind, scope)

    def read_entry(self, key_id: int, kind: str = "dek") -> Entry:
        """The cache entry of key ``key_id`` for decryption (any state but destroyed)."""
        entry = self.cache.by_id.get(key_id)
        if entry is not None and entry.kind == kind and self.clock() < entry.expires:
            return self.cache.used(entry)
        return self._load(key_id, kind)

    def active_dek(self, scope: str) -> DataKey:
        """The DEK that encrypts new values in ``scope`` (counts one use)."""
        entry = self.write_entry(scope)
        entry.uses += 1
        return entry.key

    def active_index_key(self, scope: str) -> BlindIndexKey:
        """The index key that blind indexes of new values in ``scope`` are made with."""
        return self.write_entry(scope, "index").key

    def index_key(self, key_id: int) -> BlindIndexKey:
        """The index key with ``key_id`` (active or decrypt-only)."""
        return self.read_entry(key_id, "index").key

    def pseudonym_key(self, scope: str = "default") -> BlindIndexKey:
        """The active key of ``pseudonym`` masks in ``scope``."""
        return self.write_entry(scope, "pseudonym").key

    def usable_index_keys(self, scope: str) -> list[BlindIndexKey]:
        """Index keys that lookups consult: the active one first, then every
        decrypt-only one (the blind-index rotation window)."""
        active = self.write_entry(scope, "index")
        cached = self.cache.index_sets.get(scope)
        now = self.clock()
        if cached is not None and cached.serves(active, now):
            return cached.keys
        try:
            # With a set to fall back on, never wait for another connection's lock
            # (a lookup would stall for SQLite's busy timeout).
            ids = self.store.decrypt_only_ids("index", scope, brief=cached is not None)
        except SQLAlchemyError:
            if cached is None:
                raise
            log.warning("key table busy or unreachable; lookups keep the cached index "
                        "keys of scope %s until the next refresh", scope)
            ids = [k.id for k in cached.keys if k.id != active.key.id]
        keys = [active.key, *(self.index_key(i) for i in ids)]
        self.cache.index_sets[scope] = IndexKeySet(active, now + self.limits.soft_ttl, keys)
        return keys

    def cached_index_key_count(self, scope: str) -> int | None:
        """How many index keys lookups in ``scope`` consult, if the cache knows it right
        now without asking the key table or the KMS; else None."""
        active = self.cache.active.get(("index", scope))
        cached = self.cache.index_sets.get(scope)
        now = self.clock()
        if active is None or cached is None or now >= active.wexpires \
                or not cached.serves(active, now):
            return None
        return len(cached.keys)

    # -- loading and refreshing ------------------------------------------------------------
    def _make_key(self, kind: str, key_id: int, material: bytes) -> DataKey | BlindIndexKey:
        if kind == "dek":
            if self._nonce is not None:
                return DataKey(key_id, material, nonce_source=self._nonce)
            return DataKey(key_id, material)
        return BlindIndexKey(key_id, material)

    def _unwrap(self, row: KeyRow, prev: Entry | None = None) -> Entry:
        """Unwrap ``row``'s key (locally under its KEK; format-1 rows through the KMS)
        and cache it; ``prev`` is the entry it replaces (its uses not yet in the key table
        move to the new entry)."""
        material = self.hierarchy.unwrap(row)
        same = prev if prev is not None and prev.id == row.id else None
        recorded = row.encryption_count
        if same is not None:
            # same.flushed_uses also counts what we wrote after ``row`` was read
            recorded = max(recorded, same.flushed_uses)
        entry = Entry(self._make_key(row.kind, row.id, material), row.kind, row.scope,
                      row.state, self.clock(), self.limits, recorded)
        if same is not None and same.pending_uses > 0:
            entry.uses += same.pending_uses  # counted, not yet in the table
            same.flushed_uses = same.uses    # the new entry writes them, not the old one
        entry.uses += self.cache.evicted_uses.pop(row.id, 0)   # counted before eviction
        return self.cache.put(entry)

    def _load(self, key_id: int, kind: str) -> Entry:
        with self._lock:
            cached = self.cache.by_id.get(key_id)
            now = self.clock()
            # Within the hard TTL the cached key may serve if the key table is busy.
            can_wait_less = cached is not None and cached.within_hard_ttl(now)
            try:
                row = self.store.row(key_id, brief=can_wait_less)
            except SQLAlchemyError:
                if cached is not None and can_wait_less and cached.kind == kind:
                    log.warning("key table busy or unreachable; using cached key id=%s "
                                "until the next refresh", key_id)
                    cached.touch(now)  # retry after the soft TTL, not on every read
                    return cached
                raise
            if row is None or row.kind != kind:
                self.cache.forget(key_id)
                raise UnknownKeyError(f"no {kind} key with this id", key_id=key_id,
                                      operation="decrypt")
            if row.state == DESTROYED:
                self.cache.forget(key_id)
                raise KeyDestroyedError("key was destroyed (crypto-shredded)", key_id=key_id,
                                        operation="decrypt")
            if cached is not None and cached.within_hard_ttl(now):
                cached.set_state(row.state)
                cached.touch(now)
                return cached
            self.cache.forget(key_id)
            return self._unwrap(row, cached)

    def _refresh_active(self, kind: str, scope: str) -> Entry:
        with self._lock:
            old = self.cache.active.get((kind, scope))
            now = self.clock()
            if old is not None and old.recently_checked(now) and old.may_encrypt(now):
                return old  # another thread refreshed it while we waited
            # While the cached key may still encrypt, a busy key table is no reason to
            # wait: read it briefly, or keep the cached key until the next refresh.
            try:
                row = self.store.active_row(kind, scope,
                                            brief=old is not None and old.may_encrypt(now))
                if row is not None and row.state == ERASED:
                    self._flush_uses(old, brief=True)
                    if old is not None:
                        self.cache.forget(old.id)
                    raise _erased(kind, scope, "encrypt")
                if row is not None and kind == "dek":
                    used = row.encryption_count
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
                if old is not None and old.may_encrypt(now):
                    log.warning("key table busy or unreachable; keeping cached %s key id=%s "
                                "until the next refresh", kind, old.id)
                    old.touch(now)
                    return old
                raise
            if old is not None and row.id == old.id and old.within_hard_ttl(now):
                old.touch(now)
                return old
            entry = self.cache.by_id.get(row.id)
            if entry is None or not entry.within_hard_ttl(now):
                try:
                    entry = self._unwrap(row, entry)
                except KMSUnavailableError:
                    # A new active key we cannot unwrap yet: keep writing under the
                    # previous key (still decryptable) until the hard TTL.
                    if old is not None and old.may_encrypt(now):
                        log.warning("KMS unavailable; still encrypting under key id=%s",
                                    old.id)
                        old.touch(now)  # retry after the soft TTL, not on every write
                        return old
                    raise
            if old is not None and old is not entry:
                old.set_state(DECRYPT_ONLY)
            entry.set_state(ACTIVE)
            entry.touch(now)
            self.cache.activate(entry)
            return entry

    def _create_active(self, kind: str, scope: str) -> KeyRow:
        """Make a new active key for ``kind``/``scope``; on a race, use the winner's."""
        if kind not in KEY_KINDS:
            raise ConfigurationError(f"unknown key kind {kind!r}")
        new, added = self._fresh_keys(kind, [scope], lambda wrap: self.store.insert_active(
            kind, scope, wrap, self._wall()))
        if not added.created:
            if added.row.state == ERASED:
                raise _erased(kind, scope)
            return added.row
        self._on_event("key.create", key_id=added.row.id, kind=kind, scope=scope,
                       master_key_id=new.wrap.master_key_id)
        # Cache the plaintext we already hold: nothing to unwrap for what we just made.
        self.cache.put(Entry(self._make_key(kind, added.row.id, new.material[scope]), kind,
                             scope, ACTIVE, self.clock(), self.limits))
        return added.row

    def _rotate(self, kind: str, scope: str, *, expect_id: int | None,
                reason: str) -> KeyRow:
        """A new active key for ``kind``/``scope``; the active one (``expect_id`` if given)
        becomes decrypt-only. If another process rotated ``expect_id`` first, theirs."""
        try:
            new, row = self._fresh_keys(kind, [scope], lambda wrap: self.store.replace_active(
                kind, scope, wrap, self._wall(), expect_id=expect_id))
        except IntegrityError:
            row = None   # the slot is taken: another process's key, or a tombstone
        if row is None:
            # Someone else rotated first: use theirs (or make one if theirs is gone too).
            theirs = self.store.active_row(kind, scope)
            if theirs is not None and theirs.state == ERASED:
                raise _erased(kind, scope, "rotate")
            return theirs or self._create_active(kind, scope)
        self.cache.demote_others(kind, scope, row.id)
        entry = self.cache.put(Entry(self._make_key(kind, row.id, new.material[scope]), kind,
                                     scope, ACTIVE, self.clock(), self.limits))
        self.cache.activate(entry)
        self._on_event("key.rotate", key_id=row.id, kind=kind, scope=scope,
                       previous_key_id=expect_id, reason=reason)
        return row

    def _fresh_keys(self, kind: str, scopes: list[str],
                    write: Callable[[LocalWrap], _T]) -> tuple[NewKeys, _T]:
        """New key material for ``scopes``, written by ``write`` wrapped under the active
        KEK; once more under the new KEK if an erasure epoch replaced it meanwhile."""
        for attempt in (0, 1):
            new = self.hierarchy.new_keys(kind, scopes)
            try:
                return new, write(new.wrap)
            except StaleKekError:
                self.hierarchy.forget()
                if attempt:
                    raise UnknownKeyError("the active KEK changed twice while a key was "
                                          "being created", operation="create key") from None
        raise AssertionError("unreachable")  # pragma: no cover

    # -- use counts ------------------------------------------------------------------------
    def _flush_uses(self, entry: Entry | None, *, brief: bool = False) -> bool:
        """Add the encryptions counted in ``entry`` but not yet in the key table to its
        row's ``encryption_count``. True once they are there.

        With ``brief`` (a refresh on the hot path) the write gives up after a short wait
        for a lock held elsewhere and returns False: the count stays pending in memory
        (``entry.pending_uses``) for the next refresh. Otherwise errors propagate."""
        if entry is None or entry.kind != "dek":
            return True
        delta = entry.pending_uses
        if delta <= 0:
            return True
        try:
            self.store.add_uses(entry.id, delta, brief=brief)
        except SQLAlchemyError:
            if not brief:
                raise
            # Once per streak: a long transaction would repeat it every soft TTL.
            level = logging.DEBUG if entry.id in self._unrecorded else logging.WARNING
            self._unrecorded.add(entry.id)
            log.log(level, "could not write the use count of key id=%s without waiting "
                    "(key table busy?); %d uses stay counted in memory and are written "
                    "at a later refresh", entry.id, delta)
            return False
        self._unrecorded.discard(entry.id)
        # += delta, not = uses: encryptions counted while the UPDATE ran stay pending.
        entry.flushed_uses += delta
        return True

    def flush(self) -> None:
        """Record in the key table how many encryptions each cached DEK has done (and
        each DEK evicted from the cache, in one statement)."""
        with self._lock:
            evicted = dict(self.cache.evicted_uses)
            try:
                self.store.add_uses_many(evicted)
                for key_id in evicted:
                    self.cache.evicted_uses.pop(key_id, None)
            except SQLAlchemyError:
                log.warning("could not record the use counts of %d evicted keys",
                            len(evicted))
            for entry in list(self.cache.by_id.values()):
                try:
                    self._flush_uses(entry)
                except SQLAlchemyError:
                    log.warning("could not record the use count of key id=%s", entry.id)

    def clear_cache(self) -> None:
        """Drop every plaintext key from memory (next use unwraps through the KMS)."""
        with self._lock:
            self.flush()
            self.cache.clear()
            self.hierarchy.forget()

    # -- lifecycle -------------------------------------------------------------------------
    def has_key(self, key_id: int, kind: str = "dek") -> bool:
        """True if the key table has (or had: destroyed keys count) this key."""
        entry = self.cache.by_id.get(key_id)
        if entry is not None:
            return entry.kind == kind
        row = self.store.row(key_id)
        return row is not None and row.kind == kind

    def ensure_active(self, kind: str, scope: str) -> int:
        """Make sure ``kind``/``scope`` has an active key (no KMS call if it has one)."""
        with self._lock:
            row = self.store.active_row(kind, scope)
            if row is None:
                row = self._create_active(kind, scope)
            elif row.state == ERASED:
                log.warning("scope %s was erased: no %s key is created for it", scope, kind)
            return row.id

    def prepare(self, kind: str, scopes: Iterable[str]) -> int:
        """Cache the active key of ``kind`` in each of ``scopes`` in a few statements: one
        SELECT per 500 scopes, and the missing keys created in one transaction (one
        multi-row INSERT and one UPDATE per 500). What a bulk write for many new subjects
        calls first, so that it does not make two round trips per subject. Erased scopes
        and keys at ``max_uses`` are left to the per-value path. Returns how many keys
        were created."""
        now = self.clock()
        want = []
        for s in dict.fromkeys(scopes):
            e = self.cache.active.get((kind, s))
            if e is None or not now < e.wexpires:
                want.append(s)
        if len(want) < 2 or len(want) > self.limits.capacity // 2:
            return 0
        with self._lock:
            rows = self.store.active_rows(kind, want)
            for row in rows.values():
                if row.state != ACTIVE or (kind == "dek" and
                                           row.encryption_count >= self.limits.max_uses):
                    continue
                entry = self.cache.by_id.get(row.id)
                if entry is None or not entry.within_hard_ttl(now):
                    entry = self._unwrap(row, entry)
                entry.set_state(ACTIVE)
                entry.touch(now)
                self.cache.activate(entry)
            missing = [s for s in want if s not in rows]
            if not missing:
                return 0
            if kind not in KEY_KINDS:
                raise ConfigurationError(f"unknown key kind {kind!r}")
            new, created = self._fresh_keys(kind, missing, lambda wrap: self.store.insert_many(
                kind, missing, wrap, self._wall()))
            if created is None:
                return 0   # another process took a slot meanwhile: one scope at a time
            for row in created:
                entry = self.cache.put(Entry(self._make_key(kind, row.id,
                                                            new.material[row.scope]),
                                             kind, row.scope, ACTIVE, self.clock(),
                                             self.limits))
                self.cache.activate(entry)
            self._on_event("key.create", kind=kind, count=len(created),
                           master_key_id=new.wrap.master_key_id)
            return len(created)

    def rotate(self, kind: str = "dek", scope: str = "default") -> int:
        """Create a new active key; the previous one becomes decrypt-only."""
        with self._lock:
            self._flush_uses(self.cache.active.get((kind, scope)))
            return self._rotate(kind, scope, expect_id=None, reason="requested").id

    def keys(self, *, kind: str | None = None, scope: str | None = None,
             states: Iterable[str] | None = None) -> list[KeyInfo]:
        """Every key in the table (filtered by kind, scope and states), oldest first."""
        return self.store.infos(kind=kind, scope=scope, states=states)

    def set_state(self, key_id: int, state: str, *, expect: Iterable[str]) -> None:
        """Move key ``key_id`` to ``state`` if it is in one of the ``expect`` states."""
        self.cache.index_sets.clear()
        self.store.set_state(key_id, state, self._wall(), expect=tuple(expect))
        with self._lock:
            if state in (DESTROYED, RETIRED):
                self.cache.forget(key_id)

    def retire(self, key_id: int) -> None:
        """Mark a decrypt-only key retired (the caller checks no row uses it)."""
        self.set_state(key_id, RETIRED, expect=(DECRYPT_ONLY,))
        self._on_event("key.retire", key_id=key_id)

    def destroy(self, key_id: int) -> None:
        """Crypto-shred: erase the wrapped key; data under it can never be read again."""
        self.set_state(key_id, DESTROYED, expect=(ACTIVE, DECRYPT_ONLY, RETIRED))
        self._on_event("key.destroy", key_id=key_id)

    def erase_scope(self, scope: str) -> tuple[list[KeyRow], int]:
        """Erase ``scope``: destroy every key of it and leave a tombstone in each kind's
        active slot (one transaction), so that no process creates a key for it again
        until :meth:`reopen_scope`. Returns the keys destroyed now and the id of the KEK
        whose destruction (the next erasure epoch) makes older copies of the key table
        unreadable too."""
        kek = self.hierarchy.active_kek()
        victims = self.store.erase_scope(scope, KEY_KINDS, kek.id, self._wall())
        with self._lock:
            for row in victims:
                self.cache.forget(row.id)
            self.cache.index_sets.pop(scope, None)
        for row in victims:
            self._on_event("key.destroy", key_id=row.id, kind=row.kind, scope=scope)
        return victims, kek.id

    def reopen_scope(self, scope: str) -> int:
        """Re-open an erased scope on purpose (audited ``scope.reopen``): its tombstones
        free the active slots, and the next write creates a fresh key. Data under the
        destroyed keys stays unreadable. Returns how many tombstones were lifted."""
        n = self.store.reopen_scope(scope, self._wall())
        self._on_event("scope.reopen", scope=scope, count=n)
        return n

    def rewrap(self, dest_master_key_id: str, *, batch: int = 100,
               progress: Callable[[int], None] | None = None) -> int:
        """Rewrap every stored key under ``dest_master_key_id``; resumable (rows already
        under the destination key are skipped). Returns how many keys were rewrapped."""
        done = 0
        while rows := self.store.wrapped_elsewhere(dest_master_key_id, batch):
            for row in rows:
                assert row.wrapped_key is not None  # destroyed keys are not selected
                wrapped = self.kms.rewrap(row.wrapped_key, row.master_key_id,
                                          dest_master_key_id, kms_context(row.kind, row.scope))
                self.store.set_wrapped(row.id, row.master_key_id, wrapped, dest_master_key_id)
                done += 1
                self._on_event("key.rewrap", key_id=row.id, master_key_id=dest_master_key_id,
                               previous_master_key_id=row.master_key_id)
                if progress:
                    progress(1)
        return done
