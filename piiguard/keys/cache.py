"""The plaintext key cache: its limits, its entries and when an entry may still serve.

>>> CacheLimits(soft_ttl=60, hard_ttl=30)
Traceback (most recent call last):
...
piiguard.errors.ConfigurationError: hard_ttl must be at least soft_ttl

The freshness policy, in one place. An :class:`Entry` is *fresh* (served from memory,
nothing asked) while ``clock() < entry.expires``: less than ``soft_ttl`` since the key
table was last consulted and less than ``hard_ttl`` since the KMS unwrapped it.
``entry.wexpires`` is the same for encryption, and ``-inf`` once the key is no longer
the active one. A stale entry that is still :meth:`~Entry.within_hard_ttl` may serve on
while the key table is busy or unreachable, or (writes) while the KMS is down::

    >>> from piiguard.crypto.blind_index import BlindIndexKey
    >>> limits = CacheLimits(soft_ttl=60, hard_ttl=600, max_uses=2)
    >>> key = BlindIndexKey(7, bytes(32))
    >>> entry = Entry(key, "index", "customers", "active", now=0.0, limits=limits)
    >>> entry.expires, entry.wexpires
    (60.0, 60.0)
    >>> entry.touch(590.0)                     # the key table said: still active
    >>> entry.expires                          # ... but the hard TTL comes first
    600.0
    >>> entry.within_hard_ttl(599.0), entry.may_encrypt(599.0), entry.within_hard_ttl(600.0)
    (True, True, False)
    >>> entry.uses = 2                         # max_uses reached: no more encryptions
    >>> entry.may_encrypt(599.0)
    False
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from piiguard.crypto.blind_index import BlindIndexKey
from piiguard.errors import ConfigurationError
from piiguard.keys.table import ACTIVE, DECRYPT_ONLY

__all__ = ["CacheLimits", "Entry", "IndexKeySet", "KeyCache"]


@dataclass(frozen=True)
class CacheLimits:
    """How plaintext DEKs are cached.

    - ``soft_ttl``: seconds after which the key table is consulted again (a rotation
      or destruction elsewhere is seen within this time); the plaintext stays cached.
    - ``hard_ttl``: seconds after which the plaintext is dropped and the KMS must unwrap
      the key again (while KMS is down, cached keys keep working until then).
    - ``max_uses``: encryptions under one DEK before a new DEK is created (well below
      2**32, the bound for random 96-bit nonces).
    - ``capacity``: how many plaintext keys (data, index and pseudonym keys) one
      :class:`~piiguard.keys.KeyManager` keeps at most; the least recently used is
      evicted first (like the AWS Encryption SDK's ``LocalCryptoMaterialsCache``). An
      evicted key is unwrapped again locally under its cached KEK when next needed: one
      key-table read, no KMS call. The default, 20,000 keys, keeps a process's cached
      keys within :data:`MEMORY_BUDGET` (about 1 KiB each: the key schedule, the entry
      and the maps); KEKs are cached apart and never evicted.
    - ``change_bound``: seconds within which a key change made by any process (rotate,
      retire, destroy, shred, rewrap) reaches this one; ``None``: 1 s on PostgreSQL
      (``LISTEN``/``NOTIFY``), 2 s elsewhere (a generation counter read on use). See
      :mod:`piiguard.keys.notify`.
    - ``watch_changes``: False turns change notifications off (only the soft TTL then
      refreshes keys; for benchmark comparisons, never in production).
    - ``flush_interval``: seconds between writes of use counts to the key table (also
      written at normal exit and ``close()``); a killed process loses at most the
      encryptions of one interval from ``encryption_count``. 0 turns the timer off.
    """

    soft_ttl: float = 300.0
    hard_ttl: float = 3600.0
    max_uses: int = 2**30
    capacity: int = 20_000
    change_bound: float | None = None
    watch_changes: bool = True
    flush_interval: float = 5.0

    def __post_init__(self) -> None:
        if not self.soft_ttl > 0:
            raise ConfigurationError("soft_ttl must be positive")
        if self.hard_ttl < self.soft_ttl:
            raise ConfigurationError("hard_ttl must be at least soft_ttl")
        if not 1 <= self.max_uses <= 2**32:
            raise ConfigurationError("max_uses must be between 1 and 2**32")
        if self.change_bound is not None and not self.change_bound > 0:
            raise ConfigurationError("change_bound must be positive")
        if not self.flush_interval >= 0:
            raise ConfigurationError("flush_interval must be 0 (off) or positive")
        if self.capacity < 16:
            raise ConfigurationError("capacity must be at least 16 keys")


#: The memory the default :class:`CacheLimits` keeps a process's cached keys within
#: (checked by ``tests/test_keys_hierarchy.py`` and the ``subjects`` benchmark).
MEMORY_BUDGET = 64 * 2**20


class Entry:
    """One cached plaintext key and its bookkeeping (never printed with its key).

    ``key`` is a :class:`~piiguard.crypto.aead.DataKey` (kind ``dek``) or a
    :class:`~piiguard.crypto.blind_index.BlindIndexKey` (``index``, ``pseudonym``).
    ``uses`` counts every encryption under this key known here (the key table's count
    when loaded, plus ours), so ``max_uses`` holds across reloads and restarts;
    ``flushed_uses`` is how many of them the key table has recorded. ``gen`` is the key
    table's generation (:mod:`piiguard.keys.notify`) when ``state`` was read.
    """

    __slots__ = ("key", "id", "kind", "scope", "state", "loaded", "checked", "uses",
                 "flushed_uses", "expires", "wexpires", "gen", "_limits")

    def __init__(self, key: Any, kind: str, scope: str, state: str, now: float,
                 limits: CacheLimits, recorded_uses: int = 0) -> None:
        self.key = key
        self.id: int = key.id
        self.kind = kind
        self.scope = scope
        self.state = state
        self._limits = limits
        self.loaded = now
        self.uses = recorded_uses
        self.flushed_uses = recorded_uses
        self.gen = 0
        self.touch(now)

    def touch(self, now: float, until: float = float("inf"), gen: int | None = None) -> None:
        """The key table was consulted at ``now`` (at generation ``gen``): the entry is
        fresh until ``expires`` (the earliest of the soft TTL from now, the hard TTL from
        loading and ``until``, when key changes must be checked again)."""
        self.checked = now
        if gen is not None:
            self.gen = gen
        self.extend(until)

    def extend(self, until: float) -> None:
        """Fresh until ``until`` (key changes were checked) within the soft and hard TTL."""
        self.expires = min(self.checked + self._limits.soft_ttl,
                           self.loaded + self._limits.hard_ttl, until)
        self.wexpires = self.expires if self.state == ACTIVE else float("-inf")

    def set_state(self, state: str) -> None:
        self.state = state
        if state != ACTIVE:
            self.wexpires = float("-inf")

    def invalidate(self) -> None:
        """Make every holder of this entry take the slow path next time."""
        self.expires = self.wexpires = float("-inf")

    def within_hard_ttl(self, now: float) -> bool:
        """True while the plaintext may serve at all: less than ``hard_ttl`` since the KMS
        unwrapped it (after that, the KMS must unwrap the key again)."""
        return now - self.loaded < self._limits.hard_ttl

    def may_encrypt(self, now: float) -> bool:
        """True while this key may keep encrypting if the key table or the KMS cannot be
        asked: active as last read, within the hard TTL and below ``max_uses``."""
        return self.state == ACTIVE and self.uses < self._limits.max_uses \
            and self.within_hard_ttl(now)

    def recently_checked(self, now: float) -> bool:
        """True if the key table was consulted less than ``soft_ttl`` ago."""
        return now - self.checked < self._limits.soft_ttl

    @property
    def pending_uses(self) -> int:
        """Encryptions counted here that the key table has not recorded yet."""
        return self.uses - self.flushed_uses

    def __repr__(self) -> str:
        return f"Entry(id={self.id}, kind={self.kind}, scope={self.scope}, state={self.state})"


@dataclass(frozen=True)
class IndexKeySet:
    """The index keys lookups in one scope consult: the active one first, then every
    decrypt-only one (the blind-index rotation window), as read at one refresh.

    The set serves while ``active`` is still the cached active index key, the soft TTL
    since it was read (``fresh_until``) has not passed and the key table's generation
    is still ``gen`` (no key changed since)."""

    active: Entry
    fresh_until: float
    keys: list[BlindIndexKey]
    gen: int = 0

    def serves(self, active: Entry, now: float, gen: int = 0) -> bool:
        """True if lookups may use this set at ``now`` with ``active`` the active key."""
        return self.active is active and now < self.fresh_until and gen == self.gen


class KeyCache:
    """The plaintext keys one :class:`~piiguard.keys.KeyManager` holds in memory.

    ``by_id`` serves decryption (every cached key by id), ``active`` encryption (the
    active key's entry per ``(kind, scope)``) and ``index_sets`` lookups (an
    :class:`IndexKeySet` per scope). They are plain dicts because the hot paths read them
    with one ``get``; changes go through the methods, which invalidate an entry that
    leaves the cache so that every holder of it (a FieldCipher) takes the slow path.
    """

    __slots__ = ("by_id", "active", "index_sets", "capacity", "evicted_uses")

    def __init__(self, capacity: int = CacheLimits.capacity) -> None:
        self.by_id: OrderedDict[int, Entry] = OrderedDict()   # least recently used first
        self.active: dict[tuple[str, str], Entry] = {}
        self.index_sets: dict[str, IndexKeySet] = {}
        self.capacity = capacity
        #: encryptions counted under evicted keys, not yet in the key table (by key id)
        self.evicted_uses: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self.by_id)

    def used(self, entry: Entry) -> Entry:
        """``entry`` was just used: it is now the most recently used."""
        try:
            self.by_id.move_to_end(entry.id)
        except KeyError:
            pass
        return entry

    def put(self, entry: Entry) -> Entry:
        """Cache ``entry`` by id (replacing an older entry of the same key), evicting the
        least recently used keys beyond ``capacity``."""
        self.by_id[entry.id] = entry
        self.by_id.move_to_end(entry.id)
        while len(self.by_id) > self.capacity:
            oldest = next(iter(self.by_id))
            old = self.by_id[oldest]
            if old.pending_uses > 0:   # written by KeyManager.flush, in one statement
                self.evicted_uses[oldest] = self.evicted_uses.get(oldest, 0) + old.pending_uses
                old.flushed_uses = old.uses
            self.forget(oldest)
            if len(self.index_sets) > self.capacity:
                self.index_sets.clear()
        return entry

    def activate(self, entry: Entry) -> None:
        """``entry`` is now the active key of its kind and scope."""
        self.active[(entry.kind, entry.scope)] = entry

    def demote_others(self, kind: str, scope: str, active_id: int) -> None:
        """Every cached key of ``kind``/``scope`` but ``active_id`` is decrypt-only now."""
        for entry in self.by_id.values():
            if entry.kind == kind and entry.scope == scope and entry.id != active_id:
                entry.set_state(DECRYPT_ONLY)

    def forget(self, key_id: int) -> None:
        """Drop key ``key_id`` (retired, destroyed, or to be unwrapped again)."""
        entry = self.by_id.pop(key_id, None)
        if entry is not None:
            entry.invalidate()
            if self.active.get((entry.kind, entry.scope)) is entry:
                del self.active[(entry.kind, entry.scope)]
            if entry.kind == "index":
                self.index_sets.pop(entry.scope, None)

    def recheck_all(self) -> None:
        """A key changed somewhere: every entry re-reads its state before its next use
        (its plaintext stays: no KMS call); index key sets are read again."""
        for entry in list(self.by_id.values()):
            entry.gen = -1
            entry.expires = entry.wexpires = float("-inf")
        self.index_sets.clear()

    def clear(self) -> None:
        """Drop every plaintext key, index key sets included."""
        for entry in self.by_id.values():
            entry.invalidate()
        self.by_id.clear()
        self.active.clear()
        self.index_sets.clear()
