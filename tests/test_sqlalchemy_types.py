"""The encrypted column types in detail: schema and DDL, copies (mixins, to_metadata),
statement caching, options, key scopes, legacy plaintext, truncated blind indexes, the
column interface the ops jobs use, and hypothesis round trips."""

import pickle
import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import (
    Column,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    create_engine,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.schema import CreateIndex, CreateTable

import piiguard.sqlalchemy as pgsa
from piiguard import Guard, errors
from piiguard.crypto.blind_index import recommend_bits as rb_original
from piiguard.crypto.envelope import encode_text
from piiguard.sqlalchemy import (
    BlindIndex,
    Ciphertext,
    EncryptedAddress,
    EncryptedEmail,
    EncryptedNationalId,
    EncryptedPhone,
    EncryptedString,
    EncryptedTaxId,
    Sealed,
    encrypted_columns,
    ensure_scope_key,
    lookup,
    recommend_bits,
)
from piiguard.validators import tckn


def tc(n: int) -> str:
    base = str(100000000 + n)
    return base + tckn.calc_check_digits(base)


@pytest.fixture
def guard(sqlite_engine, local_kms):
    return Guard(kms=local_kms).bind(sqlite_engine)


def base_class():
    class Base(DeclarativeBase):
        pass
    return Base


def test_public_names():
    assert sorted(pgsa.__all__) == sorted([
        "EncryptedString", "EncryptedNationalId", "EncryptedTaxId", "EncryptedPhone",
        "EncryptedAddress", "EncryptedEmail", "Sealed", "Ciphertext", "BlindIndex",
        "lookup", "ensure_scope_key", "encrypted_columns", "recommend_bits",
        "EncryptedDate", "EncryptedDateTime", "EncryptedInteger", "EncryptedDecimal",
        "EncryptedJSON", "EncryptedBytes"])
    for name in pgsa.__all__:
        assert getattr(pgsa, name) is not None
    assert recommend_bits is rb_original


# -- schema ----------------------------------------------------------------------------------
def test_attach_learns_table_and_column_and_registers(guard):
    md = MetaData()
    t = Table("people", md, Column("id", Integer, primary_key=True),
              Column("national_id", EncryptedNationalId(guard, searchable=True)),
              Column("phone", EncryptedPhone(guard)))
    nid, phone = t.c.national_id.type, t.c.phone.type
    assert (nid.table, nid.column, nid.label, nid.kind) == (t, t.c.national_id,
                                                          "people.national_id", "national_id")
    assert nid.index_column is t.c.national_id_bidx and phone.index_column is None
    assert nid.index.label == "people.national_id" and phone.index is None
    assert nid.cipher.label == "people.national_id" and not nid.text_form
    assert [c.label for c in encrypted_columns(guard)] == ["people.national_id",
                                                           "people.phone"]
    # keys exist as soon as the column is declared on a bound guard: never created inside
    # an application's write transaction
    scopes = {(k.kind, k.scope) for k in guard.keys.keys()}  # noqa: SIM118
    assert {("dek", "people"), ("index", "people")} <= scopes


def test_keys_are_created_at_bind(sqlite_engine, local_kms):
    g = Guard(kms=local_kms)
    md = MetaData()
    Table("t", md, Column("id", Integer, primary_key=True),
          Column("v", EncryptedString(g, searchable=True)))
    g.bind(sqlite_engine)
    assert {(k.kind, k.scope) for k in g.keys.keys()} == {("dek", "t"), ("index", "t")}  # noqa: SIM118


def test_ddl_per_dialect(guard):
    md = MetaData()
    t = Table("ddl", md, Column("id", Integer, primary_key=True),
              Column("nid", EncryptedNationalId(guard, searchable=True)),
              Column("addr", EncryptedAddress(guard)),
              Column("note", EncryptedString(guard)),
              Column("note_t", EncryptedString(guard, text=True)),
              Column("nid_t", EncryptedNationalId(guard, text=True)))
    pg = str(CreateTable(t).compile(dialect=postgresql.dialect()))
    my = str(CreateTable(t).compile(dialect=mysql.dialect()))
    lite = str(CreateTable(t).compile(dialect=sqlite.dialect()))
    assert "nid BYTEA" in pg and "nid_bidx BYTEA" in pg and "note_t TEXT" in pg
    n = len(encode_text(bytes(44)))  # "pg1:" + base64 of 44 bytes
    assert f"nid_t VARCHAR({n})" in pg and n == 63
    assert "nid VARBINARY(44)" in my and "nid_bidx VARBINARY(36)" in my
    assert "addr VARBINARY(2081)" in my and "note LONGBLOB" in my
    assert "note_t LONGTEXT" in my and f"nid_t VARCHAR({n})" in my
    assert "nid BLOB" in lite and "note_t TEXT" in lite
    idx = [str(CreateIndex(i).compile(dialect=mysql.dialect())) for i in t.indexes]
    assert idx == ["CREATE INDEX ix_ddl_nid_bidx ON ddl (nid_bidx)"]


def test_repr_is_the_guard_free_storage_type(guard):
    t = EncryptedNationalId(guard, searchable=True)
    assert repr(t) == "Ciphertext(max_bytes=44)"
    assert repr(EncryptedString(guard, text=True)) == "Ciphertext(text=True)"
    assert repr(EncryptedEmail(guard)) == "Ciphertext(max_bytes=1057)"
    assert "guard" not in repr(t).lower()
    assert repr(BlindIndex(16)) == "BlindIndex(bits=16)" and BlindIndex(16).length == 6
    assert isinstance(t.storage_type(), Ciphertext)


def test_mixin_columns_get_their_own_state_and_context(guard, sqlite_engine):
    Base = base_class()

    class HasNationalId:
        national_id: Mapped[str | None] = mapped_column(
            EncryptedNationalId(guard, searchable=True))

    class Customer(HasNationalId, Base):
        __tablename__ = "customers"
        id: Mapped[int] = mapped_column(primary_key=True)

    class Employee(HasNationalId, Base):
        __tablename__ = "employees"
        id: Mapped[int] = mapped_column(primary_key=True)

    ct, et = Customer.__table__.c.national_id.type, Employee.__table__.c.national_id.type
    assert ct is not et
    assert (ct.label, et.label) == ("customers.national_id", "employees.national_id")
    assert Customer.__table__.c.national_id_bidx is not Employee.__table__.c.national_id_bidx
    Base.metadata.create_all(sqlite_engine)
    with Session(sqlite_engine) as s:
        s.add_all([Customer(id=1, national_id=tc(1)), Employee(id=1, national_id=tc(1))])
        s.commit()
        assert s.scalars(select(Employee.id).where(Employee.national_id == tc(1))).all() == [1]
        # the same value in two tables: different envelopes and different blind indexes
        c_raw = s.execute(select(Customer.__table__.c.national_id_bidx)).scalar()
        e_raw = s.execute(select(Employee.__table__.c.national_id_bidx)).scalar()
        assert c_raw != e_raw
    with sqlite_engine.begin() as conn:
        blob = conn.exec_driver_sql("SELECT national_id FROM customers").scalar()
        conn.exec_driver_sql("UPDATE employees SET national_id = ?", (blob,))
    with Session(sqlite_engine) as s:
        with pytest.raises(errors.DecryptionError, match=r"employees\.national_id"):
            s.scalars(select(Employee)).all()


def test_to_metadata_copy_adopts_the_existing_index_column(guard, sqlite_engine):
    md = MetaData()
    t = Table("src", md, Column("id", Integer, primary_key=True),
              Column("nid", EncryptedNationalId(guard, searchable=True)))
    t2 = t.to_metadata(MetaData())
    assert [c.name for c in t2.c] == ["id", "nid", "nid_bidx"]
    assert t2.c.nid.type is not t.c.nid.type and t2.c.nid.type.table is t2
    assert t2.c.nid.type.index_column is t2.c.nid_bidx
    t2.create(sqlite_engine)
    with sqlite_engine.begin() as conn:
        conn.execute(insert(t2).values(id=1, nid=tc(5)))
        assert conn.execute(select(t2.c.id).where(t2.c.nid == tc(5))).all() == [(1,)]


def test_one_type_instance_per_column(guard):
    shared = EncryptedString(guard)
    md = MetaData()
    Table("a", md, Column("id", Integer, primary_key=True), Column("x", shared))
    with pytest.raises(errors.ConfigurationError, match="one encrypted column type instance"):
        Table("b", md, Column("id", Integer, primary_key=True), Column("y", shared))


def test_statement_cache_keeps_columns_apart(guard, sqlite_engine):
    md = MetaData()
    a = Table("ca", md, Column("id", Integer, primary_key=True),
              Column("v", EncryptedString(guard)))
    b = Table("cb", md, Column("id", Integer, primary_key=True),
              Column("v", EncryptedString(guard)))
    assert a.c.v.type._static_cache_key != b.c.v.type._static_cache_key
    md.create_all(sqlite_engine)
    with sqlite_engine.begin() as conn:
        # same statement shape with each column's type: each value is bound to its column
        for t in (a, b, a, b):
            conn.execute(insert(t), [{"id": None, "v": "x"}])
        for t in (a, b):
            assert conn.execute(select(literal("k", t.c.v.type))).scalar() == "k"
            assert conn.execute(select(t.c.v)).scalars().all() == ["x", "x"]


def test_literal_binds_render_the_envelope_never_the_plaintext(guard, sqlite_engine):
    md = MetaData()
    t = Table("lit", md, Column("id", Integer, primary_key=True),
              Column("v", EncryptedNationalId(guard)),
              Column("w", EncryptedString(guard, text=True)))
    md.create_all(sqlite_engine)
    stmt = insert(t).values(id=1, v=tc(1), w="gizli")
    sql = str(stmt.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))
    assert tc(1) not in sql and "gizli" not in sql and "X'1" in sql and "'pg1:" in sql
    pg_sql = str(stmt.compile(dialect=postgresql.dialect(),
                              compile_kwargs={"literal_binds": True}))
    assert "::bytea" in pg_sql and tc(1) not in pg_sql
    with sqlite_engine.begin() as conn:
        conn.exec_driver_sql(sql)
        assert tuple(conn.execute(select(t.c.v, t.c.w)).one()) == (tc(1), "gizli")
    # a refused value fails the compilation (SQLAlchemy's CompileError quotes the value
    # it could not render; the cause is piiguard's error, which does not)
    bad = insert(t).values(id=2, v="10000000147")
    with pytest.raises(Exception) as info:
        str(bad.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))
    assert isinstance(info.value.__cause__, errors.InvalidChecksumError)
    assert "10000000147" not in str(info.value.__cause__)


