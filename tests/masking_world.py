"""Shared models and data of the SQLAlchemy masking tests (read, write-back, audit)."""

from __future__ import annotations

from sqlalchemy import Integer, String, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from piiguard import MaskingPolicy
from piiguard.sqlalchemy import (
    EncryptedAddress,
    EncryptedEmail,
    EncryptedNationalId,
    EncryptedPhone,
    EncryptedString,
    EncryptedTaxId,
)

RAW = {
    "name": "Şükrü Öztürk",
    "national_id": "100 000 001 46",
    "tax_id": "1234567890",
    "phone": "0532 123 45 67",
    "email": "şükrü.öztürk@Örnek.com.tr",
    "address": "Çiçek Mah. Gül Sk. No:7 D:2, 34394 Şişli/İstanbul",
    "note": "İğdır'da ılık bir gün; ÇĞİÖŞÜ",
}
CANON = {
    "name": "Şükrü Öztürk",
    "national_id": "10000000146",
    "tax_id": "1234567890",
    "phone": "+905321234567",
    "email": "şükrü.öztürk@örnek.com.tr",
    "address": "Çiçek Mah. Gül Sk. No:7 D:2, 34394 Şişli/İstanbul",  # as written
    "note": "İğdır'da ılık bir gün; ÇĞİÖŞÜ",
}
KIND = {"name": "name", "national_id": "national_id", "tax_id": "tax_id", "phone": "phone",
        "email": "email", "address": "address", "note": "text"}
PII = tuple(CANON)
SPECS = ["reveal", "redact", "null", "partial:1:2", "partial:0:3", "email", "city",
         "city:province", "pseudonym", "pseudonym:bi", "stars"]


def stars(value: str) -> str:
    """A custom mask (registered by name)."""
    return "★" * 3


def make_model(guard):
    """``customers`` with one encrypted column of every kind (and a plain one)."""
    class Base(DeclarativeBase):
        pass

    class Customer(Base):
        __tablename__ = "customers"
        id = mapped_column(Integer, primary_key=True)
        status = mapped_column(String(20), default="new")
        name = mapped_column(EncryptedString(guard, kind="name"))
        national_id = mapped_column(EncryptedNationalId(guard, searchable=True))
        tax_id = mapped_column(EncryptedTaxId(guard))
        phone = mapped_column(EncryptedPhone(guard))
        email = mapped_column(EncryptedEmail(guard))
        address = mapped_column(EncryptedAddress(guard))
        note = mapped_column(EncryptedString(guard))

    return Base, Customer


def models(guard):
    """``customers`` with four typed encrypted columns (Mapped annotations)."""
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


def policy_all(spec: str) -> MaskingPolicy:
    """Role 'r' gets ``spec`` for every kind (through the default: kind-specific masks
    fail closed on other kinds)."""
    return MaskingPolicy.from_dict({"default": spec}, masks={"stars": stars})


def raw_rows(engine) -> list[tuple]:
    """Every stored byte of the ``make_model`` table."""
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(
            "SELECT id, name, national_id, national_id_bidx, tax_id, phone, email, "
            "address, note FROM customers ORDER BY id"))]


def raw(engine, column) -> bytes | None:
    """The stored bytes of one column of the ``models`` table (one row)."""
    with engine.connect() as conn:
        value = conn.execute(text(f"SELECT {column} FROM customers")).scalar()
    return None if value is None else bytes(value)
