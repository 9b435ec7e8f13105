"""Masking on read in the SQLAlchemy layer: what each role sees, and what it costs.

- each mask on each kind through the ORM (Turkish letters in names, addresses, e-mail);
- unknown role and no role get the default;
- role switch on an already-loaded object (nothing leaks through the identity map);
- a policy set after objects were loaded (or assigned) still governs what is read;
- Core rows hold Sealed values, rendered for the role in effect when used;
- asyncio tasks with different roles at once (sync session objects and AsyncSession);
- zero decryptions and zero KMS calls for redact/null roles (a fresh Guard on AWS KMS via
  the moto server with a KMS call counter, and on a counting LocalKMS; spies on the DEK
  lookup);
- pydantic response models built from masked ORM objects.

(Merged from test_masking_sqlalchemy.py, test_sqlalchemy_masking.py and
test_masking_policy_late.py; the write-back tests are in
test_sqlalchemy_masking_writeback.py, the audit ones in test_masking_audit_sqlalchemy.py.)
"""

from __future__ import annotations

import asyncio
import json

import pytest
from masking_world import CANON, KIND, PII, RAW, SPECS, make_model, models, policy_all
from pydantic import BaseModel, ConfigDict
from sqlalchemy import Integer, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Session, mapped_column

from piiguard import Guard, LocalKMS, MaskingPolicy, acting_as
from piiguard.guard import FieldCipher
from piiguard.masking.view import MaskedStr, RevealedStr, is_masked
from piiguard.pydantic import Address, Email, NationalId, Phone, masking, optional
from piiguard.sqlalchemy import EncryptedNationalId, EncryptedPhone, Sealed

NID = "10000000146"
PHONE = "+905321234567"
ADDRESS = "BAĞDAT CAD. NO:1, 34728 KADIKÖY/İSTANBUL"
EMAIL = "ğül.şen@örnek.com.tr"

POLICY = {
    "default": "redact",
    "national_id": {"admin": "reveal", "support": "partial:1:2", "analyst": "pseudonym",
                    "hidden": "null"},
    "phone": {"admin": "reveal", "support": "partial:0:2"},
    "address": {"admin": "reveal", "support": "city"},
    "email": {"admin": "reveal", "support": "email"},
}


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


# ----------------------------------------------------------------------------- views

def test_design_example(world):
    guard, Customer, engine = world
    guard.policy = MaskingPolicy.from_dict({
        "default": "redact",
        "national_id": {"admin": "reveal", "support": "partial:1:2"},
        "phone": {"admin": "reveal", "support": "partial:0:2"},
    })
    with Session(engine) as s:
        c = s.get(Customer, 1)
        with acting_as("support"):
            assert c.national_id == "1********46" and c.phone == "***********67"
            assert is_masked(c.national_id)
        with acting_as("admin"):
            assert c.national_id == "10000000146" and not is_masked(c.national_id)
        assert c.national_id == "[REDACTED]"


@pytest.mark.parametrize("spec", SPECS)
def test_each_mask_on_each_kind_through_the_orm(world, spec):
    guard, Customer, engine = world
    guard.policy = policy_all(spec)
    mask = guard.policy.mask_for(kind="text", column=None, role=None)
    with Session(engine) as s, acting_as("r"):
        c = s.get(Customer, 1)
        for attr in PII:
            got = getattr(c, attr)
            expected = mask(CANON[attr], kind=KIND[attr], guard=guard)
            assert got == expected, (attr, got)
            if spec == "reveal":
                # the value, marked as revealed-and-audited (a str subclass)
                assert got == CANON[attr] and type(got) is RevealedStr
            elif spec == "null":
                assert got is None
            else:
                assert is_masked(got) and CANON[attr] not in got
    literal = {
        ("partial:1:2", "national_id"): "1********46",
        ("partial:1:2", "name"): "Ş*********rk",
        ("partial:0:3", "address"): "*" * (len(CANON["address"]) - 3) + "BUL",
        ("email", "email"): "ş***@örnek.com.tr",
        ("email", "phone"): "[REDACTED]",
        ("city", "address"): "ŞİŞLİ/İSTANBUL",
        ("city:province", "address"): "İSTANBUL",
        ("city", "note"): "[REDACTED]",
        ("stars", "note"): "★★★",
    }
    with Session(engine) as s, acting_as("r"):
        c = s.get(Customer, 1)
        for (sp, attr), value in literal.items():
            if sp == spec:
                assert getattr(c, attr) == value