def test_configuration_is_checked_when_the_type_is_built(guard):
    with pytest.raises(errors.ConfigurationError, match="unknown PII kind"):
        EncryptedString(guard, kind="passport")
    with pytest.raises(errors.ConfigurationError, match="needs a piiguard Guard"):
        EncryptedString(object())
    with pytest.raises(errors.ConfigurationError, match="blind index bits"):
        EncryptedString(guard, searchable=True, index_bits=4)
    with pytest.raises(errors.ConfigurationError):
        EncryptedPhone(guard, region="XX")
    with pytest.raises(errors.ConfigurationError, match=r"unique.*column=u\.v"):
        Table("u", MetaData(), Column("id", Integer, primary_key=True),
              Column("v", EncryptedString(guard), unique=True))


def test_phone_options_and_email_folding(guard, sqlite_engine):
    md = MetaData()
    t = Table("opts", md, Column("id", Integer, primary_key=True),
              Column("mobile", EncryptedPhone(guard, mobile_only=True)),
              Column("de", EncryptedPhone(guard, region="DE")),
              Column("mail", EncryptedEmail(guard, lowercase_local=True)))
    md.create_all(sqlite_engine)
    with sqlite_engine.begin() as conn:
        conn.execute(insert(t).values(id=1, mobile="0532 123 45 67", de="030 123456",
                                      mail="Ali.Veli@Example.com"))
        assert tuple(conn.execute(select(t.c.mobile, t.c.de, t.c.mail)).one()) == (
            "+905321234567", "+4930123456", "ali.veli@example.com")
    with sqlite_engine.connect() as conn:
        with pytest.raises(errors.InvalidComponentError, match=r"opts\.mobile: mobile rule"):
            conn.execute(insert(t).values(id=2, mobile="0212 345 67 89"))


