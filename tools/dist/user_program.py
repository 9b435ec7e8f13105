"""A small application typed the way a user writes one: `mypy --strict` must pass on it
with piiguard installed from the wheel (the wheel ships `py.typed`)."""
from __future__ import annotations

import logging
from pathlib import Path

from pydantic import BaseModel
from sqlalchemy import create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from piiguard import Guard, LocalKMS, MaskingPolicy, acting_as, errors
from piiguard.pydantic import Address, Email, NationalId, Phone, TaxId
from piiguard.sqlalchemy import (
    EncryptedAddress,
    EncryptedEmail,
    EncryptedNationalId,
    EncryptedPhone,
    EncryptedString,
    EncryptedTaxId,
)
from piiguard.validators import phone, tckn, vkn

guard: Guard = Guard(kms=LocalKMS.from_file(Path(".piiguard/master.key"), create=True))


class Base(DeclarativeBase):
    pass


class Customer(Base):
    __tablename__ = "customers"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(EncryptedString(guard))
    national_id: Mapped[str] = mapped_column(EncryptedNationalId(guard, searchable=True))
    tax_id: Mapped[str | None] = mapped_column(EncryptedTaxId(guard), nullable=True)
    phone: Mapped[str] = mapped_column(EncryptedPhone(guard))
    email: Mapped[str] = mapped_column(EncryptedEmail(guard))
    address: Mapped[str] = mapped_column(EncryptedAddress(guard))


class CustomerIn(BaseModel):
    national_id: NationalId
    tax_id: TaxId | None = None
    phone: Phone
    email: Email
    address: Address


def canonical(raw: str) -> tuple[str, bool, str]:
    number: str = tckn.validate(raw)
    ok: bool = vkn.is_valid("1234567890")
    e164: str = phone.validate("0532 123 45 67")
    return number, ok, e164


def main() -> int:
    logging.basicConfig(level=logging.INFO)
    engine = create_engine("sqlite:///app.db")
    Base.metadata.create_all(engine)
    guard.bind(engine)
    guard.policy = MaskingPolicy.from_dict({
        "default": "redact",
        "national_id": {"admin": "reveal", "support": "partial:1:2"},
    })
    data = CustomerIn(national_id="10000000146", phone="0532 123 45 67",
                      email="ayse@example.com",
                      address="Moda Cad. No:5 Kadıköy/İstanbul 34710")
    with Session(engine) as session:
        session.add(Customer(name="Ayşe", national_id=data.national_id, phone=data.phone,
                             email=data.email, address=data.address))
        session.commit()
        with acting_as("admin"):
            found = session.scalars(
                select(Customer).where(Customer.national_id == "10000000146")).one()
        with acting_as("support"):
            shown: str = found.national_id
            print(shown)
    try:
        tckn.validate("12345678901")
    except errors.InvalidInputError as exc:
        print(type(exc).__name__)
    guard.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
