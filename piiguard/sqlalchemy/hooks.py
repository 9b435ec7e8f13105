"""The process-wide hooks of piiguard.sqlalchemy: the only listeners it puts on
SQLAlchemy's (and Alembic's) classes rather than on its own columns.

:func:`install` (called once when ``piiguard.sqlalchemy`` is imported) adds:

- ``Engine`` ``before_execute``: for INSERT and UPDATE statements on a table with a
  *row-bound* column (``key_scope=`` or ``bound_to=``) or, for UPDATE, a *searchable*
  column, and for no other statement. It rewrites the statement's parameters (and its
  ``values()``) so that a row-bound value travels as :class:`~.state.Pending` with its
  row's DEK scope and binding (the bind processor sees one value at a time and cannot
  see the row), and so that an UPDATE of a searchable column also sets its
  ``<column>_bidx`` blind index (an INSERT gets it from the index column's default). An
  UPDATE that changes a column values are bound to is turned into a per-row
  executemany that moves them (:mod:`.rows`). Tables without such columns cost a
  dictionary look-up.
- ``Engine`` ``after_execute``: checks that such a rewritten UPDATE wrote every row it
  read (:func:`.rows.check_rowcount`); other statements cost one truth test.
- ``Engine`` ``before_execute`` (another listener, :func:`.writes.before_execute`,
  installed first so it sees the values as the application gave them): under
  a masking policy, every INSERT and UPDATE that writes an encrypted column is checked
  against the write rules, and an UPDATE by a role that cannot see a column is checked
  against the stored values it replaces (no masked view written back, no value cleared
  by a role that cannot see it).
- ``Engine`` ``handle_error`` (:func:`.seams.handle_error`): a piiguard error raised
  inside a statement (a refused value, a decryption failure) is raised as itself, not
  wrapped in SQLAlchemy's ``StatementError``, so an invalid value stays a ``ValueError``
  naming ``table.column``; any other error of a statement binding encrypted values
  keeps its class but not the statement's parameters. Errors of the ``before_execute``
  listeners above leave through :func:`.seams.guarded` the same way.
- ``Session`` ``after_soft_rollback``, ``Engine`` ``rollback``, ``Pool`` ``checkin``
  (:func:`.seams.scrub_pending`): the frames a failed statement's error passed through
  hold its parameters; once they have finished (the transaction is rolled back, the
  connection returned) their local variables are cleared. One truth test otherwise.
- ``Mapper`` ``instrument_class``: a pydantic model being mapped (a SQLModel table
  model) gets its encrypted fields validated, dumped and hidden as their columns say
  (:func:`.orm.on_instrument_class`).
- ``Mapper`` ``mapper_configured``: :func:`.orm.on_mapper_configured` gives every mapped
  encrypted column its rendering attribute and, for key-scoped and searchable columns,
  ``before_update`` / ``after_update`` listeners on *that* mapper.

:func:`register_alembic_if_loaded` hooks into ``alembic revision --autogenerate``
through Alembic's global comparator registry (see :mod:`.alembic`), once, when Alembic is
loaded.

>>> from sqlalchemy import event
>>> from sqlalchemy.engine import Engine
>>> event.contains(Engine, "handle_error", seams.handle_error)
True
"""

from __future__ import annotations

import importlib
import sys
import threading
import weakref
from typing import Any, NamedTuple

from sqlalchemy import Table, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Mapper, Session
from sqlalchemy.pool import Pool
from sqlalchemy.sql.elements import BindParameter

from piiguard.errors import ConfigurationError
from piiguard.sqlalchemy import rows as row_writes
from piiguard.sqlalchemy._sa_private import deannotated, multi_row_values, statement_values
from piiguard.sqlalchemy import seams, writes
from piiguard.sqlalchemy.orm import on_instrument_class, on_mapper_configured
from piiguard.sqlalchemy.state import AttachedColumn, BlindIndexColumn, Pending

__all__ = ["install", "register_alembic_if_loaded", "register_column"]


# ---------------------------------------------------------------------------------------
# which tables need their statements rewritten
# ---------------------------------------------------------------------------------------
class IndexedColumn(NamedTuple):
    column: AttachedColumn
    search: BlindIndexColumn


