"""No masked write-back, tried as an attacker with a restricted role would.

- every kind x every non-reveal mask x the string operations that strip the MaskedStr
  marker (str(), f-strings, format, %, strip, JSON, join, +, case changes, padding, NFD)
  x every write path (ORM assignment, ORM assignment after commit, merge(), ORM bulk
  UPDATE, ORM-enabled UPDATE, Core update().values(), Core executemany): 0 stored;
- the masked-view refusals of the Sealed / MaskedStr types themselves (ORM and Core, on
  SQLite, PostgreSQL and MariaDB: storage byte-identical);
- a role that cannot see a value may replace it with a new valid one, but may not
  clear it (before and after a commit expires the object) unless the policy allows it;
- write rules (who may write at all) on ORM and Core paths;
- a pydantic round trip of a masked response, saved through the ORM, keeps the values.

(Merged from test_masking_sqlalchemy.py and test_sqlalchemy_masking.py: the write-back
tests of both, unchanged but for the names.)
"""

from __future__ import annotations

import json
import unicodedata

import pytest
from pydantic import BaseModel, ConfigDict
from sqlalchemy import bindparam, select, text, update
from sqlalchemy.orm import Session

from piiguard import Guard, LocalKMS, MaskingPolicy, acting_as, errors
from piiguard.errors import AccessDeniedError, MaskedValueError, PIIGuardError
from piiguard.masking.view import MaskedStr, is_masked
from piiguard.pydantic import Address, Email, NationalId, Phone, optional
from piiguard.sqlalchemy import Sealed
from masking_world import (
    CANON,
    PII,
    RAW,
    SPECS,
    make_model,
    models,
    policy_all,
    raw,
    raw_rows,
)

NON_REVEAL = [s for s in SPECS if s != "reveal"]

#: What an attacker may do to a masked view before sending it back: each strips the
#: MaskedStr marker and keeps the view (up to case, spacing and Unicode form).
STRING_OPS = {
    "as_is": lambda v: v,
    "str": str,
    "f-string": lambda v: f"{v}",
    "format": "{}".format,
    "percent": lambda v: "%s" % v,
    "strip": lambda v: str(v).strip(),
    "json": lambda v: json.loads(json.dumps(v)),
    "join": lambda v: "".join([v]),
    "concat": lambda v: "" + v,
    "slice": lambda v: v[:],
    "upper": lambda v: v.upper(),
    "lower": lambda v: v.lower(),
    "padded": lambda v: f"  {v}\n",
    "nfd": lambda v: unicodedata.normalize("NFD", v),
}


def _variants(view):
    if view is None:
        return {"none": None, "empty": ""}
    return {name: op(view) for name, op in STRING_OPS.items()}


@pytest.fixture
def world(sqlite_engine, local_kms):
    guard = Guard(kms=local_kms)
    Base, Customer = make_model(guard)
    Base.metadata.create_all(sqlite_engine)
    guard.bind(sqlite_engine)
    with Session(sqlite_engine) as s:
        s.add_all([Customer(**RAW), Customer(**{**RAW, "national_id": "10000000078"})])
        s.commit()
    return guard, Customer, sqlite_engine


# ----------------------------------------------------------------------------- attacks

def _attempt(path, s, Customer, attr, value):
    t = Customer.__table__
    if path == "orm_set":
        c = s.get(Customer, 1)
        setattr(c, attr, value)
    elif path == "orm_set_after_commit":
        c = s.get(Customer, 1)
        s.commit()                                    # expires c
        setattr(c, attr, value)
    elif path == "orm_merge":
        s.merge(Customer(id=1, **{attr: value}))
    elif path == "orm_bulk_update":
        s.execute(update(Customer), [{"id": 1, attr: value}])
    elif path == "orm_update":
        s.execute(update(Customer).where(Customer.id == 1).values({attr: value}))
    elif path == "core_values":
        s.connection().execute(update(t).where(t.c.id == 1).values({attr: value}))
    elif path == "core_executemany":
        s.connection().execute(
            update(t).where(t.c.id == bindparam("b_id")).values({attr: bindparam("v")}),
            [{"b_id": 1, "v": value}, {"b_id": 1, "v": value}])
    s.flush()


PATHS = ["orm_set", "orm_set_after_commit", "orm_merge", "orm_bulk_update", "orm_update",
         "core_values", "core_executemany"]


