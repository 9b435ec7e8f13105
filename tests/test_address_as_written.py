"""Addresses keep the user's text (issue 16): stored and returned as written (NFC,
whitespace collapsed), searched by their canonical text, on SQLite, PostgreSQL and
MariaDB; values stored by earlier releases (canonical upper-case) keep reading and
matching; the lenient level accepts imperfect real addresses with a province."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict
from pydantic import ValidationError as PydanticError
from sqlalchemy import Column, Integer, LargeBinary, MetaData, Table, insert, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from piiguard import Guard, MaskingPolicy, acting_as, errors
from piiguard.pydantic import Address, LenientAddress
from piiguard.sqlalchemy import EncryptedAddress, lookup
from piiguard.validators import address

WRITTEN = "Moda Cad. No:5, 34710 Kadıköy/İstanbul"
SPELLINGS = [
    "MODA CAD. NO:5, 34710 KADIKÖY/İSTANBUL",            # the canonical text
    "moda cad. no:5 kadıköy/istanbul 34710",              # lower case, postal code last
    "  Moda   Cad.  No: 5 ,34710 Kadıköy / Istanbul  ",   # spacing, İstanbul without dot
    "Moda Cad. No:5 Kadıköy/İstanbul 34710 Türkiye",     # country name
    "Moda Cad. No:5\t34710 KADIKÖY/istanbul",
]


def make_model(guard, **kw):
    class Base(DeclarativeBase):
        pass

    class Customer(Base):
        __tablename__ = "customers"
        id: Mapped[int] = mapped_column(primary_key=True)
        address: Mapped[str | None] = mapped_column(
            EncryptedAddress(guard, searchable=True, **kw))
    return Base, Customer


@pytest.fixture
def world(any_engine, local_kms):
    guard = Guard(kms=local_kms).bind(any_engine)
    Base, C = make_model(guard)
    Base.metadata.create_all(any_engine)
    return any_engine, guard, C


def test_round_trip_returns_the_users_text(world):
    engine, guard, C = world
    typed = ["Moda Cad.  No:5,\t34710 Kadıköy/İstanbul",
             "Cumhuriyet Mah. Atatürk Cad. Ihlamur Sok. No:71 D:16 Şahinbey/Gaziantep 27228",
             "Kızılay Mah. Atatürk Blv. No:1, 06420 Çankaya/ANKARA",
             "Moda Cad. No:5, Kadıköy, İstanbul 34710",
             "S\u0327is\u0327li Mah. No:1, İstanbul"]            # decomposed: stored NFC
    with Session(engine) as s:
        s.add_all([C(id=i, address=a) for i, a in enumerate(typed, 1)])
        s.commit()
    with Session(engine) as s:
        got = [c.address for c in s.scalars(select(C).order_by(C.id))]
    assert got == [address.written(a) for a in typed]
    assert got[0] == "Moda Cad. No:5, 34710 Kadıköy/İstanbul"
    assert got[3] == "Moda Cad. No:5, Kadıköy, İstanbul 34710"   # not reordered
    assert got[4] == "Şişli Mah. No:1, İstanbul"
    # Core writes and reads too
    with engine.begin() as conn:
        conn.execute(insert(C.__table__).values(id=10, address="bağdat cad. no:1 istanbul"))
        assert conn.execute(select(C.__table__.c.address).where(
            C.__table__.c.id == 10)).scalar_one() == "bağdat cad. no:1 istanbul"


def test_search_by_any_spelling_finds_it(world):
    engine, guard, C = world
    with Session(engine) as s:
        s.add_all([C(id=1, address=WRITTEN), C(id=2, address="Moda Cad. No:6, İstanbul")])
        s.commit()
    with Session(engine) as s:
        for spelling in SPELLINGS + [WRITTEN]:
            assert [c.id for c in s.scalars(select(C).where(C.address == spelling))] == [1], \
                spelling
            assert [c.id for c in lookup(s, C.address, spelling)] == [1]
        assert s.scalars(select(C).where(C.address == "Moda Cad. No:7, İstanbul")).all() == []


def test_values_stored_by_earlier_releases_keep_reading_and_matching(world):
    """Earlier releases stored the canonical text (and indexed it): such rows read as
    they are and are found by every spelling; rewriting one stores the new text."""
    engine, guard, C = world
    st_ = C.__table__.c.address.type.attached()
    canonical = address.validate(WRITTEN)
    raw = Table("customers", MetaData(), Column("id", Integer, primary_key=True),
                Column("address", LargeBinary), Column("address_bidx", LargeBinary))
    with engine.begin() as conn:      # what the old release wrote: canonical text, its index
        conn.execute(insert(raw).values(
            id=1, address=st_.encrypt(canonical),
            address_bidx=guard.blind_index("customers", "address").compute(canonical)))
    with Session(engine) as s:
        assert s.get(C, 1).address == canonical
        for spelling in SPELLINGS:
            assert [c.id for c in s.scalars(select(C).where(C.address == spelling))] == [1]


def test_strict_refuses_and_lenient_accepts_and_reports(any_engine, local_kms):
    guard = Guard(kms=local_kms).bind(any_engine)
    Base, C = make_model(guard, level="lenient")
    Base.metadata.create_all(any_engine)
    imperfect = ["Cumhuriyet Cad. No:5, 06710 Kadıköy/İstanbul",    # postal code of Ankara
                 "İstanbul Kadıköy Moda Cad. No:5",                # province first
                 "Kadıköy/İstanbul"]                                # no street line
    reports = [address.check(a, "lenient").unchecked for a in imperfect]
    assert reports == [("postal_code",), ("province",), ("street",)]
    for a in imperfect:
        with pytest.raises(errors.InvalidComponentError):
            address.check(a)                                        # strict
    with Session(any_engine) as s:
        s.add_all([C(id=i, address=a) for i, a in enumerate(imperfect, 1)])
        s.commit()
    with Session(any_engine) as s:
        assert [c.address for c in s.scalars(select(C).order_by(C.id))] == imperfect
        # searchable by their normalised text
        got = s.scalars(select(C).where(C.address == "istanbul kadıköy moda cad. no:5")).all()
        assert [c.id for c in got] == [2]
        with pytest.raises(errors.InvalidComponentError) as info:
            s.add(C(id=9, address="Moda Cad. No:5, Gotham"))      # no province at all
            s.flush()
        assert "customers.address" in str(info.value) and "Gotham" not in str(info.value)


def test_strict_is_the_default_and_levels_are_checked(local_kms):
    guard = Guard(kms=local_kms)
    assert EncryptedAddress(guard).level == "strict"
    with pytest.raises(errors.ConfigurationError):
        EncryptedAddress(guard, level="loose")
    with pytest.raises(errors.ConfigurationError):
        address.check(WRITTEN, "loose")


def test_masks_use_the_canonical_text(sqlite_engine, local_kms):
    guard = Guard(kms=local_kms).bind(sqlite_engine)
    Base, C = make_model(guard)
    Base.metadata.create_all(sqlite_engine)
    guard.policy = MaskingPolicy.from_dict({"default": "redact", "address": {
        "admin": "reveal", "support": "city", "ops": "partial:0:3", "bi": "pseudonym"}})
    with Session(sqlite_engine) as s, acting_as("admin"):
        s.add_all([C(id=1, address=WRITTEN), C(id=2, address=SPELLINGS[1])])
        s.commit()
    views = {}
    for role in ("admin", "support", "ops", "bi"):
        with Session(sqlite_engine) as s, acting_as(role):
            views[role] = [str(c.address) for c in s.scalars(select(C).order_by(C.id))]
    assert views["admin"] == [WRITTEN, SPELLINGS[1]]
    assert views["support"] == ["KADIKÖY/İSTANBUL"] * 2
    assert views["ops"][0].endswith("BUL") and views["ops"][0] == views["ops"][1]
    assert views["bi"][0] == views["bi"][1]      # one pseudonym for both spellings


class Form(BaseModel):
    model_config = ConfigDict(hide_input_in_errors=True)
    address: Address


class LenientForm(BaseModel):
    model_config = ConfigDict(hide_input_in_errors=True)
    address: LenientAddress


def test_pydantic_types_keep_the_text_and_have_both_levels():
    assert Form(address="  moda cad. no:5   kadıköy/istanbul ").address == \
        "moda cad. no:5 kadıköy/istanbul"
    with pytest.raises(PydanticError) as info:
        Form(address="Cumhuriyet Cad. No:5, 06710 Kadıköy/İstanbul")
    assert info.value.errors()[0]["type"] == "address_postal_code"
    assert LenientForm(address="Cumhuriyet Cad. No:5, 06710 Kadıköy/İstanbul").address == \
        "Cumhuriyet Cad. No:5, 06710 Kadıköy/İstanbul"
    with pytest.raises(PydanticError) as info:
        LenientForm(address="Cumhuriyet Cad. No:5, Gotham")
    assert info.value.errors()[0]["type"] == "address_province"


def test_check_result_hides_the_address():
    c = address.check(WRITTEN)
    assert "Moda" not in repr(c) and "MODA" not in repr(c) and "İSTANBUL" in repr(c)


_WORDS = st.sampled_from(["Moda", "Cad.", "No:5", "Bağdat", "Sok.", "D:3", "Mah.", "Çiçek",
                          "Işık", "ılık", "İnci", "1470", "Sk."])
_TAILS = st.sampled_from(["Kadıköy/İstanbul", "34710 Kadıköy/istanbul",
                          "Kadıköy/ISTANBUL 34710", ", İzmir", "Konak/İzmir 35220 Türkiye",
                          "çankaya/ankara", ", 06420 Çankaya/Ankara"])


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=200)
@given(words=st.lists(_WORDS, min_size=1, max_size=6), tail=_TAILS,
       spaces=st.sampled_from([" ", "  ", "\t", " \u00a0"]),
       case=st.sampled_from([str, address.tr_upper, address.tr_lower]))   # Turkish case
def test_every_spelling_has_the_canonical_search_form(words, tail, spaces, case):
    text = spaces.join(words) + spaces + tail
    if not address.is_valid(text):
        return
    spelled = case(text)
    c = address.check(text)
    # stored: the text as written (whitespace aside); searched: one canonical text
    assert c.text == " ".join(text.split())
    assert address.search_form(c.text) == c.canonical == address.validate(text)
    assert address.search_form(spelled) == c.canonical or not address.is_valid(spelled)
    assert address.search_form(c.canonical) == c.canonical


# ---------------------------------------------------- the typed fast path (issue 16)
_TOKENS = st.sampled_from([
    "Moda", "Cad.", "No:5", "No:", "5", "D:3", "Mah.", "Çiçek", "ılık", "İnci", "1470",
    "Sk.", "Kadıköy", "kadıköy", "KADIKÖY", "İstanbul", "istanbul", "Istanbul", "ISTANBUL",
    "Ankara", "ankara", "Çankaya", "Gaziantep", "Şahinbey", "34710", "06420", "27228",
    "06710", "3471", "347100", "Türkiye", "Turkey", "/", ":", ",", ", ", " ,", "Kadıköy/",
    "/İstanbul", "Kadıköy/İstanbul", "Şahinbey/Gaziantep", "A/B", "a'b", "-", "No: 5",
    ".", "Kat:3", "Blv.", "İzmir", "Konak/İzmir", "35220"])
_SEPS = st.sampled_from([" ", " ", " ", "  ", "\t", ", ", ",", " , ", "", "/"])


@settings(max_examples=3000, deadline=None)
@given(parts=st.lists(st.tuples(_TOKENS, _SEPS), min_size=1, max_size=9))
def test_typed_fast_path_accepts_only_what_the_full_rules_accept(parts):
    text = "".join(tok + sep for tok, sep in parts).strip(" \t")
    fast = address._TYPED_TEXT(text) is not None and address._typed_accepts(
        " ".join(text.split()))
    if fast:
        assert address.is_valid(text), repr(text)
        # and the column stores the same text either way
        assert address.as_written(text) == address.written(text)
    # as_written agrees with validate() on acceptance, fast path or not
    try:
        out = address.as_written(text)
    except errors.InvalidInputError as exc:
        with pytest.raises(type(exc)):
            address.validate(text)
    else:
        assert out == address.written(text)
        assert address.is_valid(text)


@pytest.mark.parametrize("text", [
    "Cumhuriyet Mah. Atatürk Cad. Ihlamur Sok. No:71 D:16 Şahinbey/Gaziantep 27228",
    "Atatürk Mah. İnönü Cad. Gazi Sok. No:12 Kat:3 D:7, 34710 Kadıköy/İstanbul",
    "moda cad. no: 5 kadıköy / istanbul", "Bağdat Cad. No:1, 34728 İstanbul",
    "Alsancak Mah. 1470 Sk. No:3 Konak/İzmir 35220"])
def test_usual_typed_forms_take_the_fast_path(text):
    assert address._TYPED_TEXT(text) is not None
    assert address._typed_accepts(" ".join(text.split()))