def test_unknown_role_and_no_role_get_the_default(world):
    guard, Customer, engine = world
    guard.policy = MaskingPolicy.from_dict({
        "default": "null",
        "national_id": {"admin": "reveal"},
        "customers.phone": {"admin": "reveal", "default": "partial:0:2"},
    })
    with Session(engine) as s:
        c = s.get(Customer, 1)
        for ctx in (acting_as("nobody-knows-me"), acting_as("ADMIN"), None):
            if ctx is None:
                nid, ph, em = c.national_id, c.phone, c.email
            else:
                with ctx:
                    nid, ph, em = c.national_id, c.phone, c.email
            assert (nid, ph, em) == (None, "***********67", None)


def test_role_switch_on_a_loaded_object(world):
    guard, Customer, engine = world
    guard.policy = MaskingPolicy.from_dict({
        "default": "redact",
        "search": {"national_id": ["support"]},      # support may search (below)
        "national_id": {"admin": "reveal", "support": "partial:1:2"},
        "address": {"admin": "reveal", "support": "city"},
    })
    with Session(engine) as s:
        with acting_as("admin"):
            c = s.get(Customer, 1)
            assert c.national_id == "10000000146"
            assert c.address == CANON["address"]
            listed = s.scalars(select(Customer).order_by(Customer.id)).all()
        with acting_as("support"):
            assert c.national_id == "1********46" and c.address == "ŞİŞLİ/İSTANBUL"
            # the identity map gives the same object: still the support view
            again = s.get(Customer, 1)
            assert again is c and again.national_id == "1********46"
            assert listed[1].national_id == "1********78"
            found = s.scalars(select(Customer).where(
                Customer.national_id == "10000000146")).one()
            assert found is c and found.national_id == "1********46"
        assert c.national_id == "[REDACTED]" and c.address == "[REDACTED]"
        with acting_as("admin"):
            assert c.national_id == "10000000146"


def test_policy_set_after_loading_applies(world):
    guard, Customer, engine = world
    with Session(engine) as s:
        c = s.get(Customer, 1)          # loaded in encryption-only mode
        assert c.national_id == "10000000146"
        guard.policy = MaskingPolicy.from_dict({"national_id": {"support": "partial:1:2"}})
        with acting_as("support"):
            s.expire(c)
            assert c.national_id == "1********46"


def test_core_select_returns_sealed_values(world):
    guard, Customer, engine = world
    guard.policy = MaskingPolicy.from_dict({"national_id": {"support": "partial:1:2",
                                                            "admin": "reveal"}})
    with engine.connect() as conn:
        row = conn.execute(select(Customer.__table__).where(
            Customer.__table__.c.id == 1)).one()
    sealed = row.national_id
    assert "10000000146" not in repr(sealed)
    with acting_as("support"):
        assert str(sealed) == "1********46" and sealed.view() == "1********46"
    with acting_as("admin"):
        assert str(sealed) == "10000000146"
    assert str(sealed) == "[REDACTED]"


# ----------------------------------------------------------------------------- concurrency

