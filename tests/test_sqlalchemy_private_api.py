"""Every private SQLAlchemy API piiguard relies on (``piiguard.sqlalchemy._sa_private``)
still exists and still does what piiguard needs. A SQLAlchemy upgrade that removes or
renames one fails here, naming it, before it fails somewhere deep in a flush."""

from __future__ import annotations

import inspect

import pytest
import sqlalchemy
from sqlalchemy import Column, Integer, LargeBinary, MetaData, Table, insert, update
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.orm.attributes import InstrumentedAttribute, QueryableAttribute
from sqlalchemy.schema import ColumnDefault
from sqlalchemy.sql.dml import ValuesBase
from sqlalchemy.types import TypeDecorator, TypeEngine

from piiguard.sqlalchemy import _sa_private as sap
from piiguard.sqlalchemy.orm import EncryptedAttribute


def fail(api: str, detail: str) -> None:
    pytest.fail(f"SQLAlchemy {sqlalchemy.__version__}: private API {api} changed: {detail} "
                "(see piiguard/sqlalchemy/_sa_private.py)", pytrace=False)


def need(api: str, condition: bool, detail: str = "missing") -> None:
    if not condition:
        fail(api, detail)


def table() -> Table:
    return Table("t", MetaData(), Column("id", Integer, primary_key=True),
                 Column("a", Integer), Column("b", Integer))


# One check per entry of PRIVATE_APIS, by name: an entry without a check fails too.
def check_values() -> None:
    t = table()
    for stmt in (insert(t).values(a=1), update(t).values(a=1)):
        values = sap.statement_values(stmt)
        need("Insert/Update._values", values is not None and
             [getattr(k, "key", k) for k in values] == ["a"], f"got {values!r}")
    need("Insert/Update._values", sap.statement_values(insert(t)) is None,
         "a statement without values() should have None")


def check_multi_values() -> None:
    t = table()
    rows = sap.multi_row_values(insert(t).values([{"a": 1}, {"a": 2}]))
    need("ValuesBase._multi_values", "_multi_values" in dir(ValuesBase) and len(rows) == 1
         and len(rows[0]) == 2, f"got {rows!r}")
    need("ValuesBase._multi_values", sap.multi_row_values(insert(t).values(a=1)) == (),
         "a single-row statement should have no multi-row values")


def check_on_table_attach() -> None:
    seen = []
    col = Column("x", Integer)
    need("Column._on_table_attach", hasattr(Column, "_on_table_attach"))
    sap.on_table_attach(col, lambda c, t: seen.append((c, t)))
    t = Table("t", MetaData(), col)
    need("Column._on_table_attach", seen == [(col, t)], "fn was not called on attach")
    sap.on_table_attach(col, lambda c, t: seen.append((c, t)))
    need("Column._on_table_attach", len(seen) == 2, "fn not called for an attached column")


def check_column_default() -> None:
    need("ColumnDefault._set_parent", hasattr(ColumnDefault, "_set_parent"))
    need("Column._reset_memoizations", hasattr(Column, "_reset_memoizations"))
    t = table()
    sap.set_context_default(t.c.b, lambda ctx: 42)
    need("ColumnDefault._set_parent", t.c.b.default is not None and
         t.c.b.default.is_callable, "the column did not get the default")
    engine = sqlalchemy.create_engine("sqlite://")
    t.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(insert(t).values(id=1, a=1))
        got = conn.execute(sqlalchemy.select(t.c.b)).scalar()
    need("Column._reset_memoizations", got == 42, f"the default was not used (b={got!r})")


def check_deannotate() -> None:
    class Base(DeclarativeBase):
        pass

    class M(Base):
        __tablename__ = "m"
        id: Mapped[int] = mapped_column(primary_key=True)

    annotated = insert(M).table
    need("Annotated._deannotate", sap.deannotated(annotated) is M.__table__,
         f"{annotated!r} did not deannotate to the table")
    need("Annotated._deannotate", sap.deannotated(M.__table__) is M.__table__)


def check_impl_instance() -> None:
    class T(TypeDecorator):
        impl = LargeBinary
        cache_ok = True

    t = T()
    sap.replace_impl(t, sqlalchemy.Text())
    need("TypeDecorator.impl_instance", isinstance(t.impl_instance, sqlalchemy.Text) and
         isinstance(t.dialect_impl(sqlalchemy.create_engine("sqlite://").dialect).impl,
                    sqlalchemy.Text), "the replaced impl is not the one used")


