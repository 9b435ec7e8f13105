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
    piiguard.errors.ConfigurationError: customers.phone is not searchable: every encryption is randomised, so == can never match; declare it with searchable=True column=customers.phone operation=compare

Storage is binary by default (``BYTEA`` on PostgreSQL, ``BLOB`` on SQLite, ``VARBINARY(n)``
or ``LONGBLOB`` on MySQL/MariaDB); ``text=True`` stores the ``pg1:`` text envelope in a
``VARCHAR``/``TEXT`` column instead. See ``docs/columns.md`` for the whole story:
blind-index sizing, masking on read, per-tenant key scopes, Alembic and async engines.
"""

from __future__ import annotations

import sys
import threading
import unicodedata
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import Column, LargeBinary, String, Text, bindparam, event, select
from sqlalchemy.dialects import mysql as _mysql
from sqlalchemy.dialects import postgresql as _pg
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Mapper
from sqlalchemy.orm.attributes import (
    InstrumentedAttribute,
    instance_dict,
    instance_state,
)
from sqlalchemy.schema import ColumnDefault
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import BindParameter, ClauseElement
from sqlalchemy.types import TypeDecorator

from piiguard.crypto.blind_index import recommend_bits
from piiguard.crypto.envelope import (
    BINARY_OVERHEAD,
    TEXT_PREFIX,
    decode_text,
    encode_text,
    is_binary_shape,
    key_id_of,
    looks_like_envelope,
)
from piiguard.crypto.padding import bucket_size
from piiguard.errors import (
    AlreadyEncryptedError,
    ConfigurationError,
    DecryptionError,
    EnvelopeFormatError,
    InvalidFormatError,
    InvalidInputError,
    KeyDestroyedError,
    MaskedValueError,
    PIIGuardError,
)
from piiguard.masking.context import current_role

__all__ = [
    "BlindIndex",
    "Ciphertext",
    "EncryptedAddress",
    "EncryptedEmail",
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

#: Kinds a column can declare (the masking policy's kinds).
KINDS = ("national_id", "tax_id", "phone", "address", "email", "name", "text")
#: Blind indexes at least this wide are treated as exact (a false match among N rows
#: has probability about N / 2**bits); narrower ones need a re-check after decryption.
EXACT_INDEX_BITS = 128
_INDEX_SUFFIX = "_bidx"
#: Longest canonical value of each bounded kind, in UTF-8 bytes.
_MAX_PLAIN_BYTES = {"national_id": 11, "tax_id": 10, "phone": 16, "email": 254 * 4,
                    "address": 500 * 4}
_FREE_TEXT = frozenset({"address", "email", "name", "text"})


# ---------------------------------------------------------------------------------------
# storage types (guard-free: what migrations and raw access see)
# ---------------------------------------------------------------------------------------
def _is_mysql(dialect) -> bool:
    return dialect.name in ("mysql", "mariadb")


def _text_length(max_bytes: int | None) -> int | None:
    # "pg1:" + base64url without padding: ceil(4n / 3) characters.
    return None if max_bytes is None else len(TEXT_PREFIX) + -(-max_bytes * 4 // 3)


def _storage_impl(dialect, text: bool, max_bytes: int | None):
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
            self.impl = self.impl_instance = Text()

    def load_dialect_impl(self, dialect):
        return _storage_impl(dialect, self.text, self.max_bytes)

    def __repr__(self) -> str:
        args = []
        if self.text:
            args.append("text=True")
        if self.max_bytes is not None:
            args.append(f"max_bytes={self.max_bytes}")
        return f"Ciphertext({', '.join(args)})"

    @property
    def python_type(self):
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

    def load_dialect_impl(self, dialect):
        if dialect.name == "postgresql":
            return _pg.BYTEA()
        if _is_mysql(dialect):
            return _mysql.VARBINARY(self.length)
        return LargeBinary(self.length)

    def bind_processor(self, dialect):
        return None

    def result_processor(self, dialect, coltype):
        def process(value):
            return value if value is None or type(value) is bytes else bytes(value)
        return process

    def literal_processor(self, dialect):
        return None

    def __repr__(self) -> str:
        return f"BlindIndex(bits={self.bits})"

    @property
    def python_type(self):
        return bytes


# ---------------------------------------------------------------------------------------
# masking glue (piiguard.masking.view is written in parallel; until it exists, a minimal
# implementation of the same interface stands in)
# ---------------------------------------------------------------------------------------
class _FallbackMaskedStr(str):
    """Stand-in for ``piiguard.masking.view.MaskedStr`` until that module exists."""

    __slots__ = ()


_view_cache: list = []


def _view_module():
    if not _view_cache:
        try:
            from piiguard.masking import view as mod
            if not (callable(getattr(mod, "render", None)) and hasattr(mod, "MaskedStr")):
                mod = None
        except ImportError:
            mod = None
        _view_cache.append(mod)
    return _view_cache[0]


def _masked_types() -> tuple[type, ...]:
    mod = _view_module()
    return (_FallbackMaskedStr, mod.MaskedStr) if mod is not None else (_FallbackMaskedStr,)


def _fallback_render(guard, *, kind, column, plaintext_fn, row_key=None, key_id=None):
    """The ``render`` contract of COMMON.md section 1, kept private and minimal."""
    policy = guard.policy
    if policy is None:
        return plaintext_fn()
    mask = policy.mask_for(kind=kind, column=column, role=current_role())
    if getattr(mask, "name", None) == "reveal":
        value = plaintext_fn()
        guard.audit.emit("reveal", column=column, count=1, key_id=key_id,
                         row_keys=None if row_key is None else [row_key])
        return value
    out = mask(plaintext_fn() if mask.needs_plaintext else None, kind=kind)
    return None if out is None else _FallbackMaskedStr(out)


def _render(guard, **kw):
    mod = _view_module()
    if mod is not None:
        return mod.render(guard, **kw)
    return _fallback_render(guard, **kw)


def _null_when_destroyed(process):
    """Wrap a result processor so values under a destroyed key read as NULL."""
    def wrapped(value):
        try:
            return process(value)
        except KeyDestroyedError:
            return None
    return wrapped


# ---------------------------------------------------------------------------------------
# Sealed: what a read returns while a masking policy is set
# ---------------------------------------------------------------------------------------
class Sealed:
    """A stored encrypted value, read while a masking policy is set.

    It holds the envelope and the column it came from, and decrypts only when the view
    for the role in effect needs the plaintext (a ``redact`` or ``null`` role never
    decrypts). ``str()``, ``format()`` and ``==`` with a string use that view, worked
    out at the moment they are called; ``repr()`` never shows a value. ORM attributes
    of encrypted columns unwrap it for you (``customer.national_id`` is the view).
    Written back to the same column unchanged, the envelope is reused byte for byte.
    """

    __slots__ = ("_col", "_legacy", "stored")

    def __init__(self, stored: bytes | str, coltype: EncryptedString, *,
                 legacy: bool = False) -> None:
        self.stored = stored
        self._col = coltype._state
        self._legacy = legacy

    @property
    def column(self) -> str:
        """``table.column`` the value was read from."""
        return self._col.label

    @property
    def kind(self) -> str:
        return self._col.kind

    @property
    def key_id(self) -> int | None:
        """The DEK id named by the envelope (None for legacy plaintext)."""
        if self._legacy:
            return None
        return self._col.stored_key_id(self.stored)

    def _plaintext(self) -> str:
        if self._legacy:
            return self.stored if isinstance(self.stored, str) else self.stored.decode()
        return self._col.decrypt(self.stored)

    def view(self, *, row_key: Any = None) -> str | None:
        """The value as the role in effect may see it (plaintext, a MaskedStr, or None)."""
        col = self._col
        try:
            return _render(col.guard, kind=col.kind, column=col.label,
                           plaintext_fn=self._plaintext, row_key=row_key,
                           key_id=self.key_id)
        except KeyDestroyedError:
            if col.on_destroyed == "null":   # crypto-shredded, read as NULL by option
                return None
            raise

    def __str__(self) -> str:
        v = self.view()
        if v is None:   # mask "null": an empty *masked* string, never storable
            return _masked_types()[-1]("")
        return v

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)

    def __repr__(self) -> str:
        return f"Sealed(column={self._col.label!r}, key_id={self.key_id})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sealed):
            return other._col is self._col and other.stored == self.stored
        if isinstance(other, str):
            return self.view() == other
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        r = self.__eq__(other)
        return r if r is NotImplemented else not r

    def __hash__(self) -> int:
        return hash(self.stored)

    def __reduce__(self):
        raise TypeError("a Sealed value cannot be pickled (it refers to its Guard)")


# ---------------------------------------------------------------------------------------
# per-column state, made when the type is attached to a table
# ---------------------------------------------------------------------------------------
class _Pending:
    """A value on its way to a key-scoped column, with the DEK scope of its row."""

    __slots__ = ("scope", "value")

    def __init__(self, value: Any, scope: str) -> None:
        self.value = value
        self.scope = scope

    def __repr__(self) -> str:
        return f"_Pending(<redacted>, scope={self.scope!r})"


def _text_canonical(value: str) -> str:
    if type(value) is not str and not isinstance(value, str):
        raise InvalidFormatError("type", detail="text must be a string")
    return value if value.isascii() else unicodedata.normalize("NFC", value)


def _with_label(exc: PIIGuardError, label: str) -> PIIGuardError:
    """``exc`` naming ``label`` in its message; a refused value's error keeps no
    frames (they hold the value)."""
    exc.with_column(label)
    return exc.with_traceback(None) if isinstance(exc, InvalidInputError) else exc


class _ColumnState:
    """Everything one encrypted column needs, worked out once at attach time."""

    def __init__(self, owner: EncryptedString, column: Column) -> None:
        self.owner = weakref.ref(owner)
        self.column = column
        self.table = None
        self.guard = owner.guard
        self.kind = owner.kind
        self.text_form = owner.text
        self.allow_plaintext = owner.allow_plaintext
        self.on_destroyed = owner.on_destroyed
        self.label = f"?.{column.name}" if column.name else "?"
        self.cipher = None
        self.index = None
        self._index_column = None
        self.exact = True
        self.awaiting_index = False
        self.key_scope = owner.key_scope
        self._scope_column = None
        self.validate = owner._make_validator()

    # -- attach ----------------------------------------------------------------------------
    def attach(self, table) -> None:
        owner = self.owner()
        col = self.column
        if col.primary_key or col.unique:
            raise ConfigurationError(
                "an encrypted column cannot be a primary key or unique: every encryption "
                "is randomised (make it searchable and put a unique index on its blind "
                "index column instead)", column=f"{table.name}.{col.name}")
        self.table = table
        self.label = f"{table.name}.{col.name}"
        guard = self.guard
        self.cipher = guard.field(table.name, col.name, padded=owner.padded)
        guard.register_scope("dek", self.cipher.scope)
        if owner.searchable:
            self.index = guard.blind_index(table.name, col.name, bits=owner.index_bits)
            self.exact = owner.index_bits >= EXACT_INDEX_BITS
            guard.register_scope("index", self.index.scope)
            self.index_column = self._add_index_column(table, owner.index_bits)
        if self.key_scope is not None or self.index is not None:
            _plan_for(table).add(self)
            _install_engine_hook()
        guard.columns.append(owner)
        if not _alembic_registered and "alembic" in sys.modules:
            _register_alembic()

    def _add_index_column(self, table, bits: int):
        name = self.column.name + _INDEX_SUFFIX
        existing = table.c.get(name)
        if existing is not None:
            return self._adopt_index_column(existing)
        if getattr(self.owner(), "_adopt_index", False):
            # A copy of a whole table (Table.to_metadata(), alembic): the copy of the
            # index column comes after this one and is adopted when it arrives
            # (_on_index_column_attach); if it never does, index_column adds one.
            self.awaiting_index = True
            return None
        return self._new_index_column(table, bits)

    def _new_index_column(self, table, bits: int):
        name = self.column.name + _INDEX_SUFFIX
        idx_col = Column(name, BlindIndex(bits), nullable=True, index=True,
                         default=_index_default(self),
                         info={"piiguard": "blind_index", "of": self.column.name})
        event.listen(idx_col, "after_parent_attach", _on_index_column_attach, propagate=True)
        table.append_column(idx_col)
        return idx_col

    @property
    def index_column(self):
        if self.awaiting_index:
            existing = self.table.c.get(self.column.name + _INDEX_SUFFIX)
            self._index_column = (self._adopt_index_column(existing) if existing is not None
                                  else self._new_index_column(self.table, self.index.bits))
            self.awaiting_index = False
        return self._index_column

    @index_column.setter
    def index_column(self, col) -> None:
        self._index_column = col

    def _adopt_index_column(self, col):
        if not isinstance(col.type, BlindIndex):
            raise ConfigurationError(f"{col.table.name}.{col.name} already exists and is "
                                     "not a blind index column", column=self.label)
        ColumnDefault(_index_default(self))._set_parent(col)
        col._reset_memoizations()
        self.awaiting_index = False
        return col

    # -- scope -----------------------------------------------------------------------------
    @property
    def scope_column(self):
        if self.key_scope is None:
            return None
        if self._scope_column is None:
            ks = self.key_scope
            cols = self.table.c
            if isinstance(ks, str):
                col = cols.get(ks)
            else:
                inner = getattr(ks, "column", ks)          # MappedColumn -> Column
                inner = getattr(inner, "__clause_element__", lambda: inner)()
                col = next((c for c in cols if c is inner), None)
                if col is None and getattr(inner, "key", None):
                    col = cols.get(inner.key)
            if col is None:
                raise ConfigurationError("key_scope names no column of this table",
                                         column=self.label)
            self._scope_column = col
        return self._scope_column

    def scope_for(self, scope_value: Any) -> str:
        """DEK scope of a row whose key-scope column holds ``scope_value``."""
        if scope_value is None:
            raise ConfigurationError("the key scope column of this row is NULL",
                                     column=self.label, operation="encrypt")
        return f"{self.table.name}:{scope_value}"

    # -- values ----------------------------------------------------------------------------
    def canonical(self, value: Any) -> str:
        if type(value) is not str:  # a plain str (the common case) is none of these
            if value is None:
                raise InvalidFormatError("type", column=self.label, detail="value is NULL")
            if isinstance(value, _masked_types()):
                raise MaskedValueError("masked", column=self.label,
                                       detail="a masked view cannot be written or searched")
            if isinstance(value, Sealed):
                if value._col is not self:
                    raise MaskedValueError("sealed", column=self.label,
                                           detail="a sealed value of another column")
                return value._plaintext()
        try:
            return self.validate(value)
        except InvalidInputError as exc:
            raise exc.with_column(self.label).with_traceback(None) from None

    def encrypt(self, canonical: str, scope: str | None = None) -> bytes | str:
        try:
            blob = self.cipher.encrypt_str(canonical, scope=scope)
        except PIIGuardError as exc:
            raise _with_label(exc, self.label) from None
        return encode_text(blob) if self.text_form else blob

    def encrypt_value(self, value: Any, *, scope_value: Any = None) -> bytes | str:
        if isinstance(value, _Pending):
            value, scope = value.value, value.scope
        else:
            scope = None
            if self.key_scope is not None:
                if scope_value is None:
                    raise ConfigurationError(
                        "this column has a per-row key scope: the row's key scope value "
                        "is needed to encrypt", column=self.label, operation="encrypt")
                scope = self.scope_for(scope_value)
        if isinstance(value, Sealed) and value._col is self and not value._legacy \
                and scope is None:
            return self._stored_form(value.stored)
        return self.encrypt(self.canonical(value), scope)

    def _stored_form(self, stored):
        if self.text_form:
            return stored if isinstance(stored, str) else encode_text(bytes(stored))
        return decode_text(stored) if isinstance(stored, str) else stored

    def is_envelope(self, stored) -> bool:
        if isinstance(stored, str):
            return stored.startswith(TEXT_PREFIX) and looks_like_envelope(stored)
        return is_binary_shape(stored)

    def decrypt(self, stored) -> str:
        try:
            if isinstance(stored, str):
                if self.allow_plaintext and not self.is_envelope(stored):
                    return stored
                if not self.text_form and not stored.startswith(TEXT_PREFIX):
                    raise EnvelopeFormatError("stored value is not a piiguard envelope",
                                              column=self.label, operation="decrypt")
                return self.cipher.decrypt_text(stored)
            if type(stored) is not bytes:
                stored = bytes(stored)
            if self.allow_plaintext and not self.is_envelope(stored):
                return stored.decode("utf-8")
            return self.cipher.decrypt(stored).decode("utf-8")
        except PIIGuardError as exc:
            raise _with_label(exc, self.label) from None
        except UnicodeDecodeError:
            raise DecryptionError("decrypted value is not UTF-8", column=self.label,
                                  operation="decrypt") from None

    def stored_key_id(self, stored) -> int:
        try:
            return key_id_of(stored)
        except EnvelopeFormatError as exc:
            raise exc.with_column(self.label) from None

    def index_for(self, canonical: str) -> bytes | None:
        return None if self.index is None else self.index.compute(canonical)

    def index_of_value(self, value: Any) -> bytes | None:
        """Blind index of a value being written (any accepted input form)."""
        if value is None or self.index is None:
            return None
        if isinstance(value, _Pending):
            value = value.value
        if isinstance(value, Sealed) and value._col is self and not value._legacy:
            canonical = value._plaintext()
        else:
            canonical = self.canonical(value)
        return self.index.compute(canonical)

    def candidates_of(self, canonical: Iterable[str]) -> list[bytes]:
        """Blind index values to look for: every canonical value under every usable
        index key (the active one and, during a rotation, the previous ones)."""
        out: list[bytes] = []
        for v in canonical:
            for c in self.index.candidates(v):
                if c not in out:
                    out.append(c)
        return out

    # -- processors ------------------------------------------------------------------------
    def bind_processor(self):
        slow = self._bind_slow
        if self.key_scope is not None:
            return slow
        # Validation and encryption fused into one call (FieldCipher.encryptor): this
        # runs once per value of every INSERT/UPDATE, so every call saved counts.
        encrypt = self.cipher.encryptor(
            self.validate, check_envelope=not self.owner()._canonical_never_envelope)
        label = self.label

        if self.text_form:
            def process(value):
                if value is None:
                    return None
                if type(value) is str:
                    try:
                        return encode_text(encrypt(value))
                    except PIIGuardError as exc:
                        raise _with_label(exc, label) from None
                return slow(value)
            return process

        def process(value):
            if value is None:
                return None
            if type(value) is str:
                try:
                    return encrypt(value)
                except PIIGuardError as exc:
                    raise _with_label(exc, label) from None
            return slow(value)
        return process

    def _bind_slow(self, value):
        if value is None:
            return None
        if isinstance(value, _Pending):
            return self.encrypt_value(value)
        if self.key_scope is not None:
            raise ConfigurationError(
                "this column has a per-row key scope, and the statement did not carry "
                "the row's scope value (write it together with the key scope column)",
                column=self.label, operation="encrypt")
        if isinstance(value, (bytes, bytearray, memoryview)):
            if self.is_envelope(bytes(value)):
                raise AlreadyEncryptedError("refusing to encrypt a value that is already "
                                            "an envelope", column=self.label,
                                            operation="encrypt")
            raise InvalidFormatError("type", column=self.label,
                                     detail="encrypted columns take text values")
        return self.encrypt_value(value)

    def result_processor(self):
        guard = self.guard
        decrypt = self.decrypt
        owner = self.owner()
        allow_plaintext = self.allow_plaintext

        def sealed(value):
            if allow_plaintext and not self.is_envelope(value):
                return Sealed(value, owner, legacy=True)
            return Sealed(value, owner)

        if self.text_form or allow_plaintext:
            def process(value):
                if value is None:
                    return None
                if guard._policy is not None:
                    return sealed(value)
                return decrypt(value)
            return _null_when_destroyed(process) if self.on_destroyed == "null" else process

        decrypt_bytes = self.cipher.decrypt        # labels its own errors

        def process(value):
            if value is None:
                return None
            if guard._policy is not None:
                return sealed(value)
            if type(value) is not bytes:
                return decrypt(value)
            try:
                return decrypt_bytes(value).decode("utf-8")
            except UnicodeDecodeError:
                return decrypt(value)               # raises the labelled error
        if self.on_destroyed == "null":
            return _null_when_destroyed(process)
        return process


# ---------------------------------------------------------------------------------------
# the column types
# ---------------------------------------------------------------------------------------
class _EncryptedComparator(TypeDecorator.Comparator):
    """``==`` / ``!=`` / ``in_`` through the blind index; other comparisons refused."""

    __slots__ = ()

    _REFUSED = frozenset({
        operators.lt, operators.le, operators.gt, operators.ge, operators.like_op,
        operators.not_like_op, operators.ilike_op, operators.not_ilike_op,
        operators.contains_op, operators.not_contains_op, operators.startswith_op,
        operators.not_startswith_op, operators.endswith_op, operators.not_endswith_op,
        operators.between_op, operators.not_between_op, operators.match_op,
        operators.not_match_op, operators.regexp_match_op, operators.not_regexp_match_op,
        operators.concat_op, operators.is_distinct_from, operators.is_not_distinct_from,
        operators.add, operators.sub,
    })

    def operate(self, op, *other, **kw):
        if op is operators.eq or op is operators.ne:
            value = other[0] if other else None
            if value is None or isinstance(value, ClauseElement) or hasattr(
                    value, "__clause_element__"):
                # IS NULL, and column-to-column comparisons (SQLAlchemy itself compares
                # columns this way, e.g. as dictionary keys)
                return super().operate(op, *other, **kw)
            return self._match([value], negate=op is operators.ne, exact_only=True)
        if op is operators.in_op or op is operators.not_in_op:
            values = other[0] if other else ()
            if not isinstance(values, (list, tuple, set, frozenset)):
                raise _compare_error(self._state(), "in_() on an encrypted column takes a "
                                     "list of plain values")
            return self._match(list(values), negate=op is operators.not_in_op,
                               exact_only=True)
        if op in self._REFUSED:
            raise _compare_error(self._state(), "encrypted values cannot be compared with "
                                 f"{getattr(op, '__name__', op)} (only ==, !=, in_() on a "
                                 "searchable column, and IS NULL)")
        return super().operate(op, *other, **kw)

    def _state(self) -> _ColumnState:
        st = self.expr.type._state
        if st is None or st.table is None:
            raise ConfigurationError("this encrypted column is not attached to a table",
                                     operation="compare")
        return st

    def _index_col(self, st: _ColumnState):
        table = getattr(self.expr, "table", None)
        if table is not None and table is not st.table and hasattr(table, "c"):
            col = table.c.get(st.index_column.key)   # an alias of the table
            if col is not None:
                return col
        return st.index_column

    def _match(self, values, *, negate: bool, exact_only: bool):
        st = self._state()
        if st.index is None:
            raise _compare_error(st, f"{st.label} is not searchable: every encryption is "
                                 "randomised, so == can never match; declare it with "
                                 "searchable=True")
        if exact_only and not st.exact:
            raise _compare_error(st, f"{st.label} has a truncated blind index (bits="
                                 f"{st.index.bits}): == would also match other values; use "
                                 "piiguard.sqlalchemy.lookup() (re-checks after decryption) "
                                 "or .blind_match() for the raw candidates")
        canonical = [st.canonical(v) for v in values]     # validated now, at build time
        col = self._index_col(st)
        # The index keys are looked up when the statement runs (inside SQLAlchemy's
        # greenlet with async engines), not when the expression is built.
        n = st.index.cached_key_count()
        slots = None if n is None else len(canonical) * (n + 1)
        if slots is None or slots > _MAX_INDEX_SLOTS:
            cands = bindparam(None, callable_=lambda: st.candidates_of(canonical),
                              expanding=True, type_=col.type)
            return col.not_in(cands) if negate else col.in_(cands)
        # Warm key cache: a fixed IN list of plain parameters, which SQLAlchemy compiles
        # once and caches (an expanding IN is re-rendered at every execution, about as
        # costly as the lookup itself on SQLite). One spare slot per value for an index
        # key rotation starting between building and running; spare slots repeat the
        # first candidate. More candidates than slots fails instead of missing rows.
        memo = _slot_memo(st, canonical)
        binds = [bindparam(None, callable_=_index_slot(memo, st.label, i, slots),
                           type_=col.type) for i in range(slots)]
        return col.not_in(binds) if negate else col.in_(binds)

    def blind_match(self, value):
        """Rows whose blind index matches ``value`` (or any of a list of values). With a
        truncated index this is a superset of the true matches: re-check them, or use
        :func:`lookup`."""
        values = value if isinstance(value, (list, tuple, set, frozenset)) else [value]
        return self._match(list(values), negate=False, exact_only=False)


#: Above this many parameters (values x usable index keys) a lookup uses an expanding IN.
_MAX_INDEX_SLOTS = 32


def _index_slot(memo: Callable[[], list[bytes]], label: str, i: int, slots: int):
    """Value of parameter ``i`` of a fixed-size blind-index IN list: candidate ``i``."""
    def value():
        cands = memo()
        if len(cands) > slots:
            raise ConfigurationError(
                "the blind-index keys changed while this statement waited to run (index "
                "key rotation): build the query again", column=label, operation="compare")
        return cands[i] if i < len(cands) else cands[0]
    return value


def _slot_memo(st: _ColumnState, canonical: list[str]) -> Callable[[], list[bytes]]:
    """The candidates of one statement, computed once per set of usable index keys and
    shared by its parameters."""
    # (usable-keys list, candidates) is replaced in one assignment, so concurrent
    # executions of the statement never pair one key set with another's candidates.
    box: list[tuple] = [(None, [])]

    def memo() -> list[bytes]:
        keys = st.index.usable_keys()
        seen = box[0]
        if seen[0] is keys:
            return seen[1]
        cands = st.candidates_of(canonical)
        box[0] = (keys, cands)
        return cands
    return memo


def _compare_error(st: _ColumnState, message: str) -> ConfigurationError:
    return ConfigurationError(message, column=st.label, operation="compare")


class EncryptedString(TypeDecorator):
    """A text column stored encrypted (AES-256-GCM envelope bound to table.column).

    - ``guard``: the application's :class:`~piiguard.Guard` (hashed by identity; no key
      material is ever an argument).
    - ``searchable``: keep a blind index in ``<column>_bidx`` for ``==`` / ``in_()``.
    - ``index_bits``: truncate the index (fewer bits leak less; see
      :func:`recommend_bits` and :func:`lookup`).
    - ``text``: store the ``pg1:`` text envelope in VARCHAR/TEXT instead of binary.
    - ``padded``: pad to size buckets before encryption (default on for free text).
    - ``key_scope``: name of a sibling column whose value picks the row's DEK scope
      (``"<table>:<value>"``): one tenant's or subject's data can be shredded alone.
    - ``kind``: the PII kind (masking policy rules are per kind).
    - ``allow_plaintext``: while migrating a plaintext column, read legacy plaintext
      values as they are (off by default: a non-envelope value is an error).
    - ``on_destroyed``: ``"raise"`` (default) makes a value under a crypto-shredded key
      raise :class:`~piiguard.errors.KeyDestroyedError`; ``"null"`` reads it as NULL,
      so a query over erased subjects still returns everyone else's rows.

    ``None`` stays NULL. Values are validated and canonicalised before encryption:
    invalid input raises a :class:`~piiguard.errors.InvalidInputError` (a
    ``ValueError``) naming ``table.column`` before anything reaches the database.
    """

    impl = LargeBinary
    cache_ok = True
    _kind = "text"
    #: True when every canonical value of this kind differs from an envelope in its
    #: first byte, so encryption need not check for one (the validator refuses them).
    _canonical_never_envelope = False
    coerce_to_is_types = (type(None),)
    comparator_factory = _EncryptedComparator

    def __init__(self, guard: Any, *, searchable: bool = False, index_bits: int = 256,
                 text: bool = False, padded: bool | None = None, key_scope: Any = None,
                 kind: str | None = None, allow_plaintext: bool = False,
                 on_destroyed: str = "raise") -> None:
        super().__init__()
        if on_destroyed not in ("raise", "null"):
            raise ConfigurationError("on_destroyed must be 'raise' or 'null'")
        for attr in ("field", "blind_index", "register_scope", "columns"):
            if not hasattr(guard, attr):
                raise ConfigurationError("an encrypted column needs a piiguard Guard")
        kind = kind or self._kind
        if kind not in KINDS:
            raise ConfigurationError(f"unknown PII kind {kind!r}; expected one of "
                                     f"{', '.join(KINDS)}")
        if searchable:
            from piiguard.crypto.blind_index import check_bits
            check_bits(index_bits)
        if key_scope is not None and not isinstance(key_scope, str) and not hasattr(
                key_scope, "key") and not hasattr(key_scope, "column"):
            raise ConfigurationError("key_scope must name a sibling column")
        self.guard = guard
        self.searchable = bool(searchable)
        self.index_bits = int(index_bits)
        self.text = bool(text)
        self.padded = (kind in _FREE_TEXT) if padded is None else bool(padded)
        self.key_scope = key_scope
        self.kind = kind
        self.allow_plaintext = bool(allow_plaintext)
        self.on_destroyed = on_destroyed
        self._state: _ColumnState | None = None
        if self.text:
            self.impl = self.impl_instance = Text()

    # -- construction helpers --------------------------------------------------------------
    def _make_validator(self) -> Callable[[Any], str]:
        return _text_canonical

    @property
    def max_bytes(self) -> int | None:
        """Largest stored envelope in bytes (None: unbounded)."""
        n = _MAX_PLAIN_BYTES.get(self.kind)
        if n is None:
            return None
        return BINARY_OVERHEAD + (bucket_size(n) if self.padded else n)

    def storage_type(self) -> Ciphertext:
        """The guard-free storage type (what migrations create)."""
        return Ciphertext(text=self.text, max_bytes=self.max_bytes)

    def __repr__(self) -> str:
        # Alembic renders types with repr(): a migration gets the storage type, which
        # needs neither the Guard nor a key.
        return repr(self.storage_type())

    def load_dialect_impl(self, dialect):
        return _storage_impl(dialect, self.text, self.max_bytes)

    @property
    def python_type(self):
        return str

    # -- schema events: learn the table and column ---------------------------------------
    def _set_parent(self, parent, outer: bool = False, **kw) -> None:
        super()._set_parent(parent, outer=outer, **kw)
        if not isinstance(parent, Column):
            return
        st = self._state
        if st is not None and st.column is not parent:
            if st.owner() is self and st.table is not None:
                raise ConfigurationError(
                    "one encrypted column type instance per column: this one is already "
                    f"used by {st.label}", column=st.label)
            st = None
        if st is None:
            self._state = st = _ColumnState(self, parent)
        parent._on_table_attach(self._on_attach)

    def _on_attach(self, column, table) -> None:
        st = self._state
        if column.type is not self or st is None or st.column is not column:
            return      # a listener copied onto another column by Column._copy()
        if st.table is table:
            return
        if st.table is not None:
            raise ConfigurationError("encrypted column attached to a second table",
                                     column=st.label)
        st.attach(table)

    def copy(self, **kw):
        # Column._copy() (mixins, to_metadata) and dialect adaptation both copy types; a
        # copy keeps the state until it is given a column of its own (_set_parent).
        instance = self.__class__.__new__(self.__class__)
        instance.__dict__.update(self.__dict__)
        instance.__dict__.pop("_static_cache_key", None)
        st = self._state
        # copying an attached searchable column: its table's index column is copied too
        instance._adopt_index = st is not None and st.index is not None and \
            st._index_column is not None
        return instance

    def _resolve_for_python_type(self, python_type, matched_on, matched_on_flattened):
        # The ORM's type_annotation_map hands one type object to every column annotated
        # with the same Python type: give each column its own copy.
        resolved = super()._resolve_for_python_type(python_type, matched_on,
                                                    matched_on_flattened)
        return resolved.copy() if resolved is self else resolved

    @property
    def _static_cache_key(self):
        st = self._state
        label = st.label if st is not None else None
        return (self.__class__, id(self.guard), self.kind, self.text, self.padded,
                self.searchable, self.index_bits, self.allow_plaintext,
                self.key_scope if isinstance(self.key_scope, str) else id(self.key_scope),
                label, id(st))

    # -- public column interface (COMMON.md section 2) -------------------------------------
    def _attached(self) -> _ColumnState:
        st = self._state
        if st is None or st.table is None:
            raise ConfigurationError("this encrypted column type is not attached to a "
                                     "table yet")
        return st

    @property
    def table(self):
        """The Table this column belongs to (None until attached)."""
        st = self._state
        return None if st is None else st.table

    @property
    def column(self):
        """The Column (None until attached to a table)."""
        st = self._state
        return None if st is None or st.table is None else st.column

    @property
    def label(self) -> str:
        return self._attached().label

    @property
    def cipher(self):
        return self._attached().cipher

    @property
    def index(self):
        return self._attached().index

    @property
    def index_column(self):
        return self._attached().index_column

    @property
    def text_form(self) -> bool:
        return self.text

    @property
    def key_scope_column(self):
        """The sibling column whose value picks each row's DEK scope (or None)."""
        return self._attached().scope_column

    def scope_for(self, scope_value: Any) -> str:
        return self._attached().scope_for(scope_value)

    def encrypt_value(self, value: Any, *, scope_value: Any = None) -> bytes | str:
        """Validate, canonicalise and encrypt ``value`` into its stored form."""
        return self._attached().encrypt_value(value, scope_value=scope_value)

    def decrypt_stored(self, stored: bytes | str) -> str:
        """Plaintext of a stored value (no masking: for operators' jobs)."""
        return self._attached().decrypt(stored)

    def stored_key_id(self, stored: bytes | str) -> int:
        """DEK id named by a stored envelope (no decryption)."""
        return self._attached().stored_key_id(stored)

    def is_envelope(self, stored: bytes | str) -> bool:
        """True if ``stored`` is an envelope (False for legacy plaintext)."""
        return self._attached().is_envelope(stored)

    def canonical(self, value: Any) -> str:
        """The canonical form ``value`` would be encrypted in (validates)."""
        return self._attached().canonical(value)

    def index_for(self, canonical: str) -> bytes | None:
        """Blind index value of a canonical value under the active index key."""
        return self._attached().index_for(canonical)

    # -- value processing ------------------------------------------------------------------
    def bind_processor(self, dialect):
        return self._attached().bind_processor()

    def result_processor(self, dialect, coltype):
        return self._attached().result_processor()

    def literal_processor(self, dialect):
        # literal_binds (offline migrations, printed statements) render the envelope,
        # never the plaintext: X'..' (SQLite, MySQL) or '\x..'::bytea (PostgreSQL).
        st = self._attached()
        pg = dialect.name == "postgresql"

        def render(value):
            stored = st.encrypt_value(value)
            if isinstance(stored, str):
                return "'" + stored + "'"
            return ("'\\x" + stored.hex() + "'::bytea") if pg else ("X'" + stored.hex() + "'")
        return render

    def compare_values(self, x, y) -> bool:
        if type(x) is Sealed or type(y) is Sealed:
            return type(x) is type(y) and x == y
        return x == y


