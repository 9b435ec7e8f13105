"""Typed encrypted columns: dates, datetimes, integers, decimals, JSON documents, bytes.

Each is an :class:`~piiguard.sqlalchemy.EncryptedString` whose value is written as one
canonical text before encryption and read back as its Python type after decryption
(:mod:`piiguard.validators.typed`), so the envelope, key scopes (``key_scope=``), row
binding (``bound_to=``), masking and rotation (``reencrypt``, ``verify``,
``encrypt-existing``) are those of text columns. A masked view is text, as for every
column (``[REDACTED]``; ``year`` shows a date's year); a revealed value is the Python
value.

======================  ====================  =========================================
column                  Python value          searchable (blind index, ``==``)
======================  ====================  =========================================
``EncryptedDate``       ``date``              yes
``EncryptedDateTime``   aware ``datetime``    yes (the instant: any offset, one UTC text)
``EncryptedInteger``    ``int``               yes
``EncryptedDecimal``    ``Decimal``           yes (``12.50 == 12.5``: normalised)
``EncryptedJSON``       JSON document         no (``ConfigurationError``)
``EncryptedBytes``      ``bytes``             yes
======================  ====================  =========================================

Datetimes: aware datetimes are stored in UTC and read back in UTC (``tzinfo=UTC``);
naive datetimes are refused (``InvalidFormatError``, rule ``timezone``).

>>> import datetime
>>> from sqlalchemy import Integer, create_engine, select
>>> from sqlalchemy.orm import DeclarativeBase, Session, mapped_column
>>> from piiguard import Guard, LocalKMS
>>> engine = create_engine("sqlite://")
>>> guard = Guard(kms=LocalKMS.generate()).bind(engine)
>>> class Base(DeclarativeBase): pass
>>> class Person(Base):
...     __tablename__ = "people"
...     id = mapped_column(Integer, primary_key=True)
...     born = mapped_column(EncryptedDate(guard, searchable=True))
...     prefs = mapped_column(EncryptedJSON(guard))
>>> Base.metadata.create_all(engine)
>>> with Session(engine) as s:
...     s.add(Person(id=1, born=datetime.date(1990, 1, 31), prefs={"lang": "tr"}))
...     s.commit()
...     p = s.scalars(select(Person).where(Person.born == datetime.date(1990, 1, 31))).one()
...     p.born, p.prefs
(datetime.date(1990, 1, 31), {'lang': 'tr'})
"""

from __future__ import annotations

import datetime
import decimal
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import Dialect

from piiguard.errors import AlreadyEncryptedError, DecryptionError, InvalidInputError
from piiguard.kinds import kind as kind_of
from piiguard.sqlalchemy.columns import EncryptedString

__all__ = [
    "EncryptedBytes",
    "EncryptedDate",
    "EncryptedDateTime",
    "EncryptedDecimal",
    "EncryptedInteger",
    "EncryptedJSON",
    "TypedEncrypted",
]


class TypedEncrypted(EncryptedString):
    """Base of the typed columns: the kind's ``*_text`` function writes the value, its
    ``*_value`` function reads it back (see the module docstring)."""

    _validates_kind = True
    _python_type: type = object

    @property
    def python_type(self) -> type:
        return self._python_type

    def result_processor(self, dialect: Dialect, coltype: Any) -> Any:
        inner = super().result_processor(dialect, coltype)
        decode: Callable[[str], Any] | None = kind_of(self._kind).decode
        assert decode is not None
        label = self.label

        def process(value: Any) -> Any:
            out = inner(value)
            if type(out) is not str:
                return out          # None, or a Sealed value (masking policy set)
            try:
                return decode(out)
            except InvalidInputError:
                pass
            raise DecryptionError(f"decrypted value is not a stored {self._kind}",
                                  column=label, operation="decrypt")
        return process


class EncryptedDate(TypedEncrypted):
    """A ``datetime.date``, stored encrypted as ``YYYY-MM-DD``; searchable."""

    _kind = "date"
    _python_type = datetime.date


class EncryptedDateTime(TypedEncrypted):
    """An aware ``datetime.datetime``, stored encrypted in UTC (naive ones refused)."""

    _kind = "datetime"
    _python_type = datetime.datetime


class EncryptedInteger(TypedEncrypted):
    """An ``int``, stored encrypted (padded: the length would tell the magnitude)."""

    _kind = "integer"
    _python_type = int


class EncryptedDecimal(TypedEncrypted):
    """A ``decimal.Decimal`` (scale kept), stored encrypted; searched normalised."""

    _kind = "decimal"
    _python_type = decimal.Decimal


class EncryptedJSON(TypedEncrypted):
    """A JSON document (``dict``, ``list`` …), stored encrypted as compact JSON with
    sorted keys; not searchable."""

    _kind = "json"
    _python_type = object


class _BytesIn:
    """Bytes on their way to an :class:`EncryptedBytes` column (raw bytes given to an
    encrypted column are otherwise taken for an envelope and refused)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __bytes__(self) -> bytes:
        return self.data

    def __repr__(self) -> str:
        return "_BytesIn(<redacted>)"


class EncryptedBytes(TypedEncrypted):
    """``bytes``, stored encrypted (as base64 text inside the envelope). Bytes that are
    already a piiguard envelope are refused (never encrypted twice)."""

    _kind = "bytes"
    _python_type = bytes

    def bind_processor(self, dialect: Dialect) -> Any:
        inner = super().bind_processor(dialect)
        st = self.attached()

        def process(value: Any) -> Any:
            if isinstance(value, (bytes, bytearray, memoryview)):
                data = bytes(value)
                if st.cipher.is_envelope(data):
                    raise AlreadyEncryptedError("refusing to encrypt a value that is "
                                                "already an envelope", column=st.label,
                                                operation="encrypt")
                value = _BytesIn(data)
            return inner(value)
        return process