# -- column interface for the ops jobs ---------------------------------------------------------
def test_column_interface(guard, sqlite_engine):
    md = MetaData()
    t = Table("iface", md, Column("id", Integer, primary_key=True),
              Column("nid", EncryptedNationalId(guard, searchable=True)),
              Column("note", EncryptedString(guard, text=True)))
    md.create_all(sqlite_engine)
    nid, note = t.c.nid.type, t.c.note.type
    stored = nid.encrypt_value("100 000 001 46")
    assert isinstance(stored, bytes) and len(stored) == 44
    assert nid.decrypt_stored(stored) == "10000000146"
    assert nid.stored_key_id(stored) == guard.keys.keys(kind="dek", scope="iface")[0].id
    assert nid.index_for("10000000146") == nid.index.compute("10000000146")
    assert note.index_for("x") is None
    text_stored = note.encrypt_value("İyi günler")
    assert text_stored.startswith("pg1:") and note.decrypt_stored(text_stored) == "İyi günler"
    assert note.stored_key_id(text_stored) == nid.stored_key_id(stored)
    assert nid.is_envelope(stored) and not nid.is_envelope(b"10000000146")
    assert nid.canonical("100 000 001 46") == "10000000146"
    # what the job writes is what the application reads
    with sqlite_engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO iface (id, nid, note) VALUES (1, ?, ?)",
                             (stored, text_stored))
        assert tuple(conn.execute(select(t.c.nid, t.c.note)).one()) == ("10000000146",
                                                                         "İyi günler")
    with pytest.raises(errors.InvalidChecksumError, match=r"iface\.nid"):
        nid.encrypt_value("10000000147")


