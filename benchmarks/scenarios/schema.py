"""The benchmark table in its forms: plaintext, piiguard, a hand-written AES-GCM
TypeDecorator (the floor), sqlalchemy-utils.

Three PII columns (national ID, phone, ~80-character address) and two plain ones
(segment, score), with the id given by the data (no sequence round trips). Each call
builds a fresh declarative base, so every system and every size gets its own table.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

PII = ("national_id", "phone", "address")


def _model(name: str, table: str, columns: dict[str, Any]):
    class Base(DeclarativeBase):
        pass

    attrs: dict[str, Any] = {
        "__tablename__": table,
        "id": mapped_column(Integer, primary_key=True, autoincrement=False),
        "segment": mapped_column(String(16)),
        "score": mapped_column(Integer),
        "__annotations__": {"id": Mapped[int], "segment": Mapped[str], "score": Mapped[int],
                            **{c: Mapped[str] for c in PII}},
    }
    attrs.update(columns)
    return type(name, (Base,), attrs)


def plaintext_model(table: str = "customers_plain", *, index: bool = False):
    return _model("PlainCustomer", table, {
        "national_id": mapped_column(String(11), index=index),
        "phone": mapped_column(String(16)),
        "address": mapped_column(String(255)),
    })


class AesGcmText:
    """The floor: a hand-written AES-GCM ``TypeDecorator`` (random 12-byte nonce from
    ``os.urandom``, the key schedule built once, no validation, no key management),
    what an application would write by hand in a few lines."""

    def __new__(cls):
        import os

        from sqlalchemy import LargeBinary
        from sqlalchemy.types import TypeDecorator

        from benchmarks.scenarios.peers import aesgcm

        aead = aesgcm()
        urandom = os.urandom

        class AesGcm(TypeDecorator):
            impl = LargeBinary
            cache_ok = True

            def process_bind_param(self, value, dialect):
                if value is None:
                    return None
                nonce = urandom(12)
                return nonce + aead.encrypt(nonce, value.encode(), None)

            def process_result_value(self, value, dialect):
                if value is None:
                    return None
                value = bytes(value)
                return aead.decrypt(value[:12], value[12:], None).decode()
        return AesGcm()


def aesgcm_model(table: str = "customers_aes"):
    """The table with the hand-written AES-GCM TypeDecorator (the floor) on the three
    PII columns."""
    return _model("AesCustomer", table, {c: mapped_column(AesGcmText()) for c in PII})


def sqlalchemy_utils_model(table: str = "customers_sau"):
    from benchmarks.scenarios.peers import sqlalchemy_utils_type

    return _model("SauCustomer", table, {c: mapped_column(sqlalchemy_utils_type())
                                         for c in PII})


def piiguard_available() -> str | None:
    try:
        import piiguard.sqlalchemy  # noqa: F401
    except ImportError as exc:
        return f"piiguard.sqlalchemy (column types) not importable yet: {exc}"
    return None


def piiguard_model(guard, table: str = "customers_pg", *, searchable: bool = False,
                   text_form: bool = False):
    """Raises ImportError while the column types have not landed."""
    from piiguard.sqlalchemy import EncryptedAddress, EncryptedNationalId, EncryptedPhone

    opts: dict[str, Any] = {"text": True} if text_form else {}
    return _model("PgCustomer", table, {
        "national_id": mapped_column(EncryptedNationalId(guard, searchable=searchable, **opts)),
        "phone": mapped_column(EncryptedPhone(guard, **opts)),
        "address": mapped_column(EncryptedAddress(guard, **opts)),
    })


def piiguard_unvalidated_model(guard, table: str = "customers_pgu"):
    """The same encryption (kinds, padding, binary storage) through ``EncryptedString``,
    which only NFC-normalises: a diagnostic that separates validation cost from the
    cost of encryption. Not a way to use piiguard (it would skip the checks)."""
    from piiguard.sqlalchemy import EncryptedString

    return _model("PgUnvalidatedCustomer", table, {
        c: mapped_column(EncryptedString(guard, kind=c)) for c in PII})


def piiguard_tables(guard, *, text_form: bool = False, suffix: str = ""):
    return piiguard_model(guard, f"customers_pg{suffix}", text_form=text_form)


def column_type(model, column: str):
    """The piiguard column type object of ``model.column`` (what guard.columns holds)."""
    return model.__table__.c[column].type
