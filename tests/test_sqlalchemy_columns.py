"""Acceptance of the encrypted column types, the same module on SQLite (file),
PostgreSQL and MariaDB (``any_engine``).

Covers: round trips (NULL, empty string, Turkish letters, 10 KB text, canonical forms),
a scan of the raw stored bytes, tampering, ciphertext moved to another column, blind
index lookups among 10,000 rows with the SQL parameters captured, invalid input refused
before the INSERT, and every write/read path (ORM unit of work, add_all, bulk
insert(Model), update(), Core insert().values(), executemany, selects).
"""

from types import SimpleNamespace

import pytest
from sqlalchemy import (
    Column,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from piiguard import Guard, errors
from piiguard.crypto.envelope import decode_text, encode_text
from piiguard.sqlalchemy import (
    EncryptedAddress,
    EncryptedEmail,
    EncryptedNationalId,
    EncryptedPhone,
    EncryptedString,
    EncryptedTaxId,
)
from piiguard.validators import tckn

TURKISH = "İıŞşĞğÇçÖöÜü"
TEN_KB = ("Ağaç dalında öğle güneşi, İzmir'de şık çiçekler. " * 400)[:10240]
ALL_PII_COLUMNS = ("national_id", "tax_id", "phone", "address", "email", "notes",
                   "notes_text")


def tc(n: int) -> str:
    """A valid synthetic T.C. number built with the checksum."""
    base = str(100000000 + n)
    return base + tckn.calc_check_digits(base)


def make_models(guard):
    class Base(DeclarativeBase):
        pass

    class Customer(Base):
        __tablename__ = "customers"
        id: Mapped[int] = mapped_column(primary_key=True)
        national_id: Mapped[str | None] = mapped_column(
            EncryptedNationalId(guard, searchable=True))
        tax_id: Mapped[str | None] = mapped_column(EncryptedTaxId(guard))
        phone: Mapped[str | None] = mapped_column(EncryptedPhone(guard))
        address: Mapped[str | None] = mapped_column(EncryptedAddress(guard))
        email: Mapped[str | None] = mapped_column(EncryptedEmail(guard))
        notes: Mapped[str | None] = mapped_column(EncryptedString(guard))
        notes_text: Mapped[str | None] = mapped_column(EncryptedString(guard, text=True))

    return Base, Customer


def raw_table(dialect_name: str) -> Table:
    """The customers table as a plain connection sees it: stored values, no decryption."""
    binary = LargeBinary
    return Table("customers", MetaData(), Column("id", Integer, primary_key=True),
                 *[Column(c, binary) for c in ("national_id", "national_id_bidx", "tax_id",
                                               "phone", "address", "email", "notes")],
                 Column("notes_text", Text))


@pytest.fixture
def db(any_engine, local_kms):
    guard = Guard(kms=local_kms)
    Base, Customer = make_models(guard)
    Base.metadata.create_all(any_engine)
    guard.bind(any_engine)
    return SimpleNamespace(engine=any_engine, guard=guard, Customer=Customer,
                           table=Customer.__table__, raw=raw_table(any_engine.dialect.name))


class Capture:
    """Every SQL statement and its parameters, as sent to the driver."""

    def __init__(self, engine):
        self.calls: list[tuple[str, object]] = []
        self.engine = engine
        event.listen(engine, "before_cursor_execute", self._on)

    def _on(self, conn, cursor, statement, parameters, context, executemany):
        self.calls.append((statement, parameters))

    def close(self):
        event.remove(self.engine, "before_cursor_execute", self._on)

    def statements(self, prefix: str) -> list[str]:
        return [s for s, _ in self.calls if s.lstrip().upper().startswith(prefix)]

    def flat_params(self) -> list:
        out = []

        def walk(p):
            if isinstance(p, dict):
                for v in p.values():
                    walk(v)
            elif isinstance(p, (list, tuple)):
                for v in p:
                    walk(v)
            else:
                out.append(p)
        for _, p in self.calls:
            walk(p)
        return out


def contains_plaintext(values, needles) -> list[str]:
    """Which of ``needles`` (UTF-8) occur inside any of ``values`` (bytes or text)."""
    hits = []
    blobs = []
    for v in values:
        if v is None or isinstance(v, (int, float)):
            continue
        blobs.append(v.encode("utf-8") if isinstance(v, str) else bytes(v))
    for needle in needles:
        raw = needle.encode("utf-8")
        if raw and any(raw in b for b in blobs):
            hits.append(needle)
    return hits


# -- round trips ------------------------------------------------------------------------------
def test_round_trip_values_and_canonical_forms(db):
    C = db.Customer
    with Session(db.engine) as s:
        s.add_all([
            C(id=1),                                               # every column NULL
            C(id=2, notes="", notes_text=""),                      # empty strings
            C(id=3, notes=TURKISH, notes_text=TURKISH, address="Bağdat Cad. No:1, İstanbul",
              email="ğül@Örnek.com.tr"),
            C(id=4, notes=TEN_KB, notes_text=TEN_KB),
            C(id=5, national_id="100 000 001 46", tax_id="1234567890",
              phone="0532 123 45 67", email="Ali.Veli@Example.COM.TR",
              address="  kızılay  mah. ,atatürk blv. no : 1 / 2, Çankaya/Ankara "),
        ])
        s.commit()
    with Session(db.engine) as s:
        got = {c.id: c for c in s.scalars(select(C))}
        assert all(getattr(got[1], k) is None for k in ALL_PII_COLUMNS)
        assert (got[2].notes, got[2].notes_text) == ("", "")
        assert (got[3].notes, got[3].notes_text) == (TURKISH, TURKISH)
        assert got[3].address == "Bağdat Cad. No:1, İstanbul"      # as written
        assert got[3].email == "ğül@örnek.com.tr"
        assert got[4].notes == TEN_KB and got[4].notes_text == TEN_KB
        assert len(TEN_KB.encode()) > 10240
        assert (got[5].national_id, got[5].tax_id, got[5].phone, got[5].email) == (
            "10000000146", "1234567890", "+905321234567", "Ali.Veli@example.com.tr")
        assert got[5].address == "kızılay mah. ,atatürk blv. no : 1 / 2, Çankaya/Ankara"
    # single columns through Core give the same plaintext
    with db.engine.connect() as conn:
        assert conn.execute(select(db.table.c.notes).where(db.table.c.id == 3)).scalar() \
            == TURKISH
        assert conn.execute(select(db.table.c.notes_text, db.table.c.phone)
                            .where(db.table.c.id == 5)).one() == (None, "+905321234567")


def test_raw_stored_bytes_contain_no_plaintext(db):
    C = db.Customer
    inputs = dict(national_id="100 000 001 46", tax_id="1234567890", phone="0532 123 45 67",
                  address="Bağdat Cad. No:1, İstanbul", email="ğül@Örnek.com.tr",
                  notes=TURKISH + " gizli not", notes_text=TEN_KB)
    canonical = ["10000000146", "+905321234567", "5321234567", "BAĞDAT CAD. NO:1, İSTANBUL",
                 "ğül@örnek.com.tr", "Bağdat", "İstanbul", TURKISH, "gizli not",
                 TEN_KB[:40], "Ağaç dalında"]
    with Session(db.engine) as s:
        s.add(C(id=1, **inputs))
        s.commit()
    with db.engine.connect() as conn:
        row = conn.execute(select(db.raw)).one()
    stored = list(row)
    assert contains_plaintext(stored, list(inputs.values()) + canonical) == []
    # and what is stored really is the envelope of each value
    assert stored[1][0] in (0x10, 0x11) and decode_text(row.notes_text)[0] == 0x11
    assert len(row.national_id_bidx) == 36


def test_fixed_length_kinds_have_constant_envelope_length_and_free_text_is_padded(db):
    C = db.Customer
    with Session(db.engine) as s:
        s.add_all([C(id=1, national_id=tc(1), address="Bağdat Cad. No:1, İstanbul"),
                   C(id=2, national_id=tc(2), address="Ata Cad. No:5, İzmir"),
                   C(id=3, national_id=tc(3), address="Bağdat Cad. Çok Uzun Sokak Adı "
                                                      "No:123 Daire:45, İstanbul")])
        s.commit()
        lengths = [len(c.address.encode()) for c in s.scalars(select(C).order_by(C.id))]
    with db.engine.connect() as conn:
        rows = conn.execute(select(db.raw.c.national_id, db.raw.c.address)
                            .order_by(db.raw.c.id)).all()
    assert {len(r.national_id) for r in rows} == {44}
    # 28 and 22 bytes share the 32-byte bucket; 60-odd bytes go to the 64-byte one
    assert lengths[0] != lengths[1] and lengths[2] > 32
    assert [len(r.address) for r in rows] == [33 + 32, 33 + 32, 33 + 64]


# -- tampering and misplaced ciphertext ---------------------------------------------------
def test_tampered_value_raises_decryption_error_naming_the_column(db):
    C = db.Customer
    with Session(db.engine) as s:
        s.add(C(id=1, national_id=tc(1), notes_text="gizli metin"))
        s.commit()
    with db.engine.begin() as conn:
        blob = conn.execute(select(db.raw.c.national_id)).scalar()
        tampered = bytes(blob[:-1]) + bytes([blob[-1] ^ 0x01])
        conn.execute(update(db.raw).values(national_id=tampered))
    with Session(db.engine) as s, pytest.raises(errors.DecryptionError) as info:
        s.scalars(select(C)).all()
    assert "customers.national_id" in str(info.value)
    assert tc(1) not in str(info.value)
    # the text envelope too: change one base64 character of the ciphertext
    with db.engine.begin() as conn:
        conn.execute(update(db.raw).values(national_id=blob))
        env = conn.execute(select(db.raw.c.notes_text)).scalar()
        body = bytearray(decode_text(env))
        body[20] ^= 0x40
        conn.execute(update(db.raw).values(notes_text=encode_text(bytes(body))))
    with db.engine.connect() as conn:
        with pytest.raises(errors.DecryptionError, match=r"customers\.notes_text"):
            conn.execute(select(db.table.c.notes_text)).all()
        # a stored value that is not an envelope at all is refused (no plaintext fallback)
    with db.engine.begin() as conn:
        conn.execute(update(db.raw).values(notes_text="plain text sneaked in"))
    with db.engine.connect() as conn:
        with pytest.raises(errors.EnvelopeFormatError, match=r"customers\.notes_text"):
            conn.execute(select(db.table.c.notes_text)).all()


def test_ciphertext_copied_to_another_rows_other_column_fails(db):
    C = db.Customer
    with Session(db.engine) as s:
        s.add_all([C(id=1, phone="05321234567"), C(id=2, address="Bağdat Cad. No:1, İstanbul")])
        s.commit()
    with db.engine.begin() as conn:
        phone_blob = conn.execute(select(db.raw.c.phone).where(db.raw.c.id == 1)).scalar()
        conn.execute(update(db.raw).where(db.raw.c.id == 2).values(address=phone_blob))
    with Session(db.engine) as s:
        assert s.get(C, 1).phone == "+905321234567"
        with pytest.raises(errors.DecryptionError, match=r"customers\.address"):
            s.scalars(select(C.address).where(C.id == 2)).all()


# -- blind index ---------------------------------------------------------------------------
@pytest.mark.slow
def test_blind_index_lookup_among_10000_rows_sends_no_plaintext(db):
    target = "99000000110"
    rows = [{"id": i, "national_id": tc(i)} for i in range(1, 10001)]
    for i in (10001, 10002, 10003):
        rows.append({"id": i, "national_id": "990 000 001 10"})
    with db.engine.begin() as conn:
        conn.execute(insert(db.table), rows)
    with db.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(db.table)).scalar() == 10003
    cap = Capture(db.engine)
    try:
        with Session(db.engine) as s:
            found = s.scalars(select(db.Customer).where(
                db.Customer.national_id == "990 000 001 10")).all()
            assert sorted(c.id for c in found) == [10001, 10002, 10003]
            assert {c.national_id for c in found} == {target}
            one = s.scalars(select(db.Customer.id).where(
                db.Customer.national_id == tc(4242))).all()
            assert one == [4242]
            several = s.scalars(select(db.Customer.id).where(
                db.Customer.national_id.in_([tc(7), tc(8), tc(20000)]))).all()
            assert sorted(several) == [7, 8]
            assert s.scalars(select(db.Customer.id).where(
                db.Customer.national_id == tc(20000))).all() == []
            n_not = s.scalar(select(func.count()).where(db.Customer.national_id != target))
            assert n_not == 10000
    finally:
        cap.close()
    selects = cap.statements("SELECT")
    assert any("national_id_bidx" in q for q in selects)
    assert not any("national_id =" in q.replace("national_id_bidx", "") for q in selects)
    needles = [target, "990 000 001 10", tc(4242), tc(7), tc(8), tc(20000)]
    assert contains_plaintext(cap.flat_params(), needles) == []


