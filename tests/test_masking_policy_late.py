"""A policy set after objects were loaded (or assigned) still governs what is read.

Without a policy piiguard decrypts eagerly and the identity map holds plaintext; the
attribute must still apply a policy set later, or the README's quickstart would leak.
"""

from sqlalchemy import Integer, select
from sqlalchemy.orm import DeclarativeBase, Session, mapped_column

from piiguard import MaskingPolicy, acting_as
from piiguard.masking.view import MaskedStr
from piiguard.sqlalchemy import EncryptedNationalId, EncryptedPhone

POLICY = {"default": "redact",
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

        guard.policy = MaskingPolicy.from_dict(POLICY)
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
