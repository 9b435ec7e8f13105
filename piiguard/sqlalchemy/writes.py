"""Write-back refusal on every write path: ORM assignment, ORM flush, Core statements.

:func:`piiguard.masking.writeback.check_write` decides (write rule, masked views
compared as values, clearing); this module finds, for each write, the stored value it
would replace:

- **ORM assignment** (:func:`check_assignment`, called by the encrypted attribute's
  ``__set__`` when a policy is set): the instance's committed value, loaded first if it
  was expired (after a commit), so a role cannot clear or overwrite a value it never
  loaded;
- **every INSERT and UPDATE through an Engine** (:func:`before_execute`, an Engine
  ``before_execute`` listener installed by :mod:`.hooks`): ORM flushes, ``merge()``,
  ORM bulk updates and Core ``update()`` alike. The write rule is checked for every
  encrypted column the statement writes. For an UPDATE by a role that may not reveal
  a column, the stored values of the affected rows are read first, on the same
  connection (one ``SELECT`` per parameter set, with the statement's own WHERE), and
  each new value is checked against each of them.

Statements on tables without encrypted columns, and any statement while the Guard has
no policy or the role may reveal the column, cost a dictionary look-up and nothing more.
"""

from __future__ import annotations

import functools
import weakref
from typing import Any

from sqlalchemy import Table, select
from sqlalchemy.orm.attributes import get_history, instance_state
from sqlalchemy.sql.elements import BindParameter, Null

from piiguard.errors import AccessDeniedError
from piiguard.masking.context import current_role
from piiguard.masking.writeback import NOTHING_STORED, check_write
from piiguard.sqlalchemy._sa_private import deannotated, multi_row_values, statement_values
from piiguard.sqlalchemy.sealed import Sealed, unseal
from piiguard.sqlalchemy.state import AttachedColumn, Pending, attached_column_of

__all__ = ["before_execute", "check_assignment", "encrypted_columns_of"]

#: what a statement does not write for a column
_ABSENT: Any = object()
#: a value given as an SQL expression (not a parameter): cannot be compared
_EXPRESSION: Any = object()

#: Table -> (its column count, weak references to its encrypted columns). Weak both
#: ways: a column holds its table, so a strong reference here would keep every table
#: (and its Guard and keys) alive.
_COLUMNS: weakref.WeakKeyDictionary[
    Table, tuple[int, tuple[weakref.ref[AttachedColumn], ...]]] = weakref.WeakKeyDictionary()


def encrypted_columns_of(table: Any) -> tuple[AttachedColumn, ...]:
    """The attached encrypted columns of ``table`` (cached per table and column count)."""
    if not isinstance(table, Table):
        table = deannotated(table)
        if not isinstance(table, Table):
            return ()
    n = len(table.c)
    cached = _COLUMNS.get(table)
    if cached is not None and cached[0] == n:
        found = tuple(st for r in cached[1] if (st := r()) is not None)
        if len(found) == len(cached[1]):
            return found
    found = tuple(st for c in table.c
                  if (st := attached_column_of(c.type)) is not None and st.table is table)
    _COLUMNS[table] = (n, tuple(weakref.ref(st) for st in found))
    return found


def _plaintext_of(st: AttachedColumn, value: Any) -> Any:
    """The plaintext of a stored value (an attribute's or a fetched envelope)."""
    if value is None:
        return NOTHING_STORED
    if isinstance(value, Pending):
        value = value.value
    if isinstance(value, Sealed):
        return unseal(value)
    if isinstance(value, str):
        return value              # an attribute holding a plaintext (no policy at load)
    return st.decrypt(value)


def _require_write(st: AttachedColumn, role: str | None) -> None:
    if not st.guard.policy.may_write(kind=st.kind, column=st.label, role=role):
        raise AccessDeniedError("write", role=role, column=st.label, operation="write")


# ---------------------------------------------------------------------------------------
# ORM assignment
# ---------------------------------------------------------------------------------------
def check_assignment(st: AttachedColumn, instance: Any, key: str, value: Any) -> None:
    """Refuse assigning ``value`` to ``instance.<key>`` if the role in effect may not
    (write rule, masked view of the stored value, clearing)."""
    if isinstance(value, Sealed) and value.origin is st:
        _require_write(st, current_role())
        return                    # a stored envelope of this column, not typed input

    def stored() -> Any:
        state = instance_state(instance)
        if state.key is None:
            return NOTHING_STORED          # not in the database yet
        if key not in state.dict and not _can_load(state):
            # An AsyncSession cannot load here (no greenlet), a detached object not at
            # all: the UPDATE check at flush reads the stored value instead.
            return NOTHING_STORED
        # Loads the attribute first if it is expired (e.g. after a commit).
        history = get_history(instance, key)
        committed = history.deleted or history.unchanged
        return _plaintext_of(st, committed[0]) if committed else NOTHING_STORED

    check_write(st.guard, kind=st.kind, column=st.label, new=_unwrap(value),
                stored=stored, canonical=st.canonical)