def test_comparing_a_non_searchable_column_raises(db):
    with pytest.raises(errors.ConfigurationError, match=r"customers\.phone is not searchable"):
        db.Customer.phone == "+905321234567"  # noqa: B015
    with pytest.raises(errors.ConfigurationError, match="customers.email"):
        db.table.c.email.in_(["a@example.com"])
    with pytest.raises(errors.ConfigurationError, match="cannot be compared"):
        db.Customer.national_id.like("100%")
    with pytest.raises(errors.InvalidChecksumError, match=r"customers\.national_id"):
        db.Customer.national_id == "10000000147"  # noqa: B015
    # IS NULL still works on every encrypted column
    with Session(db.engine) as s:
        s.add(db.Customer(id=1, phone="05321234567"))
        s.commit()
        assert s.scalars(select(db.Customer.id).where(db.Customer.email.is_(None))).all() == [1]
        assert s.scalars(select(db.Customer.id).where(db.Customer.phone != None)).all() == [1]  # noqa: E711 - the SQL operator


# -- invalid input ---------------------------------------------------------------------------
def test_invalid_input_is_refused_before_the_insert_and_leaves_nothing(db):
    C = db.Customer
    cap = Capture(db.engine)
    try:
        with Session(db.engine) as s:
            s.add_all([C(id=1, national_id=tc(1)), C(id=2, national_id="10000000147"),
                       C(id=3, national_id=tc(3))])
            with pytest.raises(errors.InvalidChecksumError) as info:
                s.commit()
            s.rollback()
        assert isinstance(info.value, ValueError)
        assert "customers.national_id" in str(info.value)
        assert "10000000147" not in str(info.value)
        with db.engine.connect() as conn:
            with pytest.raises(errors.InvalidInputError, match=r"customers\.phone"):
                conn.execute(insert(db.table), [{"id": 4, "phone": "0532 123 45 67"},
                                                {"id": 5, "phone": "0532 ABC 45 67"}])
            conn.rollback()
        with db.engine.begin() as conn:
            with pytest.raises(errors.InvalidInputError, match=r"customers\.email"):
                conn.execute(insert(db.table).values(id=6, email="ali veli@example.com"))
    finally:
        cap.close()
    assert [q for q in cap.statements("INSERT") if "customers" in q] == []
    with db.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(db.table)).scalar() == 0