@pytest.mark.parametrize("spec", NON_REVEAL)
def test_no_masked_view_is_stored_whatever_is_done_to_it(world, spec):
    """The acceptance count: every kind x string op x write path, for one mask."""
    guard, Customer, engine = world
    before = raw_rows(engine)
    guard.policy = policy_all(spec)
    attempts = stored = refused = 0
    with acting_as("r"):
        with Session(engine) as s:
            c = s.get(Customer, 1)
            views = {attr: getattr(c, attr) for attr in PII}
        for attr, view in views.items():
            assert view is None or is_masked(view), (attr, view)
            for _name, value in _variants(view).items():
                for path in PATHS:
                    attempts += 1
                    with Session(engine) as s:
                        try:
                            _attempt(path, s, Customer, attr, value)
                        except (MaskedValueError, AccessDeniedError,
                                errors.InvalidInputError):
                            refused += 1
                            s.rollback()
                            continue
                        s.commit()
                    if raw_rows(engine) != before:
                        stored += 1
                        with engine.begin() as conn:        # put it back, keep counting
                            conn.execute(text("DELETE FROM customers"))
                        pytest.fail(f"{spec}: {attr} stored through {path} ({_name})")
    assert stored == 0 and attempts == refused
    assert attempts == len(PII) * len(PATHS) * (2 if spec == "null" else len(STRING_OPS))
    assert raw_rows(engine) == before


def test_pydantic_round_trip_of_a_masked_response_keeps_the_values(world):
    """GET as support -> JSON -> a patch model -> assigned to the ORM object: every field
    refused or rejected by validation; storage unchanged (it lost 2 of 6 before)."""
    guard, Customer, engine = world
    guard.policy = MaskingPolicy.from_dict({
        "default": "redact",
        "name": {"admin": "reveal", "support": "partial:1:0"},
        "national_id": {"admin": "reveal", "support": "partial:1:2"},
        "phone": {"admin": "reveal", "support": "partial:3:2"},
        "email": {"admin": "reveal", "support": "email"},
        "address": {"admin": "reveal", "support": "city"},
    })

    class Out(BaseModel):
        model_config = ConfigDict(from_attributes=True)
        name: str | None
        national_id: optional(NationalId)
        phone: optional(Phone)
        email: optional(Email)
        address: optional(Address)
        note: str | None

    class Patch(BaseModel):
        model_config = ConfigDict(hide_input_in_errors=True)
        name: str | None = None
        national_id: str | None = None
        phone: str | None = None
        email: str | None = None
        address: str | None = None
        note: str | None = None

    before = raw_rows(engine)
    refused = 0
    for role in ("support", "intern"):
        with acting_as(role), Session(engine) as s:
            body = Out.model_validate(s.get(Customer, 1)).model_dump_json()
        patch = Patch.model_validate_json(body)
        for field, value in patch.model_dump().items():
            with acting_as(role), Session(engine) as s:
                c = s.get(Customer, 1)
                try:
                    setattr(c, field, value)
                    s.commit()
                except (MaskedValueError, AccessDeniedError, errors.InvalidInputError):
                    refused += 1
    assert refused == 12
    assert raw_rows(engine) == before


# ----------------------------------------------------------------------------- replace, clear

POLICY = {
    "default": "redact",
    "national_id": {"admin": "reveal", "support": "partial:1:2", "analyst": "pseudonym",
                    "hidden": "null"},
    "phone": {"admin": "reveal", "support": "partial:0:2", "hidden": "null"},
    "address": {"admin": "reveal", "support": "city"},
    "email": {"admin": "reveal", "support": "email"},
}
NID, PHONE = "10000000146", "+905321234567"


@pytest.fixture
def app(sqlite_engine):
    kms = LocalKMS.generate()
    guard = Guard(kms=kms)
    Base, Customer = models(guard)
    Base.metadata.create_all(sqlite_engine)
    guard.bind(sqlite_engine)
    with Session(sqlite_engine) as s:
        s.add(Customer(id=1, national_id=NID, phone=PHONE,
                       address="BAĞDAT CAD. NO:1, 34728 KADIKÖY/İSTANBUL",
                       email="ğül.şen@örnek.com.tr"))
        s.commit()
    return sqlite_engine, kms, guard, Customer


def test_a_role_that_cannot_see_a_value_may_replace_it(app):
    engine, _, guard, C = app
    guard.policy = MaskingPolicy.from_dict(POLICY)
    for role, new in (("support", "0533 765 43 21"), ("hidden", "0544 111 22 33"),
                      ("intern", "0555 999 88 77")):
        with acting_as(role), Session(engine) as s:
            c = s.get(C, 1)
            c.phone = new
            s.commit()
        with acting_as(role), Session(engine) as s:
            s.execute(update(C.__table__).where(C.id == 1).values(phone=new))
            s.commit()
        with acting_as("admin"), Session(engine) as s:
            assert s.get(C, 1).phone == "+90" + new.replace(" ", "")[1:]


