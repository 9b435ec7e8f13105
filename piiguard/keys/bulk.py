"""Bulk key loading and creation: many new subjects in one write, a few statements.

An ``executemany`` (Core) or an ORM flush that writes rows for 10,000 new key scopes
would otherwise create each scope's key inside the bind processor of its first value:
a SELECT and an INSERT (and, with a KMS per key, a ``GenerateDataKey``) per subject.
:meth:`BulkKeys.prepare` does it for the whole batch first (the SQLAlchemy hooks call it
through :meth:`~piiguard.keys.KeyManager.prepare`): one SELECT per 500 scopes for the
keys that exist (unwrapped locally under the cached KEK), and the missing keys created
in one transaction (one multi-row INSERT ... RETURNING and one UPDATE per 500 scopes,
wrapped locally: no KMS call). Erased scopes and keys at ``max_uses`` are left to the
per-value path, which raises or rotates as usual.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from piiguard.errors import ConfigurationError
from piiguard.keys.cache import CacheLimits, Entry, KeyCache
from piiguard.keys.hierarchy import KeyHierarchy
from piiguard.keys.store import KeyRow, KeyStore
from piiguard.keys.table import ACTIVE, KEY_KINDS

__all__ = ["BulkKeys"]

log = logging.getLogger("piiguard.keys")


class BulkKeys:
    """Loads and creates the active keys of many scopes at once for one KeyManager (whose
    collaborators and hooks it is given)."""

    def __init__(self, store: KeyStore, cache: KeyCache, hierarchy: KeyHierarchy,
                 limits: CacheLimits, clock: Callable[[], float],
                 wall_clock: Callable[[], datetime], on_event: Callable[..., None], *,
                 lock: Any, unwrap: Callable[[KeyRow, Entry | None], Entry],
                 make_key: Callable[[str, int, bytes], Any],
                 stamp: Callable[[Entry, float, int], Entry],
                 generation: Callable[[], int]) -> None:
        self.store, self.cache, self.hierarchy = store, cache, hierarchy
        self.limits, self.clock, self.wall_clock = limits, clock, wall_clock
        self.on_event = on_event
        self.lock: threading.RLock = lock
        self.unwrap, self.make_key, self.stamp = unwrap, make_key, stamp
        self.generation = generation

    def flush_evicted(self) -> None:
        """Write the use counts of DEKs evicted from the cache (one ``executemany``)."""
        evicted = dict(self.cache.evicted_uses)
        try:
            self.store.add_uses_many(evicted)
        except SQLAlchemyError:
            log.warning("could not record the use counts of %d evicted keys", len(evicted))
            return
        for key_id in evicted:
            self.cache.evicted_uses.pop(key_id, None)

    def prepare(self, kind: str, scopes: Iterable[str]) -> int:
        """Cache the active key of ``kind`` in each of ``scopes`` (creating the missing
        ones); returns how many keys were created. Does nothing for fewer than 2 scopes
        to load, or more than half the cache's capacity."""
        now = self.clock()
        want = []
        for s in dict.fromkeys(scopes):
            e = self.cache.active.get((kind, s))
            if e is None or not now < e.wexpires:
                want.append(s)
        if len(want) < 2 or len(want) > self.limits.capacity // 2:
            return 0
        if kind not in KEY_KINDS:
            raise ConfigurationError(f"unknown key kind {kind!r}")
        with self.lock:
            gen = self.generation()
            rows = self.store.active_rows(kind, want)
            for row in rows.values():
                if row.state != ACTIVE or (kind == "dek" and
                                           row.encryption_count >= self.limits.max_uses):
                    continue
                entry = self.cache.by_id.get(row.id)
                if entry is None or not entry.within_hard_ttl(now):
                    entry = self.unwrap(row, entry)
                entry.set_state(ACTIVE)
                self.cache.activate(self.stamp(entry, now, gen))
            missing = [s for s in want if s not in rows]
            if not missing:
                return 0
            new, created = self.hierarchy.fresh_keys(
                kind, missing, lambda wrap: self.store.insert_many(kind, missing, wrap,
                                                                   self.wall_clock()))
            if created is None:
                return 0   # another process took a slot meanwhile: one scope at a time
            for row in created:
                entry = Entry(self.make_key(kind, row.id, new.material[row.scope]), kind,
                              row.scope, ACTIVE, self.clock(), self.limits)
                self.cache.activate(self.stamp(self.cache.put(entry), now, gen))
            self.on_event("key.create", kind=kind, count=len(created),
                          master_key_id=new.wrap.master_key_id)
            return len(created)