class EncryptedNationalId(EncryptedString):
    """T.C. Kimlik No (11 digits, checksum), stored encrypted; canonical form is 11
    ASCII digits (``100 000 001 46`` -> ``10000000146``)."""

    _kind = "national_id"
    _canonical_never_envelope = True

    def __init__(self, guard: Any, **kw: Any) -> None:
        kw.setdefault("kind", "national_id")
        super().__init__(guard, **kw)

    def _make_validator(self):
        from piiguard.validators import tckn
        return tckn.validate


class EncryptedTaxId(EncryptedString):
    """Vergi Kimlik Numarası (10 digits, checksum), stored encrypted."""

    _kind = "tax_id"
    _canonical_never_envelope = True

    def __init__(self, guard: Any, **kw: Any) -> None:
        kw.setdefault("kind", "tax_id")
        super().__init__(guard, **kw)

    def _make_validator(self):
        from piiguard.validators import vkn
        return vkn.validate


class EncryptedPhone(EncryptedString):
    """A phone number, stored encrypted in E.164 (``+905321234567``).

    ``region`` reads numbers written without ``+`` (default ``'TR'``); ``only_region``
    and ``mobile_only`` restrict what is accepted (see :mod:`piiguard.validators.phone`).
    """

    _kind = "phone"
    _canonical_never_envelope = True   # E.164: "+" and digits

    def __init__(self, guard: Any, *, region: str | None = "TR",
                 only_region: str | None = None, mobile_only: bool = False,
                 **kw: Any) -> None:
        from piiguard.validators import phone
        if region is not None and region != "TR":
            phone.check_region(region)
        if only_region is not None and only_region != "TR":
            phone.check_region(only_region)
        self.region = region
        self.only_region = only_region
        self.mobile_only = bool(mobile_only)
        kw.setdefault("kind", "phone")
        super().__init__(guard, **kw)

    def _make_validator(self):
        from piiguard.validators import phone
        validate = phone.validate
        region, only_region, mobile_only = self.region, self.only_region, self.mobile_only
        if region == "TR" and only_region is None and not mobile_only:
            return validate

        def check(value):
            return validate(value, region, only_region=only_region, mobile_only=mobile_only)
        return check

    @property
    def _static_cache_key(self):
        return super()._static_cache_key + (self.region, self.only_region, self.mobile_only)


