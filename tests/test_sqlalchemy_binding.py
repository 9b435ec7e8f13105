"""Row binding (``key_scope=``, ``bound_to=``) and values that move with their row, on
SQLite, PostgreSQL and MariaDB.

The attacks are done the way an attacker with write access to the table would do them:
raw SQL on the stored bytes, no piiguard in the way. Each one must be refused when the
value is read (ORM and Core) and reported by ``verify`` by column and row key, never by
value:

- a *copy*: an envelope copied from one row into another row of the same tenant;
- a *swap*: two subjects' envelopes exchanged (different key scopes);
- a *replay*: an older envelope of the same row written back after its bound version
  changed;
- a *scope move* behind piiguard's back: the row's ``tenant_id`` changed without
  re-encryption.

Moves done through piiguard (ORM flush, Core ``update()``, ORM bulk and ORM-enabled
``update(Model)``) re-encrypt under the new scope's key and re-index: shredding the old
scope no longer touches the moved row, shredding the new one does.
"""

from __future__ import annotations

import pytest
from sqlalchemy import (
    DateTime,
    Integer,
    String,
    bindparam,
    column,
    event,
    insert,
    select,
    table,
    text,
    update,
)
from sqlalchemy.orm import DeclarativeBase, Session, mapped_column

from piiguard import Guard, LocalKMS, MaskingPolicy, acting_as, errors
from piiguard.rotation.shred import shred_scope
from piiguard.rotation.verify import verify
from piiguard.sqlalchemy import EncryptedNationalId, EncryptedPhone, EncryptedString, Sealed
from piiguard.validators.tckn import calc_check_digits

N = 8


def tc(n: int) -> str:
    base = str(300000000 + n)
    return base + calc_check_digits(base)


def phone(n: int) -> str:
    return f"+90532{n:07d}"


def make(engine, *, versioned: bool = True, on_destroyed: str | None = None):
    guard = Guard(kms=LocalKMS.generate())
    extra = {} if on_destroyed is None else {"on_destroyed": on_destroyed}

    class Base(DeclarativeBase):
        pass

    class Member(Base):
        __tablename__ = "members"
        id = mapped_column(Integer, primary_key=True, autoincrement=False)
        tenant_id = mapped_column(Integer, nullable=False)
        customer_ref = mapped_column(String(20), nullable=False)
        version = mapped_column(Integer, nullable=False, default=1)
        name = mapped_column(String(40))
        national_id = mapped_column(EncryptedNationalId(
            guard, searchable=True, key_scope="tenant_id", bound_to=("customer_ref",),
            **extra))
        phone = mapped_column(EncryptedPhone(
            guard, key_scope="tenant_id", bound_to=("customer_ref", "version"), **extra))
        note = mapped_column(EncryptedString(guard, text=True, bound_to=("customer_ref",),
                                             **extra))
        if versioned:
            __mapper_args__ = {"version_id_col": version}  # noqa: RUF012

    Base.metadata.create_all(engine)
    guard.bind(engine)
    with Session(engine) as s:
        s.add_all([Member(id=i, tenant_id=1 + i % 2, customer_ref=f"C-{i}", name=f"n{i}",
                          national_id=tc(i), phone=phone(i), note=f"note {i}")
                   for i in range(1, N + 1)])
        s.commit()
    return guard, Member


RAW = table("members", column("id"), column("tenant_id"), column("customer_ref"),
            column("version"), column("national_id"), column("national_id_bidx"),
            column("phone"), column("note"))


def raw_row(engine, i):
    with engine.connect() as conn:
        return conn.execute(select(RAW).where(RAW.c.id == i)).one()


def raw_set(engine, i, **values):
    with engine.begin() as conn:
        conn.execute(update(RAW).where(RAW.c.id == i).values(**values))


def key_scope_of(guard, stored) -> str:
    kid = guard.keys.keys(kind="dek")
    from piiguard.crypto.envelope import peek_key_id
    wanted = peek_key_id(stored)
    return next(k.scope for k in kid if k.id == wanted)


