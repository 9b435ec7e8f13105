"""Retiring keys no row uses, and crypto-shredding: destroying keys on purpose.

- :func:`retire_key`: a decrypt-only key that no row names any more becomes ``retired``
  (kept for the record). Refused with :class:`~piiguard.errors.KeyInUseError` while any
  row of a registered encrypted column still uses it (counted with the same GROUP BY
  queries as ``keys status``).
- :func:`destroy_key`: erase one wrapped key. Every value under it is unreadable for
  good (:class:`~piiguard.errors.KeyDestroyedError`); the key table row stays, in state
  ``destroyed`` with the time.
- :func:`shred_scope`: erase a scope (a subject's or tenant's keys, with per-subject key
  scopes): the answer to an erasure request (KVKK art. 7, GDPR art. 17). Every key of
  the scope is destroyed at once and a tombstone keeps the scope closed: no process
  creates a key for it again (an application write fails with
  :class:`~piiguard.errors.ScopeErasedError`) until :func:`reopen_scope`. The erasure
  reaches copies of the database taken *before* it (backups, dumps, replicas, WAL) only
  at the next erasure epoch (:mod:`piiguard.rotation.epoch`), which destroys the KEK
  those copies' keys are wrapped under; the report is the receipt that says so.

Destroying a DEK also clears (sets to NULL) the blind index of every value under it: an
index value is an HMAC under the index key, not under the DEK, and would otherwise still
confirm an erased subject's national id. Shredding a scope again clears the index of
every value under any of its destroyed DEKs, so it also sweeps what a stale process
wrote in the window before it saw the erasure. Each destruction emits a ``key.destroy``
audit event, and ``shred_scope`` a ``shred`` event: the receipt (scope, key ids, time,
the pending epoch; no personal data).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from piiguard.errors import ConfigurationError, KeyInUseError, UnknownKeyError
from piiguard.keys.table import DESTROYED, KEY_KINDS
from piiguard.rotation.status import column_usage
from piiguard.rotation.targets import discover

__all__ = [
    "ShredReport",
    "clear_indexes",
    "destroy_key",
    "reopen_scope",
    "retire_key",
    "rows_using",
    "shred_scope",
]


@dataclass
class ShredReport:
    """Keys destroyed and how many stored values each column lost with them."""

    scope: str | None
    keys: list[int] = field(default_factory=list)
    values: dict[str, int] = field(default_factory=dict)
    indexes_cleared: int = 0
    #: when the keys were destroyed (the key table's wall clock)
    erased_at: datetime | None = None
    #: the KEK whose destruction (``piiguard keys epoch``) makes copies of the database
    #: taken before the erasure unreadable too; None for a single destroyed key
    epoch: int | None = None

    @property
    def total_values(self) -> int:
        return sum(self.values.values())

    def receipt(self) -> dict[str, Any]:
        """The erasure receipt: no personal data, only the scope, key ids and times."""
        return {"scope": self.scope, "key_ids": list(self.keys),
                "erased_at": None if self.erased_at is None else self.erased_at.isoformat(),
                "epoch": self.epoch, "status": "pending_epoch",
                "backups": "copies taken before erased_at still decrypt the scope until "
                           f"epoch {self.epoch} is closed (piiguard keys epoch)"}

    def to_dict(self) -> dict[str, Any]:
        out = {"scope": self.scope, "keys": self.keys, "values": dict(self.values),
               "total_values": self.total_values, "indexes_cleared": self.indexes_cleared}
        if self.epoch is not None:
            out["receipt"] = self.receipt()
        return out


def _info(guard: Any, key_id: int, operation: str):
    for info in guard.keys.keys():
        if info.id == key_id:
            return info
    raise UnknownKeyError("no key with this id", key_id=key_id, operation=operation)


def rows_using(guard: Any, key_ids: set[int], kind: str = "dek") -> dict[str, int]:
    """Stored values naming any of ``key_ids``, by column (``table.column``)."""
    role = "index" if kind == "index" else "ciphertext"
    out: dict[str, int] = {}
    for usage in column_usage(guard.engine, discover(guard)):
        if usage.role != role:
            continue
        n = sum(usage.by_key.get(k, 0) for k in key_ids)
        if n:
            out[usage.label] = n
    return out


def clear_indexes(guard: Any, dek_ids: set[int]) -> int:
    """Set to NULL the blind index of every value under a destroyed DEK: an index value
    outlives its key (it is an HMAC under the index key), and would still answer "is
    this national id in the table?" for an erased subject. Returns how many were
    cleared."""
    from sqlalchemy import and_, update

    from piiguard.rotation.sql import Lite

    cleared = 0
    if not dek_ids:
        return 0
    with guard.engine.begin() as conn:
        for target in discover(guard):
            lite = Lite(target, guard.engine)
            for ec in target.columns:
                if ec.index_name is None:
                    continue
                idx = lite.c[ec.index_name]
                cleared += conn.execute(
                    update(lite.tc).where(and_(lite.uses_deks(ec, dek_ids), idx.is_not(None)))
                    .values({ec.index_name: None})).rowcount
    return cleared


def retire_key(guard: Any, key_id: int) -> None:
    """Mark decrypt-only key ``key_id`` retired; refused while any row still uses it.

    Raises :class:`~piiguard.errors.KeyInUseError` (naming the first column that still
    uses it) and :class:`~piiguard.errors.ConfigurationError` when the guard knows no
    encrypted column (usage cannot be counted: fail closed)."""
    info = _info(guard, key_id, "retire")
    if info.kind in ("dek", "index"):
        if not discover(guard):
            raise ConfigurationError("no encrypted column is registered, so usage cannot "
                                     "be counted: pass --app with the models imported",
                                     key_id=key_id, operation="retire")
        used = rows_using(guard, {key_id}, info.kind)
        if used:
            label, _ = next(iter(used.items()))
            raise KeyInUseError(f"{sum(used.values())} stored value(s) still use this key; "
                                "run reencrypt first", column=label, key_id=key_id,
                                operation="retire")
    guard.keys.retire(key_id)


def destroy_key(guard: Any, key_id: int) -> ShredReport:
    """Crypto-shred one key; returns how many stored values became unreadable."""
    info = _info(guard, key_id, "destroy")
    report = ShredReport(None, [key_id])
    if info.state != DESTROYED:
        report.values = rows_using(guard, {key_id}, info.kind)
    guard.keys.destroy(key_id)
    if info.kind == "dek":
        report.indexes_cleared = clear_indexes(guard, {key_id})
    return report


def shred_scope(guard: Any, scope: str) -> ShredReport:
    """Erase ``scope``: destroy every key (data, index and pseudonym keys) of it and
    close it with a tombstone (one transaction).

    No key is created for the scope again, by any process, until :func:`reopen_scope`:
    an application write for it fails with :class:`~piiguard.errors.ScopeErasedError`.
    Returns the report whose :meth:`~ShredReport.receipt` is emitted as the ``shred``
    audit event. Running it again on an erased scope destroys nothing new and clears the
    blind index of every value under the scope's destroyed DEKs again."""
    everything = guard.keys.keys(scope=scope)
    infos = [k for k in everything if k.state != DESTROYED]
    report = ShredReport(scope)
    if not everything:
        raise UnknownKeyError(f"no key in scope {scope!r}", operation="shred")
    deks = {k.id for k in infos if k.kind == "dek"}
    idx = {k.id for k in infos if k.kind == "index"}
    if deks and discover(guard):
        report.values.update(rows_using(guard, deks, "dek"))
    if idx and discover(guard):
        report.values.update(rows_using(guard, idx, "index"))
    kek = guard.keys.hierarchy.active_kek()
    victims = guard.keys.store.erase_scope(scope, KEY_KINDS, kek.id, guard.keys.wall_now())
    guard.keys.forget([row.id for row in victims], scope)
    for row in victims:
        guard.audit.emit("key.destroy", key_id=row.id, kind=row.kind, scope=scope)
    report.epoch = kek.id
    report.keys = [row.id for row in victims]
    tomb = guard.keys.store.tombstones(scope)
    report.erased_at = tomb[0].created_at if tomb else None
    report.indexes_cleared = clear_indexes(
        guard, {k.id for k in everything if k.kind == "dek"})
    receipt = report.receipt()
    guard.audit.emit("shred", scope=scope, count=len(report.keys), rows=report.total_values,
                     key_ids=receipt["key_ids"], erased_at=receipt["erased_at"],
                     epoch=report.epoch, status="pending_epoch")
    return report


def reopen_scope(guard: Any, scope: str) -> int:
    """Re-open an erased scope on purpose: writes for it may create a fresh key again
    (data under the destroyed keys stays unreadable). Audited (``scope.reopen``).
    Returns how many tombstones were lifted; :class:`~piiguard.errors.UnknownKeyError`
    if the scope is not erased."""
    if not guard.keys.store.tombstones(scope):
        raise UnknownKeyError(f"scope {scope!r} is not erased", operation="reopen")
    n = int(guard.keys.store.reopen_scope(scope, guard.keys.wall_now()))
    guard.audit.emit("scope.reopen", scope=scope, count=n)
    return n