def test_unattached_type(guard):
    t = EncryptedString(guard)
    assert t.table is None and t.column is None
    with pytest.raises(errors.ConfigurationError, match="not attached"):
        t.encrypt_value("x")


# -- truncated blind index ----------------------------------------------------------------------
def test_truncated_index_needs_lookup_which_returns_only_true_matches(guard, sqlite_engine):
    Base = base_class()

    class Person(Base):
        __tablename__ = "persons"
        id: Mapped[int] = mapped_column(primary_key=True)
        national_id: Mapped[str] = mapped_column(
            EncryptedNationalId(guard, searchable=True, index_bits=8))

    Base.metadata.create_all(sqlite_engine)
    with Session(sqlite_engine) as s:
        # 3,000 rows in 256 index values: the chance that tc(10) shares its index value
        # with no other row is (255/256)**2999, about 1e-5 (1,000 rows flaked at 2%).
        s.execute(insert(Person), [{"id": i, "national_id": tc(i)} for i in range(1, 3001)])
        s.commit()
        with pytest.raises(errors.ConfigurationError, match=r"truncated blind index \(bits=8\)"):
            Person.national_id == tc(1)  # noqa: B015
        # the raw index match has false positives
        raw = s.scalars(select(Person.id).where(Person.national_id.blind_match(tc(10)))).all()
        assert 10 in raw and len(raw) > 1
        found = lookup(s, Person.national_id, "100 000 010 " + tc(10)[-2:])
        assert [p.id for p in found] == [10]
        assert lookup(s, Person.national_id, tc(5000)) == []
    with sqlite_engine.connect() as conn:
        rows = lookup(conn, Person.__table__.c.national_id, tc(777))
        assert [r.id for r in rows] == [777]
    assert recommend_bits(1_000_000) == 18