class EncryptedAddress(EncryptedString):
    """A Turkish postal address, stored encrypted in its canonical text form (padded
    to size buckets so the ciphertext length does not tell the address length)."""

    _kind = "address"
    _canonical_never_envelope = True   # upper-case printable text, no control characters

    def __init__(self, guard: Any, **kw: Any) -> None:
        kw.setdefault("kind", "address")
        super().__init__(guard, **kw)

    def _make_validator(self):
        from piiguard.validators import address
        return address.validate


class EncryptedEmail(EncryptedString):
    """An e-mail address, stored encrypted (domain lower-cased; ``lowercase_local``
    folds the local part too)."""

    _kind = "email"

    def __init__(self, guard: Any, *, lowercase_local: bool = False, **kw: Any) -> None:
        self.lowercase_local = bool(lowercase_local)
        kw.setdefault("kind", "email")
        super().__init__(guard, **kw)

    def _make_validator(self):
        from piiguard.validators import email
        if not self.lowercase_local:
            return email.validate
        return lambda value: email.validate(value, lowercase_local=True)

    @property
    def _static_cache_key(self):
        return super()._static_cache_key + (self.lowercase_local,)


# ---------------------------------------------------------------------------------------
# blind index on INSERT: a context-sensitive column default
# ---------------------------------------------------------------------------------------
def _index_default(st: _ColumnState):
    key = st.column.key

    def compute_index(context):
        value = context.get_current_parameters().get(key)
        return None if value is None else st.index_of_value(value)
    return compute_index


