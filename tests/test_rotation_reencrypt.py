"""reencrypt and index-key rotation through the Python API, on SQLite (file), PostgreSQL
and MariaDB (``any_engine``), binary and text envelopes.

What must hold: after ``keys rotate`` every stored value ends on the active DEK with the
same plaintext; a second run changes 0 rows; ``dry_run`` counts equal the real run's; a
write that lands between the job's SELECT and its UPDATE is never overwritten; workers
split the rows without overlap; a value that fails to decrypt is reported by row key
(never by value) and left untouched; index-key rotation keeps lookups working during
the window and ends with every index value under the new key.
"""

from __future__ import annotations

import importlib

import pytest
from sqlalchemy import Integer, String, column, insert, select, table, update
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from piiguard import Guard, LocalKMS
from piiguard.crypto.blind_index import index_key_id_of
from piiguard.crypto.envelope import key_id_of
from piiguard.rotation import key_status, reencrypt, retire_key, verify
from piiguard.sqlalchemy import EncryptedAddress, EncryptedNationalId, EncryptedPhone
from piiguard.validators import tckn

# The module (the package re-exports the function under the same name).
reencrypt_mod = importlib.import_module("piiguard.rotation.reencrypt")

PII = ("national_id", "phone", "address")


def tc(n: int) -> str:
    base = str(100000000 + n)
    return base + tckn.calc_check_digits(base)


def person(i: int, tenant: str = "t1") -> dict:
    return dict(id=i, tenant=tenant, national_id=tc(i), phone=f"+90532{i:07d}",
                address=f"Moda Cad. No:{i % 90 + 1}, 34710 Kadıköy/İstanbul")


def canonical_address(i: int) -> str:
    return f"Moda Cad. No:{i % 90 + 1}, 34710 Kadıköy/İstanbul"   # kept as written


def make_model(guard, *, text=False, key_scope=None):
    class Base(DeclarativeBase):
        pass

    class Customer(Base):
        __tablename__ = "customers"
        id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
        tenant: Mapped[str] = mapped_column(String(32))
        national_id: Mapped[str] = mapped_column(
            EncryptedNationalId(guard, searchable=True, text=text, key_scope=key_scope))
        phone: Mapped[str] = mapped_column(EncryptedPhone(guard, text=text,
                                                          key_scope=key_scope))
        address: Mapped[str] = mapped_column(EncryptedAddress(guard, text=text,
                                                              key_scope=key_scope))

    return Base, Customer


def setup(engine, n, *, text=False, key_scope=None, tenants=("t1",)):
    guard = Guard(kms=LocalKMS.generate())
    Base, Customer = make_model(guard, text=text, key_scope=key_scope)
    Base.metadata.create_all(engine)
    guard.bind(engine)
    with engine.begin() as conn:
        conn.execute(insert(Customer.__table__),
                     [person(i, tenants[i % len(tenants)]) for i in range(1, n + 1)])
    return guard, Customer


RAW = table("customers", column("id"), column("tenant"), column("national_id"),
            column("national_id_bidx"), column("phone"), column("address"))


def raw_rows(engine):
    with engine.connect() as conn:
        return conn.execute(select(RAW).order_by(RAW.c.id)).all()


def key_of(stored) -> int:
    return key_id_of(stored)


def plaintexts(guard, Customer, engine):
    cols = {c.column.name: c for c in guard.columns}
    out = {}
    for row in raw_rows(engine):
        # row-bound (key-scoped) values open with their row's binding values
        out[row.id] = tuple(cols[n].decrypt_stored(getattr(row, n), row=row._mapping)
                            for n in PII)
    return out


def expected(n):
    return {i: (tc(i), f"+90532{i:07d}", canonical_address(i)) for i in range(1, n + 1)}


@pytest.mark.parametrize("text", [False, True], ids=["binary", "text"])
def test_reencrypt_moves_every_value_to_the_active_dek(any_engine, text):
    n = 240
    guard, Customer = setup(any_engine, n, text=text)
    old = guard.keys.keys(kind="dek", states=["active"])[0].id
    before = raw_rows(any_engine)
    new = guard.keys.rotate("dek", "customers")

    dry = reencrypt(guard, dry_run=True, batch_size=50)
    assert raw_rows(any_engine) == before           # the dry run wrote nothing
    real = reencrypt(guard, batch_size=50)
    assert (dry.updated, dry.values) == (real.updated, real.values) == (n, 3 * n)
    assert real.ok and real.remaining == 0 and not real.failures

    after = raw_rows(any_engine)
    assert len(before) == len(after) == n
    for b, a in zip(before, after, strict=True):
        for name in PII:
            assert key_of(getattr(b, name)) == old
            assert key_of(getattr(a, name)) == new
            assert getattr(a, name) != getattr(b, name)
        assert a.national_id_bidx == b.national_id_bidx   # same index key: untouched
    assert plaintexts(guard, Customer, any_engine) == expected(n)

    again = reencrypt(guard, batch_size=50)
    assert again.updated == 0 and again.values == 0
    assert raw_rows(any_engine) == after
    status = key_status(guard)
    assert status.rows_using(old) == 0 and status.rows_using(new) == 3 * n
    retire_key(guard, old)
    assert verify(guard).ok