def test_values_that_already_are_envelopes_are_refused(db):
    with db.engine.begin() as conn:
        conn.execute(insert(db.table).values(id=1, notes="sır"))
        blob = conn.execute(select(db.raw.c.notes)).scalar()
    with db.engine.connect() as conn:
        with pytest.raises(errors.AlreadyEncryptedError, match=r"customers\.notes"):
            conn.execute(insert(db.table).values(id=2, notes=encode_text(bytes(blob))))
        with pytest.raises(errors.AlreadyEncryptedError, match=r"customers\.notes"):
            conn.execute(insert(db.table).values(id=3, notes=bytes(blob)))


# -- every write and read path ---------------------------------------------------------------
def test_orm_unit_of_work_and_update_keep_the_index_in_step(db):
    C = db.Customer
    with Session(db.engine) as s:
        c = C(national_id=tc(1), phone="05321234567")
        s.add(c)
        s.commit()
        cid = c.id
        c.national_id = tc(2)
        c.phone = "+905329876543"
        s.commit()
    with Session(db.engine) as s:
        assert s.scalars(select(C).where(C.national_id == tc(1))).all() == []
        found = s.scalars(select(C).where(C.national_id == tc(2))).one()
        assert (found.id, found.phone) == (cid, "+905329876543")
        s.delete(found)
        s.commit()
        assert s.scalars(select(C)).all() == []