def _on_index_column_attach(col, table) -> None:
    """A blind-index column (or its copy: Column._copy() copies listeners) joined a
    table: the encrypted column it belongs to adopts it if it is waiting for it."""
    main = table.c.get(col.info.get("of", ""))
    t = getattr(main, "type", None)
    st = getattr(t, "_state", None)
    if isinstance(t, EncryptedString) and st is not None and st.table is table \
            and st.awaiting_index:
        st.index_column = st._adopt_index_column(col)
        st.awaiting_index = False


# ---------------------------------------------------------------------------------------
# UPDATE statements and key scopes: one before_execute hook on the Engine class
# ---------------------------------------------------------------------------------------
class _TablePlan:
    __slots__ = ("indexed", "scoped")

    def __init__(self) -> None:
        self.indexed: list[_ColumnState] = []
        self.scoped: list[_ColumnState] = []

    def add(self, st: _ColumnState) -> None:
        if st.index is not None and st not in self.indexed:
            self.indexed.append(st)
        if st.key_scope is not None and st not in self.scoped:
            self.scoped.append(st)


_PLANS: weakref.WeakKeyDictionary[Any, _TablePlan] = weakref.WeakKeyDictionary()
_hook_lock = threading.Lock()
_hook_installed: list[bool] = []


def _plan_for(table) -> _TablePlan:
    plan = _PLANS.get(table)
    if plan is None:
        plan = _PLANS[table] = _TablePlan()
    return plan


