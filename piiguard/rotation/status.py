"""``keys status``: every key, its state, and how many rows still use it.

Rotation progress is a query: the rows themselves say which key they are under (the DEK
id in each envelope header, the index key id in front of each blind index value), so one
``GROUP BY`` per column counts them (see :mod:`piiguard.rotation.sql`). Nothing is
decrypted, no KMS call is made::

    report = key_status(guard)
    report.rows_using(7)          # rows in every encrypted column still under key 7
    report.to_dict()              # what `piiguard keys status --json` prints
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from piiguard.errors import ConfigurationError
from piiguard.rotation.sql import (
    Lite,
    decode_binary_group,
    decode_index_group,
    decode_text_group,
)
from piiguard.rotation.targets import TableTarget, discover

__all__ = ["ColumnUsage", "KeyStatus", "StatusReport", "column_usage", "key_status"]


@dataclass
class ColumnUsage:
    """Stored values of one column by the key they name.

    ``role`` is ``"ciphertext"`` (counts by DEK id) or ``"index"`` (the blind index
    column, counts by index key id); ``plaintext`` counts values that are not
    envelopes (a column mid-``encrypt-existing``)."""

    label: str
    role: str
    by_key: dict[int, int] = field(default_factory=dict)
    plaintext: int = 0
    total: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"column": self.label, "role": self.role, "total": self.total,
                "plaintext": self.plaintext,
                "by_key": {str(k): v for k, v in sorted(self.by_key.items())}}


@dataclass
class KeyStatus:
    """One key table row (no key material) and the rows that use the key."""

    id: int
    kind: str
    scope: str
    state: str
    master_key_id: str
    created_at: datetime | None
    age_seconds: float | None
    uses: int
    rows: dict[str, int] = field(default_factory=dict)

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "scope": self.scope, "state": self.state,
                "master_key_id": self.master_key_id,
                "created_at": None if self.created_at is None else self.created_at.isoformat(),
                "age_seconds": None if self.age_seconds is None else round(self.age_seconds),
                "uses": self.uses, "rows": dict(self.rows), "total_rows": self.total_rows}


@dataclass
class StatusReport:
    keys: list[KeyStatus]
    columns: list[ColumnUsage]

    def rows_using(self, key_id: int) -> int:
        """Rows (over every registered column) whose value names ``key_id``."""
        return sum(self.columns_using(key_id).values())

    def columns_using(self, key_id: int) -> dict[str, int]:
        key = next((k for k in self.keys if k.id == key_id), None)
        role = "index" if key is not None and key.kind == "index" else "ciphertext"
        return {c.label: c.by_key[key_id] for c in self.columns
                if c.role == role and c.by_key.get(key_id)}

    def unknown_keys(self) -> dict[str, dict[int, int]]:
        """Values naming a key id that is not in the key table (copied or tampered)."""
        known = {k.id for k in self.keys}
        out: dict[str, dict[int, int]] = {}
        for c in self.columns:
            bad = {kid: n for kid, n in c.by_key.items() if kid not in known}
            if bad:
                out[c.label] = bad
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"keys": [k.to_dict() for k in self.keys],
                "columns": [c.to_dict() for c in self.columns],
                "unknown_keys": {label: {str(k): v for k, v in d.items()}
                                 for label, d in self.unknown_keys().items()}}


def _aware(ts: datetime | None) -> datetime | None:
    if ts is not None and ts.tzinfo is None:  # SQLite returns naive UTC datetimes
        return ts.replace(tzinfo=UTC)
    return ts


def column_usage(engine: Any, targets: list[TableTarget]) -> list[ColumnUsage]:
    """Count the stored values of every column in ``targets`` by key: one GROUP BY query
    per ciphertext column and one per blind index column."""
    out: list[ColumnUsage] = []
    with engine.connect() as conn:
        for target in targets:
            lite = Lite(target, engine)
            for ec in target.columns:
                usage = ColumnUsage(ec.label, "ciphertext")
                decode = decode_text_group if ec.text_form else decode_binary_group
                for prefix, n in conn.execute(lite.key_groups(ec)):
                    usage.total += n
                    kid = decode(prefix)
                    if kid is None:
                        usage.plaintext += n
                    else:
                        usage.by_key[kid] = usage.by_key.get(kid, 0) + n
                out.append(usage)
                if ec.index_name is not None:
                    iu = ColumnUsage(f"{target.table.name}.{ec.index_name}", "index")
                    for prefix, n in conn.execute(lite.index_groups(ec)):
                        iu.total += n
                        kid = decode_index_group(prefix)
                        if kid is None:
                            iu.plaintext += n
                        else:
                            iu.by_key[kid] = iu.by_key.get(kid, 0) + n
                    out.append(iu)
    return out


def key_status(guard: Any, *, table: str | None = None,
               now: datetime | None = None) -> StatusReport:
    """Every key in the guard's key table with the rows that still use it."""
    if guard.engine is None:
        raise ConfigurationError("the Guard is not bound to a database",
                                 operation="keys status")
    targets = discover(guard, table=table)
    usage = column_usage(guard.engine, targets)
    now = now or datetime.now(UTC)
    keys = []
    for info in guard.keys.keys():
        created = _aware(info.created_at)
        role = "index" if info.kind == "index" else "ciphertext"
        rows = {c.label: c.by_key[info.id] for c in usage
                if c.role == role and c.by_key.get(info.id)}
        keys.append(KeyStatus(
            id=info.id, kind=info.kind, scope=info.scope, state=info.state,
            master_key_id=info.master_key_id, created_at=created,
            age_seconds=None if created is None else (now - created).total_seconds(),
            uses=info.encryption_count, rows=rows))
    return StatusReport(keys, usage)