@pytest.mark.parametrize("role", ["hidden", "support", "intern", None])
@pytest.mark.parametrize("when", ["loaded", "after_commit", "core", "merge"])
def test_a_role_that_cannot_see_a_value_cannot_clear_it(app, role, when):
    engine, _, guard, C = app
    guard.policy = MaskingPolicy.from_dict(POLICY)
    before = raw(engine, "phone")
    expected = MaskedValueError if role == "hidden" else AccessDeniedError
    ctx = acting_as(role) if role else _no_role()
    with ctx, Session(engine) as s:
        c = s.get(C, 1)
        with pytest.raises(expected, match=r"customers\.phone") as info:
            if when == "loaded":
                c.phone = None
            elif when == "after_commit":
                s.commit()                        # expires every attribute of c
                c.phone = None
            elif when == "core":
                s.execute(update(C.__table__).where(C.id == 1).values(phone=None))
            else:
                s.merge(C(id=1, phone=None))
                s.flush()
        assert PHONE not in str(info.value) and "0532" not in str(info.value)
        s.rollback()
    assert raw(engine, "phone") == before


def test_the_clear_rule_and_reveal_roles_may_clear(app):
    engine, _, guard, C = app
    guard.policy = MaskingPolicy.from_dict({**POLICY, "clear": {"phone": ["support"]}})
    with acting_as("support"), Session(engine) as s:
        s.get(C, 1).phone = None
        s.commit()
    with acting_as("admin"), Session(engine) as s:
        c = s.get(C, 1)
        assert c.phone is None
        c.email = None                            # admin sees it: may clear it
        s.commit()
    with Session(engine) as s:
        assert s.execute(select(C.__table__.c.email)).scalar() is None


def test_write_rules(app):
    engine, _, guard, C = app
    guard.policy = MaskingPolicy.from_dict({
        **POLICY, "write": {"default": ["admin", "support"], "national_id": ["admin"]}})
    for role in (None, "intern", "analyst"):
        with (acting_as(role) if role else _no_role()), Session(engine) as s:
            with pytest.raises(AccessDeniedError, match="policy rule: write"):
                s.get(C, 1).phone = "0533 765 43 21"
            with pytest.raises(AccessDeniedError, match="policy rule: write"):
                s.add(C(id=9, phone="0533 765 43 21"))
                s.flush()
            s.rollback()
            with pytest.raises(AccessDeniedError, match="policy rule: write"):
                s.execute(update(C.__table__).values(phone="0533 765 43 21"))
    with acting_as("support"), Session(engine) as s:
        c = s.get(C, 1)
        c.phone = "0533 765 43 21"
        with pytest.raises(AccessDeniedError, match=r"customers\.national_id"):
            c.national_id = "10000000078"
        s.commit()
    with acting_as("admin"), Session(engine) as s:
        s.get(C, 1).national_id = "10000000078"
        s.add(C(id=2, national_id="10000000146"))
        s.commit()


class _no_role:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


# ----------------------------------------------------------------------------- the types
# (from test_masking_sqlalchemy.py)

@pytest.mark.parametrize("spec", SPECS)
def test_masked_write_back_orm(world, spec):
    guard, Customer, engine = world
    before = raw_rows(engine)
    guard.policy = policy_all(spec)
    with Session(engine) as s, acting_as("r"):
        c = s.get(Customer, 1)
        for attr in PII:
            seen = getattr(c, attr)
            if is_masked(seen):
                with pytest.raises(MaskedValueError) as info:
                    setattr(c, attr, seen)
                assert f"customers.{attr}" in str(info.value)
                assert seen not in str(info.value) or seen == "[REDACTED]"
            elif seen is None:
                # the 'null' view: assigning it back must not erase the stored value
                # (refused, or a no-op)
                try:
                    setattr(c, attr, seen)
                except MaskedValueError:
                    pass
            else:
                setattr(c, attr, seen)           # reveal: the real value, re-encrypted
        c.status = "touched"                     # a real change elsewhere in the row
        s.commit()
    after = raw_rows(engine)
    if spec == "reveal":
        guard.policy = None
        with Session(engine) as s:
            c = s.get(Customer, 1)
            assert {a: getattr(c, a) for a in PII} == CANON
        assert after[1] == before[1]
    else:
        assert after == before                   # byte-identical storage
    with engine.connect() as conn:
        assert conn.execute(text("SELECT status FROM customers WHERE id = 1")).scalar() \
            == "touched"