def test_index_key_rotation_window(guard, sqlite_engine):
    md = MetaData()
    t = Table("rot", md, Column("id", Integer, primary_key=True),
              Column("nid", EncryptedNationalId(guard, searchable=True)))
    md.create_all(sqlite_engine)
    with sqlite_engine.begin() as conn:
        conn.execute(insert(t).values(id=1, nid=tc(1)))
    old_key = guard.keys.keys(kind="index", scope="rot")[0].id
    guard.keys.rotate("index", "rot")
    with sqlite_engine.begin() as conn:
        conn.execute(insert(t).values(id=2, nid=tc(1)))
        ids = conn.execute(select(t.c.id).where(t.c.nid == tc(1)).order_by(t.c.id)).scalars()
        assert ids.all() == [1, 2]
        key_ids = {int.from_bytes(b[:4], "big")
                   for b in conn.execute(select(t.c.nid_bidx)).scalars()}
    assert len(key_ids) == 2 and old_key in key_ids


# -- key scopes (per tenant / per subject) -----------------------------------------------------
def make_tenant_models(guard):
    Base = base_class()

    class Customer(Base):
        __tablename__ = "tenant_customers"
        id: Mapped[int] = mapped_column(primary_key=True)
        tenant_id: Mapped[int] = mapped_column(Integer)
        phone: Mapped[str | None] = mapped_column(EncryptedPhone(guard, key_scope="tenant_id"))
        national_id: Mapped[str | None] = mapped_column(
            EncryptedNationalId(guard, key_scope="tenant_id", searchable=True))

    return Base, Customer


def test_key_scope_gives_each_tenant_its_own_dek_and_shredding_one(guard, sqlite_engine):
    Base, C = make_tenant_models(guard)
    Base.metadata.create_all(sqlite_engine)
    t = C.__table__
    assert C.__table__.c.phone.type.key_scope_column is t.c.tenant_id
    assert ensure_scope_key(C.phone, 7) == ensure_scope_key(C.phone, 7)
    with Session(sqlite_engine) as s:
        s.add_all([C(id=1, tenant_id=7, phone="05321234567", national_id=tc(1)),
                   C(id=2, tenant_id=8, phone="05321234568", national_id=tc(2))])
        s.commit()
        # Core executemany and ORM bulk insert carry the scope column too
        s.execute(insert(C), [{"id": 3, "tenant_id": 7, "phone": "05321234569"}])
        s.commit()
    with sqlite_engine.begin() as conn:
        conn.execute(insert(t), [{"id": 4, "tenant_id": 9, "phone": "05321234570"}])
        conn.execute(insert(t).values(id=5, tenant_id=8, national_id=tc(5)))
        conn.execute(update(t).where(t.c.id == 4).values(phone="05321234571", tenant_id=9))
    scopes = {k.scope: k.id for k in guard.keys.keys(kind="dek")}
    assert {"tenant_customers:7", "tenant_customers:8", "tenant_customers:9"} <= set(scopes)
    with sqlite_engine.connect() as conn:
        raw = {r.id: r for r in conn.exec_driver_sql(
            "SELECT id, phone, national_id FROM tenant_customers")}
    phone_type = t.c.phone.type
    assert phone_type.stored_key_id(raw[1].phone) == scopes["tenant_customers:7"]
    assert phone_type.stored_key_id(raw[3].phone) == scopes["tenant_customers:7"]
    assert phone_type.stored_key_id(raw[2].phone) == scopes["tenant_customers:8"]
    assert phone_type.stored_key_id(raw[4].phone) == scopes["tenant_customers:9"]
    # ORM update of an encrypted field alone: the row's scope comes from the object
    with Session(sqlite_engine) as s:
        c = s.get(C, 2)
        c.phone = "05329999999"
        s.commit()
        assert c.phone == "+905329999999"
        assert s.scalars(select(C.id).where(C.national_id == tc(5))).all() == [5]
    with sqlite_engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT phone FROM tenant_customers WHERE id=2").scalar()
    assert phone_type.stored_key_id(stored) == scopes["tenant_customers:8"]
    # crypto-shredding tenant 7: its fields are gone, everyone else's stay readable
    guard.keys.destroy(scopes["tenant_customers:7"])
    with Session(sqlite_engine) as s:
        assert s.get(C, 2).phone == "+905329999999"
        assert s.get(C, 4).phone == "+905321234571"
        # erased values read as None by default (on_destroyed="raise" is the strict form)
        assert s.scalars(select(C.phone).where(C.id == 1)).all() == [None]


