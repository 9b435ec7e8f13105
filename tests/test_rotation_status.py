"""keys status (rotation progress as one GROUP BY per column) and verify (every value
decrypted, failures by row key, never values), on SQLite, PostgreSQL and MariaDB.
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    String,
    Table,
    column,
    event,
    insert,
    select,
    table,
    update,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from piiguard import AuditTrail, Guard, LocalKMS
from piiguard.crypto.envelope import encode_text
from piiguard.rotation import key_status, verify
from piiguard.rotation.sql import decode_text_group, text_key_prefixes
from piiguard.sqlalchemy import EncryptedNationalId, EncryptedPhone
from piiguard.validators import tckn


def tc(n: int) -> str:
    base = str(500000000 + n)
    return base + tckn.calc_check_digits(base)


def make(engine, n=50, events=None, allow_plaintext=False):
    guard = Guard(kms=LocalKMS.generate(),
                  audit=AuditTrail(sinks=[events.append] if events is not None else []))

    class Base(DeclarativeBase):
        pass

    class Customer(Base):
        __tablename__ = "customers"
        id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
        national_id: Mapped[str] = mapped_column(EncryptedNationalId(guard, searchable=True))
        phone: Mapped[str] = mapped_column(EncryptedPhone(guard, text=True,
                                                          allow_plaintext=allow_plaintext))

    Base.metadata.create_all(engine)
    guard.bind(engine)
    with engine.begin() as conn:
        conn.execute(insert(Customer.__table__), [
            dict(id=i, national_id=tc(i), phone=f"+90535{i:07d}") for i in range(1, n + 1)])
    return guard, Customer


RAW = table("customers", column("id"), column("national_id"), column("national_id_bidx"),
            column("phone"))


def test_status_counts_rows_by_key_with_one_group_by_per_column(any_engine):
    guard, Customer = make(any_engine)
    old = guard.keys.keys(kind="dek", states=["active"])[0].id
    idx = guard.keys.keys(kind="index")[0].id
    new = guard.keys.rotate("dek", "customers")
    with any_engine.begin() as conn:                 # the app rewrites 10 phones
        conn.execute(update(Customer.__table__).where(Customer.__table__.c.id <= 10)
                     .values(phone="+905350000000"))
    statements: list[str] = []

    def capture(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(any_engine, "before_cursor_execute", capture)
    try:
        report = key_status(guard)
    finally:
        event.remove(any_engine, "before_cursor_execute", capture)
    data_queries = [s for s in statements if "customers" in s and "GROUP BY" in s.upper()]
    assert len(data_queries) == 3            # national_id, national_id_bidx, phone
    rows = {k.id: k.rows for k in report.keys}
    assert rows[old] == {"customers.national_id": 50, "customers.phone": 40}
    assert rows[new] == {"customers.phone": 10}
    assert rows[idx] == {"customers.national_id_bidx": 50}
    assert report.rows_using(old) == 90 and report.unknown_keys() == {}
    doc = report.to_dict()
    json.dumps(doc)
    states = {k["id"]: k["state"] for k in doc["keys"]}
    assert states == {old: "decrypt_only", idx: "active", new: "active"}
    assert all(k["age_seconds"] is not None and k["master_key_id"] for k in doc["keys"])


def test_status_counts_plaintext_left_by_a_migration(sqlite_engine):
    guard, Customer = make(sqlite_engine, allow_plaintext=True)
    with sqlite_engine.begin() as conn:
        conn.execute(update(RAW).where(RAW.c.id > 45).values(phone="0535 000 00 00"))
    report = key_status(guard)
    phone = next(c for c in report.columns if c.label == "customers.phone")
    assert phone.plaintext == 5 and phone.total == 50 and sum(phone.by_key.values()) == 45


def test_text_key_prefixes_round_trip():
    for key_id in (1, 7, 255, 256, 65_537, 2**31 + 5, 2**32 - 1):
        for p in text_key_prefixes(key_id):
            assert decode_text_group(p) == key_id
    assert decode_text_group("AAAAAAA") is None      # format byte 0x00: not an envelope


def test_text_form_counts_are_case_sensitive_on_mariadb(mariadb_engine):
    """Text envelopes of DEK 1 and DEK 7 start 'EAAAAAE' and 'EAAAAAe': equal under
    MariaDB's default case-insensitive collation. piiguard's columns use ascii_bin, but
    a legacy utf8mb4_general_ci column (mid encrypt-existing) does not: the substring is
    cast to BINARY, so the counts stay apart."""
    assert "EAAAAAE" in text_key_prefixes(1) and "EAAAAAe" in text_key_prefixes(7)
    guard = Guard(kms=LocalKMS.generate())
    md = MetaData()
    legacy = Table("customers", md, Column("id", Integer, primary_key=True),
                   Column("phone", String(255)))       # utf8mb4, case-insensitive
    md.create_all(mariadb_engine)

    class Base(DeclarativeBase):
        pass

    class Customer(Base):
        __tablename__ = "customers"
        id: Mapped[int] = mapped_column(Integer, primary_key=True)
        phone: Mapped[str] = mapped_column(EncryptedPhone(guard, text=True))

    guard.bind(mariadb_engine)
    cipher = guard.columns[0].cipher
    values = []
    for _ in range(6):
        k = guard.keys.keys(kind="dek", states=["active"])[0].id
        # Rows under DEK k whose 7-char prefix is the upper-case one of its 8 forms.
        while True:
            v = encode_text(cipher.encrypt(b"+905350000000"))
            if v[4:11] == text_key_prefixes(k)[0]:
                values.append(v)
                break
        guard.keys.rotate("dek", "customers")
    k7 = guard.keys.keys(kind="dek", states=["active"])[0].id
    assert k7 == 8      # key 1 is the KEK
    while True:
        v = encode_text(cipher.encrypt(b"+905350000000"))
        if v[4:11] == "EAAAAAi":     # key 2's "EAAAAAI" but for the case
            values.append(v)
            break
    with mariadb_engine.begin() as conn:
        conn.execute(insert(legacy), [{"phone": v} for v in values])
        naive = conn.exec_driver_sql(
            "SELECT substr(phone, 5, 7), count(*) FROM customers GROUP BY substr(phone, 5, 7)"
        ).all()
    assert len(naive) == 6           # the collation merged key 2's and key 8's rows
    usage = key_status(guard).columns[0].by_key
    assert usage == {2: 1, 3: 1, 4: 1, 5: 1, 6: 1, 7: 1, 8: 1}


def test_verify_reports_failures_by_row_key_never_values(any_engine):
    events: list[dict] = []
    guard, Customer = make(any_engine, n=40, events=events)
    with any_engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(select(RAW))}
    tampered = bytearray(rows[3].national_id)
    tampered[20] ^= 0x40
    # a ciphertext made for another column (same length) fails its associated data
    moved = guard.field("customers", "phone").encrypt(tc(4).encode())
    with any_engine.begin() as conn:
        conn.execute(update(RAW).where(RAW.c.id == 3).values(national_id=bytes(tampered)))
        conn.execute(update(RAW).where(RAW.c.id == 4).values(national_id=moved))
        conn.execute(update(RAW).where(RAW.c.id == 5).values(
            national_id_bidx=rows[6].national_id_bidx))           # index of another row
        conn.execute(update(RAW).where(RAW.c.id == 7).values(national_id_bidx=None))
        conn.execute(update(RAW).where(RAW.c.id == 8).values(phone="+905350000008"))
        # an envelope naming a key that does not exist
        bogus = bytearray(rows[9].national_id)
        bogus[1:5] = (999).to_bytes(4, "big")
        conn.execute(update(RAW).where(RAW.c.id == 9).values(national_id=bytes(bogus)))
    events.clear()

    report = verify(guard, batch_size=7)

    got = sorted((f.row, f.column, f.error.split(":")[0]) for f in report.failures)
    assert got == [
        ("id=3", "customers.national_id", "DecryptionError"),
        ("id=4", "customers.national_id", "DecryptionError"),
        ("id=5", "customers.national_id", "index mismatch"),
        ("id=7", "customers.national_id", "index missing"),
        ("id=8", "customers.phone", "plaintext (not an envelope)"),
        ("id=9", "customers.national_id", "DecryptionError"),
    ]
    assert not report.ok and report.failed == 6 and report.checked == 80
    dump = json.dumps(report.to_dict()) + json.dumps(events, default=str)
    for i in range(1, 41):
        assert tc(i) not in dump and f"+90535{i:07d}" not in dump
    assert "+905350000008" not in dump
    assert [e["action"] for e in events] == ["verify"]
    assert events[0]["outcome"] == "error" and events[0]["count"] == 80
    assert key_status(guard).unknown_keys() == {"customers.national_id": {999: 1}}


def test_verify_passes_on_a_clean_table(sqlite_engine):
    guard, _ = make(sqlite_engine, n=30)
    report = verify(guard, batch_size=4)
    assert report.ok and report.checked == 60
    assert {c.label: c.index_checked for c in report.columns} == {
        "customers.national_id": 30, "customers.phone": 0}


def test_models_without_a_table_in_this_database_are_skipped(sqlite_engine):
    guard, _ = make(sqlite_engine, n=5)

    class Base(DeclarativeBase):
        pass

    class Elsewhere(Base):                 # declared, never created in this database
        __tablename__ = "elsewhere"
        id: Mapped[int] = mapped_column(Integer, primary_key=True)
        phone: Mapped[str] = mapped_column(EncryptedPhone(guard))

    report = key_status(guard)
    assert {c.label for c in report.columns} == {
        "customers.national_id", "customers.national_id_bidx", "customers.phone"}
    assert verify(guard).ok
    from piiguard.errors import ConfigurationError

    with pytest.raises(ConfigurationError):
        verify(guard, table="elsewhere")