def _install_engine_hook() -> None:
    if _hook_installed:
        return
    with _hook_lock:
        if not _hook_installed:
            event.listen(Engine, "before_execute", _before_execute, retval=True)
            event.listen(Engine, "handle_error", _unwrap_piiguard_error)
            _hook_installed.append(True)


def _clone_error(exc: PIIGuardError) -> PIIGuardError:
    return exc.clone()


def _unwrap_piiguard_error(ctx):
    """Raise piiguard's own errors (a refused value, a decryption failure) as they are,
    not wrapped in SQLAlchemy's StatementError: an invalid value stays a ValueError."""
    err = ctx.original_exception
    if isinstance(err, PIIGuardError) and ctx.sqlalchemy_exception is not None:
        return _clone_error(err)
    return None


def _param_key(k) -> str | None:
    if isinstance(k, str):
        return k
    ce = getattr(k, "__clause_element__", None)
    if ce is not None:
        k = ce()
    return getattr(k, "key", None)


def _bind_value(v):
    if isinstance(v, BindParameter):
        if v.callable is not None:
            return True, v.callable()
        return True, v.value
    return False, None


def _before_execute(conn, elem, multiparams, params, execution_options):
    if not getattr(elem, "is_dml", False):
        return elem, multiparams, params
    is_update = getattr(elem, "is_update", False)
    if not (is_update or getattr(elem, "is_insert", False)):
        return elem, multiparams, params
    table = getattr(elem, "table", None)
    if table is None:
        return elem, multiparams, params
    plan = _PLANS.get(table)
    if plan is None:
        de = getattr(table, "_deannotate", None)
        if de is not None:
            plan = _PLANS.get(de())
        if plan is None:
            return elem, multiparams, params
    if not plan.scoped and not is_update:
        return elem, multiparams, params
    indexed = plan.indexed if is_update else ()
    if multiparams:
        for p in multiparams:
            _prepare_params(p, plan.scoped, indexed)
    elif params:
        _prepare_params(params, plan.scoped, indexed)
    if elem._values:
        elem = _prepare_statement_values(elem, plan.scoped, indexed)
    elif getattr(elem, "_multi_values", None) and plan.scoped:
        elem = _prepare_multi_values(elem, plan.scoped)
    return elem, multiparams, params