def _can_load(state: Any) -> bool:
    """Can an expired attribute of ``state`` be loaded now (a sync session)?"""
    session = state.session
    if session is None:
        return False
    try:
        bind = session.get_bind(mapper=state.mapper)
    except Exception:  # noqa: BLE001 - unbound: nothing to load from
        return False
    return not getattr(bind.dialect, "is_async", False)


def _unwrap(value: Any) -> Any:
    if isinstance(value, Pending):
        value = value.value
    if isinstance(value, Sealed):
        return unseal(value)
    return value


# ---------------------------------------------------------------------------------------
# Engine: before_execute
# ---------------------------------------------------------------------------------------
def _key_of(k: Any) -> str | None:
    if isinstance(k, str):
        return k
    clause_element = getattr(k, "__clause_element__", None)
    if clause_element is not None:
        k = clause_element()
    return getattr(k, "key", None)


def _value_in(st: AttachedColumn, given: dict[str | None, Any],
              row: dict[str, Any]) -> Any:
    """What the statement writes to ``st``'s column for one parameter set."""
    key = st.column.key
    if key in row:
        return row[key]
    if key not in given:
        return _ABSENT
    v = given[key]
    if isinstance(v, BindParameter):
        if v.key in row:
            return row[v.key]
        return v.callable() if v.callable is not None else v.value
    if isinstance(v, Null):
        return None
    return _EXPRESSION


def before_execute(conn: Any, elem: Any, multiparams: Any, params: Any,
                   execution_options: Any) -> None:
    """Check every encrypted value an INSERT or UPDATE writes (see the module
    docstring); raises before the statement runs."""
    if not getattr(elem, "is_dml", False):
        return
    is_update = getattr(elem, "is_update", False)
    if not (is_update or getattr(elem, "is_insert", False)):
        return
    columns = encrypted_columns_of(getattr(elem, "table", None))
    if not columns or all(st.guard.policy is None for st in columns):
        return
    rows: Any = multiparams if multiparams else [params or {}]
    given = {_key_of(k): v for k, v in (statement_values(elem) or {}).items()}
    for extra in multi_row_values(elem):
        for r in extra:
            if isinstance(r, dict):
                given.update({_key_of(k): _EXPRESSION for k in r})
    role = current_role()
    first = rows[0]
    to_compare: list[tuple[AttachedColumn, list[Any]]] = []
    for st in columns:
        policy = st.guard.policy
        if policy is None:
            continue
        key = st.column.key
        # (executemany rows all have the keys of the first: SQLAlchemy compiles from it)
        if key not in first and key not in given:
            continue
        _require_write(st, role)
        if is_update and not policy.mask_for(kind=st.kind, column=st.label,
                                             role=role).is_reveal:
            # per row only here: an UPDATE by a role that cannot see the column
            to_compare.append((st, [_value_in(st, given, row) for row in rows]))
    if to_compare:
        _check_update(conn, elem, rows, to_compare)


def _check_update(conn: Any, elem: Any, rows: list[dict[str, Any]],
                  to_compare: list[tuple[AttachedColumn, list[Any]]]) -> None:
    """Read the stored values the UPDATE would replace and check each new value."""
    query = select(*(st.column for st, _ in to_compare))
    if elem.whereclause is not None:
        query = query.where(elem.whereclause)
    for i, row in enumerate(rows):
        pending = [(j, st, values[i]) for j, (st, values) in enumerate(to_compare)
                   if values[i] is not _ABSENT and values[i] is not _EXPRESSION]
        if not pending:
            continue
        stored_rows = conn.execute(query, row).all()
        for j, st, new in pending:
            if isinstance(new, Sealed) and new.origin is st:
                continue                   # a stored envelope of this column
            plain_new = _unwrap(new)
            for stored_row in stored_rows:
                stored = stored_row[j]
                if isinstance(stored, memoryview):
                    stored = bytes(stored)
                check_write(st.guard, kind=st.kind, column=st.label, new=plain_new,
                            stored=functools.partial(_plaintext_of, st, stored),
                            canonical=st.canonical)