def test_bulk_insert_update_and_core_paths(db):
    C, t = db.Customer, db.table
    with Session(db.engine) as s:
        # ORM bulk insert(Model) with a list of dicts
        s.execute(insert(C), [{"id": i, "national_id": tc(i), "phone": f"0532 123 45 {i:02d}"}
                              for i in range(1, 6)])
        # ORM bulk UPDATE by primary key
        s.execute(update(C), [{"id": 1, "national_id": tc(101)}, {"id": 2, "phone": None}])
        # ORM-enabled UPDATE ... WHERE with values
        s.execute(update(C).where(C.id == 3).values(national_id=tc(103), email="a@example.com"))
        s.commit()
    with db.engine.begin() as conn:
        # Core insert().values() and executemany
        conn.execute(insert(t).values(id=6, national_id=tc(6), notes_text=TURKISH))
        conn.execute(insert(t), [{"id": 7, "national_id": tc(7)}, {"id": 8, "national_id": None}])
        # Core update().values()
        conn.execute(update(t).where(t.c.id == 4).values(national_id=tc(104)))
    with Session(db.engine) as s:
        def ids(value):
            return sorted(s.scalars(select(C.id).where(C.national_id == value)))
        assert ids(tc(101)) == [1] and ids(tc(1)) == []
        assert ids(tc(103)) == [3] and ids(tc(3)) == []
        assert ids(tc(104)) == [4] and ids(tc(4)) == []
        assert ids(tc(2)) == [2] and ids(tc(5)) == [5] and ids(tc(6)) == [6]
        assert ids(tc(7)) == [7]
        got = {c.id: c for c in s.scalars(select(C))}
        assert got[2].phone is None and got[3].email == "a@example.com"
        assert got[5].phone == "+905321234505" and got[6].notes_text == TURKISH
        assert got[8].national_id is None and got[8].national_id_bidx is None
        # single columns and tuples
        rows = s.execute(select(C.id, C.national_id).where(C.id.in_([1, 6])).order_by(C.id)).all()
        assert [tuple(r) for r in rows] == [(1, tc(101)), (6, tc(6))]
    with db.engine.connect() as conn:
        assert conn.execute(select(t.c.national_id).where(t.c.id == 7)).scalar() == tc(7)