def _prepare_params(p: dict, scoped, indexed) -> None:
    for st in scoped:
        key = st.column.key
        if key in p:
            v = p[key]
            if v is not None and not isinstance(v, _Pending):
                scol = st.scope_column
                skey = scol.key
                if skey not in p and scol.default is not None and scol.default.is_scalar:
                    p[skey] = scol.default.arg      # what the column default would write
                if skey not in p:
                    raise ConfigurationError(
                        "a key-scoped column was written without its key scope column "
                        f"({st.scope_column.name}) in the same statement",
                        column=st.label, operation="encrypt")
                p[key] = _Pending(v, st.scope_for(p[skey]))
    for st in indexed:
        key = st.column.key
        if key in p:
            p[st.index_column.key] = st.index_of_value(p[key])


def _prepare_statement_values(elem, scoped, indexed):
    values = {}
    by_key = {}
    for k, v in elem._values.items():
        by_key[_param_key(k)] = (k, v)
    for st in scoped:
        hit = by_key.get(st.column.key)
        if hit is None:
            continue
        ok, v = _bind_value(hit[1])
        if not ok:
            raise ConfigurationError("a key-scoped column can only be written with plain "
                                     "values", column=st.label, operation="encrypt")
        if v is None or isinstance(v, _Pending):
            continue
        shit = by_key.get(st.scope_column.key)
        sok, sv = _bind_value(shit[1]) if shit is not None else (False, None)
        if not sok:
            raise ConfigurationError(
                "a key-scoped column was written without a plain value for its key scope "
                f"column ({st.scope_column.name}) in the same statement",
                column=st.label, operation="encrypt")
        values[hit[0]] = _Pending(v, st.scope_for(sv))
    for st in indexed:
        hit = by_key.get(st.column.key)
        if hit is None:
            continue
        ok, v = _bind_value(hit[1])
        if not ok:
            raise ConfigurationError("a searchable encrypted column can only be updated "
                                     "with plain values", column=st.label,
                                     operation="encrypt")
        values[st.index_column] = st.index_of_value(v)
    return elem.values(values) if values else elem


