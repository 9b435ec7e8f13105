"""Writes of row-bound columns: each value bound to its row, and moved with its row.

A key-scoped (``key_scope=``) or ``bound_to=`` column binds every envelope to values of
its row (:mod:`.binding`). Two rules follow, for every write path:

1. **A bound value is written with its row.** An INSERT or UPDATE that sets it must
   carry a plain value for every binding column (a scalar column default counts on
   INSERT; the ORM supplies the rest from the object). :func:`bind_value` turns the
   value into a :class:`~.state.Pending` with its DEK scope and binding bytes, and the
   bind processor seals it. Without them: :class:`~piiguard.errors.ConfigurationError`,
   never an envelope bound to the wrong row.
2. **Values move with their row.** A statement that changes a binding column (a scope
   move, a new ``customer_ref``, a version bump) re-encrypts the row's bound values under
   the new values (and the new scope's DEK) and recomputes their blind index, in the
   same statement execution:

   - ORM flush: :class:`MapperBinding` (``before_update``) marks every bound attribute
     whose binding changes as modified, with its plaintext (loaded if needed), so the
     flush's own UPDATE writes it; a ``version_id_col`` that the ORM bumps counts as a
     change of every value bound to it.
   - Core ``update()`` (and ORM bulk / ``update(Model)`` statements): :func:`rewrite_update`
     reads the affected rows in the same connection and transaction (``SELECT … FOR
     UPDATE`` where the database has it), decrypts their bound values with the old
     binding, and turns the statement into a per-row ``executemany``: the original
     ``SET`` and ``WHERE`` plus ``pk = :pk AND value IS NOT DISTINCT FROM :old`` (a
     compare-and-swap: a row another transaction changed in between is not written, and
     the statement fails with :class:`~piiguard.errors.PIIGuardError` so the caller
     rolls back and retries). Refused, with an error saying why: a binding column set to
     an SQL expression (``version = version + 1``: the new value is unknown until the
     database computes it), ``RETURNING``, a table without a primary key.

A value under a destroyed key (erased) cannot be re-encrypted: a move writes it as NULL
(it read as ``None`` already) and clears its blind index.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from sqlalchemy import and_, bindparam, false, select, type_coerce
from sqlalchemy.orm import Mapper, object_session
from sqlalchemy.orm.attributes import (
    PASSIVE_NO_INITIALIZE,
    InstrumentedAttribute,
    flag_modified,
    get_history,
    instance_dict,
)
from sqlalchemy.schema import ColumnDefault
from sqlalchemy.sql.elements import BindParameter, ClauseElement

from piiguard.errors import ConfigurationError, KeyDestroyedError, PIIGuardError
from piiguard.sqlalchemy._sa_private import (
    class_attribute,
    deannotated,
    statement_values,
    without_where,
)
from piiguard.sqlalchemy.state import AttachedColumn, Pending
from piiguard.sqlalchemy.storage import Ciphertext

__all__ = [
    "MapperBinding",
    "bind_value",
    "check_rowcount",
    "moved_columns",
    "pending_checks",
    "rewrite_update",
]

#: A lookup's answer for a binding column the statement does not set.
MISSING = object()
#: ... and for one it sets to an SQL expression.
NOT_PLAIN = object()


def plain_value(value: Any) -> Any:
    """The Python value of a statement ``values()`` entry (:data:`NOT_PLAIN` for an SQL
    expression)."""
    if isinstance(value, BindParameter):
        return value.callable() if value.callable is not None else value.value
    if isinstance(value, ClauseElement) or hasattr(value, "__clause_element__"):
        return NOT_PLAIN
    return value


def _missing(st: AttachedColumn, name: str, expressions: bool) -> ConfigurationError:
    rb = st.binding
    assert rb is not None
    if rb.has_scope and name == rb.names[0]:
        what = "a plain value for its key scope column" if expressions \
            else "its key scope column"
        return ConfigurationError(f"a key-scoped column was written without {what} "
                                  f"({name}) in the same statement", column=st.label,
                                  operation="encrypt")
    return ConfigurationError(f"a row-bound column was written without a plain value for "
                              f"{name} (a column its values are bound to) in the same "
                              "statement", column=st.label, operation="encrypt")


def bind_value(st: AttachedColumn, value: Any, lookup: Callable[[str], Any], *,
               insert: bool, expressions: bool = False) -> Pending:
    """``value`` (written to row-bound ``st``) as a :class:`Pending` bound to its row.

    ``lookup(key)`` gives the statement's value of a binding column, :data:`MISSING` or
    :data:`NOT_PLAIN`; a Pending's ``row`` (from an ORM object) fills in the rest, and on
    INSERT so does a scalar column default."""
    rb = st.binding
    assert rb is not None
    fallback = None
    if isinstance(value, Pending):
        fallback = value.row
        value = value.value
    values = []
    for key, col in zip(rb.keys, rb.columns, strict=True):
        v = lookup(key)
        if v is MISSING and fallback is not None and key in fallback:
            v = fallback[key]
        if v is MISSING and insert:
            default = col.default
            if isinstance(default, ColumnDefault) and default.is_scalar:
                v = default.arg          # what the column default will write
        if v is MISSING or v is NOT_PLAIN or isinstance(v, Pending):
            raise _missing(st, col.name, expressions or v is NOT_PLAIN)
        values.append(v)
    bound = st.bind_row(values)
    bound.value = value
    return bound


# ---------------------------------------------------------------------------------------
# Core UPDATE: values move with their row
# ---------------------------------------------------------------------------------------
def moved_columns(written: set[str], bound: Sequence[AttachedColumn]) -> list[AttachedColumn]:
    """The row-bound columns an UPDATE that sets ``written`` (column keys) must move: a
    binding column of theirs is set and they are not (empty: nothing moves)."""
    moving = [st for st in bound if st.column.key not in written
              and any(k in written for k in st.binding.keys)]  # type: ignore[union-attr]
    if not moving:
        return []
    # every bound column touched by the statement is rewritten with the row's values
    return [st for st in bound if st in moving or st.column.key in written]


class Rewrite(NamedTuple):
    """A Core UPDATE turned into a per-row executemany (:func:`rewrite_update`)."""

    statement: Any
    multiparams: list[dict[str, Any]]
    done: list[AttachedColumn]      # bound columns it prepared (values and indexes)


#: Rewritten statements -> how many rows their compare-and-swap must match.
_EXPECTED: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


def pending_checks() -> bool:
    """True while a rewritten statement awaits :func:`check_rowcount` (a fast test for
    the ``after_execute`` hook, which runs for every statement)."""
    return bool(_EXPECTED)


def rewrite_update(conn: Any, elem: Any, param_sets: list[dict[str, Any]],
                   moved: list[AttachedColumn]) -> Rewrite:
    """Re-encrypt the ``moved`` values of every row an UPDATE touches (see the module
    docstring): read the rows, decrypt with their current binding, and return the
    statement as a per-row compare-and-swap executemany carrying the new envelopes."""
    label = moved[0].label
    table = deannotated(elem.table)
    pk = list(table.primary_key.columns)
    if not pk:
        raise ConfigurationError("a table whose rows have bound values needs a primary key "
                                 "to move them", column=label, operation="update")
    if elem.returning_column_descriptions:
        raise ConfigurationError("UPDATE … RETURNING that changes a column values are bound "
                                 "to is not supported (with the ORM, use "
                                 "synchronize_session='evaluate' or False)", column=label,
                                 operation="update")
    given = statement_values(elem) or {}
    svals = {_key(k): v for k, v in given.items()}
    as_given = {_key(k): k for k in given}    # values() keys as the statement has them
    keys = [k for st in moved for k in st.binding.keys]  # type: ignore[union-attr]
    bcols = list(dict.fromkeys(c for st in moved for c in st.binding.columns))  # type: ignore[union-attr]
    raw = {st: type_coerce(st.column, Ciphertext(text=st.text_form)) for st in moved}
    query = select(*pk, *bcols, *raw.values()).where(*_where(elem)).with_for_update()
    npk, nb = len(pk), len(bcols)
    # what a parameter set SETs (its column keys), but the moved values: set below
    set_keys = {c.key for c in table.c} - {st.column.key for st in moved}
    set_keys |= {v.key for v in svals.values() if isinstance(v, BindParameter)}
    new_sets: list[dict[str, Any]] = []
    for p in param_sets or [{}]:
        def written(key: str, p: dict[str, Any] = p) -> Any:
            if key in p:
                return p[key]
            if key in svals:
                v = svals[key]
                if isinstance(v, BindParameter) and v.value is None and v.callable is None \
                        and v.key in p:
                    return p[v.key]     # values(col=bindparam("x")), x given at execution
                return plain_value(v)
            return MISSING
        for key in keys:
            if written(key) is NOT_PLAIN:
                raise ConfigurationError(
                    f"{key} has encrypted values bound to it: it can only be updated with a "
                    "plain value, not an SQL expression", column=label, operation="update")
        for row in conn.execute(query, p).all():
            current = {c.key: row[npk + i] for i, c in enumerate(bcols)}
            new_p = {k: v for k, v in p.items() if k in set_keys}
            for i in range(npk):
                new_p[f"_piiguard_pk_{i}"] = row[i]
            for i, c in enumerate(bcols):
                new_p[f"_piiguard_cur_{i}"] = current[c.key]
            for j, st in enumerate(moved):
                stored = row[npk + nb + j]
                new_p[f"_piiguard_old_{j}"] = stored
                value = _new_value(st, stored, current, written)
                after = {k: (current[k] if written(k) is MISSING else written(k))
                         for k in st.binding.keys}  # type: ignore[union-attr]
                if value is None:       # NULL, or erased: written as NULL
                    new_p[f"_piiguard_new_{j}"] = None
                    new_p[f"_piiguard_idx_{j}"] = None
                    continue
                pending = bind_value(st, value, after.get, insert=False)
                new_p[f"_piiguard_new_{j}"] = pending
                new_p[f"_piiguard_idx_{j}"] = st.index_of_value(pending)
            new_sets.append(new_p)
    if not new_sets:
        return Rewrite(elem.where(false()), list(param_sets), moved)
    # The row by primary key, as it was read: its binding columns and moved values
    # unchanged since (a compare-and-swap, in place of the original WHERE, whose
    # expanding IN lists an executemany cannot take).
    conds = [c == bindparam(f"_piiguard_pk_{i}", type_=c.type) for i, c in enumerate(pk)]
    conds += [c.is_not_distinct_from(bindparam(f"_piiguard_cur_{i}", type_=c.type))
              for i, c in enumerate(bcols)]
    sets: dict[Any, Any] = {}
    for j, st in enumerate(moved):
        conds.append(raw[st].is_not_distinct_from(
            bindparam(f"_piiguard_old_{j}", type_=Ciphertext(text=st.text_form))))
        sets[as_given.get(st.column.key, st.column)] = bindparam(
            f"_piiguard_new_{j}", type_=st.column.type)
        if st.search is not None:
            idx = st.search.column
            sets[as_given.get(idx.key, idx)] = bindparam(f"_piiguard_idx_{j}",
                                                         type_=idx.type)
    stmt = without_where(elem).where(and_(*conds)).values(sets)
    _EXPECTED[stmt] = len(new_sets)
    return Rewrite(stmt, new_sets, moved)


def _key(k: Any) -> Any:
    if isinstance(k, str):
        return k
    ce = getattr(k, "__clause_element__", None)
    return getattr(ce() if ce is not None else k, "key", k)


def _where(elem: Any) -> list[Any]:
    where = elem.whereclause
    return [] if where is None else [where]


def _new_value(st: AttachedColumn, stored: Any, current: Mapping[str, Any],
               written: Callable[[str], Any]) -> Any:
    """The plaintext a moved row's value of ``st`` is re-encrypted from: the value the
    statement writes, or the stored one decrypted with the row's current binding (None:
    NULL, or erased, its key destroyed)."""
    value = written(st.column.key)
    if value is not MISSING:
        if value is NOT_PLAIN:
            raise ConfigurationError("a row-bound column can only be written with plain "
                                     "values", column=st.label, operation="encrypt")
        return value
    if stored is None:
        return None
    rb = st.binding
    assert rb is not None
    try:
        return st.decrypt_in_row(stored, [current[k] for k in rb.keys])
    except KeyDestroyedError:
        return None


def check_rowcount(elem: Any, result: Any) -> None:
    """After a rewritten UPDATE (``after_execute``): every row read must have been
    written, or another transaction changed one in between."""
    expected = _EXPECTED.pop(elem, None)
    if expected is None:
        return
    if expected > 1 and not result.dialect.supports_sane_multi_rowcount:
        return
    if result.rowcount != expected:
        raise PIIGuardError(f"{expected - result.rowcount} row(s) changed while their bound "
                            "values were re-encrypted and were not updated: roll back and "
                            "run the statement again", operation="update")


# ---------------------------------------------------------------------------------------
# ORM flush: values move with their object
# ---------------------------------------------------------------------------------------
class _BoundAttr(NamedTuple):
    key: str
    column: AttachedColumn
    binding_attrs: tuple[str | None, ...]   # ORM attribute of each binding column
    index_attr: str | None
    version_bound: bool                     # bound to the version_id_col the ORM bumps


class MapperBinding:
    """The row-bound attributes of one mapper and what its flushes do for them."""

    def __init__(self, mapper: Mapper, bound: Sequence[tuple[str, AttachedColumn]]) -> None:
        self.mapper = mapper
        version = mapper.version_id_col
        bumps = version is not None and mapper.version_id_generator is not False
        self.attrs: list[_BoundAttr] = []
        for key, st in bound:
            rb = st.binding
            assert rb is not None
            cols = rb.columns           # resolved and checked at mapper configuration
            self.attrs.append(_BoundAttr(
                key, st, tuple(_attr_of(mapper, c) for c in cols),
                _attr_of(mapper, st.index_column) if st.search is not None else None,
                bumps and any(c is version for c in cols)))

    def before_update(self, target: Any) -> None:
        """Wrap every bound value the UPDATE writes (assigned, or moved because its
        binding changes) as a Pending carrying the object's binding values."""
        dict_ = instance_dict(target)
        modified: bool | None = None
        for a in self.attrs:
            changed = bool(get_history(target, a.key, passive=PASSIVE_NO_INITIALIZE).added)
            moves = any(b is not None and get_history(
                target, b, passive=PASSIVE_NO_INITIALIZE).has_changes()
                for b in a.binding_attrs)
            if not moves and a.version_bound:
                if modified is None:
                    session = object_session(target)
                    modified = session is not None and session.is_modified(
                        target, include_collections=False)
                moves = modified
            if not (changed or moves):
                continue
            if a.key in dict_:
                value = dict_[a.key]
            else:   # not loaded (expired after a commit): load it with its old binding
                value = InstrumentedAttribute.__get__(
                    class_attribute(self.mapper, a.key), target, type(target))
            if isinstance(value, Pending):
                continue
            if value is None:
                # NULL, or erased (read as None, its key destroyed): written as NULL, so
                # the UPDATE sets it and no erased envelope outlives a move
                dict_[a.key] = None
            else:
                row = {k: getattr(target, b) for k, b in
                       zip(a.column.binding.keys, a.binding_attrs,  # type: ignore[union-attr]
                           strict=True) if b is not None}
                dict_[a.key] = Pending(value, row=row)
            if not changed:
                flag_modified(target, a.key)
            if a.index_attr is not None:
                setattr(target, a.index_attr, a.column.index_of_value(value))

    def after_update(self, target: Any) -> None:
        dict_ = instance_dict(target)
        for a in self.attrs:
            value = dict_.get(a.key)
            if isinstance(value, Pending):
                dict_[a.key] = value.value


def _attr_of(mapper: Mapper, col: Any) -> str | None:
    if col is None:
        return None
    try:
        return mapper.get_property_by_column(col).key
    except Exception:  # noqa: BLE001 - not mapped
        return None