def test_index_key_rotation_keeps_lookups_working(any_engine):
    n = 120
    guard, Customer = setup(any_engine, n)
    old_idx = guard.keys.keys(kind="index", states=["active"])[0].id
    new_idx = guard.keys.rotate("index", "customers")
    # The window: old rows still carry the old index, a new row gets the new one, and a
    # lookup finds both (FieldIndex.candidates consults every usable index key).
    with any_engine.begin() as conn:
        conn.execute(insert(Customer.__table__), [person(n + 1)])
    with Session(any_engine) as s:
        for i in (1, 57, n + 1):
            assert s.scalars(select(Customer.id).where(
                Customer.national_id == tc(i))).all() == [i]

    dry = reencrypt(guard, dry_run=True)
    report = reencrypt(guard)
    assert dry.updated == report.updated == n          # only the rows on the old index
    assert report.tables[0].indexes == n and report.values == 0
    rows = raw_rows(any_engine)
    assert {index_key_id_of(r.national_id_bidx) for r in rows} == {new_idx}
    retire_key(guard, old_idx)
    with Session(any_engine) as s:
        for i in (1, 57, n + 1):
            assert s.scalars(select(Customer.id).where(
                Customer.national_id == tc(i))).all() == [i]
    assert reencrypt(guard).updated == 0
    assert verify(guard).ok


def test_dek_and_index_rotation_in_one_run(sqlite_engine):
    guard, Customer = setup(sqlite_engine, 60, text=True)
    guard.keys.rotate("dek", "customers")
    guard.keys.rotate("index", "customers")
    report = reencrypt(guard, batch_size=7)
    t = report.tables[0]
    assert (t.updated, t.values, t.indexes) == (60, 180, 60)
    assert plaintexts(guard, Customer, sqlite_engine) == expected(60)
    assert verify(guard).ok


def test_concurrent_write_between_select_and_update_wins(sqlite_engine, monkeypatch):
    """The application writes row 5's phone after the job read the row: the job's
    compare-and-swap does not match, the application's value stays, the row counts as
    a conflict, and pass 2 moves the row's other columns (still on the old DEK)."""
    guard, Customer = setup(sqlite_engine, 20)
    guard.keys.rotate("dek", "customers")
    original = reencrypt_mod._ReencryptJob.work
    written = []

    def work(self, row, counts):
        if row[0] == 5 and not written:
            with sqlite_engine.begin() as conn:    # another connection: the app
                conn.execute(update(Customer.__table__).where(Customer.__table__.c.id == 5)
                             .values(phone="+905559998877"))
            written.append(5)
        return original(self, row, counts)

    monkeypatch.setattr(reencrypt_mod._ReencryptJob, "work", work)
    report = reencrypt(guard)
    t = report.tables[0]
    assert written == [5]
    assert t.conflicts == 1 and t.passes == 2 and report.remaining == 0
    assert t.updated == 20                           # 19 in pass 1, row 5 in pass 2
    got = plaintexts(guard, Customer, sqlite_engine)
    assert got[5][1] == "+905559998877"                      # the app's write survived
    exp = expected(20)
    exp[5] = (exp[5][0], "+905559998877", exp[5][2])
    assert got == exp
    new = guard.keys.keys(kind="dek", states=["active"])[0].id
    assert reencrypt(guard).updated == 0
    assert {key_of(getattr(r, n)) for r in raw_rows(sqlite_engine) for n in PII} == {new}


def test_a_conflict_that_leaves_an_old_value_is_picked_up_by_the_next_pass(
        sqlite_engine, monkeypatch):
    """A concurrent writer still on the old DEK (its cache has not seen the rotation):
    the row lost the swap in pass 1 and is moved in pass 2 of the same run."""
    guard, Customer = setup(sqlite_engine, 10)
    stale = Guard(kms=guard.kms).bind(sqlite_engine)   # another process, pre-rotation
    _, StaleCustomer = make_model(stale)
    stale_cipher = next(c for c in stale.columns if c.column.name == "phone")
    stale_value = stale_cipher.encrypt_value("+905550001122")   # cached old DEK
    guard.keys.rotate("dek", "customers")
    original = reencrypt_mod._ReencryptJob.work
    hits = []

    def work(self, row, counts):
        if row[0] == 3 and not hits:
            with sqlite_engine.begin() as conn:
                conn.execute(update(RAW).where(RAW.c.id == 3).values(phone=stale_value))
            hits.append(3)
        return original(self, row, counts)

    monkeypatch.setattr(reencrypt_mod._ReencryptJob, "work", work)
    report = reencrypt(guard)
    t = report.tables[0]
    assert t.conflicts == 1 and t.passes == 2 and report.remaining == 0
    assert t.updated == 10
    assert plaintexts(guard, Customer, sqlite_engine)[3][1] == "+905550001122"
    new = guard.keys.keys(kind="dek", states=["active"])[0].id
    assert {key_of(getattr(r, n)) for r in raw_rows(sqlite_engine) for n in PII} == {new}


