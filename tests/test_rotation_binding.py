"""Envelopes written before row binding, and the ops jobs on row-bound columns.

Rows written by an earlier piiguard hold unbound envelopes (format 0x10/0x11) in columns
that are now key-scoped or ``bound_to=``. They stay readable (``strict_binding=True``
refuses them), ``verify`` counts them as ``unbound``, and ``reencrypt`` upgrades them
(bound to the row they are in) — except a key-scoped one under another scope's key
than its row's (swapped between subjects before the upgrade), which is refused on read,
reported by both jobs, and never bound to the wrong row.
"""

from __future__ import annotations

import pytest
from sqlalchemy import Integer, String, column, select, table, update
from sqlalchemy.orm import DeclarativeBase, Session, mapped_column

from piiguard import Guard, LocalKMS, errors
from piiguard.crypto.envelope import encode_text, is_bound, to_blob
from piiguard.rotation.reencrypt import reencrypt
from piiguard.rotation.verify import verify
from piiguard.sqlalchemy import EncryptedNationalId, EncryptedPhone, EncryptedString
from piiguard.validators.tckn import calc_check_digits

N = 6


def tc(n: int) -> str:
    base = str(400000000 + n)
    return base + calc_check_digits(base)


RAW = table("people", column("id"), column("tenant_id"), column("ref"),
            column("national_id"), column("national_id_bidx"), column("phone"),
            column("note"))


def make(engine, *, strict: bool = False):
    guard = Guard(kms=LocalKMS.generate())

    class Base(DeclarativeBase):
        pass

    class Person(Base):
        __tablename__ = "people"
        id = mapped_column(Integer, primary_key=True, autoincrement=False)
        tenant_id = mapped_column(Integer, nullable=False)
        ref = mapped_column(String(20), nullable=False)
        national_id = mapped_column(EncryptedNationalId(
            guard, searchable=True, key_scope="tenant_id", strict_binding=strict))
        phone = mapped_column(EncryptedPhone(guard, key_scope="tenant_id",
                                             strict_binding=strict))
        note = mapped_column(EncryptedString(guard, text=True, bound_to=("ref",),
                                             strict_binding=strict))

    Base.metadata.create_all(engine)
    guard.bind(engine)
    t = Person.__table__
    # What an earlier piiguard wrote: envelopes bound to table.column only.
    rows = []
    for i in range(1, N + 1):
        tenant = 1 + i % 2
        nid = t.c.national_id.type
        rows.append({
            "id": i, "tenant_id": tenant, "ref": f"R-{i}",
            "national_id": nid.cipher.encrypt_str(tc(i), scope=f"people:{tenant}"),
            "national_id_bidx": nid.index_for(tc(i)),
            "phone": t.c.phone.type.cipher.encrypt_str(f"+90533{i:07d}",
                                                       scope=f"people:{tenant}"),
            "note": encode_text(t.c.note.type.cipher.encrypt_str(f"note {i}")),
        })
    with engine.begin() as conn:
        conn.execute(RAW.insert(), rows)
    return guard, Person


def stored(engine, i):
    with engine.connect() as conn:
        return conn.execute(select(RAW).where(RAW.c.id == i)).one()


def test_unbound_envelopes_read_until_reencrypt_upgrades_them(any_engine):
    guard, Person = make(any_engine)
    with Session(any_engine) as s:
        p = s.get(Person, 3)
        assert (p.national_id, p.phone, p.note) == (tc(3), "+905330000003", "note 3")
        assert s.scalars(select(Person.id).where(Person.national_id == tc(4))).all() == [4]
    check = verify(guard)
    assert check.ok and sum(c.unbound for c in check.columns) == 3 * N
    dry = reencrypt(guard, dry_run=True)
    assert dry.upgraded == 3 * N and not is_bound(to_blob(stored(any_engine, 1).phone))
    report = reencrypt(guard)
    assert report.ok and report.upgraded == 3 * N and report.updated == N
    for i in range(1, N + 1):
        row = stored(any_engine, i)
        assert all(is_bound(to_blob(v)) for v in (row.national_id, row.phone, row.note))
    check = verify(guard)
    assert check.ok and sum(c.unbound for c in check.columns) == 0
    assert reencrypt(guard).updated == 0          # nothing left to upgrade
    with Session(any_engine) as s:
        assert [p.note for p in s.scalars(select(Person).order_by(Person.id))] == \
            [f"note {i}" for i in range(1, N + 1)]
    # upgraded: now a copy between rows is refused
    with any_engine.begin() as conn:
        conn.execute(update(RAW).where(RAW.c.id == 2).values(note=stored(any_engine, 1).note))
    with Session(any_engine) as s, pytest.raises(errors.DecryptionError):
        s.get(Person, 2)
    assert [(f.column, f.row) for f in verify(guard).failures] == [("people.note", "id=2")]


def test_a_legacy_swap_between_subjects_is_refused_and_never_laundered(any_engine):
    guard, Person = make(any_engine)
    a, b = stored(any_engine, 1), stored(any_engine, 2)     # tenants 2 and 1
    with any_engine.begin() as conn:
        conn.execute(update(RAW).where(RAW.c.id == 1).values(phone=b.phone))
        conn.execute(update(RAW).where(RAW.c.id == 2).values(phone=a.phone))
    with Session(any_engine) as s:
        for i in (1, 2):
            with pytest.raises(errors.DecryptionError, match="another key scope"):
                s.scalars(select(Person.phone).where(Person.id == i)).all()
    check = verify(guard)
    assert sorted((f.column, f.row) for f in check.failures) == [
        ("people.phone", "id=1"), ("people.phone", "id=2")]
    report = reencrypt(guard)
    assert sorted((f.column, f.row) for f in report.failures) == [
        ("people.phone", "id=1"), ("people.phone", "id=2")]
    # left as they were (still legacy, still refused), everything else upgraded
    assert stored(any_engine, 1).phone == b.phone and stored(any_engine, 2).phone == a.phone
    assert report.upgraded == 3 * N - 2


def test_strict_binding_refuses_unbound_envelopes(sqlite_engine):
    guard, Person = make(sqlite_engine, strict=True)
    with Session(sqlite_engine) as s, pytest.raises(errors.DecryptionError,
                                                     match="strict_binding"):
        s.get(Person, 1)
    check = verify(guard)
    assert not check.ok and len(check.failures) == 3 * N
    assert reencrypt(guard).upgraded == 3 * N     # the upgrade is the way out
    assert verify(guard).ok
    with Session(sqlite_engine) as s:
        assert s.get(Person, 1).phone == "+905330000001"