def test_bound_values_read_back_through_the_orm_and_core(any_engine):
    guard, Member = make(any_engine)
    t = Member.__table__
    with any_engine.begin() as conn:   # Core executemany carries the binding columns
        conn.execute(insert(t), [{"id": 100, "tenant_id": 3, "customer_ref": "C-100",
                                  "version": 1, "national_id": tc(100),
                                  "phone": phone(100), "note": "core"}])
    with Session(any_engine) as s:
        m = s.get(Member, 3)
        assert (m.national_id, m.phone, m.note) == (tc(3), phone(3), "note 3")
        assert s.scalars(select(Member.phone).where(Member.id == 100)).one() == phone(100)
        assert s.scalars(select(Member.id).where(Member.national_id == tc(5))).all() == [5]
    with any_engine.connect() as conn:
        rows = conn.execute(select(t).order_by(t.c.id)).all()
        assert [r.phone for r in rows] == [phone(i) for i in [*range(1, N + 1), 100]]
        assert conn.execute(select(t.c.note).where(t.c.id == 2)).scalar_one() == "note 2"
    stored = raw_row(any_engine, 2)
    assert key_scope_of(guard, stored.phone) == "members:1"
    check = verify(guard)
    assert check.ok and check.checked == 3 * (N + 1)
    assert sum(c.unbound for c in check.columns) == 0


def test_copy_swap_replay_and_scope_move_are_refused_and_reported(any_engine):
    guard, Member = make(any_engine)
    # copy: row 3's note into row 5 (same tenant, another customer_ref)
    raw_set(any_engine, 5, note=raw_row(any_engine, 3).note)
    # swap: national ids of row 2 (tenant 1) and row 3 (tenant 2)
    r2, r3 = raw_row(any_engine, 2), raw_row(any_engine, 3)
    raw_set(any_engine, 2, national_id=r3.national_id)
    raw_set(any_engine, 3, national_id=r2.national_id)
    # replay: row 4's phone as of version 1, written back after an update bumped it
    old_phone = raw_row(any_engine, 4).phone
    with Session(any_engine) as s:
        s.get(Member, 4).name = "renamed"
        s.commit()
    assert raw_row(any_engine, 4).version == 2
    assert raw_row(any_engine, 4).phone != old_phone      # re-sealed for version 2
    raw_set(any_engine, 4, phone=old_phone)
    # scope move behind piiguard's back: row 6 changes tenant, values stay
    raw_set(any_engine, 6, tenant_id=7)

    attacked = {("members.note", 5), ("members.national_id", 2), ("members.national_id", 3),
                ("members.phone", 4), ("members.national_id", 6), ("members.phone", 6)}
    with Session(any_engine) as s:
        for label, i in sorted(attacked, key=lambda a: a[1]):
            attr = label.split(".")[1]
            with pytest.raises(errors.DecryptionError, match=label.replace(".", r"\.")) as err:
                s.scalars(select(getattr(Member, attr)).where(Member.id == i)).all()
            assert tc(i) not in str(err.value) and phone(i) not in str(err.value)
        # rows nobody touched still read, also through whole-entity loads
        assert s.get(Member, 1).phone == phone(1) and s.get(Member, 8).note == "note 8"
    with any_engine.connect() as conn:
        with pytest.raises(errors.DecryptionError):
            conn.execute(select(Member.__table__).where(Member.id == 6)).all()
    report = verify(guard)
    assert not report.ok
    assert {(f.column, int(f.row.split("=")[1])) for f in report.failures} == attacked
    listed = str(report.to_dict())
    assert all(tc(i) not in listed and phone(i) not in listed for i in range(1, N + 1))
    assert all("not this row's value" in f.error for f in report.failures)


def test_orm_scope_move_reencrypts_and_reindexes(any_engine):
    guard, Member = make(any_engine)
    before = raw_row(any_engine, 2)
    with Session(any_engine) as s:     # row 2: tenant 1 -> 9 (attributes expired)
        m = s.get(Member, 2)
        s.commit()
        m.tenant_id = 9
        s.commit()
        assert (m.phone, m.national_id, m.note) == (phone(2), tc(2), "note 2")
    after = raw_row(any_engine, 2)
    assert key_scope_of(guard, after.phone) == "members:9"
    assert key_scope_of(guard, after.national_id) == "members:9"
    # note is bound to customer_ref only: a tenant move leaves it as it was
    assert after.note == before.note and after.national_id_bidx is not None
    _shreds_follow_the_move(guard, Member, any_engine, moved=2, old=1, new=9)


