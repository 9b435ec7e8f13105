"""Typed encrypted columns (issue 16): EncryptedDate, EncryptedDateTime, EncryptedInteger,
EncryptedDecimal, EncryptedJSON, EncryptedBytes. Round trip, search, masking and
re-encryption (with verify) on SQLite, PostgreSQL and MariaDB; a hypothesis round trip
per type; refused values never in errors; the same envelope as text (tampering fails)."""

from __future__ import annotations

import datetime as dt
import decimal
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Column, Integer, LargeBinary, MetaData, String, Table, select, update
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from piiguard import Guard, LocalKMS, MaskingPolicy, acting_as, errors
from piiguard.crypto.envelope import key_id_of
from piiguard.rotation import reencrypt, verify
from piiguard.sqlalchemy import (
    EncryptedBytes,
    EncryptedDate,
    EncryptedDateTime,
    EncryptedDecimal,
    EncryptedInteger,
    EncryptedJSON,
)

UTC = dt.timezone.utc
IST = dt.timezone(dt.timedelta(hours=3))
BORN = dt.date(1990, 1, 31)
SEEN = dt.datetime(2026, 11, 29, 22, 30, 15, 123456, tzinfo=IST)
DOC = {"lang": "tr", "tags": ["a", "ğ"], "n": 3, "ok": True, "none": None}
BLOB = bytes(range(256))
COLS = ("born", "seen", "score", "amount", "prefs", "blob")


def make_model(guard, **kw):
    class Base(DeclarativeBase):
        pass

    class Person(Base):
        __tablename__ = "people"
        id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
        tenant: Mapped[str] = mapped_column(String(16), default="t1")
        born = mapped_column(EncryptedDate(guard, searchable=True, **kw))
        seen = mapped_column(EncryptedDateTime(guard, searchable=True, **kw))
        score = mapped_column(EncryptedInteger(guard, searchable=True, **kw))
        amount = mapped_column(EncryptedDecimal(guard, searchable=True, **kw))
        prefs = mapped_column(EncryptedJSON(guard, **kw))
        blob = mapped_column(EncryptedBytes(guard, searchable=True, **kw))
    return Base, Person


def values(i: int) -> dict:
    return dict(born=BORN + dt.timedelta(days=i), seen=SEEN + dt.timedelta(minutes=i),
                score=-(10 ** 20) + i, amount=decimal.Decimal(f"{i}.50"),
                prefs={**DOC, "i": i}, blob=BLOB[i % 256:] + bytes([i % 256]))


def expected(i: int) -> dict:
    v = values(i)
    v["seen"] = v["seen"].astimezone(UTC)
    return v


@pytest.fixture(params=[False, True], ids=["binary", "text"])
def world(request, any_engine):
    guard = Guard(kms=LocalKMS.generate()).bind(any_engine)
    Base, P = make_model(guard, text=request.param)
    Base.metadata.create_all(any_engine)
    return any_engine, guard, P


def read_all(engine, P):
    with Session(engine) as s:
        return {p.id: {c: getattr(p, c) for c in COLS}
                for p in s.scalars(select(P).order_by(P.id))}


def test_round_trip_and_types(world):
    engine, guard, P = world
    with Session(engine) as s:
        s.add_all([P(id=i, **values(i)) for i in range(1, 6)])
        s.add(P(id=9))                                   # NULLs stay NULL
        s.commit()
    got = read_all(engine, P)
    for i in range(1, 6):
        assert got[i] == expected(i)
        assert type(got[i]["born"]) is dt.date and type(got[i]["amount"]) is decimal.Decimal
        assert got[i]["seen"].tzinfo == UTC and got[i]["seen"] == values(i)["seen"]
        assert str(got[i]["amount"]) == f"{i}.50"         # the scale is kept
    assert got[9] == dict.fromkeys(COLS)
    # the database holds envelopes only
    raw = Table("people", MetaData(), autoload_with=engine)
    with engine.connect() as conn:
        row = conn.execute(select(raw).where(raw.c.id == 1)).one()._mapping
    for c in COLS:
        stored = row[c]
        stored = stored.encode() if isinstance(stored, str) else bytes(stored)
        assert b"1990" not in stored and b"lang" not in stored and b"50" not in stored[:0]


