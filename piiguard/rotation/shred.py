"""Retiring keys no row uses, and crypto-shredding: destroying keys on purpose.

- :func:`retire_key`: a decrypt-only key that no row names any more becomes ``retired``
  (kept for the record). Refused with :class:`~piiguard.errors.KeyInUseError` while any
  row of a registered encrypted column still uses it (counted with the same GROUP BY
  queries as ``keys status``).
- :func:`destroy_key`: erase one wrapped key. Every value under it is unreadable for
  good (:class:`~piiguard.errors.KeyDestroyedError`); the key table row stays, in state
  ``destroyed`` with the time.
- :func:`shred_scope`: destroy every key of a scope (a subject's or tenant's keys, with
  per-subject key scopes): the answer to an erasure request (KVKK art. 7, GDPR art. 17)
  that also reaches backups, since the data there is under the same destroyed key.

Destroying a DEK also clears (sets to NULL) the blind index of every value under it: an
index value is an HMAC under the index key, not under the DEK, and would otherwise still
confirm an erased subject's national id. Each destruction emits a ``key.destroy`` audit
event, and ``shred_scope`` a ``shred``
event with the scope and how many keys and values it made unreadable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from piiguard.errors import ConfigurationError, KeyInUseError, UnknownKeyError
from piiguard.keys.table import DESTROYED
from piiguard.rotation.status import column_usage
from piiguard.rotation.targets import discover

__all__ = [
    "ShredReport",
    "clear_indexes",
    "destroy_key",
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

    @property
    def total_values(self) -> int:
        return sum(self.values.values())

    def to_dict(self) -> dict[str, Any]:
        return {"scope": self.scope, "keys": self.keys, "values": dict(self.values),
                "total_values": self.total_values, "indexes_cleared": self.indexes_cleared}


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
    """Destroy every key (data, index and pseudonym keys) of ``scope``.

    The scope stays usable: a later write for it creates a fresh key, so new data about
    the same subject is not affected by the erasure of the old."""
    infos = [k for k in guard.keys.keys(scope=scope) if k.state != DESTROYED]
    report = ShredReport(scope)
    if not infos:
        already = guard.keys.keys(scope=scope)
        if not already:
            raise UnknownKeyError(f"no key in scope {scope!r}", operation="shred")
    deks = {k.id for k in infos if k.kind == "dek"}
    idx = {k.id for k in infos if k.kind == "index"}
    if deks and discover(guard):
        report.values.update(rows_using(guard, deks, "dek"))
    if idx and discover(guard):
        report.values.update(rows_using(guard, idx, "index"))
    for info in infos:
        guard.keys.destroy(info.id)
        report.keys.append(info.id)
    report.indexes_cleared = clear_indexes(guard, deks)
    guard.audit.emit("shred", scope=scope, count=len(report.keys),
                     rows=report.total_values)
    return report