@pytest.mark.parametrize("engine_name", ["sqlite_engine", "pg_engine"])
def test_workers_split_the_rows_without_overlap(request, engine_name):
    engine = request.getfixturevalue(engine_name)
    n = 900
    guard, Customer = setup(engine, n)
    guard.keys.rotate("dek", "customers")
    report = reencrypt(guard, workers=3, batch_size=100)
    t = report.tables[0]
    assert report.workers == 3
    assert t.updated == n and t.candidates == n and t.conflicts == 0
    assert plaintexts(guard, Customer, engine) == expected(n)
    assert reencrypt(guard, workers=3).updated == 0


def test_failures_are_reported_by_row_key_and_left_alone(sqlite_engine):
    guard, Customer = setup(sqlite_engine, 12)
    guard.keys.rotate("dek", "customers")
    row = raw_rows(sqlite_engine)[6]
    tampered = bytearray(row.phone)
    tampered[-1] ^= 1
    with sqlite_engine.begin() as conn:
        conn.execute(update(RAW).where(RAW.c.id == row.id).values(phone=bytes(tampered)))
    report = reencrypt(guard)
    assert [(f.column, f.row) for f in report.failures] == [("customers.phone", "id=7")]
    assert "DecryptionError" in report.failures[0].error
    assert tc(7) not in repr(report.to_dict()) and "+9053" not in repr(report.to_dict())
    assert not report.ok
    # The tampered value is left as it was; everything else moved (row 7's other
    # columns too).
    assert raw_rows(sqlite_engine)[6].phone == bytes(tampered)
    assert report.updated == 12 and report.values == 35
    again = reencrypt(guard)
    assert again.updated == 0 and len(again.failures) == 1
    check = verify(guard)
    assert not check.ok and [(f.column, f.row) for f in check.failures] == [
        ("customers.phone", "id=7")]


def test_per_tenant_scopes_move_to_their_own_new_keys(any_engine):
    guard, Customer = setup(any_engine, 30, key_scope="tenant", tenants=("a", "b", "c"))
    scoped = {k.scope: k.id for k in guard.keys.keys(kind="dek")}
    new_b = guard.keys.rotate("dek", "customers:b")
    report = reencrypt(guard)
    assert report.updated == 10                        # only tenant b's rows
    for r in raw_rows(any_engine):
        want = new_b if r.tenant == "b" else scoped[f"customers:{r.tenant}"]
        assert {key_of(getattr(r, n)) for n in PII} == {want}
    assert plaintexts(guard, Customer, any_engine) == expected(30)
    assert reencrypt(guard).updated == 0


def test_reencrypt_with_aws_kms_calls_kms_per_key_not_per_row(aws_kms, sqlite_engine):
    """Against a real moto server: a cold re-encryption of 400 rows unwraps each key once;
    a KMS outage mid-way stops the job with KMSUnavailableError and leaves every row
    whole (old or new DEK, never half-written); the next run finishes."""
    from piiguard.errors import KMSUnavailableError
    from piiguard.testing import inject_kms_fault

    kms, client, counter = aws_kms
    guard = Guard(kms=kms)
    Base, Customer = make_model(guard)
    Base.metadata.create_all(sqlite_engine)
    guard.bind(sqlite_engine)
    with sqlite_engine.begin() as conn:
        conn.execute(insert(Customer.__table__), [person(i) for i in range(1, 401)])
    guard.keys.rotate("dek", "customers")
    guard.keys.clear_cache()                    # cold: as a freshly started job
    counter.reset()
    first = reencrypt(guard, table="customers", batch_size=100)
    assert first.updated == 400 and first.ok
    assert counter.calls["Decrypt"] <= 3 and counter.calls["GenerateDataKey"] == 0

    mid = guard.keys.keys(kind="dek", states=["active"])[0].id
    new2 = guard.keys.rotate("dek", "customers")
    guard.keys.clear_cache()
    with inject_kms_fault(client, "ThrottlingException") as failed:
        with pytest.raises(KMSUnavailableError):
            reencrypt(guard, batch_size=100)
    assert failed["Decrypt"] >= 1
    rows = raw_rows(sqlite_engine)
    assert {key_of(getattr(r, n)) for r in rows for n in PII} <= {mid, new2}
    assert plaintexts(guard, Customer, sqlite_engine) == expected(400)
    done = reencrypt(guard)
    assert done.ok and {key_of(getattr(r, n)) for r in raw_rows(sqlite_engine)
                        for n in PII} == {new2}
