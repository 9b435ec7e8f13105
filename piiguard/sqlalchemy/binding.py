"""Row binding: the row values an encrypted column's envelopes are bound to.

A column declared with ``key_scope=`` or ``bound_to=`` writes *bound* envelopes: the
values of its binding columns (the key scope column first, then the ``bound_to``
columns) join the envelope's associated data
(:class:`~piiguard.crypto.envelope.BindingLayout`), so the envelope opens only in a row
holding the same values. A :class:`RowBinding` knows those columns and turns a row's
values of them into the binding bytes.

Reading needs the row, and a result processor sees one value at a time. So the column
type's ``column_expression`` selects, in place of the stored value, a JSON array of the
stored value and the binding columns of the same row (:class:`BoundRead`:
``json_array(hex(phone), tenant_id, customer_ref)`` on SQLite, ``json_build_array`` on
PostgreSQL, ``JSON_ARRAY`` on MySQL/MariaDB), and the result processor splits it
(:meth:`RowBinding.split`). Every SELECT that names the column from its table gets it:
Core and ORM, whole rows or single columns, refreshes and RETURNING. A value selected
through a subquery that lacks the binding columns, or through ``text()``, arrives as it
is stored: a bound envelope read that way is refused with an error that says so.

Binding columns hold integers, strings or UUIDs: their values compare the same in
Python and in the database's JSON (a datetime or a float would not survive the trip).

>>> from sqlalchemy import Column, Integer, MetaData, String, Table
>>> t = Table("customers", MetaData(), Column("id", Integer, primary_key=True),
...           Column("tenant_id", Integer), Column("customer_ref", String(20)))
>>> rb = RowBinding(t, "customers.phone", "tenant_id", ("customer_ref",))
>>> rb.names, rb.has_scope
(('tenant_id', 'customer_ref'), True)
>>> rb.canonical(["7", "C-42"])
[7, 'C-42']
>>> rb.split('["10aa", 7, "C-42"]')
(b'\\x10\\xaa', [7, 'C-42'])
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Column, Table, case, func, literal_column, null
from sqlalchemy.exc import CompileError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from piiguard.crypto.envelope import BindingLayout
from piiguard.errors import ConfigurationError
from piiguard.field import unencodable

__all__ = ["BoundRead", "BoundReadText", "RowBinding", "check_bound_to"]

_json = json.JSONDecoder().decode


def check_bound_to(bound_to: Any) -> tuple[Any, ...]:
    """``bound_to=`` as a tuple of column names or columns (checked when the column
    type is built)."""
    if bound_to is None:
        return ()
    if isinstance(bound_to, str) or not isinstance(bound_to, (tuple, list)):
        raise ConfigurationError("bound_to must be a tuple of sibling column names, e.g. "
                                 "bound_to=('customer_ref',)")
    for item in bound_to:
        if not isinstance(item, str) and not hasattr(item, "key") \
                and not hasattr(item, "column"):
            raise ConfigurationError("bound_to must name sibling columns")
    return tuple(bound_to)


# -- canonical values: what a binding column's value is in the associated data ---------------
def _as_int(value: Any) -> int | None:
    if value is None or type(value) is int:
        return value
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        return int(value.strip())       # ValueError: not an integer
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return int(value)
    raise ValueError("not an integer")


def _as_str(value: Any) -> str | None:
    if value is None or type(value) is str:
        return value
    raise ValueError("not a string")


def _as_uuid(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, uuid.UUID):
        return str(value)
    return str(uuid.UUID(str(value)))  # hex or hyphenated, as databases render it


_KINDS: dict[type, Callable[[Any], Any]] = {int: _as_int, str: _as_str, uuid.UUID: _as_uuid}


def _kind_of(col: Column, label: str) -> Callable[[Any], Any]:
    name = f"{col.table.name}.{col.name}" if isinstance(col.table, Table) else col.name
    if getattr(col.type, "attached_column", None) is not None:
        raise ConfigurationError(f"{name} is encrypted: values can only be bound to plain "
                                 "columns", column=label)
    try:
        py: type | None = col.type.python_type
    except NotImplementedError:
        py = None
    canon = _KINDS.get(py) if py is not None and py is not bool else None
    if canon is None:
        raise ConfigurationError(
            f"{name} cannot be bound to: a binding column holds integers, strings or "
            "UUIDs (their values read back the same from every database)", column=label)
    return canon


class RowBinding:
    """The columns one encrypted column is bound to, resolved when first needed (they
    may be declared after it): the key scope column (if any) first, then ``bound_to``.

    ``keys`` are the columns' keys (statement parameters, ORM attributes), ``names``
    their database names (the associated data, raw rows)."""

    def __init__(self, table: Table, label: str, scope: Any, bound_to: tuple[Any, ...]) -> None:
        self.table = table
        self.label = label
        self.declared: tuple[Any, ...] = ((scope,) if scope is not None else ()) + bound_to
        self.has_scope = scope is not None
        self._columns: tuple[Column, ...] | None = None
        self._canon: tuple[Callable[[Any], Any], ...] = ()
        self._layout: BindingLayout | None = None
        self._keys: tuple[str, ...] = ()
        self._names: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"RowBinding({self.label!r}, {self.declared!r})"

    # -- the columns ----------------------------------------------------------------------
    def _find(self, ref: Any) -> Column:
        cols = self.table.c
        if isinstance(ref, str):
            col = cols.get(ref)
            if col is None:
                col = next((c for c in cols if c.name == ref), None)
        else:
            inner = getattr(ref, "column", ref)          # MappedColumn -> Column
            inner = getattr(inner, "__clause_element__", lambda: inner)()
            col = next((c for c in cols if c is inner), None)
            if col is None and getattr(inner, "key", None):
                col = cols.get(inner.key)
        if col is None:
            what = "key_scope" if self.has_scope and ref is self.declared[0] else "bound_to"
            raise ConfigurationError(f"{what} names no column of this table", column=self.label)
        return col

    def _resolve(self) -> tuple[Column, ...]:
        cols: list[Column] = []
        for ref in self.declared:
            col = self._find(ref)
            if col not in cols:
                cols.append(col)
        own = self.label.rpartition(".")[2]
        if any(c.name == own for c in cols):
            raise ConfigurationError("an encrypted column cannot be bound to itself",
                                     column=self.label)
        self._canon = tuple(_kind_of(c, self.label) for c in cols)
        self._keys = tuple(c.key for c in cols)
        self._names = tuple(c.name for c in cols)
        self._layout = BindingLayout(self._names)
        self._columns = tuple(cols)
        return self._columns

    @property
    def columns(self) -> tuple[Column, ...]:
        """The binding columns (checked: plain integer, string or UUID columns)."""
        return self._columns if self._columns is not None else self._resolve()

    @property
    def keys(self) -> tuple[str, ...]:
        if self._columns is None:
            self._resolve()
        return self._keys

    @property
    def names(self) -> tuple[str, ...]:
        if self._columns is None:
            self._resolve()
        return self._names

    @property
    def scope_key(self) -> str | None:
        """The key of the key scope column (None: not key-scoped)."""
        return self.keys[0] if self.has_scope else None

    # -- values ---------------------------------------------------------------------------
    def canonical(self, values: Sequence[Any]) -> list[Any]:
        """One row's values of the binding columns (in :attr:`keys` order) as they are
        bound: integers, strings (UUIDs in their hyphenated form) or None."""
        if self._columns is None:
            self._resolve()
        canon = self._canon
        if len(values) != len(canon):
            raise ConfigurationError("the row's binding values do not match its binding "
                                     "columns", column=self.label)
        try:
            return [c(v) for c, v in zip(canon, values)]  # noqa: B905 - lengths checked
        except (TypeError, ValueError):
            raise ConfigurationError("a binding column holds a value of another type than "
                                     "its column's", column=self.label) from None

    def aad(self, canonical: Sequence[Any]) -> bytes:
        """The binding bytes of canonical values (:meth:`canonical`)."""
        layout = self._layout
        if layout is None:
            self._resolve()
            layout = self._layout
        assert layout is not None
        try:
            return layout.aad(canonical)
        except UnicodeEncodeError:      # a binding value with no UTF-8 form (its .object
            pass                        # is the value: not chained)
        raise unencodable(self.label)

    def values_from(self, row: Mapping[str, Any], *, by_name: bool = False) -> list[Any]:
        """The binding values of ``row`` (a mapping by column key, or by database name),
        in order; :class:`ConfigurationError` naming the first missing column."""
        out = []
        for key, name in zip(self.keys, self.names, strict=True):
            k = name if by_name else key
            if k not in row:
                raise ConfigurationError(f"values of this column are bound to {name}: the "
                                         "row's value of it is needed", column=self.label,
                                         operation="encrypt")
            out.append(row[k])
        return out

    # -- reading: the stored value and the row's binding values in one column -------------
    def read_expression(self, column: Any, text_form: bool) -> Any:
        """What a SELECT reads instead of ``column``: a :class:`BoundRead` of it and its
        row's binding columns from the same FROM (table, alias or subquery); ``column``
        itself when they cannot be found there (then a bound envelope is refused on
        read)."""
        from_ = getattr(column, "table", None)
        cols = getattr(from_, "c", None)
        if cols is None:
            return column
        siblings = []
        for key, name in zip(self.keys, self.names, strict=True):
            sib = cols.get(key)
            if sib is None:
                sib = cols.get(name)
            if sib is None:
                return column
            siblings.append(sib)
        cls = BoundReadText if text_form else BoundRead
        return cls(column, *siblings, type_=column.type)

    @staticmethod
    def split(value: Any) -> tuple[Any, list[Any] | None]:
        """``(stored value, binding values)`` of what a SELECT returned for a bound
        column: the JSON array of :class:`BoundRead` (a list from drivers that decode
        JSON, text from the others), or a stored value read on its own (no row: None)."""
        if type(value) is list:
            arr = value
        elif (type(value) is str and value[:1] == "[") or \
                (type(value) is bytes and value[:1] == b"["):
            try:
                arr = _json(value.decode("utf-8") if isinstance(value, bytes) else value)
            except ValueError:   # (UnicodeDecodeError is one)
                return value, None
            if type(arr) is not list or not arr:
                return value, None
        else:
            return value, None
        stored = arr[0]
        if type(stored) is str and not stored.startswith("pg1:"):
            try:
                stored = bytes.fromhex(stored)     # a binary envelope, hex in JSON
            except ValueError:
                pass
        return stored, arr[1:]


# -- the SQL of a bound read ------------------------------------------------------------------
class BoundRead(FunctionElement):
    """``[hex(stored), binding values...]`` as one JSON array (binary storage)."""

    name = "piiguard_bound_read"
    inherit_cache = True

    def __init__(self, *clauses: Any, type_: Any = None) -> None:
        super().__init__(*clauses)
        self.type = type_


class BoundReadText(BoundRead):
    """The same for text storage (the stored value is text already)."""

    name = "piiguard_bound_read_text"
    inherit_cache = True


def _parts(element: BoundRead, hexed: Callable[[Any], Any]) -> list[Any]:
    value, *siblings = list(element.clauses)
    first = value if isinstance(element, BoundReadText) else hexed(value)
    return [first, *siblings]


@compiles(BoundRead)
def _compile_default(element: BoundRead, compiler: Any, **kw: Any) -> str:
    raise CompileError(f"row-bound encrypted columns are read on SQLite, PostgreSQL and "
                       f"MySQL/MariaDB, not {compiler.dialect.name}")


@compiles(BoundRead, "sqlite")
def _compile_sqlite(element: BoundRead, compiler: Any, **kw: Any) -> str:
    def hexed(v: Any) -> Any:   # SQLite's hex(NULL) is '', not NULL
        return case((v.is_(None), null()), else_=func.hex(v))
    return compiler.process(func.json_array(*_parts(element, hexed)), **kw)


@compiles(BoundRead, "postgresql")
def _compile_pg(element: BoundRead, compiler: Any, **kw: Any) -> str:
    def hexed(v: Any) -> Any:
        return func.encode(v, literal_column("'hex'"))
    return compiler.process(func.json_build_array(*_parts(element, hexed)), **kw)


@compiles(BoundRead, "mysql")
@compiles(BoundRead, "mariadb")
def _compile_mysql(element: BoundRead, compiler: Any, **kw: Any) -> str:
    return compiler.process(func.json_array(*_parts(element, func.hex)), **kw)
