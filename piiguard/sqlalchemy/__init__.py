"""Encrypted column types for SQLAlchemy 2.x, with blind-index equality search.

Declare a column and its values are validated, canonicalised and encrypted on the way
in and decrypted on the way out; the database only ever sees envelopes (and, with
``searchable=True``, a keyed HMAC in a sibling ``<column>_bidx`` column)::

    >>> from sqlalchemy import Integer, create_engine, select
    >>> from sqlalchemy.orm import DeclarativeBase, Session, mapped_column
    >>> from piiguard import Guard, LocalKMS
    >>> guard = Guard(kms=LocalKMS.generate())
    >>> class Base(DeclarativeBase):
    ...     pass
    >>> class Customer(Base):
    ...     __tablename__ = "customers"
    ...     id = mapped_column(Integer, primary_key=True)
    ...     national_id = mapped_column(EncryptedNationalId(guard, searchable=True))
    ...     phone = mapped_column(EncryptedPhone(guard))
    >>> engine = create_engine("sqlite://")
    >>> Base.metadata.create_all(engine)
    >>> _ = guard.bind(engine)
    >>> with Session(engine) as session:
    ...     session.add(Customer(national_id="100 000 001 46", phone="0532 123 45 67"))
    ...     session.commit()
    ...     found = session.scalars(select(Customer).where(
    ...         Customer.national_id == "10000000146")).one()
    ...     found.national_id, found.phone
    ('10000000146', '+905321234567')
    >>> Customer.phone == "+905321234567"
    Traceback (most recent call last):
    ...
    piiguard.errors.ConfigurationError: customers.phone is not searchable: every encryption
    is randomised, so == can never match; declare it with searchable=True
    column=customers.phone operation=compare

Storage is binary by default (``BYTEA`` on PostgreSQL, ``BLOB`` on SQLite, ``VARBINARY(n)``
or ``LONGBLOB`` on MySQL/MariaDB); ``text=True`` stores the ``pg1:`` text envelope in a
``VARCHAR``/``TEXT`` column instead. See ``docs/columns.md`` for the whole story:
blind-index sizing, masking on read, per-tenant key scopes, Alembic and async engines.

The package, one concern per module (each imports only modules above it)::

    _sa_private  every private SQLAlchemy API used, behind small functions
    storage      Ciphertext, BlindIndex: guard-free storage types (what migrations import)
    sealed       Sealed: a value read while a masking policy is set
    binding      RowBinding: the row values a key_scope= / bound_to= column is bound to,
                 and the SELECT expression that reads them with the value
    state        ColumnSpec (built) and AttachedColumn (attached to a table)
    processors   the per-value bind / result processors (hot paths)
    seams        what leaves a failed statement: errors without values, frames cleared
    comparator   ==, != and in_() through the blind index (searches admitted by the policy)
    rows         writes of row-bound columns: values bound to, and moved with, their row
    writes       write-back refusal: write rules, masked views compared as values, clears
    reveals      durable audit: reveals of one ORM result recorded in one write
    orm          attributes that render the masked view; ORM update listeners;
                 SQLModel table models (their pydantic side: piiguard.pydantic.tables)
    alembic      autogenerate support (imported only once Alembic is loaded)
    hooks        the process-wide listeners (Engine, Mapper, Alembic), documented there
    columns      EncryptedString and its kind subclasses
    typed        the typed columns: EncryptedDate, EncryptedDateTime, EncryptedInteger,
                 EncryptedDecimal, EncryptedJSON, EncryptedBytes
    lookup       lookup(), ensure_scope_key(), encrypted_columns()
"""

from __future__ import annotations

from piiguard.crypto.blind_index import recommend_bits
from piiguard.sqlalchemy import hooks
from piiguard.sqlalchemy.columns import (
    EncryptedAddress,
    EncryptedEmail,
    EncryptedNationalId,
    EncryptedPhone,
    EncryptedString,
    EncryptedTaxId,
)
from piiguard.sqlalchemy.lookup import encrypted_columns, ensure_scope_key, lookup
from piiguard.sqlalchemy.sealed import Sealed
from piiguard.sqlalchemy.storage import BlindIndex, Ciphertext
from piiguard.sqlalchemy.typed import (
    EncryptedBytes,
    EncryptedDate,
    EncryptedDateTime,
    EncryptedDecimal,
    EncryptedInteger,
    EncryptedJSON,
)

__all__ = [
    "BlindIndex",
    "Ciphertext",
    "EncryptedAddress",
    "EncryptedBytes",
    "EncryptedDate",
    "EncryptedDateTime",
    "EncryptedDecimal",
    "EncryptedEmail",
    "EncryptedInteger",
    "EncryptedJSON",
    "EncryptedNationalId",
    "EncryptedPhone",
    "EncryptedString",
    "EncryptedTaxId",
    "Sealed",
    "encrypted_columns",
    "ensure_scope_key",
    "lookup",
    "recommend_bits",
]

# The public classes live here, whichever module defines them: Alembic renders a column
# type as f"{type(t).__module__}.{t!r}", and existing migrations say
# piiguard.sqlalchemy.Ciphertext(...) / piiguard.sqlalchemy.BlindIndex(...).
for _public in (BlindIndex, Ciphertext, EncryptedAddress, EncryptedEmail, EncryptedNationalId,
                EncryptedPhone, EncryptedString, EncryptedTaxId, Sealed, EncryptedBytes,
                EncryptedDate, EncryptedDateTime, EncryptedDecimal, EncryptedInteger,
                EncryptedJSON):
    _public.__module__ = __name__
del _public

hooks.install()
hooks.register_alembic_if_loaded()