def test_core_scope_move_reencrypts_and_reindexes(any_engine):
    guard, Member = make(any_engine, versioned=False)
    t = Member.__table__
    with any_engine.begin() as conn:
        res = conn.execute(update(t).where(t.c.id.in_([2, 4])).values(tenant_id=9))
        assert res.rowcount == 2
        # executemany with named parameters, and a bound value written with its row
        conn.execute(update(t).where(t.c.id == bindparam("pk")).values(
            tenant_id=bindparam("tid")), [{"pk": 6, "tid": 9}, {"pk": 3, "tid": 9}])
        conn.execute(update(t).where(t.c.id == 1).values(
            tenant_id=9, customer_ref="C-1", phone="05320000111"))
    for i in (1, 2, 3, 4, 6):
        assert key_scope_of(guard, raw_row(any_engine, i).phone) == "members:9"
    with Session(any_engine) as s:
        assert s.get(Member, 1).phone == "+905320000111"
        assert [m.phone for m in s.scalars(select(Member).where(Member.tenant_id == 9)
                                           .order_by(Member.id))] == \
            ["+905320000111", phone(2), phone(3), phone(4), phone(6)]
        # the ORM's own statements: update(Model) and bulk update by primary key
        s.execute(update(Member).where(Member.id == 5).values(tenant_id=9))
        s.execute(update(Member), [{"id": 7, "tenant_id": 9}])
        s.commit()
        assert (s.get(Member, 5).phone, s.get(Member, 7).national_id) == (phone(5), tc(7))
    assert {key_scope_of(guard, raw_row(any_engine, i).phone) for i in (5, 7)} == \
        {"members:9"}
    assert key_scope_of(guard, raw_row(any_engine, 8).phone) == "members:1"
    assert verify(guard).ok
    _shreds_follow_the_move(guard, Member, any_engine, moved=2, old=1, new=9)


def _shreds_follow_the_move(guard, Member, engine, *, moved, old, new):
    stayed = next(i for i in range(1, N + 1) if 1 + i % 2 == old and i != moved
                  and raw_row(engine, i).tenant_id == old)
    shred_scope(guard, f"members:{old}")
    with Session(engine) as s:
        m = s.get(Member, moved)
        assert (m.phone, m.national_id) == (phone(moved), tc(moved))
        assert s.scalars(select(Member.id).where(Member.national_id == tc(moved))).all() \
            == [moved]
        assert s.get(Member, stayed).phone is None        # erased with its old scope
    shred_scope(guard, f"members:{new}")
    with Session(engine) as s:
        m = s.get(Member, moved)
        assert (m.phone, m.national_id) == (None, None)
        assert s.scalars(select(Member.id).where(Member.national_id == tc(moved))).all() \
            == []
    assert raw_row(engine, moved).national_id_bidx is None


def test_version_binding_reseals_on_every_orm_update(sqlite_engine):
    guard, Member = make(sqlite_engine)
    first = raw_row(sqlite_engine, 1)
    with Session(sqlite_engine) as s:
        m = s.get(Member, 1)
        m.name = "x"                      # phone untouched: re-sealed for version 2
        s.commit()
        m.customer_ref = "C-1b"          # every value bound to customer_ref moves
        s.commit()
        assert (m.version, m.phone, m.note, m.national_id) == (3, phone(1), "note 1", tc(1))
    last = raw_row(sqlite_engine, 1)
    assert last.phone != first.phone and last.note != first.note
    assert last.national_id != first.national_id
    with Session(sqlite_engine) as s:   # no change, no UPDATE: nothing re-sealed
        s.get(Member, 1)
        s.commit()
    assert raw_row(sqlite_engine, 1).phone == last.phone
    assert verify(guard).ok


def test_core_moves_refuse_what_they_cannot_do_safely(any_engine):
    guard, Member = make(any_engine, versioned=False)
    t = Member.__table__
    before = [tuple(r) for r in _all_raw(any_engine)]
    with any_engine.connect() as conn:
        with pytest.raises(errors.ConfigurationError, match="plain value"):
            conn.execute(update(t).where(t.c.id == 1).values(tenant_id=t.c.tenant_id + 1))
        conn.rollback()
        with pytest.raises(errors.ConfigurationError, match="RETURNING"):
            conn.execute(update(t).where(t.c.id == 1).values(tenant_id=5).returning(t.c.id))
        conn.rollback()
        with pytest.raises(errors.ConfigurationError, match="customer_ref"):
            conn.execute(update(t).where(t.c.id == 1).values(note="x"))
        conn.rollback()
        with pytest.raises(errors.ConfigurationError, match="customer_ref"):
            conn.execute(insert(t), [{"id": 50, "tenant_id": 1, "note": "x"}])
        conn.rollback()
    assert [tuple(r) for r in _all_raw(any_engine)] == before


