"""The key hierarchy: KMS master key -> key-encryption key (KEK) -> data/index/pseudonym keys.

The KMS wraps only KEKs (rows of kind ``kek`` in the key table); every other key is made
here (32 random bytes) and wrapped locally under the active KEK with AES-256-GCM
(:mod:`piiguard.crypto.keywrap`). So the KMS is called per KEK, never per subject:
creating, loading or rotating a per-subject key costs no KMS call once the KEK is
cached, and ``verify`` or a listing over 100,000 subjects unwraps one KEK.

KEK plaintexts are cached here, apart from the bounded cache of
:class:`~piiguard.keys.cache.KeyCache`: a KEK is unwrapped through the KMS again after
``hard_ttl`` (one call an hour by default), and the active KEK's id is re-read after
``soft_ttl`` (a new epoch elsewhere is seen within that time).

Keys of key-table format 1 (wrapped by the KMS directly: ``master_key_id`` is a KMS key
id) stay readable through the KMS; :meth:`KeyHierarchy.adopt` moves them under the
active KEK (``piiguard keys adopt-kek``).
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from datetime import datetime
from typing import NamedTuple, TypeVar

from piiguard.crypto.keywrap import KeyEncryptionKey
from piiguard.errors import (DecryptionError, KeyDestroyedError, ScopeErasedError,
                             UnknownKeyError)
from piiguard.keys.cache import CacheLimits
from piiguard.keys.store import KeyRow, KeyStore, LocalWrap, StaleKekError
from piiguard.keys.table import ACTIVE, DECRYPT_ONLY, DESTROYED, KEK, KEK_PREFIX, KEK_SCOPE
from piiguard.kms.base import KeyProvider

__all__ = ["KeyHierarchy", "NewKeys", "kek_id_of", "kms_context", "scope_erased"]

_T = TypeVar("_T")


def kms_context(kind: str, scope: str) -> dict[str, str]:
    """The encryption context the KMS binds to a wrapped key.

    >>> kms_context("dek", "customers")
    {'piiguard:kind': 'dek', 'piiguard:scope': 'customers'}
    """
    return {"piiguard:kind": kind, "piiguard:scope": scope}


def scope_erased(kind: str, scope: str, operation: str = "create key") -> ScopeErasedError:
    """The error of a write (a key creation) for an erased scope: names the scope."""
    return ScopeErasedError("key scope was erased; re-open it explicitly (piiguard keys "
                            "reopen) before writing to it again",
                            scope=scope, operation=f"{operation} ({kind})")


def kek_id_of(master_key_id: str) -> int | None:
    """The KEK id of a locally wrapped key's ``master_key_id`` (None: wrapped by the KMS).

    >>> kek_id_of("kek:12"), kek_id_of("mk-20250101-1a2b3c4d")
    (12, None)
    """
    if master_key_id.startswith(KEK_PREFIX):
        return int(master_key_id[len(KEK_PREFIX):])
    return None


class _CachedKek(NamedTuple):
    kek: KeyEncryptionKey
    loaded: float


class NewKeys(NamedTuple):
    """Fresh key material and how to wrap it (:class:`~piiguard.keys.store.LocalWrap`)."""

    wrap: LocalWrap
    material: dict[str, bytes]   # by scope


class KeyHierarchy:
    """The KEKs of one key table and the local wrapping of every other key."""

    def __init__(self, kms: KeyProvider, store: KeyStore, limits: CacheLimits,
                 clock: Callable[[], float], wall_clock: Callable[[], datetime],
                 on_event: Callable[..., None]) -> None:
        self.kms = kms
        self.store = store
        self.limits = limits
        self.clock = clock
        self._wall = wall_clock
        self._on_event = on_event
        self._keks: dict[int, _CachedKek] = {}
        self._active: tuple[int, float] | None = None   # (KEK id, when read)
        self._lock = threading.RLock()

    # -- KEKs ------------------------------------------------------------------------------
    def kek(self, kek_id: int) -> KeyEncryptionKey:
        """KEK ``kek_id`` (unwrapped through the KMS at most once per ``hard_ttl``)."""
        cached = self._keks.get(kek_id)
        if cached is not None and self.clock() - cached.loaded < self.limits.hard_ttl:
            return cached.kek
        with self._lock:
            row = self.store.row(kek_id)
            if row is None or row.kind != KEK:
                self._keks.pop(kek_id, None)
                raise UnknownKeyError("no KEK with this id", key_id=kek_id, operation="unwrap")
            if row.state == DESTROYED or row.wrapped_key is None:
                self._keks.pop(kek_id, None)
                raise KeyDestroyedError("KEK was destroyed (erasure epoch closed)",
                                        key_id=kek_id, operation="unwrap")
            material = self.kms.decrypt_data_key(row.wrapped_key, row.master_key_id,
                                                 kms_context(KEK, KEK_SCOPE))
            return self._remember(kek_id, material)

    def _remember(self, kek_id: int, material: bytes) -> KeyEncryptionKey:
        kek = KeyEncryptionKey(kek_id, material)
        self._keks[kek_id] = _CachedKek(kek, self.clock())
        return kek

    def active_kek(self) -> KeyEncryptionKey:
        """The KEK that wraps new keys (created through the KMS if the table has none)."""
        active = self._active
        if active is not None and self.clock() - active[1] < self.limits.soft_ttl:
            return self.kek(active[0])
        with self._lock:
            row = self.store.active_row(KEK, KEK_SCOPE)
            if row is None:
                return self._create_kek(None)
            self._active = (row.id, self.clock())
            return self.kek(row.id)

    def _create_kek(self, expect_id: int | None) -> KeyEncryptionKey:
        """A new active KEK under the KMS's current master key (with ``expect_id``: it
        replaces that one, which becomes decrypt-only)."""
        pair = self.kms.generate_data_key(kms_context(KEK, KEK_SCOPE))
        now = self._wall()
        if expect_id is None:
            added = self.store.insert_active(KEK, KEK_SCOPE, pair, now)
            row: KeyRow | None = added.row
            created = added.created
        else:
            row = self.store.replace_active(KEK, KEK_SCOPE, pair, now, expect_id=expect_id)
            created = row is not None
            if row is None:
                row = self.store.active_row(KEK, KEK_SCOPE)
        if row is None:   # pragma: no cover - replaced and then gone: fail closed
            raise UnknownKeyError("no active KEK", operation="create KEK")
        self._active = (row.id, self.clock())
        if not created:
            return self.kek(row.id)
        self._on_event("key.create", key_id=row.id, kind=KEK, scope=KEK_SCOPE,
                       master_key_id=pair.master_key_id)
        return self._remember(row.id, pair.plaintext)

    def rotate_kek(self) -> KeyEncryptionKey:
        """A new active KEK (under the KMS's current master key); the previous one stays
        decrypt-only until :meth:`adopt` has moved every key off it."""
        with self._lock:
            row = self.store.active_row(KEK, KEK_SCOPE)
            return self._create_kek(None if row is None else row.id)

    def forget(self) -> None:
        """Drop every cached KEK (the next use unwraps through the KMS)."""
        with self._lock:
            self._keks.clear()
            self._active = None

    # -- keys under a KEK ------------------------------------------------------------------
    def new_keys(self, kind: str, scopes: list[str]) -> NewKeys:
        """32 fresh random bytes per scope and the :class:`LocalWrap` that wraps them
        under the active KEK once their rows have ids."""
        kek = self.active_kek()
        material = {s: secrets.token_bytes(32) for s in scopes}

        def wrap(key_id: int, scope: str) -> bytes:
            return kek.wrap(key_id, kind, scope, material[scope])
        return NewKeys(LocalWrap(kek.id, wrap), material)

    def fresh_keys(self, kind: str, scopes: list[str],
                   write: Callable[[LocalWrap], _T]) -> tuple[NewKeys, _T]:
        """New key material for ``scopes``, written by ``write`` wrapped under the active
        KEK; once more under the new KEK if an erasure epoch replaced it meanwhile."""
        for attempt in (0, 1):
            new = self.new_keys(kind, scopes)
            try:
                return new, write(new.wrap)
            except StaleKekError:
                self.forget()
                if attempt:
                    raise UnknownKeyError("the active KEK changed twice while a key was "
                                          "being created", operation="create key") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def unwrap(self, row: KeyRow) -> bytes:
        """The plaintext of ``row``'s key: locally under its KEK (format 2), or through
        the KMS (format 1 rows, and KEKs)."""
        if row.state == DESTROYED or row.wrapped_key is None:
            raise KeyDestroyedError("key was destroyed (crypto-shredded)", key_id=row.id,
                                    operation="decrypt")
        kek_id = kek_id_of(row.master_key_id)
        if kek_id is None:
            return self.kms.decrypt_data_key(row.wrapped_key, row.master_key_id,
                                             kms_context(row.kind, row.scope))
        return self.kek(kek_id).unwrap(row.id, row.kind, row.scope, row.wrapped_key)

    def adopt(self, *, batch: int = 500, progress: Callable[[int], None] | None = None,
              ) -> int:
        """Move every key not under the active KEK under it: format-1 keys (one KMS
        unwrap each, once) and keys under an older KEK (no KMS call). Resumable and
        safe against concurrent runs (each row changes only if still as read). Returns
        how many keys moved."""
        kek = self.active_kek()
        dest = f"{KEK_PREFIX}{kek.id}"
        done, after = 0, 0
        while rows := self.store.locally_wrapped_outside(kek.id, batch, after=after):
            changes = []
            for row in rows:
                assert row.wrapped_key is not None  # destroyed keys are not selected
                try:
                    material = self.unwrap(row)
                except (DecryptionError, KeyDestroyedError, UnknownKeyError):
                    continue   # a key that cannot be unwrapped stays as it is (verify says)
                changes.append((row.id, row.master_key_id,
                                kek.wrap(row.id, row.kind, row.scope, material), dest))
            done += self.store.set_wrapped_many(changes)
            if progress:
                progress(len(rows))
            after = rows[-1].id
        return done

    def old_keks(self) -> list[KeyRow]:
        """KEKs that are not the active one and still hold a wrapped key."""
        active = self.active_kek().id
        return [r for r in (self.store.row(i.id) for i in self.store.infos(kind=KEK))
                if r is not None and r.id != active and r.wrapped_key is not None
                and r.state in (ACTIVE, DECRYPT_ONLY, "retired")]