@pytest.mark.parametrize("spec", SPECS)
def test_masked_write_back_core_update(world, spec):
    guard, Customer, engine = world
    t = Customer.__table__
    before = raw_rows(engine)
    guard.policy = policy_all(spec)
    with acting_as("r"):
        with engine.connect() as conn:
            row = conn.execute(select(t).where(t.c.id == 1)).one()
        # 1. the Sealed value itself: the stored envelope is reused as it is
        with engine.begin() as conn:
            conn.execute(update(t).where(t.c.id == 1).values(
                **{a: getattr(row, a) for a in PII}))
        assert raw_rows(engine) == before
        # 2. str() of a null view is an empty masked string, never a writable ''
        if spec == "null":
            for attr in PII:
                empty = str(getattr(row, attr))
                assert empty == ""
                assert is_masked(empty)
                with pytest.raises(MaskedValueError), engine.begin() as conn:
                    conn.execute(update(t).where(t.c.id == 1).values({attr: empty}))
        # 3. its view, as a string: refused if masked
        for attr in PII:
            view = getattr(row, attr).view()
            if not is_masked(view):
                continue
            with pytest.raises(MaskedValueError), engine.begin() as conn:
                conn.execute(update(t).where(t.c.id == 1).values({attr: view}))
            with pytest.raises(MaskedValueError), engine.begin() as conn:
                conn.execute(update(t).where(t.c.id == 1), {attr: view})
            with pytest.raises(MaskedValueError), engine.begin() as conn:
                conn.execute(update(t).where(t.c.id == 1).values({attr: str(getattr(row,
                                                                                   attr))}))
    assert raw_rows(engine) == before


@pytest.mark.parametrize("server", ["postgresql", "mariadb"])
def test_masked_write_back_on_servers(server, request, local_kms):
    """Every mask, ORM and Core, on the PostgreSQL and MariaDB servers (one database
    each): storage stays byte-identical, plain copies of the views included."""
    engine = request.getfixturevalue({"postgresql": "pg_engine",
                                      "mariadb": "mariadb_engine"}[server])
    guard = Guard(kms=local_kms)
    Base, Customer = make_model(guard)
    Base.metadata.create_all(engine)
    guard.bind(engine)
    with Session(engine) as s:
        s.add(Customer(**RAW))
        s.commit()
    t = Customer.__table__
    before = [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r)
              for r in raw_rows(engine)]
    for spec in SPECS:
        if spec == "reveal":
            continue
        guard.policy = policy_all(spec)
        with Session(engine) as s, acting_as("r"):
            c = s.get(Customer, 1)
            for attr in PII:
                seen = getattr(c, attr)
                with pytest.raises(MaskedValueError):
                    setattr(c, attr, seen)
                if seen is not None:
                    with pytest.raises(MaskedValueError):
                        setattr(c, attr, f" {seen} ")
            c.status = spec[:20]
            s.commit()
        with acting_as("r"):
            with engine.connect() as conn:
                row = conn.execute(select(t).where(t.c.id == 1)).one()
            with engine.begin() as conn:
                conn.execute(update(t).where(t.c.id == 1).values(
                    **{a: getattr(row, a) for a in PII}))
            for attr in PII:
                view = getattr(row, attr).view()
                if is_masked(view):
                    with pytest.raises(MaskedValueError), engine.begin() as conn:
                        conn.execute(update(t).where(t.c.id == 1).values({attr: view}))
                    with pytest.raises(MaskedValueError), engine.begin() as conn:
                        conn.execute(update(t).where(t.c.id == 1).values(
                            {attr: json.loads(json.dumps(view))}))
        after = [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r)
                 for r in raw_rows(engine)]
        assert after == before, spec


def test_flush_without_changes_leaves_storage_identical(world):
    guard, Customer, engine = world
    before = raw_rows(engine)
    guard.policy = policy_all("partial:1:2")
    with Session(engine) as s, acting_as("r"):
        for c in s.scalars(select(Customer)):
            assert is_masked(c.national_id)
            c.status = "seen"
        s.commit()
    assert raw_rows(engine) == before


def test_masked_value_refused_on_insert_and_search(world):
    guard, Customer, engine = world
    guard.policy = policy_all("partial:1:2")
    with Session(engine) as s, acting_as("r"):
        masked = s.get(Customer, 1).national_id
        with pytest.raises(MaskedValueError):
            Customer(national_id=masked)
        with pytest.raises(MaskedValueError):
            s.scalars(select(Customer).where(Customer.national_id == masked)).all()


def test_all_errors_are_piiguard_errors(world):
    guard, Customer, engine = world
    guard.policy = policy_all("partial:1:2")
    with Session(engine) as s, acting_as("r"):
        c = s.get(Customer, 1)
        with pytest.raises(PIIGuardError):
            c.phone = c.phone
        assert isinstance(c.phone, MaskedStr)


