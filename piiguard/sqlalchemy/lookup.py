"""Exact look-ups through a (possibly truncated) blind index, per-scope keys, and the
registry of a Guard's encrypted columns."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm.attributes import instance_dict

from piiguard.errors import ConfigurationError
from piiguard.sqlalchemy.columns import EncryptedString
from piiguard.sqlalchemy.sealed import Sealed, unseal
from piiguard.sqlalchemy.state import AttachedColumn

__all__ = ["encrypted_columns", "ensure_scope_key", "lookup"]


def _attached(col: Any) -> AttachedColumn:
    t = col.type
    if not isinstance(t, EncryptedString):
        raise ConfigurationError("not an encrypted column")
    return t.attached()


def lookup(executor: Any, column: Any, value: Any) -> list[Any]:
    """Rows (ORM entities, or Core rows) whose ``column`` equals ``value``, exactly.

    Works for every searchable column, and is *the* way to search a column whose blind
    index is truncated (``index_bits < 128``): the index narrows the rows down to
    candidates, then each candidate is decrypted and compared with the canonical value,
    so false matches are dropped. ``executor`` is a Session (ORM attribute) or a
    Session/Connection (Core column). The comparison never goes through masking.
    """
    clause = column.blind_match(value)
    is_orm = hasattr(column, "class_") and hasattr(column, "property")
    col = column.property.columns[0] if is_orm else column
    st = _attached(col)
    canonical = st.canonical(value)

    def same(stored: Any) -> bool:
        if stored is None:
            return False
        if isinstance(stored, Sealed):
            return st.same_value(unseal(stored), canonical)
        if isinstance(stored, str):
            return st.same_value(st.canonical(stored), canonical)
        return st.same_value(st.decrypt(stored), canonical)

    if is_orm:
        key = column.key
        out = []
        for obj in executor.scalars(select(column.class_).where(clause)).all():
            dict_ = instance_dict(obj)
            if key not in dict_:
                getattr(obj, key)
            if same(dict_.get(key)):
                out.append(obj)
        return out
    rows = executor.execute(select(col.table).where(clause)).all()
    return [r for r in rows if same(r._mapping[col])]


def ensure_scope_key(column: Any, scope_value: Any) -> int:
    """Create (if missing) the DEK of one key scope of a ``key_scope=`` column, and
    return its id. Call it when a tenant or subject is created, outside the write
    transaction that first stores its data: on SQLite a key created on first use from
    inside a transaction that has already written waits for the database lock.

    ``column`` is the ORM attribute or the Core column of the key-scoped column.
    """
    col = column.property.columns[0] if hasattr(column, "property") else column
    t = col.type
    if not isinstance(t, EncryptedString) or t.key_scope is None:
        raise ConfigurationError("ensure_scope_key() takes a column declared with "
                                 "key_scope=")
    st = t.attached()
    key_id: int = st.guard.keys.ensure_active("dek", st.scope_for(scope_value))
    return key_id


def encrypted_columns(guard: Any) -> list[EncryptedString]:
    """Every encrypted column type attached to a table with ``guard``, one per
    ``table.column`` (the most recently declared wins), in declaration order."""
    seen: dict[str, EncryptedString] = {}
    for t in guard.columns:
        st = t.attached_column
        if st is None:
            continue
        seen.pop(st.label, None)
        seen[st.label] = t
    return list(seen.values())