def check_class_manager_and_swap() -> None:
    class Base(DeclarativeBase):
        pass

    class M(Base):
        __tablename__ = "m"
        id: Mapped[int] = mapped_column(primary_key=True)
        v: Mapped[int | None]

    mapper = sqlalchemy.inspect(M)
    attr = sap.class_attribute(mapper, "v")
    need("Mapper.class_manager", type(attr) is InstrumentedAttribute, f"got {attr!r}")
    need("InstrumentedAttribute.__class__ assignment",
         InstrumentedAttribute.__slots__ == () and EncryptedAttribute.__slots__ == (),
         "InstrumentedAttribute is no longer an empty-slots subclass")
    sub = type("Sub", (InstrumentedAttribute,), {"__slots__": (), "inherit_cache": True})
    sap.swap_class(attr, sub)
    need("InstrumentedAttribute.__class__ assignment", type(M.__dict__["v"]) is sub)
    m = M(id=1, v=3)
    need("InstrumentedAttribute.__class__ assignment", m.v == 3)


def check_attribute_impl() -> None:
    need("QueryableAttribute.impl", "impl" in QueryableAttribute.__slots__)

    class Base(DeclarativeBase):
        pass

    class M(Base):
        __tablename__ = "m"
        id: Mapped[int] = mapped_column(primary_key=True)

    Base.registry.configure()
    impl = M.id.impl
    need("QueryableAttribute.impl", callable(getattr(impl, "set", None)) and
         callable(getattr(impl, "get", None)), f"{impl!r} has no get/set")
    params = list(inspect.signature(impl.set).parameters)
    need("QueryableAttribute.impl", params[:4] == ["state", "dict_", "value", "initiator"],
         f"AttributeImpl.set{params}")


def check_set_parent() -> None:
    calls = []

    class T(TypeDecorator):
        impl = LargeBinary
        cache_ok = True

        def _set_parent(self, parent, outer=False, **kw):
            super()._set_parent(parent, outer=outer, **kw)
            calls.append(parent)

    col = Column("x", T())
    need("TypeDecorator._set_parent", calls == [col], "not called when a column gets a type")


def check_static_cache_key() -> None:
    class T(TypeDecorator):
        impl = LargeBinary
        cache_ok = True

        def __init__(self, tag):
            super().__init__()
            self.tag = tag

        @property
        def _static_cache_key(self):
            return (T, self.tag)

    need("TypeEngine._static_cache_key", "_static_cache_key" in dir(TypeEngine))
    keys = [sqlalchemy.literal(1, T(tag))._generate_cache_key() for tag in ("a", "b")]
    need("TypeEngine._static_cache_key", keys[0] != keys[1],
         "statement cache keys no longer include the type's _static_cache_key")


def check_resolve_for_python_type() -> None:
    seen = []

    class T(TypeDecorator):
        impl = LargeBinary
        cache_ok = True

        def _resolve_for_python_type(self, python_type, matched_on, matched_on_flattened):
            seen.append(python_type)
            return super()._resolve_for_python_type(python_type, matched_on,
                                                    matched_on_flattened)

    shared = T()

    class Base(DeclarativeBase):
        type_annotation_map = {bytes: shared}

    class M(Base):
        __tablename__ = "m"
        id: Mapped[int] = mapped_column(primary_key=True)
        v: Mapped[bytes]

    need("TypeEngine._resolve_for_python_type", seen == [bytes],
         "not called for a type_annotation_map entry")


def check_where_criteria() -> None:
    t = table()
    stmt = update(t).where(t.c.id.in_([1, 2])).values(a=1).execution_options(x=1)
    bare = sap.without_where(stmt)
    need("DMLWhereBase._where_criteria", stmt.whereclause is not None and
         bare.whereclause is None, "the copy still has a WHERE")
    need("DMLWhereBase._where_criteria", sap.statement_values(bare) is not None and
         bare.get_execution_options() == {"x": 1} and str(stmt.compile()).count("WHERE")
         == 1, "the copy lost its values or options, or the original its WHERE")


CHECKS = {
    "Insert/Update._values": check_values,
    "ValuesBase._multi_values": check_multi_values,
    "Column._on_table_attach": check_on_table_attach,
    "ColumnDefault._set_parent": check_column_default,
    "Column._reset_memoizations": check_column_default,
    "Annotated._deannotate": check_deannotate,
    "TypeDecorator.impl_instance": check_impl_instance,
    "Mapper.class_manager": check_class_manager_and_swap,
    "InstrumentedAttribute.__class__ assignment": check_class_manager_and_swap,
    "QueryableAttribute.impl": check_attribute_impl,
    "TypeDecorator._set_parent": check_set_parent,
    "TypeEngine._static_cache_key": check_static_cache_key,
    "TypeEngine._resolve_for_python_type": check_resolve_for_python_type,
    "DMLWhereBase._where_criteria": check_where_criteria,
}


@pytest.mark.parametrize("api", sap.PRIVATE_APIS, ids=lambda api: api.name)
def test_private_sqlalchemy_api_still_works(api):
    check = CHECKS.get(api.name)
    if check is None:
        pytest.fail(f"{api.name} is listed in PRIVATE_APIS but has no check here")
    check()


def test_every_check_is_listed():
    assert sorted(CHECKS) == sorted(api.name for api in sap.PRIVATE_APIS)
