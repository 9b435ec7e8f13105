"""Every private or undocumented SQLAlchemy API that piiguard relies on, in one place.

SQLAlchemy gives no public way to do a few things the column types need (learn the table
a type is attached to, give a column a context-sensitive default after it was built, read
the values of an INSERT/UPDATE before it runs, …). Each such use is listed in
:data:`PRIVATE_APIS` and, where piiguard calls it, wrapped by a function below: the
other modules call these functions, never the private names.
``tests/test_sqlalchemy_private_api.py`` checks every entry against the installed
SQLAlchemy and names the one that a new release removed or renamed.

Three entries are *overridden* rather than called (a subclass method SQLAlchemy calls);
one (:attr:`QueryableAttribute.impl`) is used inline by the ORM attribute's ``__set__``
because that runs for every value an application assigns, where a wrapper call would
cost more than the rest of the method.

>>> [api.name for api in PRIVATE_APIS][:3]
['Insert/Update._values', 'ValuesBase._multi_values', 'Column._on_table_attach']
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from sqlalchemy import Column
from sqlalchemy.schema import ColumnDefault
from sqlalchemy.types import TypeEngine

__all__ = [
    "PRIVATE_APIS",
    "PrivateAPI",
    "class_attribute",
    "deannotated",
    "multi_row_values",
    "on_table_attach",
    "replace_impl",
    "set_context_default",
    "statement_values",
    "swap_class",
    "without_where",
]


class PrivateAPI(NamedTuple):
    """One private SQLAlchemy API: its name, the module using it, and why."""

    name: str
    used_by: str
    why: str


PRIVATE_APIS: tuple[PrivateAPI, ...] = (
    PrivateAPI("Insert/Update._values", "hooks, writes",
               "the single-row VALUES / SET of a statement: a key-scoped column's value is "
               "wrapped with its row's DEK scope, a searchable column's SET gets its blind "
               "index, a written value is checked against the write rules and the stored "
               "value it replaces (statement_values)"),
    PrivateAPI("ValuesBase._multi_values", "hooks, writes",
               "multi-row VALUES cannot carry per-row key scopes and are refused; their "
               "columns are checked against the write rules (multi_row_values)"),
    PrivateAPI("Column._on_table_attach", "columns",
               "a type learns its table when its column is attached (on_table_attach)"),
    PrivateAPI("ColumnDefault._set_parent", "state",
               "an adopted blind-index column (a copy made by to_metadata / alembic) gets "
               "the index default of its new column (set_context_default)"),
    PrivateAPI("Column._reset_memoizations", "state",
               "drops the column's memoized default lookups after that (set_context_default)"),
    PrivateAPI("Annotated._deannotate", "hooks, writes",
               "ORM statements carry an annotated copy of the table; the plan (and the "
               "list of encrypted columns) is kept for the table itself (deannotated)"),
    PrivateAPI("TypeDecorator.impl_instance", "storage, columns",
               "text=True swaps the storage impl of an instance (replace_impl)"),
    PrivateAPI("Mapper.class_manager", "orm",
               "the InstrumentedAttribute of a mapped column (class_attribute)"),
    PrivateAPI("InstrumentedAttribute.__class__ assignment", "orm",
               "an encrypted column's attribute becomes an EncryptedAttribute, which renders "
               "masked values on read (swap_class; needs an empty __slots__ layout)"),
    PrivateAPI("QueryableAttribute.impl", "orm",
               "AttributeImpl.set, called inline by EncryptedAttribute.__set__ (hot path)"),
    PrivateAPI("TypeDecorator._set_parent", "columns",
               "overridden: the column a type instance belongs to"),
    PrivateAPI("TypeEngine._static_cache_key", "columns",
               "overridden: statement caching keeps columns (and Guards) apart"),
    PrivateAPI("TypeEngine._resolve_for_python_type", "columns",
               "overridden: one type object per column from a type_annotation_map"),
    PrivateAPI("DMLWhereBase._where_criteria", "rows",
               "an UPDATE that moves row-bound values becomes a per-row executemany whose "
               "WHERE is the primary key and a compare-and-swap, not the original WHERE "
               "(whose expanding IN lists executemany refuses); the copy keeps the ORM's "
               "statement plugin, values and options (without_where)"),
)


def statement_values(stmt: Any) -> Mapping[Any, Any] | None:
    """The ``values()`` of an INSERT/UPDATE (column or key -> value), or None."""
    return stmt._values


def multi_row_values(stmt: Any) -> Sequence[Any]:
    """The rows of a multi-row ``values([...])`` (empty if there are none)."""
    return getattr(stmt, "_multi_values", None) or ()


def on_table_attach(column: Column, fn: Callable[[Column, Any], None]) -> None:
    """Call ``fn(column, table)`` now if ``column`` has a table, else once it gets one."""
    column._on_table_attach(fn)


def set_context_default(column: Column, fn: Callable[[Any], Any]) -> None:
    """Make ``fn(context)`` the INSERT default of an existing ``column``."""
    ColumnDefault(fn)._set_parent(column)
    column._reset_memoizations()


def deannotated(table: Any) -> Any:
    """The plain Table behind an ORM-annotated one (the table itself otherwise)."""
    deannotate = getattr(table, "_deannotate", None)
    return table if deannotate is None else deannotate()


def without_where(stmt: Any) -> Any:
    """A copy of an UPDATE or DELETE statement without its WHERE criteria."""
    copy = stmt._generate()
    copy._where_criteria = ()
    return copy


def replace_impl(type_: TypeEngine, impl: TypeEngine) -> None:
    """Give a TypeDecorator *instance* another storage impl (before it is used)."""
    type_.impl = type_.impl_instance = impl  # type: ignore[attr-defined]


def class_attribute(mapper: Any, key: str) -> Any:
    """The class-bound attribute (an InstrumentedAttribute) of mapped property ``key``."""
    return mapper.class_manager.get(key)


def swap_class(obj: Any, cls: type) -> None:
    """Turn ``obj`` into an instance of ``cls``, a subclass of its class with the same
    slots (``__slots__ = ()``)."""
    obj.__class__ = cls