async def test_async_tasks_with_different_roles_at_once(world):
    guard, Customer, engine = world
    guard.policy = MaskingPolicy.from_dict({
        "default": "redact",
        "national_id": {"admin": "reveal", "support": "partial:1:2", "ops": "null"},
    })
    with Session(engine) as s:
        c = s.get(Customer, 1)

        async def task(role):
            async with acting_as(role):
                seen = set()
                for _ in range(25):
                    seen.add(c.national_id)
                    await asyncio.sleep(0)
                return role, seen

        out = dict(await asyncio.gather(*(task(r) for r in ("admin", "support", "ops",
                                                             "x"))))
    assert out == {"admin": {"10000000146"}, "support": {"1********46"}, "ops": {None},
                   "x": {"[REDACTED]"}}


async def test_async_sessions_with_different_roles_at_once(tmp_path, local_kms):
    pytest.importorskip("aiosqlite")
    pytest.importorskip("greenlet", reason="SQLAlchemy's asyncio needs greenlet "
                        "(sqlalchemy[asyncio])")
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    guard = Guard(kms=local_kms)
    Base, Customer = make_model(guard)
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    # the key table through a sync engine on the same database: with a policy set,
    # values are decrypted when an attribute is read, outside the async driver's
    # greenlet, so key lookups must not need the async connection
    key_engine = create_engine(f"sqlite:///{tmp_path / 'a.db'}")
    guard.bind(key_engine)
    async with AsyncSession(engine) as s:
        s.add(Customer(**RAW))
        await s.commit()
    guard.policy = MaskingPolicy.from_dict({
        "default": "redact", "phone": {"admin": "reveal", "support": "partial:3:2"}})

    async def task(role):
        async with acting_as(role), AsyncSession(engine) as s:
            c = (await s.scalars(select(Customer))).one()
            await asyncio.sleep(0)
            return role, c.phone

    out = dict(await asyncio.gather(*(task(r) for r in ("admin", "support", "x") * 3)))
    assert out == {"admin": "+905321234567", "support": "+90********67", "x": "[REDACTED]"}
    await engine.dispose()
    key_engine.dispose()


# ----------------------------------------------------------------------------- least privilege

@pytest.mark.parametrize("spec", ["redact", "null"])
def test_no_decryption_and_no_kms_call_for_roles_without_plaintext(spec, sqlite_engine,
                                                                    aws_kms, monkeypatch):
    kms, _client, counter = aws_kms
    writer = Guard(kms=kms)
    Base, Customer = make_model(writer)
    Base.metadata.create_all(sqlite_engine)
    writer.bind(sqlite_engine)
    with Session(sqlite_engine) as s:
        s.add_all([Customer(**RAW) for _ in range(20)])
        s.commit()

    reader = Guard(kms=kms)                       # fresh: no key in memory
    _, ReaderCustomer = make_model(reader)
    reader.bind(sqlite_engine)
    reader.policy = MaskingPolicy.from_dict({"default": spec,
                                             "national_id": {"admin": "reveal"}})
    # spies: every decryption goes through FieldCipher.decrypt, every key through
    # KeyManager.read_entry (the first use of a key also through the KMS)
    decryptions, key_reads = [], []
    real_decrypt, real_read = FieldCipher.decrypt, reader.keys.read_entry
    monkeypatch.setattr(FieldCipher, "decrypt", lambda self, blob: decryptions.append(
        self.label) or real_decrypt(self, blob))
    reader.keys.read_entry = lambda *a, **k: key_reads.append(a) or real_read(*a, **k)
    counter.reset()
    expected = None if spec == "null" else "[REDACTED]"
    with Session(sqlite_engine) as s, acting_as("intern"):
        rows = s.scalars(select(ReaderCustomer)).all()
        assert len(rows) == 20
        for c in rows:
            for attr in PII:
                assert getattr(c, attr) == expected
        with sqlite_engine.connect() as conn:
            for row in conn.execute(select(ReaderCustomer.__table__)):
                assert str(row.national_id) in ("[REDACTED]", "")
    assert counter.total == 0, dict(counter.calls)
    assert decryptions == [] and key_reads == []
    # the same reads as a reveal role do decrypt, with one KMS call for the one DEK
    with Session(sqlite_engine) as s, acting_as("admin"):
        assert {c.national_id for c in s.scalars(select(ReaderCustomer))} == {"10000000146"}
    assert counter.calls["Decrypt"] == 1 and key_reads
    assert decryptions == ["customers.national_id"] * 20