def _prepare_multi_values(elem, scoped):
    for st in scoped:
        for rows in elem._multi_values:
            for row in rows:
                keys = row.keys() if isinstance(row, dict) else ()
                if any(_param_key(k) == st.column.key for k in keys):
                    raise ConfigurationError(
                        "a key-scoped column cannot be written with a multi-row VALUES "
                        "clause; pass a list of parameter dicts instead", column=st.label,
                        operation="encrypt")
    return elem


# ---------------------------------------------------------------------------------------
# ORM: attributes render the view at access time; masked values are refused on set
# ---------------------------------------------------------------------------------------
#: id(attribute) -> column state, for the attributes swapped to _EncryptedAttribute
#: (attributes compare as SQL expressions, so they cannot be dict keys themselves).
_ATTR_STATES: dict[int, "_ColumnState"] = {}


class _EncryptedAttribute(InstrumentedAttribute):
    """InstrumentedAttribute of an encrypted column: a :class:`Sealed` value held by the
    instance is rendered for the role in effect whenever the attribute is read."""

    __slots__ = ()
    inherit_cache = True

    def __get__(self, instance, owner):
        if instance is None:
            return self
        dict_ = instance.__dict__
        key = self.key
        if key in dict_:
            value = dict_[key]
        else:
            value = self.impl.get(instance_state(instance), dict_)
        if type(value) is Sealed:
            state = instance_state(instance)
            ident = state.identity
            return value.view(row_key=None if ident is None else
                              ",".join(str(i) for i in ident))
        if type(value) is str:
            # Loaded (or assigned) before a policy was set: the plaintext is here, but
            # the policy now in force still decides what this role may see.
            st = _ATTR_STATES.get(id(self))
            if st is not None and st.guard._policy is not None:
                ident = instance_state(instance).identity
                return _render(st.guard, kind=st.kind, column=st.label,
                               plaintext_fn=lambda: value,
                               row_key=None if ident is None else
                               ",".join(str(i) for i in ident))
        return value

    def __set__(self, instance, value) -> None:
        if type(value) is not str:
            if value is None:
                current = instance.__dict__.get(self.key)
                if type(current) is Sealed and current.view() is None:
                    # the role in effect sees NULL (mask "null"): writing that NULL back
                    # would erase a value it cannot see
                    raise MaskedValueError(
                        "masked", column=current.column,
                        detail="the role in effect sees this value as NULL; clearing it "
                               "needs a role that can see it")
            else:
                self._check(value)
        self.impl.set(instance_state(instance), instance_dict(instance), value, None)

    def _check(self, value) -> None:
        st = self.property.columns[0].type._state
        if isinstance(value, _masked_types()):
            raise MaskedValueError("masked", column=st.label,
                                   detail="a masked view cannot be written back")
        if isinstance(value, Sealed) and value._col is not st:
            raise MaskedValueError("sealed", column=st.label,
                                   detail="a sealed value of another column")


def _encrypted_state(prop) -> _ColumnState | None:
    cols = getattr(prop, "columns", None)
    if not cols:
        return None
    t = getattr(cols[0], "type", None)
    return t._state if isinstance(t, EncryptedString) else None


@event.listens_for(Mapper, "mapper_configured")
def _on_mapper_configured(mapper, class_) -> None:
    scoped = []
    indexed = []
    for prop in mapper.column_attrs:
        st = _encrypted_state(prop)
        if st is None:
            continue
        attr = mapper.class_manager.get(prop.key)
        if attr is not None and type(attr) is InstrumentedAttribute:
            attr.__class__ = _EncryptedAttribute
        if attr is not None:
            _ATTR_STATES[id(attr)] = st
        if st.key_scope is not None:
            scoped.append((prop.key, st))
        if st.index is not None:
            indexed.append((prop.key, st))
    if scoped or indexed:
        _orm_update_events(mapper, scoped, indexed)