def test_search_by_value(world):
    engine, guard, P = world
    with Session(engine) as s:
        s.add_all([P(id=i, **values(i)) for i in range(1, 6)])
        s.commit()
    v = values(3)
    with Session(engine) as s:
        def ids(clause):
            return [p.id for p in s.scalars(select(P).where(clause))]
        assert ids(P.born == v["born"]) == [3]
        assert ids(P.born == v["born"].isoformat()) == [3]
        assert ids(P.seen == v["seen"].astimezone(dt.timezone(dt.timedelta(hours=-5)))) == [3]
        assert ids(P.score == v["score"]) == [3]
        assert ids(P.amount == decimal.Decimal("3.5")) == [3]       # normalised
        assert ids(P.amount == decimal.Decimal("3.500")) == [3]
        assert ids(P.blob == v["blob"]) == [3]
        assert sorted(ids(P.born.in_([values(1)["born"], values(4)["born"]]))) == [1, 4]


def test_masking(world):
    engine, guard, P = world
    with Session(engine) as s:
        s.add(P(id=1, **values(1)))
        s.commit()
    guard.policy = MaskingPolicy.from_dict({
        "default": "redact",
        "date": {"admin": "reveal", "support": "year"},
        "datetime": {"admin": "reveal", "support": "year"},
        "integer": {"admin": "reveal", "support": "partial:0:2"},
        "decimal": {"admin": "reveal"}, "json": {"admin": "reveal"},
        "bytes": {"admin": "reveal"}})
    with Session(engine) as s, acting_as("admin"):
        p = s.get(P, 1)
        assert {c: getattr(p, c) for c in COLS} == expected(1)
    with Session(engine) as s, acting_as("support"):
        p = s.get(P, 1)
        assert (p.born, p.seen) == ("1990", "2026")
        assert p.score.endswith("99") and "*" in p.score
        assert p.amount == p.prefs == p.blob == "[REDACTED]"
        with pytest.raises(errors.MaskedValueError):     # a masked view is never written
            p.born = p.born
            s.flush()
    with Session(engine) as s:                            # no role: the default, redact
        p = s.get(P, 1)
        assert p.born == "[REDACTED]"


def test_reencrypt_and_verify(world):
    engine, guard, P = world
    n = 30
    with Session(engine) as s:
        s.add_all([P(id=i, **values(i)) for i in range(1, n + 1)])
        s.commit()
    old = guard.keys.keys(kind="dek", states=["active"])[0].id
    new = guard.keys.rotate("dek", "people")
    rep = reencrypt(guard, batch_size=7)
    assert rep.ok and (rep.updated, rep.values) == (n, 6 * n)
    raw = Table("people", MetaData(), autoload_with=engine)
    with engine.connect() as conn:
        for row in conn.execute(select(raw)):
            for c in COLS:
                assert key_id_of(row._mapping[c]) == new != old
    got = read_all(engine, P)
    assert got == {i: expected(i) for i in range(1, n + 1)}
    ver = verify(guard)
    assert ver.ok and ver.failed == 0 and ver.checked >= 6 * n


def test_key_scopes_and_row_binding(sqlite_engine):
    guard = Guard(kms=LocalKMS.generate()).bind(sqlite_engine)
    Base, P = make_model(guard, key_scope="tenant")
    Base.metadata.create_all(sqlite_engine)
    with Session(sqlite_engine) as s:
        s.add_all([P(id=1, tenant="a", **values(1)), P(id=2, tenant="b", **values(2))])
        s.commit()
    assert read_all(sqlite_engine, P) == {1: expected(1), 2: expected(2)}
    raw = Table("people", MetaData(), autoload_with=sqlite_engine)
    with sqlite_engine.begin() as conn:                   # swap two subjects' birth dates
        a, b = conn.execute(select(raw.c.born).order_by(raw.c.id)).scalars().all()
        conn.execute(update(raw).where(raw.c.id == 1).values(born=b))
    with Session(sqlite_engine) as s, pytest.raises(errors.DecryptionError):
        assert s.get(P, 1).born is None   # never reached: the read fails


SECRET_DATE = "1987-06-05"