def test_key_scope_refuses_writes_without_the_scope_value(guard, sqlite_engine):
    Base, C = make_tenant_models(guard)
    Base.metadata.create_all(sqlite_engine)
    t = C.__table__
    with sqlite_engine.connect() as conn:
        with pytest.raises(errors.ConfigurationError, match="without its key scope column"):
            conn.execute(insert(t), [{"id": 1, "phone": "05321234567"}])
        with pytest.raises(errors.ConfigurationError, match="tenant_id"):
            conn.execute(update(t).where(t.c.id == 1).values(phone="05321234567"))
        with pytest.raises(errors.ConfigurationError, match="NULL"):
            conn.execute(insert(t), [{"id": 1, "tenant_id": None, "phone": "05321234567"}])
        with pytest.raises(errors.ConfigurationError, match="per-row key scope"):
            conn.execute(select(literal("05321234567", t.c.phone.type)))
    with pytest.raises(errors.ConfigurationError, match="scope value"):
        t.c.phone.type.encrypt_value("05321234567")
    # a key-scoped value is bound to its row's scope: it opens with that scope only
    stored = t.c.phone.type.encrypt_value("05321234567", scope_value=3)
    assert t.c.phone.type.decrypt_stored(stored, scope_value=3) == "+905321234567"
    assert t.c.phone.type.decrypt_stored(stored, row={"tenant_id": 3}) == "+905321234567"
    with pytest.raises(errors.DecryptionError, match=r"tenant_customers\.phone"):
        t.c.phone.type.decrypt_stored(stored, scope_value=4)
    with pytest.raises(errors.ConfigurationError, match="bound to its row"):
        t.c.phone.type.decrypt_stored(stored)


# -- legacy plaintext during a migration --------------------------------------------------------
def test_allow_plaintext_reads_a_mix_only_when_asked(guard, sqlite_engine):
    md = MetaData()
    legacy = Table("legacy", md, Column("id", Integer, primary_key=True),
                   Column("nid", String(64)), Column("note", LargeBinary))
    md.create_all(sqlite_engine)
    with sqlite_engine.begin() as conn:
        conn.execute(insert(legacy), [{"id": 1, "nid": "10000000146", "note": b"eski not"}])

    def declare(allow):
        m = MetaData()
        return Table("legacy", m, Column("id", Integer, primary_key=True),
                     Column("nid", EncryptedNationalId(guard, text=True, allow_plaintext=allow)),
                     Column("note", EncryptedString(guard, allow_plaintext=allow)))

    mixed = declare(True)
    with sqlite_engine.begin() as conn:
        conn.execute(insert(mixed).values(id=2, nid=tc(2), note="yeni not"))
        rows = conn.execute(select(mixed.c.nid, mixed.c.note).order_by(mixed.c.id)).all()
    assert [tuple(r) for r in rows] == [("10000000146", "eski not"), (tc(2), "yeni not")]
    assert not mixed.c.nid.type.is_envelope("10000000146")
    strict = declare(False)
    with sqlite_engine.connect() as conn:
        with pytest.raises(errors.EnvelopeFormatError, match=r"legacy\.nid"):
            conn.execute(select(strict.c.nid)).all()
        with pytest.raises(errors.EnvelopeFormatError, match=r"legacy\.note"):
            conn.execute(select(strict.c.note).where(strict.c.id == 1)).all()