def _orm_update_events(mapper, scoped, indexed) -> None:
    from sqlalchemy.orm.attributes import get_history

    def attr_of_column(col):
        try:
            return mapper.get_property_by_column(col).key
        except Exception:  # noqa: BLE001 - not mapped
            return None

    scope_attrs = {key: attr_of_column(st.scope_column) for key, st in scoped}
    index_attrs = {key: attr_of_column(st.index_column) for key, st in indexed}

    def before_update(mapper_, connection, target):
        dict_ = instance_dict(target)
        for key, st in scoped:
            value = dict_.get(key)
            if value is None or isinstance(value, (_Pending, Sealed)):
                continue
            if not get_history(target, key).added:
                continue
            skey = scope_attrs[key]
            if skey is None:
                raise ConfigurationError("the key scope column is not mapped",
                                         column=st.label, operation="encrypt")
            dict_[key] = _Pending(value, st.scope_for(getattr(target, skey)))
        for key, st in indexed:
            if index_attrs[key] is None or not get_history(target, key).added:
                continue
            value = dict_.get(key)
            setattr(target, index_attrs[key], st.index_of_value(value))

    def after_update(mapper_, connection, target):
        dict_ = instance_dict(target)
        for key, _st in scoped:
            value = dict_.get(key)
            if isinstance(value, _Pending):
                dict_[key] = value.value

    event.listen(mapper, "before_update", before_update)
    event.listen(mapper, "after_update", after_update)


# ---------------------------------------------------------------------------------------
# lookups with a truncated index; the column registry
# ---------------------------------------------------------------------------------------
def lookup(executor: Any, column: Any, value: Any) -> list:
    """Rows (ORM entities, or Core rows) whose ``column`` equals ``value``, exactly.

    Works for every searchable column, and is *the* way to search a column whose blind
    index is truncated (``index_bits < 128``): the index narrows the rows down to
    candidates, then each candidate is decrypted and compared with the canonical value,
    so false matches are dropped. ``executor`` is a Session (ORM attribute) or a
    Session/Connection (Core column). The comparison never goes through masking.
    """
    clause = column.blind_match(value)
    is_orm = hasattr(column, "class_") and hasattr(column, "property")
    col = column.property.columns[0] if is_orm else column
    st = col.type._state
    canonical = st.canonical(value)

    def same(stored) -> bool:
        if stored is None:
            return False
        if isinstance(stored, Sealed):
            return stored._plaintext() == canonical
        if isinstance(stored, str):
            return st.canonical(stored) == canonical
        return st.decrypt(stored) == canonical

    if is_orm:
        key = column.key
        out = []
        for obj in executor.scalars(select(column.class_).where(clause)).all():
            dict_ = instance_dict(obj)
            if key not in dict_:
                getattr(obj, key)
            if same(dict_.get(key)):
                out.append(obj)
        return out
    rows = executor.execute(select(col.table).where(clause)).all()
    return [r for r in rows if same(r._mapping[col])]


def ensure_scope_key(column: Any, scope_value: Any) -> int:
    """Create (if missing) the DEK of one key scope of a ``key_scope=`` column, and
    return its id. Call it when a tenant or subject is created, outside the write
    transaction that first stores its data: on SQLite a key created on first use from
    inside a transaction that has already written waits for the database lock.

    ``column`` is the ORM attribute or the Core column of the key-scoped column.
    """
    col = column.property.columns[0] if hasattr(column, "property") else column
    t = col.type
    if not isinstance(t, EncryptedString) or t.key_scope is None:
        raise ConfigurationError("ensure_scope_key() takes a column declared with "
                                 "key_scope=")
    st = t._attached()
    return st.guard.keys.ensure_active("dek", st.scope_for(scope_value))


def encrypted_columns(guard: Any) -> list[EncryptedString]:
    """Every encrypted column type attached to a table with ``guard``, one per
    ``table.column`` (the most recently declared wins), in declaration order."""
    seen: dict[str, EncryptedString] = {}
    for t in guard.columns:
        st = t._state
        if st is None or st.table is None:
            continue
        seen.pop(st.label, None)
        seen[st.label] = t
    return list(seen.values())


# ---------------------------------------------------------------------------------------
# Alembic: migrations import piiguard.sqlalchemy for the storage types
# ---------------------------------------------------------------------------------------
_alembic_registered: list[bool] = []


def _guard_tables_of(metadatas) -> tuple[bool, set[str]]:
    """(any encrypted column?, names of the Guards' own tables) for these MetaData."""
    found = False
    names: set[str] = set()
    for md in metadatas:
        for table in md.tables.values():
            for c in table.c:
                t = c.type
                if isinstance(t, (Ciphertext, BlindIndex)):
                    found = True
                elif isinstance(t, EncryptedString):
                    found = True
                    guard = t.guard
                    names.add(guard.keys.table.name)
                    audit_table = getattr(getattr(guard, "audit", None), "table", None)
                    if audit_table is not None:
                        names.add(audit_table.name)
    return found, names


def _register_alembic() -> None:
    """Hook into ``alembic revision --autogenerate`` (through alembic's global comparator
    registry, which it keeps for third-party extensions):

    - migrations whose metadata has encrypted columns get ``import piiguard.sqlalchemy``
      (they render as :class:`Ciphertext` / :class:`BlindIndex`: no Guard, no key);
    - the Guard's key table (and audit table) are never proposed for ``drop_table`` or
      ``drop_index``, although they are not in the application's metadata.

    Runs when this module is imported or a column is declared while alembic is loaded
    (``env.py`` imports the models after alembic, so the CLI always gets it)."""
    if _alembic_registered:
        return
    try:
        from alembic.autogenerate.compare import comparators
        from alembic.autogenerate.render import renderers
        from alembic.operations.ops import OpContainer
        from alembic.util import DispatchPriority, PriorityDispatchResult
    except ImportError:  # pragma: no cover - alembic is optional or half-imported
        return
    _alembic_registered.append(True)

    class ImportPiiguard(OpContainer):
        """Renders nothing but ``import piiguard.sqlalchemy`` among the imports (an
        empty container: no diff, no statement)."""

        def __init__(self) -> None:
            super().__init__(ops=())

        def reverse(self):
            return ImportPiiguard()

    @renderers.dispatch_for(ImportPiiguard)
    def _render_import(autogen_context, op):
        autogen_context.imports.add("import piiguard.sqlalchemy")
        return []

    def metadatas_of(autogen_context):
        mds = autogen_context.metadata
        if mds is None:
            return []
        return list(mds) if isinstance(mds, (list, tuple)) else [mds]

    @comparators.dispatch_for("schema", priority=DispatchPriority.LAST)
    def _piiguard_autogenerate(autogen_context, upgrade_ops, schemas):
        found, keep = _guard_tables_of(metadatas_of(autogen_context))
        if keep:
            upgrade_ops.ops[:] = [op for op in upgrade_ops.ops
                                  if getattr(op, "table_name", None) not in keep]
        if found and upgrade_ops.ops:
            upgrade_ops.ops.insert(0, ImportPiiguard())
        return PriorityDispatchResult.CONTINUE


_install_engine_hook()

if "alembic" in sys.modules:
    _register_alembic()