def _all_raw(engine):
    with engine.connect() as conn:
        return conn.execute(select(RAW).order_by(RAW.c.id)).all()


def test_a_row_changed_during_a_core_move_fails_the_statement(any_engine):
    guard, Member = make(any_engine, versioned=False)
    t = Member.__table__
    armed = []

    def meddle(conn, cursor, statement, parameters, context, executemany):
        # Right after the move read the rows, "another writer" changes row 2's phone on
        # the same DBAPI connection (a row lock would make a real one wait instead).
        if armed and statement.lstrip().upper().startswith("SELECT") and \
                "FROM members" in statement:
            armed.clear()
            cur = conn.connection.dbapi_connection.cursor()
            mark = "%s" if any_engine.dialect.paramstyle in ("format", "pyformat") else "?"
            cur.execute(f"UPDATE members SET customer_ref = 'other' WHERE id = {mark}", (2,))
            cur.close()

    event.listen(any_engine, "after_cursor_execute", meddle)
    try:
        with any_engine.connect() as conn:
            armed.append(True)
            with pytest.raises(errors.PIIGuardError, match="changed while"):
                conn.execute(update(t).where(t.c.id.in_([2, 4])).values(tenant_id=2))
            conn.rollback()
    finally:
        event.remove(any_engine, "after_cursor_execute", meddle)
    assert raw_row(any_engine, 2).tenant_id == 1 and raw_row(any_engine, 4).tenant_id == 1
    assert verify(guard).ok


@pytest.mark.parametrize("with_policy", [False, True])
def test_a_listing_over_an_erased_subject_returns_every_row(any_engine, with_policy):
    guard = Guard(kms=LocalKMS.generate())

    class Base(DeclarativeBase):
        pass

    class Subject(Base):
        __tablename__ = "subjects"
        id = mapped_column(Integer, primary_key=True, autoincrement=False)
        subject = mapped_column(Integer, nullable=False)
        national_id = mapped_column(EncryptedNationalId(guard, searchable=True,
                                                        key_scope="subject"))
        phone = mapped_column(EncryptedPhone(guard, key_scope="subject"))

    Base.metadata.create_all(any_engine)
    guard.bind(any_engine)
    with any_engine.begin() as conn:     # 100 rows, 20 subjects, 5 rows each
        conn.execute(insert(Subject.__table__),
                     [{"id": i, "subject": i % 20, "national_id": tc(i), "phone": phone(i)}
                      for i in range(100)])
    shred_scope(guard, "subjects:7")
    if with_policy:
        guard.policy = MaskingPolicy.from_dict({"default": "reveal"})
    with Session(any_engine) as s, acting_as("admin"):
        rows = s.scalars(select(Subject).order_by(Subject.id)).all()
        assert len(rows) == 100
        erased = [r.id for r in rows if r.phone is None]
        assert erased == [i for i in range(100) if i % 20 == 7]
        assert all(r.national_id is None for r in rows if r.id in erased)
        assert [r.phone for r in rows if r.id not in erased] == \
            [phone(i) for i in range(100) if i % 20 != 7]
    with any_engine.connect() as conn, acting_as("admin"):
        core = conn.execute(select(Subject.__table__)).all()
        # under a policy Core rows hold Sealed values: an erased one's view is None
        views = [r.phone.view() if isinstance(r.phone, Sealed) else r.phone for r in core]
        assert len(core) == 100 and sum(v is None for v in views) == 5
    report = verify(guard)
    assert report.ok and report.shredded == 10


def test_strict_on_destroyed_raises(sqlite_engine):
    guard, Member = make(sqlite_engine, on_destroyed="raise")
    shred_scope(guard, "members:1")
    with Session(sqlite_engine) as s:
        with pytest.raises(errors.KeyDestroyedError, match=r"members\.phone"):
            s.scalars(select(Member.phone)).all()


