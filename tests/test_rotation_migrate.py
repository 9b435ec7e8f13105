"""encrypt-existing: a live plaintext table brought under encryption, on SQLite,
PostgreSQL and MariaDB.

The legacy table has plain utf8 VARCHAR columns holding plaintext (some not in canonical
form, one invalid). The model is then declared with ``allow_plaintext=True``: the
application reads the mix while the job converts the rows in batches with a
compare-and-swap; an invalid value is reported by row key and rule (never the value) and
left for a human; ``verify`` confirms what plaintext is left; a write the application
makes during the job is never overwritten.
"""

from __future__ import annotations

import importlib

import pytest
from sqlalchemy import (
    Column,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    column,
    insert,
    select,
    table,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from piiguard import Guard, LocalKMS
from piiguard.errors import ConfigurationError
from piiguard.rotation import encrypt_existing, verify
from piiguard.sqlalchemy import EncryptedAddress, EncryptedNationalId, EncryptedPhone
from piiguard.validators import tckn

migrate_mod = importlib.import_module("piiguard.rotation.migrate")


def tc(n: int) -> str:
    base = str(400000000 + n)
    return base + tckn.calc_check_digits(base)


N = 80
BAD_ID = N + 1


def legacy(engine):
    """The table as it was before piiguard: plaintext in VARCHAR columns, plus the blind
    index column a migration added."""
    md = MetaData()
    t = Table("customers", md, Column("id", Integer, primary_key=True, autoincrement=False),
              Column("tenant", String(32)),
              Column("national_id", String(255)), Column("national_id_bidx", LargeBinary),
              Column("phone", String(255)), Column("address", String(1000)))
    md.create_all(engine)
    rows = [dict(id=i, tenant=f"t{i % 2}", national_id=f"{tc(i)[:3]} {tc(i)[3:]}",
                 phone=f"0532 {i:03d} 45 67", address=f"Moda Cad. No:{i}, 34710 Kadıköy/İstanbul")
            for i in range(1, N + 1)]
    bad = tc(BAD_ID)
    rows.append(dict(id=BAD_ID, tenant="t0", national_id=bad[:-1] + str((int(bad[-1]) + 1) % 10),
                     phone="0532 999 45 67", address="Moda Cad. No:1, 34710 Kadıköy/İstanbul"))
    with engine.begin() as conn:
        conn.execute(insert(t), rows)
    return rows


def model(guard, key_scope=None):
    class Base(DeclarativeBase):
        pass

    class Customer(Base):
        __tablename__ = "customers"
        id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
        tenant: Mapped[str] = mapped_column(String(32))
        national_id: Mapped[str] = mapped_column(EncryptedNationalId(
            guard, searchable=True, text=True, allow_plaintext=True, key_scope=key_scope))
        phone: Mapped[str] = mapped_column(EncryptedPhone(
            guard, text=True, allow_plaintext=True, key_scope=key_scope))
        address: Mapped[str] = mapped_column(EncryptedAddress(
            guard, text=True, allow_plaintext=True, key_scope=key_scope))

    return Customer


RAW = table("customers", column("id"), column("national_id"), column("national_id_bidx"),
            column("phone"), column("address"))


def raw(engine):
    with engine.connect() as conn:
        return {r.id: r for r in conn.execute(select(RAW))}


def test_encrypt_existing_converts_a_live_plaintext_table(any_engine):
    rows = legacy(any_engine)
    guard = Guard(kms=LocalKMS.generate())
    Customer = model(guard)
    guard.bind(any_engine)
    with Session(any_engine) as s:                       # the app reads the mix
        assert s.get(Customer, 3).phone == "0532 003 45 67"

    dry = encrypt_existing(guard, "customers", "phone", dry_run=True)
    assert dry.updated == N + 1 and not dry.failures
    assert raw(any_engine)[3].phone == "0532 003 45 67"

    report = encrypt_existing(guard, "customers", "phone", batch_size=16)
    assert report.ok and report.updated == N + 1 == dry.updated
    nid = encrypt_existing(guard, "customers", "national_id", batch_size=16)
    assert nid.updated == N and not nid.ok
    assert [(f.column, f.row) for f in nid.failures] == [("customers.national_id",
                                                         f"id={BAD_ID}")]
    assert "checksum" in nid.failures[0].error
    bad = rows[-1]["national_id"]
    assert bad not in repr(nid.to_dict()) and bad.replace(" ", "") not in repr(nid.to_dict())

    stored = raw(any_engine)
    assert all(stored[i].phone.startswith("pg1:") for i in stored)
    assert stored[BAD_ID].national_id == rows[-1]["national_id"]     # left for a human
    with Session(any_engine) as s:
        c = s.get(Customer, 3)
        assert c.phone == "+905320034567" and c.national_id == tc(3)    # canonical now
        assert c.address == "Moda Cad. No:3, 34710 Kadıköy/İstanbul"    # still plaintext
        found = s.scalars(select(Customer.id).where(Customer.national_id == tc(42))).all()
        assert found == [42]                                           # blind index set

    again = encrypt_existing(guard, "customers", "phone")
    assert again.updated == 0
    check = verify(guard)
    assert not check.ok
    by_col = {c.label: c for c in check.columns}
    assert by_col["customers.phone"].plaintext == 0
    assert by_col["customers.national_id"].plaintext == 1
    assert by_col["customers.address"].plaintext == N + 1

    encrypt_existing(guard, "customers", "address")
    with Session(any_engine) as s:                       # a human fixes the bad row
        s.get(Customer, BAD_ID).national_id = tc(BAD_ID)
        s.commit()
    final = verify(guard)
    assert final.ok and final.checked == 3 * (N + 1)


def test_encrypt_existing_needs_allow_plaintext(sqlite_engine):
    legacy(sqlite_engine)
    guard = Guard(kms=LocalKMS.generate())

    class Base(DeclarativeBase):
        pass

    class Customer(Base):
        __tablename__ = "customers"
        id: Mapped[int] = mapped_column(Integer, primary_key=True)
        phone: Mapped[str] = mapped_column(EncryptedPhone(guard, text=True))

    guard.bind(sqlite_engine)
    with pytest.raises(ConfigurationError) as err:
        encrypt_existing(guard, "customers", "phone")
    assert err.value.column == "customers.phone"
    with pytest.raises(ConfigurationError):
        encrypt_existing(guard, "customers", "nope")


def test_an_app_write_during_the_migration_is_not_overwritten(sqlite_engine, monkeypatch):
    legacy(sqlite_engine)
    guard = Guard(kms=LocalKMS.generate())
    Customer = model(guard)
    guard.bind(sqlite_engine)
    original = migrate_mod._MigrateJob.work
    done = []

    def work(self, row, counts):
        if row[0] == 10 and not done:
            with Session(sqlite_engine) as s:             # the app, another connection
                s.get(Customer, 10).phone = "+905551112233"
                s.commit()
            done.append(10)
        return original(self, row, counts)

    monkeypatch.setattr(migrate_mod._MigrateJob, "work", work)
    report = encrypt_existing(guard, "customers", "phone")
    assert done == [10] and report.conflicts == 1 and report.updated == N
    assert report.remaining == 0
    with Session(sqlite_engine) as s:
        assert s.get(Customer, 10).phone == "+905551112233"
        assert s.get(Customer, 11).phone == "+905320114567"


def test_encrypt_existing_with_per_tenant_key_scopes(pg_engine):
    legacy(pg_engine)
    guard = Guard(kms=LocalKMS.generate())
    Customer = model(guard, key_scope="tenant")
    guard.bind(pg_engine)
    report = encrypt_existing(guard, "customers", "phone", workers=2, batch_size=10)
    assert report.ok and report.updated == N + 1
    scopes = {k.id: k.scope for k in guard.keys.keys(kind="dek")}
    col = next(c for c in guard.columns if c.column.name == "phone")
    t = table("customers", column("id"), column("phone"), column("tenant"))
    with pg_engine.connect() as conn:
        for r in conn.execute(select(t)):
            assert scopes[col.stored_key_id(r.phone)] == f"customers:{r.tenant}"
    with Session(pg_engine) as s:
        assert s.get(Customer, 5).phone == "+905320054567"


def test_a_column_too_narrow_for_envelopes_fails_without_showing_values(pg_engine):
    """An envelope longer than VARCHAR(40) is not written: the job checks the declared
    width first and reports the row, value-free, naming the width (before that check,
    PostgreSQL's refusal, whose SQLAlchemy message would list the plaintext parameters,
    became a value-free ConfigurationError)."""
    md = MetaData()
    t = Table("customers", md, Column("id", Integer, primary_key=True, autoincrement=False),
              Column("phone", String(40)))
    md.create_all(pg_engine)
    with pg_engine.begin() as conn:
        conn.execute(insert(t), [{"id": 1, "phone": "0532 765 43 21"}])
    guard = Guard(kms=LocalKMS.generate())

    class Base(DeclarativeBase):
        pass

    class Customer(Base):
        __tablename__ = "customers"
        id: Mapped[int] = mapped_column(Integer, primary_key=True)
        phone: Mapped[str] = mapped_column(EncryptedPhone(guard, text=True,
                                                          allow_plaintext=True))

    guard.bind(pg_engine)
    report = encrypt_existing(guard, "customers", "phone")
    assert report.updated == 0 and [f.row for f in report.failures] == ["id=1"]
    text = report.failures[0].error
    assert "customers.phone holds 40" in text and "765" not in text
    with pg_engine.connect() as conn:
        assert conn.execute(select(t.c.phone)).scalar_one() == "0532 765 43 21"
