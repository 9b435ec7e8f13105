"""KeyManager: serves plaintext keys from the cache and runs the key lifecycle.

The KMS is called per KEK (:mod:`~piiguard.keys.hierarchy`), never per key or value: a key
is unwrapped once and then served from a bounded cache (:class:`~.cache.CacheLimits`). The hot paths
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

import atexit
import logging
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone

from sqlalchemy import Table
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from piiguard.crypto.aead import DataKey
from piiguard.crypto.blind_index import BlindIndexKey
from piiguard.errors import (ConfigurationError, KeyDestroyedError, KMSUnavailableError,
                             UnknownKeyError)
from piiguard.keys.cache import CacheLimits, Entry, IndexKeySet, KeyCache
from piiguard.keys.bulk import BulkKeys
from piiguard.keys.hierarchy import KeyHierarchy, kms_context, scope_erased
from piiguard.keys.notify import (POLL_BOUND, ChangeWatch, Flusher, default_bound,
                                  exit_flush)
from piiguard.keys.store import KeyInfo, KeyRow, KeyStore
from piiguard.keys.table import (ACTIVE, DECRYPT_ONLY, DEFAULT_TABLE_NAME, DESTROYED, ERASED,
                                 KEY_KINDS, RETIRED, key_table)
from piiguard.kms.base import KeyProvider

__all__ = ["KeyManager", "KeyInfo", "kms_context", "utcnow"]

log = logging.getLogger("piiguard.keys")


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
        self._nonce = nonce_source
        self.store = KeyStore(key_table(table_name))
        self.cache = KeyCache(self.limits.capacity)
        # Lifecycle operations (rotate, flush, clear) take this lock; loads and refreshes
        # never do: they take a per-key single-flight lock (_flight), so that a slow KMS
        # or database call for one key never blocks readers of the others.
        self._lock = threading.RLock()
        self._flights: dict[tuple[object, ...], threading.Lock] = {}
        self._counting = threading.Lock()   # one writer of use counts at a time
        #: key changes made by other processes (set by bind; None: soft TTL only)
        self.watch: ChangeWatch | None = None
        self._flusher: Flusher | None = None
        self._at_exit: Callable[[], None] | None = None
        # ids of keys whose use count could not be written at the last try (warned once)
        self._unrecorded: set[int] = set()
        self._on_event = on_event or (lambda *a, **k: None)
        #: KEKs, and the local wrapping of every other key
        self.hierarchy = KeyHierarchy(kms, self.store, self.limits, clock, wall_clock,
                                      self._on_event)
        #: bulk key loading and creation (many new subjects in one write)
        self.bulk = BulkKeys(self.store, self.cache, self.hierarchy, self.limits, clock,
                             wall_clock, self._on_event, lock=self._lock,
                             unwrap=self._unwrap, make_key=self._make_key, stamp=self._stamp,
                             generation=self._generation)

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

    def bind(self, engine: Engine, *, create: bool = True) -> None:
        """Use ``engine``'s database for the key table, creating the table if missing
        (``create=False``: refuse a database without it); start hearing key changes
        (:mod:`piiguard.keys.notify`) and recording use counts on a timer and at normal
        exit."""
        self.store.bind(engine, create=create)
        self.stop_background()
        self.watch = ChangeWatch(engine, self.store.generation, self.cache.recheck_all,
                                 clock=self.clock, bound=self.limits.change_bound,
                                 enabled=self.limits.watch_changes)
        if self.limits.flush_interval > 0:
            self._flusher = Flusher(self.flush_pending, self.limits.flush_interval)
        self._at_exit = exit_flush(self.flush_pending)

    def stop_background(self) -> None:
        """Stop the change listener and the use-count timer (``Guard.close()``)."""
        if self.watch is not None:
            self.watch.stop()
        if self._flusher is not None:
            self._flusher.stop()
            self._flusher = None
        if self._at_exit is not None:
            atexit.unregister(self._at_exit)
            self._at_exit = None

    def wall_now(self) -> datetime:
        """The wall clock the key table's timestamps are written with, now."""
        return self._wall()

    @property
    def change_bound(self) -> float:
        """Seconds within which a key change reaches every process sharing the key table
        (``CacheLimits.change_bound``, else the database's default)."""
        if self.watch is not None:
            return self.watch.bound
        if self.limits.change_bound is not None:
            return self.limits.change_bound
        return default_bound(self.engine) if self.engine is not None else POLL_BOUND

    def _generation(self) -> int:
        """The key table generation last heard (0 without a watch)."""
        return 0 if self.watch is None else self.watch.generation

    def _until(self) -> float:
        """Until when the cached key states are known current (inf without a watch)."""
        return float("inf") if self.watch is None else self.watch.deadline

    def _confirm(self, now: float) -> None:
        if self.watch is not None:
            self.watch.check(now)
            if self._flusher is not None and not self._flusher.thread.is_alive():
                # a forked child (a pre-forking server) inherits no threads
                self._flusher = Flusher(self.flush_pending, self.limits.flush_interval)

    def _flight(self, *key: object) -> threading.Lock:
        """The single-flight lock of one key (or one kind/scope's active key)."""
        lock = self._flights.get(key)
        if lock is None:
            lock = self._flights.setdefault(key, threading.Lock())
        return lock

    def _stamp(self, entry: Entry, now: float, gen: int) -> Entry:
        """``entry``'s state was read at ``now`` and generation ``gen``; if a change was
        heard meanwhile it is checked again at its next use."""
        entry.touch(now, self._until(), gen)
        if gen != self._generation():
            entry.gen = -1
            entry.invalidate()
        return entry

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
        gen = self._generation()
        if cached is not None and cached.serves(active, now, gen):
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
        self.cache.index_sets[scope] = IndexKeySet(active, now + self.limits.soft_ttl, keys,
                                                   gen)
        return keys

    def cached_index_key_count(self, scope: str) -> int | None:
        """How many index keys lookups in ``scope`` consult, if the cache knows it right
        now without asking the key table or the KMS; else None."""
        active = self.cache.active.get(("index", scope))
        cached = self.cache.index_sets.get(scope)
        now = self.clock()
        if active is None or cached is None or now >= active.wexpires \
                or not cached.serves(active, now, self._generation()):
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
        now = self.clock()
        self._confirm(now)
        cached = self.cache.by_id.get(key_id)
        if cached is not None and cached.kind == kind and cached.gen == self._generation() \
                and cached.state != DESTROYED and cached.within_hard_ttl(now):
            if cached.recently_checked(now):
                cached.extend(self._until())  # no key changed: fresh again
                return cached
            # The routine re-check: one thread reads the key table, the others serve
            # the cached key meanwhile (no change was heard: it may still serve).
            flight = self._flight("id", key_id)
            if not flight.acquire(blocking=False):
                return cached
            try:
                return self._load_now(key_id, kind)
            finally:
                flight.release()
        # A change was heard, the key is not cached or its hard TTL passed: nothing
        # may serve until the key table (and maybe the KMS) answered; one thread asks.
        with self._flight("id", key_id):
            return self._load_now(key_id, kind)

    def _load_now(self, key_id: int, kind: str) -> Entry:
        cached = self.cache.by_id.get(key_id)
        now = self.clock()
        gen = self._generation()
        if cached is not None and cached.kind == kind and cached.gen == gen \
                and now < cached.expires:
            return cached  # another thread loaded it while we waited
        # Within the hard TTL the cached key may serve if the key table is busy.
        can_wait_less = cached is not None and cached.within_hard_ttl(now)
        try:
            row = self.store.row(key_id, brief=can_wait_less)
        except SQLAlchemyError:
            if cached is not None and can_wait_less and cached.kind == kind:
                log.warning("key table busy or unreachable; using cached key id=%s "
                            "until the next refresh", key_id)
                cached.touch(now, self._until())  # retry after the soft TTL
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
            return self._stamp(cached, now, gen)
        self.cache.forget(key_id)
        return self._stamp(self._unwrap(row, cached), now, gen)

    def _refresh_active(self, kind: str, scope: str) -> Entry:
        now = self.clock()
        self._confirm(now)
        old = self.cache.active.get((kind, scope))
        if old is not None and old.gen == self._generation() and old.may_encrypt(now):
            if old.recently_checked(now):
                old.extend(self._until())  # no key changed: fresh again
                return old
            flight = self._flight("active", kind, scope)
            if not flight.acquire(blocking=False):
                return old  # another thread re-checks it; it still is the active key
            try:
                return self._refresh_now(kind, scope)
            finally:
                flight.release()
        with self._flight("active", kind, scope):
            return self._refresh_now(kind, scope)

    def _refresh_now(self, kind: str, scope: str) -> Entry:
        old = self.cache.active.get((kind, scope))
        now = self.clock()
        gen = self._generation()
        if old is not None and old.gen == gen and old.recently_checked(now) \
                and old.may_encrypt(now) and now < old.wexpires:
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
                raise scope_erased(kind, scope, "encrypt")
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
                old.touch(now, self._until())
                return old
            raise
        if old is not None and row.id == old.id and old.within_hard_ttl(now):
            old.set_state(ACTIVE)
            return self._stamp(old, now, gen)
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
                    old.touch(now, self._until())  # retry after the soft TTL
                    return old
                raise
        if old is not None and old is not entry:
            old.set_state(DECRYPT_ONLY)
        entry.set_state(ACTIVE)
        self._stamp(entry, now, gen)
        self.cache.activate(entry)
        return entry

    def _create_active(self, kind: str, scope: str) -> KeyRow:
        """Make a new active key for ``kind``/``scope``; on a race, use the winner's."""
        if kind not in KEY_KINDS:
            raise ConfigurationError(f"unknown key kind {kind!r}")
        new, added = self.hierarchy.fresh_keys(
            kind, [scope], lambda w: self.store.insert_active(kind, scope, w, self._wall()))
        if not added.created:
            if added.row.state == ERASED:
                raise scope_erased(kind, scope)
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
            new, row = self.hierarchy.fresh_keys(kind, [scope], lambda w: self.store
                                                 .replace_active(kind, scope, w, self._wall(),
                                                                 expect_id=expect_id))
        except IntegrityError:
            row = None   # the slot is taken: another process's key, or a tombstone
        if row is None:
            # Someone else rotated first: use theirs (or make one if theirs is gone too).
            theirs = self.store.active_row(kind, scope)
            if theirs is not None and theirs.state == ERASED:
                raise scope_erased(kind, scope, "rotate")
            return theirs or self._create_active(kind, scope)
        self.cache.demote_others(kind, scope, row.id)
        entry = self.cache.put(Entry(self._make_key(kind, row.id, new.material[scope]), kind,
                                     scope, ACTIVE, self.clock(), self.limits))
        self.cache.activate(entry)
        self._on_event("key.rotate", key_id=row.id, kind=kind, scope=scope,
                       previous_key_id=expect_id, reason=reason)
        return row

    # -- use counts ------------------------------------------------------------------------
    def _flush_uses(self, entry: Entry | None, *, brief: bool = False,
                    quiet: bool = False) -> bool:
        """Add the encryptions counted in ``entry`` but not yet in the key table to its
        row's ``encryption_count``. True once they are there.

        With ``brief`` (a refresh on the hot path) the write gives up after a short wait
        for a lock held elsewhere and returns False: the count stays pending in memory
        (``entry.pending_uses``) for the next refresh. Otherwise errors propagate."""
        if entry is None or entry.kind != "dek" or entry.pending_uses <= 0:
            return True
        # One writer at a time, or two would both add the same pending uses.
        if not self._counting.acquire(blocking=not brief):
            return False  # another thread is writing counts right now
        try:
            return self._flush_counted(entry, brief, quiet)
        finally:
            self._counting.release()

    def _flush_counted(self, entry: Entry, brief: bool, quiet: bool) -> bool:
        delta = entry.pending_uses
        if delta <= 0:
            return True
        try:
            self.store.add_uses(entry.id, delta, brief=brief)
        except SQLAlchemyError:
            if not brief:
                raise
            # Once per streak: a long transaction would repeat it every soft TTL.
            level = logging.DEBUG if quiet or entry.id in self._unrecorded \
                else logging.WARNING
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
            self.bulk.flush_evicted()
            for entry in list(self.cache.by_id.values()):
                try:
                    self._flush_uses(entry)
                except SQLAlchemyError:
                    log.warning("could not record the use count of key id=%s", entry.id)

    def flush_pending(self) -> None:
        """Record pending use counts without waiting for locks (the timer's flush: what
        cannot be written now is written at the next tick, without a warning)."""
        for entry in list(self.cache.by_id.values()):
            self._flush_uses(entry, brief=True, quiet=True)

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
            return row.id

    def prepare(self, kind: str, scopes: Iterable[str]) -> int:
        """:meth:`~piiguard.keys.bulk.BulkKeys.prepare`: many scopes' keys at once."""
        return self.bulk.prepare(kind, scopes)

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

    def forget(self, key_ids: Iterable[int], scope: str | None = None) -> None:
        """Drop keys ``key_ids`` (destroyed elsewhere: an erasure) from the cache."""
        with self._lock:
            for key_id in key_ids:
                self.cache.forget(key_id)
            if scope is not None:
                self.cache.index_sets.pop(scope, None)

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