def test_reads_that_lose_the_row_are_refused_clearly(sqlite_engine):
    guard, Member = make(sqlite_engine)
    t = Member.__table__
    with sqlite_engine.connect() as conn:
        sub = select(t.c.id, t.c.phone).subquery()
        with pytest.raises(errors.ConfigurationError, match="bound to its row"):
            conn.execute(select(sub.c.phone)).all()
        whole = select(t.c.phone, t.c.tenant_id, t.c.customer_ref, t.c.version).subquery()
        assert sorted(conn.execute(select(whole.c.phone)).scalars().all()) == \
            sorted(phone(i) for i in range(1, N + 1))
        typed = text("SELECT phone FROM members").columns(phone=t.c.phone.type)
        with pytest.raises(errors.ConfigurationError, match="bound to its row"):
            conn.execute(typed).all()
    assert t.c.phone.type.decrypt_stored(raw_row(sqlite_engine, 1).phone,
                                         row=raw_row(sqlite_engine, 1)._mapping) == phone(1)


def test_binding_options_are_checked(guard, sqlite_engine):
    with pytest.raises(errors.ConfigurationError, match="bound_to"):
        EncryptedPhone(guard, bound_to="customer_ref")

    def declare(*bound):
        class Base(DeclarativeBase):
            pass

        class Bad(Base):
            __tablename__ = "bad"
            id = mapped_column(Integer, primary_key=True)
            created = mapped_column(DateTime)
            nid = mapped_column(EncryptedNationalId(guard))
            phone = mapped_column(EncryptedPhone(guard, bound_to=bound))
        Base.registry.configure()
        return Bad

    with pytest.raises(errors.ConfigurationError, match="integers, strings or UUIDs"):
        declare("created")
    with pytest.raises(errors.ConfigurationError, match="encrypted"):
        declare("nid")
    with pytest.raises(errors.ConfigurationError, match="bound_to names no column"):
        declare("nope")
    with pytest.raises(errors.ConfigurationError, match="itself"):
        declare("phone")


def test_uuid_key_scopes_bind_and_move(any_engine):
    import uuid

    from sqlalchemy import Uuid

    guard = Guard(kms=LocalKMS.generate())

    class Base(DeclarativeBase):
        pass

    class Org(Base):
        __tablename__ = "orgs"
        id = mapped_column(Integer, primary_key=True, autoincrement=False)
        org = mapped_column(Uuid, nullable=False)
        phone = mapped_column(EncryptedPhone(guard, key_scope="org"))

    Base.metadata.create_all(any_engine)
    guard.bind(any_engine)
    a, b = uuid.UUID(int=1), uuid.UUID(int=2)
    with Session(any_engine) as s:
        s.add_all([Org(id=1, org=a, phone=phone(1)), Org(id=2, org=b, phone=phone(2))])
        s.commit()
        assert {k.scope for k in guard.keys.keys(kind="dek")} >= {f"orgs:{a}", f"orgs:{b}"}
        o = s.get(Org, 1)
        o.org = b
        s.commit()
        assert s.scalars(select(Org.phone).order_by(Org.id)).all() == [phone(1), phone(2)]
    shred_scope(guard, f"orgs:{a}")     # the moved row left scope a
    with any_engine.connect() as conn:
        assert conn.execute(select(Org.__table__.c.phone).order_by(Org.id)).scalars().all() \
            == [phone(1), phone(2)]
    assert verify(guard).ok


def test_a_move_under_a_masking_policy_keeps_values_and_masks(sqlite_engine):
    guard, Member = make(sqlite_engine)
    guard.policy = MaskingPolicy.from_dict({"default": "redact",
                                            "phone": {"admin": "reveal"}})
    with Session(sqlite_engine) as s:
        m = s.get(Member, 2)
        assert isinstance(s.scalars(select(Member.phone).where(Member.id == 2)).one(),
                          Sealed)
        with acting_as("support"):
            assert m.phone == "[REDACTED]"
            m.tenant_id = 5             # a role that cannot see the value still moves it
            s.commit()
        with acting_as("admin"):
            assert m.phone == phone(2)
    guard.policy = None
    assert key_scope_of(guard, raw_row(sqlite_engine, 2).phone) == "members:5"
    assert verify(guard).ok