# ----------------------------------------------------------------------------- pydantic

class CustomerOut(BaseModel):
    model_config = ConfigDict(from_attributes=True, hide_input_in_errors=True)
    id: int
    national_id: optional(NationalId)
    phone: optional(Phone)
    email: optional(Email)
    address: optional(Address)


def test_response_models_from_masked_orm_objects(world):
    guard, Customer, engine = world
    guard.policy = MaskingPolicy.from_dict({
        "default": "redact",
        "national_id": {"admin": "reveal", "support": "partial:1:2"},
        "phone": {"admin": "reveal", "support": "partial:3:2"},
        "email": {"admin": "reveal", "support": "email"},
        "address": {"admin": "reveal", "support": "city"},
    })
    with Session(engine) as s:
        c = s.get(Customer, 1)
        with masking(guard), acting_as("support"):
            out = CustomerOut.model_validate(c)
            assert json.loads(out.model_dump_json()) == {
                "id": 1, "national_id": "1********46", "phone": "+90********67",
                "email": "ş***@örnek.com.tr", "address": "ŞİŞLİ/İSTANBUL"}
        with masking(guard), acting_as("admin"):
            out = CustomerOut.model_validate(c)
            assert out.model_dump(exclude={"id"}) == {
                k: CANON[k] for k in ("national_id", "phone", "email", "address")}
            # serialised later under another role: masked then
        with masking(guard), acting_as("support"):
            assert out.model_dump()["national_id"] == "1********46"


# ------------------------------------------------------------------ Sealed values, by role
# (from test_sqlalchemy_masking.py)

class CountingKMS:
    """LocalKMS that counts unwraps (a DEK loaded into memory = one call)."""

    def __init__(self, inner):
        self.inner = inner
        self.decrypts = 0

    def generate_data_key(self, *a, **k):
        return self.inner.generate_data_key(*a, **k)

    def decrypt_data_key(self, *a, **k):
        self.decrypts += 1
        return self.inner.decrypt_data_key(*a, **k)

    def rewrap(self, *a, **k):
        return self.inner.rewrap(*a, **k)


@pytest.fixture
def app(sqlite_engine):
    kms = LocalKMS.generate()
    guard = Guard(kms=kms)
    Base, Customer = models(guard)
    Base.metadata.create_all(sqlite_engine)
    guard.bind(sqlite_engine)
    with Session(sqlite_engine) as s:
        s.add(Customer(id=1, national_id=NID, phone=PHONE, address=ADDRESS, email=EMAIL))
        s.commit()
    return sqlite_engine, kms, guard, Customer


def test_without_a_policy_reads_are_plain_strings(app):
    engine, _, guard, C = app
    assert guard.policy is None
    with Session(engine) as s:
        c = s.get(C, 1)
        assert type(c.national_id) is str and c.national_id == NID
        row = s.execute(select(C.phone, C.address)).one()
        assert type(row.phone) is str and (row.phone, row.address) == (PHONE, ADDRESS)


def test_the_view_follows_the_role_at_access_time(app):
    engine, _, guard, C = app
    guard.policy = MaskingPolicy.from_dict(POLICY)
    with Session(engine) as s:
        with acting_as("admin"):
            c = s.get(C, 1)
            assert (c.national_id, c.phone, c.address, c.email) == (NID, PHONE, ADDRESS, EMAIL)
        # the same loaded object, read later under other roles: nothing leaks through the
        # identity map
        with acting_as("support"):
            assert (c.national_id, c.phone) == ("1********46", "***********67")
            assert c.address == "KADIKÖY/İSTANBUL" and c.email == "ğ***@örnek.com.tr"
            assert isinstance(c.national_id, MaskedStr)
        with acting_as("intern"):
            assert c.national_id == "[REDACTED]" and c.address == "[REDACTED]"
        assert c.national_id == "[REDACTED]"            # no role at all: the default
        with acting_as("hidden"):
            assert c.national_id is None
        with acting_as("analyst"):
            token = c.national_id
            assert token.startswith("psn_") and NID not in token
        with acting_as("admin"):
            assert c.national_id == NID
        # Core rows hold Sealed values, rendered when used
        row = s.execute(select(C.national_id)).one()
        assert isinstance(row.national_id, Sealed) and NID not in repr(row)
        with acting_as("support"):
            assert str(row.national_id) == "1********46" and row.national_id == "1********46"
        with acting_as("admin"):
            assert f"{row.national_id}" == NID