@pytest.mark.parametrize("col,bad,rule", [
    ("born", dt.datetime(1987, 6, 5, tzinfo=UTC), "type"),
    ("born", "1987-13-05", "range"),
    ("born", "05.06.1987", "format"),
    ("born", 19870605, "type"),
    ("seen", dt.datetime(1987, 6, 5, 12, 0), "timezone"),
    ("seen", "1987-06-05T12:00:00", "timezone"),
    ("score", True, "type"),
    ("score", 1.5, "type"),
    ("score", "12a", "format"),
    ("score", 10 ** 41, "range"),
    ("amount", 1.5, "type"),
    ("amount", decimal.Decimal("NaN"), "finite"),
    ("amount", "1,5", "format"),
    ("prefs", {"x": float("nan")}, "type"),
    ("prefs", {"x": object()}, "type"),
    ("blob", "text", "type"),
])
def test_refused_values_name_the_rule_never_the_value(sqlite_engine, col, bad, rule):
    guard = Guard(kms=LocalKMS.generate()).bind(sqlite_engine)
    Base, P = make_model(guard)
    Base.metadata.create_all(sqlite_engine)
    with Session(sqlite_engine) as s:
        s.add(P(id=1, **{col: bad}))
        with pytest.raises(errors.InvalidInputError) as info:
            s.flush()
    assert info.value.rule == rule
    assert f"people.{col}" in str(info.value)
    chain, e = [], info.value                  # the error and everything chained to it
    while e is not None and len(chain) < 10:
        chain.append(e)
        e = e.__cause__ or e.__context__
    for err in chain:
        assert isinstance(err, errors.PIIGuardError)
        for shown in (repr(bad), str(bad), "1987", "12a"):
            if len(shown) > 3:
                assert shown not in str(err) and shown not in repr(err)


def test_json_is_not_searchable_and_bytes_envelopes_are_refused(sqlite_engine):
    guard = Guard(kms=LocalKMS.generate()).bind(sqlite_engine)
    with pytest.raises(errors.ConfigurationError, match="cannot be searchable"):
        EncryptedJSON(guard, searchable=True)
    Base, P = make_model(guard)
    Base.metadata.create_all(sqlite_engine)
    with Session(sqlite_engine) as s:
        s.add(P(id=1, **values(1)))
        s.commit()
    raw = Table("people", MetaData(), Column("id", Integer, primary_key=True),
                Column("blob", LargeBinary))
    with sqlite_engine.connect() as conn:
        envelope = conn.execute(select(raw.c.blob)).scalar_one()
    with Session(sqlite_engine) as s:
        s.add(P(id=2, blob=envelope))          # bytes that are an envelope: never re-sealed
        with pytest.raises(errors.AlreadyEncryptedError):
            s.flush()


def test_tampered_typed_value_fails_closed(sqlite_engine):
    guard = Guard(kms=LocalKMS.generate()).bind(sqlite_engine)
    Base, P = make_model(guard)
    Base.metadata.create_all(sqlite_engine)
    with Session(sqlite_engine) as s:
        s.add_all([P(id=1, **values(1)), P(id=2, **values(2))])
        s.commit()
    raw = Table("people", MetaData(), Column("id", Integer, primary_key=True),
                Column("score", LargeBinary), Column("amount", LargeBinary))
    with sqlite_engine.begin() as conn:
        blob = bytearray(conn.execute(select(raw.c.score).where(raw.c.id == 1)).scalar_one())
        blob[-1] ^= 1
        conn.execute(update(raw).where(raw.c.id == 1).values(score=bytes(blob)))
        moved = conn.execute(select(raw.c.score).where(raw.c.id == 2)).scalar_one()
        conn.execute(update(raw).where(raw.c.id == 2).values(amount=moved))   # column swap
    with Session(sqlite_engine) as s:
        with pytest.raises(errors.DecryptionError):
            s.scalars(select(P.score).where(P.id == 1)).one()
        with pytest.raises(errors.DecryptionError):
            s.scalars(select(P.amount).where(P.id == 2)).one()


# ----------------------------------------------------------------- hypothesis, per type
_GUARD: list = []


def _column(cls, **kw):
    """A column of ``cls`` attached to a table, over an in-memory SQLite key table."""
    from sqlalchemy import create_engine
    if not _GUARD:
        engine = create_engine("sqlite://")
        _GUARD.append(Guard(kms=LocalKMS.generate()).bind(engine))
    t = Table(f"h{len(_GUARD)}", MetaData(), Column("id", Integer, primary_key=True),
              Column("v", cls(_GUARD[0], **kw)))
    _GUARD.append(t)
    return t.c.v.type


def _round_trip(typ, value):
    bind = typ.bind_processor(None)
    result = typ.result_processor(None, None)
    return result(bind(value))


_SETTINGS = settings(max_examples=150, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])
_AWARE = st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30),
                      timezones=st.sampled_from([UTC, IST, dt.timezone(dt.timedelta(
                          hours=-9, minutes=-30))]))
