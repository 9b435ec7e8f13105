"""Storage types of encrypted columns, without encryption and without a Guard.

This is what a migration imports and what raw access sees: :class:`Ciphertext` makes the
same DDL as an encrypted column type and passes stored values through untouched;
:class:`BlindIndex` is the type of a ``<column>_bidx`` sibling. Nothing here needs a key.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import LargeBinary, String, Text
from sqlalchemy.dialects import mysql as _mysql
from sqlalchemy.dialects import postgresql as _pg
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

from piiguard.crypto.envelope import TEXT_PREFIX
from piiguard.sqlalchemy._sa_private import replace_impl

__all__ = ["BlindIndex", "Ciphertext", "storage_impl"]


def _is_mysql(dialect: Dialect) -> bool:
    return dialect.name in ("mysql", "mariadb")


def _text_length(max_bytes: int | None) -> int | None:
    # "pg1:" + base64url without padding: ceil(4n / 3) characters.
    return None if max_bytes is None else len(TEXT_PREFIX) + -(-max_bytes * 4 // 3)


def storage_impl(dialect: Dialect, text: bool, max_bytes: int | None) -> TypeEngine[Any]:
    """The dialect's column type for envelopes of at most ``max_bytes`` (None: unbounded),
    binary or (``text``) the ``pg1:`` text form."""
    if text:
        n = _text_length(max_bytes)
        if _is_mysql(dialect):
            return _mysql.VARCHAR(n, charset="ascii", collation="ascii_bin") if n \
                else _mysql.LONGTEXT(charset="ascii", collation="ascii_bin")
        return String(n) if n else Text()
    if dialect.name == "postgresql":
        return _pg.BYTEA()
    if _is_mysql(dialect):
        return _mysql.VARBINARY(max_bytes) if max_bytes else _mysql.LONGBLOB()
    return LargeBinary()


class Ciphertext(TypeDecorator):
    """The storage type of an encrypted column, without encryption and without a Guard.

    Migrations and raw access use it: it makes the same DDL as the encrypted type
    (``BYTEA`` / ``BLOB`` / ``VARBINARY(n)`` / ``LONGBLOB``, or with ``text=True``
    ``VARCHAR(n)`` / ``TEXT``) and passes stored values through untouched. Alembic
    renders every encrypted column as one of these, so a migration never needs a key.

    >>> Ciphertext(max_bytes=44)
    Ciphertext(max_bytes=44)
    >>> from sqlalchemy.dialects import mysql, postgresql
    >>> Ciphertext(max_bytes=44).load_dialect_impl(mysql.dialect())
    VARBINARY(length=44)
    >>> Ciphertext(text=True).load_dialect_impl(postgresql.dialect())
    Text()
    """

    impl = LargeBinary
    cache_ok = True

    def __init__(self, *, text: bool = False, max_bytes: int | None = None) -> None:
        super().__init__()
        self.text = bool(text)
        self.max_bytes = max_bytes
        if text:
            replace_impl(self, Text())

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        return storage_impl(dialect, self.text, self.max_bytes)

    def __repr__(self) -> str:
        args = []
        if self.text:
            args.append("text=True")
        if self.max_bytes is not None:
            args.append(f"max_bytes={self.max_bytes}")
        return f"Ciphertext({', '.join(args)})"

    @property
    def python_type(self) -> type:
        return str if self.text else bytes


class BlindIndex(TypeDecorator):
    """Storage type of a blind-index sibling column: ``4 + ceil(bits/8)`` bytes.

    Values are bytes, passed to the driver as they are (no per-value processing).

    >>> BlindIndex(bits=256), BlindIndex(bits=20).length
    (BlindIndex(bits=256), 7)
    """

    impl = LargeBinary
    cache_ok = True

    def __init__(self, bits: int = 256) -> None:
        super().__init__()
        self.bits = int(bits)
        self.length = 4 + -(-self.bits // 8)

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return _pg.BYTEA()
        if _is_mysql(dialect):
            return _mysql.VARBINARY(self.length)
        return LargeBinary(self.length)

    def bind_processor(self, dialect: Dialect) -> None:
        return None

    def result_processor(self, dialect: Dialect, coltype: Any) -> Any:
        def process(value: Any) -> bytes | None:
            return value if value is None or type(value) is bytes else bytes(value)
        return process

    def literal_processor(self, dialect: Dialect) -> None:
        return None

    def __repr__(self) -> str:
        return f"BlindIndex(bits={self.bits})"

    @property
    def python_type(self) -> type:
        return bytes