# (from test_sqlalchemy_masking.py)

@pytest.mark.parametrize("role,attr", [
    ("support", "national_id"), ("support", "phone"), ("support", "address"),
    ("support", "email"), ("intern", "national_id"), ("analyst", "national_id"),
    ("hidden", "national_id"),
])
def test_masked_values_are_never_written_back(app, role, attr):
    engine, _, guard, C = app
    guard.policy = MaskingPolicy.from_dict(POLICY)
    before = raw(engine, attr)
    with acting_as(role), Session(engine) as s:
        c = s.get(C, 1)
        view = getattr(c, attr)
        assert view is None or isinstance(view, MaskedStr)
        # assigning the masked view is refused at once
        with pytest.raises(errors.MaskedValueError, match=f"customers.{attr}"):
            setattr(c, attr, view)
        # flushing an object that holds masked values changes nothing
        s.flush()
        s.commit()
        # Core update with the view is refused too, a NULL view included (the stored
        # value is read first: a role that sees NULL cannot clear it there either)
        with pytest.raises(errors.MaskedValueError):
            s.execute(update(C).where(C.id == 1).values({attr: view}))
        s.rollback()
    assert raw(engine, attr) == before
    with Session(engine) as s, acting_as("admin"):
        assert getattr(s.get(C, 1), attr) == {"national_id": NID, "phone": PHONE,
                                              "address": "BAĞDAT CAD. NO:1, 34728 "
                                                         "KADIKÖY/İSTANBUL",
                                              "email": "ğül.şen@örnek.com.tr"}[attr]


def test_a_sealed_value_is_written_back_byte_identical_only_to_its_own_column(app):
    engine, _, guard, C = app
    guard.policy = MaskingPolicy.from_dict(POLICY)
    before = raw(engine, "national_id")
    with Session(engine) as s:
        sealed = s.execute(select(C.national_id)).scalar()
        assert isinstance(sealed, Sealed)
        s.execute(update(C.__table__).values(national_id=sealed))
        s.commit()
        assert raw(engine, "national_id") == before
        with pytest.raises(errors.MaskedValueError, match=r"customers\.phone"):
            s.execute(update(C.__table__).values(phone=sealed))
        s.rollback()
        with acting_as("hidden"):       # mask "null": str() is an empty *masked* string
            empty = str(sealed)
            assert empty == "" and isinstance(empty, MaskedStr)
            with pytest.raises(errors.MaskedValueError):
                s.execute(update(C.__table__).values(national_id=empty))
            s.rollback()
        c = s.get(C, 1)
        with pytest.raises(errors.MaskedValueError, match=r"customers\.phone"):
            c.phone = sealed
        c.national_id = sealed          # its own envelope: accepted, nothing changes
        s.commit()
    assert raw(engine, "national_id") == before
    # the blind index still finds the row
    with Session(engine) as s, acting_as("admin"):
        assert s.scalars(select(C.id).where(C.national_id == NID)).all() == [1]


def test_searching_with_a_masked_value_is_refused(app):
    _, _, _guard, C = app
    with pytest.raises(errors.MaskedValueError):
        C.national_id == MaskedStr("1********46")  # noqa: B015


async def test_async_session_after_commit_clear_and_write_back_are_refused_at_flush(
        tmp_path, local_kms):
    """An AsyncSession cannot load an expired attribute on assignment (no greenlet): the
    flush reads the stored value on its own connection and refuses there."""
    pytest.importorskip("aiosqlite")
    from sqlalchemy import create_engine
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    guard = Guard(kms=local_kms)
    Base, C = models(guard)
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    key_engine = create_engine(f"sqlite:///{tmp_path / 'a.db'}")
    guard.bind(key_engine)
    async with AsyncSession(engine) as s:
        s.add(C(id=1, phone="05321234567", email="ğül.şen@örnek.com.tr"))
        await s.commit()
    guard.policy = MaskingPolicy.from_dict(POLICY)
    before = raw(key_engine, "phone"), raw(key_engine, "email")
    for attr, value in (("phone", None), ("email", "ğ***@örnek.com.tr")):
        async with acting_as("support"), AsyncSession(engine) as s:
            c = (await s.scalars(select(C))).one()
            await s.commit()                          # expires c
            setattr(c, attr, value)
            with pytest.raises((AccessDeniedError, MaskedValueError),
                               match=f"customers.{attr}"):
                await s.commit()
    assert (raw(key_engine, "phone"), raw(key_engine, "email")) == before
    await engine.dispose()
    key_engine.dispose()
