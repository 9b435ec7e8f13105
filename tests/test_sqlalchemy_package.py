"""The shape of piiguard.sqlalchemy: a column type's two stages (built, attached), the ORM
attribute that carries its column's state, and no process-wide registry that keeps a
table, a model or a Guard alive after the application dropped them."""

from __future__ import annotations

import gc
import weakref

from sqlalchemy import Column, Integer, MetaData, Table, create_engine, insert, select, update
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from piiguard import Guard, MaskingPolicy
from piiguard.sqlalchemy import EncryptedNationalId, EncryptedString
from piiguard.sqlalchemy.orm import EncryptedAttribute
from piiguard.sqlalchemy.state import AttachedColumn, ColumnSpec

TC = "10000000146"


def test_spec_when_built_attached_state_when_in_a_table(local_kms):
    g = Guard(kms=local_kms)
    t = EncryptedNationalId(g, searchable=True)
    assert t.attached_column is None and t.table is None
    md = MetaData()
    table = Table("people", md, Column("id", Integer, primary_key=True), Column("nid", t))
    att = t.attached()
    assert isinstance(att, AttachedColumn) and isinstance(att.spec, ColumnSpec)
    assert (att.table, att.column, att.label) == (table, table.c.nid, "people.nid")
    assert att.cipher.label == "people.nid" and att.search is not None
    assert att.search.column is table.c.nid_bidx and att.scope is None
    # the kind's facts come from the registry
    assert att.spec.canonical_never_envelope and not att.spec.padded
    assert att.spec.validate("100 000 001 46") == TC


def test_orm_attribute_carries_its_columns_state(local_kms):
    g = Guard(kms=local_kms)

    class Base(DeclarativeBase):
        pass

    class A(Base):
        __tablename__ = "a"
        id: Mapped[int] = mapped_column(primary_key=True)
        v = mapped_column(EncryptedString(g))

    class B(Base):
        __tablename__ = "b"
        id: Mapped[int] = mapped_column(primary_key=True)
        v = mapped_column(EncryptedString(g))

    Base.registry.configure()
    a, b = A.__dict__["v"], B.__dict__["v"]
    assert isinstance(a, EncryptedAttribute) and isinstance(b, EncryptedAttribute)
    assert a.column_state is A.__table__.c.v.type.attached()
    assert b.column_state is B.__table__.c.v.type.attached()
    assert type(a) is not type(b)


def _core_round(local_kms):
    g = Guard(kms=local_kms)
    md = MetaData()
    t = Table("t", md, Column("id", Integer, primary_key=True), Column("tenant", Integer),
              Column("nid", EncryptedNationalId(g, searchable=True)),
              Column("x", EncryptedString(g, key_scope="tenant")))
    engine = create_engine("sqlite://")
    md.create_all(engine)
    g.bind(engine)
    with engine.begin() as conn:
        conn.execute(insert(t), [{"id": 1, "tenant": 1, "nid": TC, "x": "a"}])
        conn.execute(update(t).values(nid=TC))
    g.close()
    engine.dispose()
    return weakref.ref(t), weakref.ref(g)


def _orm_round(local_kms):
    g = Guard(kms=local_kms)

    class Base(DeclarativeBase):
        pass

    class C(Base):
        __tablename__ = "c"
        id: Mapped[int] = mapped_column(primary_key=True)
        tenant: Mapped[int] = mapped_column()
        nid = mapped_column(EncryptedNationalId(g, searchable=True))
        x = mapped_column(EncryptedString(g, key_scope="tenant"))

    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    g.bind(engine)
    with Session(engine) as s:
        s.add(C(id=1, tenant=1, nid=TC, x="a"))
        s.commit()
        obj = s.scalars(select(C).where(C.nid == TC)).one()
        obj.x = "b"
        s.commit()
        g.policy = MaskingPolicy.from_dict({"default": "redact"})
        s.expire_all()
        assert str(s.get(C, 1).nid) == "[REDACTED]"
    g.close()
    engine.dispose()
    return weakref.ref(C), weakref.ref(g)


def test_nothing_keeps_dropped_tables_models_or_guards_alive(local_kms):
    refs = [_core_round(local_kms), _orm_round(local_kms)]
    gc.collect()
    assert [(r() is None, g() is None) for r, g in refs] == [(True, True), (True, True)]