@pytest.mark.parametrize("role", ["intern", "hidden"])
def test_masks_without_plaintext_decrypt_nothing_and_call_no_kms(app, role):
    engine, kms, _guard, _C = app
    fresh = Guard(kms=CountingKMS(kms))          # nothing cached: a decryption needs KMS
    _, C2 = models(fresh)
    fresh.bind(engine)
    fresh.policy = MaskingPolicy.from_dict(POLICY)
    # (the policy's pseudonym key may have been created under the KEK: one unwrap of the
    # KEK, no data key)
    base = fresh.kms.decrypts
    assert base <= 1
    lookups = []
    real = fresh.keys.read_entry
    fresh.keys.read_entry = lambda *a, **k: lookups.append(a) or real(*a, **k)
    with acting_as(role), Session(engine) as s:
        c = s.get(C2, 1)
        views = [c.national_id, c.phone, c.address, c.email]
        row = s.execute(select(C2.national_id, C2.phone)).one()
        views += [str(row.national_id), str(row.phone)]
    assert views == ([None] + ["[REDACTED]"] * 3 + ["", "[REDACTED]"] if role == "hidden"
                     else ["[REDACTED]"] * 6)
    assert fresh.kms.decrypts == base and lookups == []
    with acting_as("support"), Session(engine) as s:
        assert s.get(C2, 1).national_id == "1********46"
    # one data key looked up, unwrapped under the KEK (a KMS call only if not cached yet)
    assert fresh.kms.decrypts == 1 and len(lookups) == 1


# ------------------------------------------------------------------------ a policy set late
# (from test_masking_policy_late.py)

LATE_POLICY = {"default": "redact",
          "national_id": {"admin": "reveal", "support": "partial:1:2"},
          "phone": {"admin": "reveal", "support": "partial:3:2"}}


def test_policy_set_after_load_masks_loaded_and_assigned_values(guard, sqlite_engine):
    class Base(DeclarativeBase):
        pass

    class Customer(Base):
        __tablename__ = "late_customers"
        id = mapped_column(Integer, primary_key=True)
        national_id = mapped_column(EncryptedNationalId(guard, searchable=True))
        phone = mapped_column(EncryptedPhone(guard))

    Base.metadata.create_all(sqlite_engine)
    guard.bind(sqlite_engine)
    with Session(sqlite_engine) as session:
        session.add(Customer(id=1, national_id="10000000146", phone="05321234567"))
        session.commit()
        loaded = session.scalars(select(Customer)).one()
        assert loaded.national_id == "10000000146"          # encryption-only mode
        fresh = Customer(id=2, national_id="10000000078", phone="05321234568")

        guard.policy = MaskingPolicy.from_dict(LATE_POLICY)
        try:
            with acting_as("support"):
                assert loaded.national_id == "1********46"
                assert isinstance(loaded.national_id, MaskedStr)
                assert loaded.phone == "+90********67"
                assert fresh.national_id == "1********78"
            with acting_as("admin"):
                assert loaded.national_id == "10000000146"
            assert loaded.national_id == "[REDACTED]"          # no role: default
            assert isinstance(fresh.phone, MaskedStr)
        finally:
            guard.policy = None
        assert loaded.national_id == "10000000146"
