"""Retire and crypto-shredding, on SQLite, PostgreSQL and MariaDB.

- ``retire`` is refused (KeyInUseError naming the column and key) while any stored value
  uses the key, and accepted once reencrypt has moved them;
- shredding one subject's key scope (``key_scope=``) makes exactly that subject's fields
  unreadable (KeyDestroyedError) while everyone else's stay readable; the key table row
  records the destruction, the blind index of the erased values is cleared, audit events
  are emitted without values; verify and reencrypt treat shredded values as erased, not
  as failures.
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import Integer, String, column, insert, select, table
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from piiguard import AuditTrail, Guard, LocalKMS
from piiguard.errors import (
    ConfigurationError,
    KeyDestroyedError,
    KeyInUseError,
    ScopeErasedError,
    UnknownKeyError,
)
from piiguard.rotation import (
    destroy_key,
    key_status,
    reencrypt,
    retire_key,
    shred_scope,
    verify,
)
from piiguard.rotation.shred import reopen_scope
from piiguard.sqlalchemy import EncryptedAddress, EncryptedNationalId, EncryptedPhone
from piiguard.validators import tckn


def tc(n: int) -> str:
    base = str(200000000 + n)
    return base + tckn.calc_check_digits(base)


def make(engine, *, key_scope=None, events=None, on_destroyed="raise"):
    # on_destroyed="raise" (the strict form): these tests see the KeyDestroyedError that
    # the default (erased values read as None) hides
    guard = Guard(kms=LocalKMS.generate(),
                  audit=AuditTrail(sinks=[events.append] if events is not None else []))

    class Base(DeclarativeBase):
        pass

    class Customer(Base):
        __tablename__ = "customers"
        id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
        subject: Mapped[str] = mapped_column(String(32))
        national_id: Mapped[str] = mapped_column(
            EncryptedNationalId(guard, searchable=True, key_scope=key_scope,
                                on_destroyed=on_destroyed))
        phone: Mapped[str] = mapped_column(EncryptedPhone(guard, key_scope=key_scope,
                                                          on_destroyed=on_destroyed))
        address: Mapped[str] = mapped_column(EncryptedAddress(guard, key_scope=key_scope,
                                                              on_destroyed=on_destroyed))

    Base.metadata.create_all(engine)
    guard.bind(engine)
    rows = [dict(id=i, subject=f"s{i % 3}", national_id=tc(i), phone=f"+90533{i:07d}",
                 address=f"Kızılay Mah. No:{i}, 06420 Çankaya/Ankara")
            for i in range(1, 31)]
    with engine.begin() as conn:
        conn.execute(insert(Customer.__table__), rows)
    return guard, Customer


def test_retire_is_refused_while_any_row_uses_the_key(any_engine):
    guard, _ = make(any_engine)
    old = guard.keys.keys(kind="dek", states=["active"])[0].id
    guard.keys.rotate("dek", "customers")
    with pytest.raises(KeyInUseError) as info:
        retire_key(guard, old)
    assert info.value.key_id == str(old) and info.value.column.startswith("customers.")
    assert "90 stored value(s)" in str(info.value)
    assert guard.keys.keys(kind="dek", states=["decrypt_only"])[0].id == old  # unchanged
    assert reencrypt(guard).updated == 30
    retire_key(guard, old)
    assert [k.state for k in guard.keys.keys() if k.id == old] == ["retired"]
    with pytest.raises(UnknownKeyError):
        retire_key(guard, 9999)


def test_active_keys_and_keys_without_known_columns_are_not_retired(sqlite_engine):
    guard, _ = make(sqlite_engine)
    active = guard.keys.keys(kind="dek", states=["active"])[0].id
    with pytest.raises(KeyInUseError):
        retire_key(guard, active)          # rows use it (and it is active)
    bare = Guard(kms=guard.kms).bind(sqlite_engine)   # knows no encrypted column
    new = guard.keys.rotate("dek", "customers")
    reencrypt(guard)
    with pytest.raises(ConfigurationError):
        retire_key(bare, active)           # cannot count usage: fail closed
    assert new != active


def test_index_key_retire_counts_the_index_column(sqlite_engine):
    guard, _ = make(sqlite_engine)
    old_idx = guard.keys.keys(kind="index", states=["active"])[0].id
    guard.keys.rotate("index", "customers")
    with pytest.raises(KeyInUseError) as info:
        retire_key(guard, old_idx)
    assert info.value.column == "customers.national_id_bidx"
    reencrypt(guard)
    retire_key(guard, old_idx)


def test_shredding_one_subject_leaves_everyone_else_readable(any_engine):
    events: list[dict] = []
    guard, Customer = make(any_engine, key_scope="subject", events=events)
    scope_of = {k.scope: k.id for k in guard.keys.keys(kind="dek")}
    assert set(scope_of) >= {"customers:s0", "customers:s1", "customers:s2"}
    events.clear()

    report = shred_scope(guard, "customers:s1")

    assert report.keys == [scope_of["customers:s1"]]
    assert report.values == {"customers.national_id": 10, "customers.phone": 10,
                             "customers.address": 10}
    assert report.indexes_cleared == 10
    info = {k.id: k for k in guard.keys.keys()}[scope_of["customers:s1"]]
    assert info.state == "destroyed" and info.destroyed_at is not None
    keys_table = guard.keys.table
    with any_engine.connect() as conn:
        assert conn.execute(select(keys_table.c.wrapped_key).where(
            keys_table.c.id == info.id)).scalar_one() is None

    guard.keys.clear_cache()    # cold cache, as in another process
    with Session(any_engine) as s:
        for i in range(1, 31):
            for attr in ("national_id", "phone", "address"):
                q = select(getattr(Customer, attr)).where(Customer.id == i)
                if i % 3 == 1:
                    with pytest.raises(KeyDestroyedError) as err:
                        s.scalar(q)
                    assert err.value.column == f"customers.{attr}"
                else:
                    assert s.scalar(q) is not None
        # The erased subject's blind index is gone: a lookup no longer confirms them.
        assert s.scalars(select(Customer.id).where(Customer.national_id == tc(4))).all() == []
        assert s.scalars(select(Customer.id).where(Customer.national_id == tc(5))).all() == [5]

    actions = [e["action"] for e in events]
    assert actions.count("key.destroy") == 1 and actions.count("shred") == 1
    shred_event = next(e for e in events if e["action"] == "shred")
    assert shred_event["scope"] == "customers:s1" and shred_event["rows"] == 30
    dump = json.dumps(events, default=str)
    assert tc(4) not in dump and "+90533" not in dump and "ANKARA" not in dump.upper()

    check = verify(guard)
    assert check.ok and sum(c.shredded for c in check.columns) == 30
    status = key_status(guard)
    assert status.rows_using(info.id) == 30          # the unreadable values remain
    # reencrypt leaves erased values alone (and does not call them failures), and counts
    # them: 10 erased rows x 3 columns
    guard.keys.rotate("dek", "customers:s0")
    again = reencrypt(guard)
    assert again.ok and again.updated == 10 and again.tables[0].shredded == 30
    assert again.shredded == 30 and again.to_dict()["shredded"] == 30


def test_new_data_after_an_erasure_needs_an_explicit_reopen(sqlite_engine):
    guard, Customer = make(sqlite_engine, key_scope="subject")
    shred_scope(guard, "customers:s2")
    with Session(sqlite_engine) as s, pytest.raises(ScopeErasedError):
        s.add(Customer(id=100, subject="s2", national_id=tc(100), phone="+905330000100",
                       address="Kızılay Mah. No:1, 06420 Çankaya/Ankara"))
        s.commit()
    assert guard.keys.keys(scope="customers:s2", states=["active"]) == []
    reopen_scope(guard, "customers:s2")
    with Session(sqlite_engine) as s:
        s.add(Customer(id=100, subject="s2", national_id=tc(100), phone="+905330000100",
                       address="Kızılay Mah. No:1, 06420 Çankaya/Ankara"))
        s.commit()
        assert s.scalar(select(Customer.phone).where(Customer.id == 100)) == "+905330000100"
    active = guard.keys.keys(scope="customers:s2", states=["active"])
    assert len(active) == 1


def test_destroy_one_key_and_unknown_scope(sqlite_engine):
    guard, Customer = make(sqlite_engine)
    key = guard.keys.keys(kind="dek", states=["active"])[0].id
    report = destroy_key(guard, key)
    assert report.total_values == 90 and report.indexes_cleared == 30
    with Session(sqlite_engine) as s, pytest.raises(KeyDestroyedError):
        s.scalar(select(Customer.phone).where(Customer.id == 1))
    with pytest.raises(UnknownKeyError):
        shred_scope(guard, "no-such-scope")
    raw = table("customers", column("national_id_bidx"))
    with sqlite_engine.connect() as conn:
        assert conn.execute(select(raw.c.national_id_bidx)).scalars().all() == [None] * 30