_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text()
                     | st.floats(allow_nan=False, allow_infinity=False),
                     lambda kids: st.lists(kids, max_size=4)
                     | st.dictionaries(st.text(max_size=8), kids, max_size=4), max_leaves=12)


@_SETTINGS
@given(st.dates())
def test_hypothesis_date(value):
    assert _round_trip(_column(EncryptedDate), value) == value


@_SETTINGS
@given(_AWARE)
def test_hypothesis_datetime(value):
    out = _round_trip(_column(EncryptedDateTime), value)
    assert out == value and out.tzinfo == UTC


@_SETTINGS
@given(st.integers(min_value=-(10 ** 40) + 1, max_value=10 ** 40 - 1))
def test_hypothesis_integer(value):
    assert _round_trip(_column(EncryptedInteger), value) == value


@_SETTINGS
@given(st.decimals(allow_nan=False, allow_infinity=False, places=None)
       .filter(lambda d: len(str(d)) <= 80))
def test_hypothesis_decimal(value):
    typ = _column(EncryptedDecimal)
    out = _round_trip(typ, value)
    assert out == value and str(out) == str(value)        # value and scale kept
    from piiguard.validators.typed import decimal_search
    assert decimal_search(str(value)) == decimal_search(str(value.normalize()))


@_SETTINGS
@given(_JSON)
def test_hypothesis_json(value):
    out = _round_trip(_column(EncryptedJSON), value)
    assert json.dumps(out, sort_keys=True) == json.dumps(value, sort_keys=True)


@_SETTINGS
@given(st.binary(max_size=512))
def test_hypothesis_bytes(value):
    assert _round_trip(_column(EncryptedBytes), value) == value


def test_encrypt_existing_brings_a_legacy_text_column_under_encryption(any_engine):
    """A legacy plaintext table (ISO dates, integers and decimals as text) is migrated
    with encrypt-existing like a text column; the values read back typed."""
    from sqlalchemy import Text, insert

    from piiguard.rotation import encrypt_existing
    legacy = Table("people", MetaData(), Column("id", Integer, primary_key=True,
                                                autoincrement=False),
                   Column("born", Text), Column("score", Text), Column("amount", Text))
    legacy.create(any_engine)
    with any_engine.begin() as conn:
        conn.execute(insert(legacy), [dict(id=i, born=f"1990-01-{i:02d}", score=str(-i),
                                           amount=f"{i}.50") for i in range(1, 21)]
                     + [dict(id=99, born="31.01.1990", score="x", amount="1,5")])
    guard = Guard(kms=LocalKMS.generate())

    class Base(DeclarativeBase):
        pass

    class Person(Base):
        __tablename__ = "people"
        id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
        born = mapped_column(EncryptedDate(guard, text=True, allow_plaintext=True,
                                           searchable=True))
        score = mapped_column(EncryptedInteger(guard, text=True, allow_plaintext=True))
        amount = mapped_column(EncryptedDecimal(guard, text=True, allow_plaintext=True))
    with any_engine.begin() as conn:                    # the migration adds the index column
        from sqlalchemy import text as sql
        kind = "BYTEA" if any_engine.dialect.name == "postgresql" else "BLOB" \
            if any_engine.dialect.name == "sqlite" else "VARBINARY(64)"
        conn.execute(sql(f"ALTER TABLE people ADD COLUMN born_bidx {kind}"))
    guard.bind(any_engine)
    with Session(any_engine) as s:                      # the app reads the mix, typed
        assert s.get(Person, 3).born == dt.date(1990, 1, 3)
    reports = {c: encrypt_existing(guard, "people", c, batch_size=7)
               for c in ("born", "score", "amount")}
    for c, rep in reports.items():
        assert rep.updated == 20 and [f.row for f in rep.failures] == ["id=99"], c
        assert "31.01.1990" not in repr(rep.to_dict()) and "1,5" not in repr(rep.to_dict())
    with any_engine.connect() as conn:
        stored = {r.id: r for r in conn.execute(select(legacy))}
    assert all(stored[i].born.startswith("pg1:") for i in range(1, 21))
    assert stored[99].born == "31.01.1990"                               # left for a human
    with Session(any_engine) as s:
        p = s.get(Person, 7)
        assert (p.born, p.score, p.amount) == (dt.date(1990, 1, 7), -7, decimal.Decimal("7.50"))
        found = s.scalars(select(Person.id).where(Person.born == dt.date(1990, 1, 9))).all()
        assert found == [9]                                              # blind index set
