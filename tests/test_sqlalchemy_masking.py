"""Masking on read in the SQLAlchemy layer: Sealed values, the view rendered for the role
in effect at access time, no decryption for masks that need no plaintext, and masked
values never written back."""

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from piiguard import Guard, LocalKMS, MaskingPolicy, acting_as, errors
from piiguard.masking.view import MaskedStr
from piiguard.sqlalchemy import (
    EncryptedAddress,
    EncryptedEmail,
    EncryptedNationalId,
    EncryptedPhone,
    Sealed,
)

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


def models(guard):
    class Base(DeclarativeBase):
        pass

    class Customer(Base):
        __tablename__ = "customers"
        id: Mapped[int] = mapped_column(primary_key=True)
        national_id: Mapped[str | None] = mapped_column(
            EncryptedNationalId(guard, searchable=True))
        phone: Mapped[str | None] = mapped_column(EncryptedPhone(guard))
        address: Mapped[str | None] = mapped_column(EncryptedAddress(guard))
        email: Mapped[str | None] = mapped_column(EncryptedEmail(guard))

    return Base, Customer


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


def raw(engine, column):
    with engine.connect() as conn:
        return bytes(conn.execute(text(f"SELECT {column} FROM customers")).scalar())


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
    assert fresh.kms.decrypts == 0 and lookups == []
    with acting_as("support"), Session(engine) as s:
        assert s.get(C2, 1).national_id == "1********46"
    assert fresh.kms.decrypts == 1 and len(lookups) == 1


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
        # Core update with the view is refused too (a NULL view is a legitimate NULL in
        # Core, where no stored value is at hand: only the ORM can tell)
        if view is not None:
            with pytest.raises(errors.MaskedValueError):
                s.execute(update(C).where(C.id == 1).values({attr: view}))
            s.rollback()
    assert raw(engine, attr) == before
    with Session(engine) as s, acting_as("admin"):
        assert getattr(s.get(C, 1), attr) == {"national_id": NID, "phone": PHONE,
                                              "address": ADDRESS, "email": EMAIL}[attr]


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