class TablePlan:
    """The encrypted columns of one table whose writes need the rewrite.

    It holds them weakly: a plan is the value of a weak-keyed mapping by table, and each
    column holds its table, so a strong reference here would keep the table (and its
    Guard, and its keys) alive for as long as the process runs.
    """

    __slots__ = ("_bound", "_indexed")

    def __init__(self) -> None:
        self._bound: list[weakref.ref[AttachedColumn]] = []
        self._indexed: list[weakref.ref[AttachedColumn]] = []

    def add(self, st: AttachedColumn) -> None:
        if st.binding is not None and all(r() is not st for r in self._bound):
            self._bound.append(weakref.ref(st))
        if st.search is not None and all(r() is not st for r in self._indexed):
            self._indexed.append(weakref.ref(st))

    @property
    def bound(self) -> list[AttachedColumn]:
        """Row-bound columns (key-scoped or ``bound_to=``)."""
        return [st for st in map(_deref, self._bound)
                if st is not None and st.binding is not None]

    @property
    def indexed(self) -> list[IndexedColumn]:
        return [IndexedColumn(st, st.search) for st in map(_deref, self._indexed)
                if st is not None and st.search is not None]


def _deref(ref: weakref.ref[AttachedColumn]) -> AttachedColumn | None:
    return ref()


#: Table -> its plan; weak, so a table that goes away takes its plan with it.
_PLANS: weakref.WeakKeyDictionary[Table, TablePlan] = weakref.WeakKeyDictionary()


def register_column(st: AttachedColumn) -> None:
    """Rewrite the writes of ``st``'s table if ``st`` is row-bound or searchable."""
    if st.binding is None and st.search is None:
        return
    plan = _PLANS.get(st.table)
    if plan is None:
        plan = _PLANS[st.table] = TablePlan()
    plan.add(st)


def _plan_of(table: Any) -> TablePlan | None:
    if table is None:
        return None
    plan = _PLANS.get(table)
    if plan is None:
        plan = _PLANS.get(deannotated(table))   # ORM statements annotate the table
    return plan


# ---------------------------------------------------------------------------------------
# Engine: before_execute
# ---------------------------------------------------------------------------------------
def _before_execute(conn: Any, elem: Any, multiparams: Any, params: Any,
                    execution_options: Any) -> tuple[Any, Any, Any]:
    if not getattr(elem, "is_dml", False):
        return elem, multiparams, params
    is_update = getattr(elem, "is_update", False)
    if not (is_update or getattr(elem, "is_insert", False)):
        return elem, multiparams, params
    plan = _plan_of(getattr(elem, "table", None))
    if plan is None:
        return elem, multiparams, params
    bound = plan.bound
    if not bound and not is_update:
        return elem, multiparams, params
    indexed = plan.indexed if is_update else []
    if is_update and bound:
        sets = multiparams or ([params] if params else [])
        written = set(sets[0]) if sets else set()
        written.update(_key_of(k) for k in (statement_values(elem) or {}))
        moved = row_writes.moved_columns(written, bound)
        if moved:   # a column values are bound to changes: they move with the row
            rw = row_writes.rewrite_update(conn, elem, sets, moved)
            elem = rw.statement
            multiparams, params = (rw.multiparams, {}) if len(rw.multiparams) != 1 \
                else ([], rw.multiparams[0])
            bound = [st for st in bound if st not in rw.done]
            indexed = [ic for ic in indexed if ic.column not in rw.done]
    if multiparams:
        for row_params in multiparams:
            _prepare_params(row_params, bound, indexed, not is_update)
        if len(multiparams) > 1:
            _prepare_keys(multiparams, bound)
    elif params:
        _prepare_params(params, bound, indexed, not is_update)
    if statement_values(elem):
        elem = _prepare_statement_values(elem, bound, indexed)
    elif bound and multi_row_values(elem):
        _refuse_multi_row_values(elem, bound)
    return elem, multiparams, params


def _after_execute(conn: Any, elem: Any, multiparams: Any, params: Any,
                   execution_options: Any, result: Any) -> None:
    if row_writes.pending_checks():
        row_writes.check_rowcount(elem, result)


def _prepare_params(params: dict[str, Any], bound: list[AttachedColumn],
                    indexed: list[IndexedColumn], insert: bool = False) -> None:
    """Rewrite one row's execute() parameters in place."""
    def lookup(key: str) -> Any:
        v = params.get(key, row_writes.MISSING)
        return row_writes.MISSING if isinstance(v, Pending) else v

    for st in bound:
        key = st.column.key
        value = params.get(key)
        if value is None or (isinstance(value, Pending) and value.binding is not None):
            continue
        if isinstance(value, Pending) and value.value is None:
            params[key] = None          # NULL (an ORM move of a NULL or erased value)
            continue
        params[key] = row_writes.bind_value(st, value, lookup, insert=insert)
    for st, search in indexed:
        key = st.column.key
        if key in params:
            params[search.column.key] = st.index_of_value(params[key])