# -- Sealed basics ---------------------------------------------------------------------------
def test_sealed_has_no_value_in_repr_and_cannot_be_pickled(guard, sqlite_engine):
    md = MetaData()
    t = Table("sealed", md, Column("id", Integer, primary_key=True),
              Column("nid", EncryptedNationalId(guard)))
    md.create_all(sqlite_engine)
    stored = t.c.nid.type.encrypt_value(tc(3))
    s = Sealed(stored, t.c.nid.type)
    assert s.column == "sealed.nid" and s.kind == "national_id"
    assert tc(3) not in repr(s) and "sealed.nid" in repr(s)
    assert str(s) == tc(3) and s == tc(3) and f"{s:>12}" == " " + tc(3)
    assert s == Sealed(stored, t.c.nid.type) and hash(s) == hash(stored)
    with pytest.raises(TypeError):
        pickle.dumps(s)


# -- hypothesis ---------------------------------------------------------------------------------
text_values = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=300)


@pytest.fixture(scope="module")
def hyp(tmp_path_factory):
    from piiguard import LocalKMS
    eng = create_engine(f"sqlite:///{tmp_path_factory.mktemp('hyp') / 'hyp.db'}")
    g = Guard(kms=LocalKMS.generate())
    md = MetaData()
    t = Table("hyp", md, Column("id", Integer, primary_key=True),
              Column("b", EncryptedString(g)), Column("t", EncryptedString(g, text=True)),
              Column("nid", EncryptedNationalId(g, searchable=True)))
    md.create_all(eng)
    g.bind(eng)
    yield eng, t
    eng.dispose()


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=text_values)
def test_text_round_trips_through_the_processors(hyp, value):
    eng, t = hyp
    for col in ("b", "t"):
        typ = t.c[col].type
        stored = typ.bind_processor(eng.dialect)(value)
        assert isinstance(stored, str if col == "t" else bytes)
        assert typ.result_processor(eng.dialect, None)(stored) == \
            unicodedata.normalize("NFC", value)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(min_value=1, max_value=899_999_999), spaces=st.booleans(),
       note=text_values)
def test_values_round_trip_through_sqlite_and_are_found_by_index(hyp, n, spaces, note):
    eng, t = hyp
    value = tc(n)
    written = " ".join([value[:3], value[3:6], value[6:9], value[9:]]) if spaces else value
    with eng.begin() as conn:
        pk = conn.execute(insert(t).values(nid=written, b=note, t=note)).inserted_primary_key[0]
        assert tuple(conn.execute(select(t.c.nid, t.c.b, t.c.t).where(t.c.id == pk)).one()) \
            == (value, unicodedata.normalize("NFC", note), unicodedata.normalize("NFC", note))
        assert pk in conn.execute(select(t.c.id).where(t.c.nid == written)).scalars().all()


def test_foreign_keys_and_counts_still_work(guard, sqlite_engine):
    md = MetaData()
    parent = Table("parent", md, Column("id", Integer, primary_key=True),
                   Column("email", EncryptedEmail(guard, searchable=True)))
    child = Table("child", md, Column("id", Integer, primary_key=True),
                  Column("parent_id", ForeignKey("parent.id")),
                  Column("tax", EncryptedTaxId(guard)))
    md.create_all(sqlite_engine)
    with sqlite_engine.begin() as conn:
        conn.execute(insert(parent).values(id=1, email="a@example.com"))
        conn.execute(insert(child), [{"id": i, "parent_id": 1, "tax": "1234567890"}
                                     for i in range(3)])
        q = select(func.count()).select_from(child.join(parent)).where(
            parent.c.email == "A@EXAMPLE.COM".lower())
        assert conn.execute(q).scalar() == 3