def _prepare_keys(rows: Any, bound: list[AttachedColumn]) -> None:
    """An ``executemany`` over many key scopes (new subjects): their keys are looked up
    and created in a few statements before the first value is sealed, instead of two
    round trips per subject inside the bind processors."""
    for st in bound:
        if st.scope is None:
            continue
        key = st.column.key
        scopes = {p.scope for r in rows
                  if isinstance(p := r.get(key), Pending) and p.scope is not None}
        if len(scopes) > 1:
            st.guard.keys.prepare("dek", scopes)


class _Written(NamedTuple):
    """One entry of a statement's ``values()``: the key as given, and its value."""

    key: Any
    value: Any


#: What _plain_value() returns for a value that is a SQL expression, not a parameter.
_NOT_PLAIN = object()


def _plain_value(bound: Any) -> Any:
    """The Python value of a bound parameter (``_NOT_PLAIN`` for an SQL expression)."""
    if isinstance(bound, BindParameter):
        return bound.callable() if bound.callable is not None else bound.value
    return _NOT_PLAIN


def _key_of(k: Any) -> str | None:
    if isinstance(k, str):
        return k
    clause_element = getattr(k, "__clause_element__", None)
    if clause_element is not None:
        k = clause_element()
    return getattr(k, "key", None)


def _prepare_statement_values(elem: Any, bound: list[AttachedColumn],
                              indexed: list[IndexedColumn]) -> Any:
    """The statement with its ``values()`` rewritten (the same one if nothing changes)."""
    written = {_key_of(k): _Written(k, v) for k, v in (statement_values(elem) or {}).items()}
    rewritten: dict[Any, Any] = {}

    def lookup(key: str) -> Any:
        entry = written.get(key)
        if entry is None:
            return row_writes.MISSING
        v = _plain_value(entry.value)
        return row_writes.NOT_PLAIN if v is _NOT_PLAIN else v

    for st in bound:
        entry = written.get(st.column.key)
        if entry is None:
            continue
        value = _plain_value(entry.value)
        if value is _NOT_PLAIN:
            raise ConfigurationError("a key-scoped column can only be written with plain "
                                     "values", column=st.label, operation="encrypt")
        if value is None or isinstance(value, Pending):
            continue
        rewritten[entry.key] = row_writes.bind_value(st, value, lookup,
                                               insert=bool(getattr(elem, "is_insert", False)),
                                               expressions=True)
    for st, search in indexed:
        entry = written.get(st.column.key)
        if entry is None:
            continue
        value = _plain_value(entry.value)
        if value is _NOT_PLAIN:
            raise ConfigurationError("a searchable encrypted column can only be updated "
                                     "with plain values", column=st.label,
                                     operation="encrypt")
        rewritten[search.column] = st.index_of_value(value)
    return elem.values(rewritten) if rewritten else elem


def _refuse_multi_row_values(elem: Any, bound: list[AttachedColumn]) -> None:
    for st in bound:
        for rows in multi_row_values(elem):
            for row in rows:
                keys = row.keys() if isinstance(row, dict) else ()
                if any(_key_of(k) == st.column.key for k in keys):
                    raise ConfigurationError(
                        "a key-scoped column cannot be written with a multi-row VALUES "
                        "clause; pass a list of parameter dicts instead", column=st.label,
                        operation="encrypt")


# ---------------------------------------------------------------------------------------
# installing
# ---------------------------------------------------------------------------------------
_install_lock = threading.Lock()
_installed: list[bool] = []


def install() -> None:
    """Add the listeners above (once per process)."""
    if _installed:
        return
    with _install_lock:
        if not _installed:
            # write-back refusal first: it judges the values as the application gave them
            event.listen(Engine, "before_execute", seams.guarded(writes.before_execute))
            event.listen(Engine, "before_execute", seams.guarded(_before_execute),
                         retval=True)
            event.listen(Engine, "after_execute", _after_execute)
            event.listen(Engine, "handle_error", seams.handle_error)
            event.listen(Engine, "rollback", seams.scrub_pending)
            event.listen(Session, "after_soft_rollback", seams.scrub_pending)
            event.listen(Pool, "checkin", seams.scrub_pending)
            event.listen(Mapper, "mapper_configured", on_mapper_configured)
            event.listen(Mapper, "instrument_class", on_instrument_class)
            _installed.append(True)


def register_alembic_if_loaded() -> None:
    """Register the Alembic autogenerate support if Alembic is loaded (once).

    Called when ``piiguard.sqlalchemy`` is imported and whenever a column is declared:
    an Alembic ``env.py`` imports the models after Alembic, so the CLI always gets it.
    """
    if "alembic" not in sys.modules or "piiguard.sqlalchemy.alembic" in sys.modules:
        return
    try:
        importlib.import_module("piiguard.sqlalchemy.alembic")
    except ImportError:  # pragma: no cover - alembic half-imported (we run inside it)
        pass