def test_aliases_and_inheritance(guard, sqlite_engine):
    from sqlalchemy.orm import aliased

    from piiguard import MaskingPolicy, acting_as

    Base = base_class()

    class Person(Base):
        __tablename__ = "people"
        id: Mapped[int] = mapped_column(primary_key=True)
        kind: Mapped[str] = mapped_column(String(10))
        national_id: Mapped[str] = mapped_column(EncryptedNationalId(guard, searchable=True))
        __mapper_args__ = {"polymorphic_on": "kind", "polymorphic_identity": "person"}  # noqa: RUF012

    class Employee(Person):
        __mapper_args__ = {"polymorphic_identity": "employee"}  # noqa: RUF012

    Base.metadata.create_all(sqlite_engine)
    with Session(sqlite_engine) as s:
        s.add_all([Person(id=1, national_id=tc(1)), Employee(id=2, national_id=tc(2)),
                   Employee(id=3, national_id=tc(1))])
        s.commit()
        p2 = aliased(Person)
        q = select(Person.id, p2.id).join(p2, p2.id != Person.id).where(
            p2.national_id == tc(1), Person.national_id == tc(2))
        assert sorted(s.execute(q).all()) == [(2, 1), (2, 3)]
        assert s.scalars(select(Employee.id).where(Employee.national_id == tc(1))).all() == [3]
        guard.policy = MaskingPolicy.from_dict({"default": "redact",
                                                "national_id": {"admin": "reveal"}})
        try:
            e = s.get(Employee, 2)
            s.expire(e)
            assert e.national_id == "[REDACTED]"
            with acting_as("admin"):
                assert e.national_id == tc(2)
        finally:
            guard.policy = None


def test_key_scope_column_with_a_scalar_default(guard, sqlite_engine):
    md = MetaData()
    t = Table("scoped_default", md, Column("id", Integer, primary_key=True),
              Column("tenant", Integer, default=42),
              Column("phone", EncryptedPhone(guard, key_scope="tenant")))
    md.create_all(sqlite_engine)
    with sqlite_engine.begin() as conn:
        conn.execute(insert(t), [{"id": 1, "phone": "05321234567"}])
        row = conn.exec_driver_sql("SELECT tenant, phone FROM scoped_default").one()
    assert row.tenant == 42
    scope_key = {k.scope: k.id for k in guard.keys.keys(kind="dek")}["scoped_default:42"]
    assert t.c.phone.type.stored_key_id(row.phone) == scope_key


def test_type_annotation_map_gives_each_column_its_own_type(guard, sqlite_engine):
    from typing import NewType

    NationalId = NewType("NationalId", str)

    class Base(DeclarativeBase):
        type_annotation_map = {NationalId: EncryptedNationalId(guard, searchable=True)}  # noqa: RUF012

    class A(Base):
        __tablename__ = "ann_a"
        id: Mapped[int] = mapped_column(primary_key=True)
        nid: Mapped[NationalId]
        nid2: Mapped[NationalId | None]

    class B(Base):
        __tablename__ = "ann_b"
        id: Mapped[int] = mapped_column(primary_key=True)
        nid: Mapped[NationalId]

    labels = [c.label for c in encrypted_columns(guard)]
    assert labels == ["ann_a.nid", "ann_a.nid2", "ann_b.nid"]
    assert list(A.__table__.c.keys()) == ["id", "nid", "nid_bidx", "nid2", "nid2_bidx"]
    Base.metadata.create_all(sqlite_engine)
    with Session(sqlite_engine) as s:
        s.add_all([A(id=1, nid=tc(1), nid2=tc(2)), B(id=1, nid=tc(2))])
        s.commit()
        assert s.scalars(select(A.id).where(A.nid2 == tc(2))).all() == [1]
        assert s.scalars(select(A.id).where(A.nid == tc(2))).all() == []
        assert s.scalars(select(B.id).where(B.nid == tc(2))).all() == [1]
