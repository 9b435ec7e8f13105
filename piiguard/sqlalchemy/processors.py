"""The per-value hot paths: bind and result processors of an attached encrypted column.

SQLAlchemy calls the ``process(value)`` closures made here once per value of every
statement (every row of an ``executemany`` INSERT, every row read), so they are built
to make as few calls as possible: the common case (a plain ``str`` in, ``bytes`` out,
no masking policy) runs validation and encryption as one fused call
(:meth:`~piiguard.field.FieldCipher.encryptor`) and decryption as one call; every other
form of value goes through :class:`~.state.AttachedColumn`. Benchmarks (Core insert and
select, ORM add_all and select) measure these closures: add nothing to them lightly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from piiguard.crypto.envelope import encode_text
from piiguard.errors import (
    AlreadyEncryptedError,
    ConfigurationError,
    InvalidFormatError,
    KeyDestroyedError,
    PIIGuardError,
)
from piiguard.field import unencodable
from piiguard.sqlalchemy.sealed import Sealed
from piiguard.sqlalchemy.state import AttachedColumn, Pending, with_label

__all__ = ["bind_processor", "refuse_null", "result_processor", "unexpected"]

Processor = Callable[[Any], Any]


def bind_processor(st: AttachedColumn) -> Processor:
    """``process(value) -> stored form`` for values written to ``st``'s column.

    Every error it raises is a piiguard error naming the column and carrying no value
    (a value with no UTF-8 form, a ``bytes`` or ``int`` given for text, ``None`` for a
    ``NOT NULL`` column: see :func:`refuse_null`)."""
    slow = _bind_slow(st)
    if st.binding is not None:
        return slow   # key-scoped and row-bound values arrive as Pending, with their row
    # Validation and encryption fused into one call (FieldCipher.encryptor): this
    # runs once per value of every INSERT/UPDATE, so every call saved counts.
    encrypt = st.cipher.encryptor(st.validate,
                                  check_envelope=not st.spec.canonical_never_envelope)
    label = st.label
    null = refuse_null(st)

    if st.text_form:
        def process_text(value: Any) -> Any:
            if value is None:
                return null()
            if type(value) is str:
                try:
                    return encode_text(encrypt(value))
                except PIIGuardError as exc:
                    raise with_label(exc, label) from None
            return slow(value)
        return process_text

    def process(value: Any) -> Any:
        if value is None:
            return null()
        if type(value) is str:
            try:
                return encrypt(value)
            except PIIGuardError as exc:
                raise with_label(exc, label) from None
        return slow(value)
    return process


def refuse_null(st: AttachedColumn) -> Callable[[], None]:
    """What a ``None`` written to ``st``'s column becomes: NULL, or, for a ``NOT NULL``
    column, a piiguard error raised before the statement reaches the database (whose
    own error would print the row: the other columns' envelopes and blind indexes)."""
    if st.column.nullable:
        return _null
    label = st.label

    def refuse() -> None:
        raise InvalidFormatError("required", column=label, operation="encrypt",
                                 detail="the column is NOT NULL: a value is required")
    return refuse


def _null() -> None:
    return None


def _bind_slow(st: AttachedColumn) -> Processor:
    """Every value that is not a plain ``str`` (and every value of a key-scoped column)."""
    null = refuse_null(st)

    def process(value: Any) -> Any:
        if value is None or (isinstance(value, Pending) and value.value is None):
            return null()
        try:
            return _encrypt_other(st, value)
        except PIIGuardError as exc:
            raise with_label(exc, st.label) from None
        except Exception as exc:  # noqa: BLE001 - whatever it was, it held the value
            err = unexpected(exc, st.label)
        del value
        raise err
    return process


def unexpected(exc: BaseException, label: str | None) -> PIIGuardError:
    """The piiguard error for an exception piiguard did not expect while it handled a
    value of ``label``: it names the exception's type, never its message (which may
    quote the value). Built outside the ``except`` (nothing chained)."""
    if isinstance(exc, UnicodeError):
        return unencodable(label)
    if isinstance(exc, (TypeError, ValueError, AttributeError, OverflowError)):
        return InvalidFormatError("type", column=label, operation="encrypt",
                                  detail=f"the value could not be read as text "
                                         f"({type(exc).__name__})")
    return PIIGuardError(f"unexpected {type(exc).__name__} while encrypting a value",
                         column=label, operation="encrypt")


def _encrypt_other(st: AttachedColumn, value: Any) -> Any:
    if isinstance(value, Pending):
        return st.encrypt_value(value)
    if st.scope is not None:
        raise ConfigurationError(
            "this column has a per-row key scope, and the statement did not carry "
            "the row's scope value (write it together with the key scope column)",
            column=st.label, operation="encrypt")
    if st.binding is not None:
        raise ConfigurationError(
            "this column is bound to its row (bound_to), and the statement did not "
            "carry the row's values (write it together with "
            + ", ".join(st.binding.names) + ")", column=st.label, operation="encrypt")
    if isinstance(value, (bytes, bytearray, memoryview)):
        if st.is_envelope(bytes(value)):
            raise AlreadyEncryptedError("refusing to encrypt a value that is already "
                                        "an envelope", column=st.label,
                                        operation="encrypt")
        raise InvalidFormatError("type", column=st.label,
                                 detail="encrypted columns take text values")
    return st.encrypt_value(value)


def result_processor(st: AttachedColumn) -> Processor:
    """``process(stored) -> str`` (no policy on the Guard) or a :class:`Sealed` (a
    masking policy is set: the view is worked out when the value is shown).

    A value under a destroyed key (crypto-shredded) reads as ``None`` unless the column
    says ``on_destroyed="raise"``: one erased subject never breaks a listing. (The
    ``try`` costs nothing until a key is missing.)"""
    if st.binding is not None:
        return _bound_result_processor(st)
    guard = st.guard
    decrypt = st.decrypt
    is_envelope = st.is_envelope
    allow_plaintext = st.allow_plaintext
    erased_is_null = st.on_destroyed == "null"

    def sealed(value: Any) -> Sealed:
        if allow_plaintext and not is_envelope(value):
            return Sealed(value, st, legacy=True)
        return Sealed(value, st)

    if st.text_form or allow_plaintext:
        def process_any(value: Any) -> Any:
            if value is None:
                return None
            if guard.policy is not None:
                return sealed(value)
            try:
                return decrypt(value)
            except KeyDestroyedError:
                if erased_is_null:
                    return None
                raise
        return process_any

    decrypt_bytes = st.cipher.decrypt        # labels its own errors

    def process(value: Any) -> Any:
        if value is None:
            return None
        if guard.policy is not None:
            return sealed(value)
        try:
            if type(value) is not bytes:
                return decrypt(value)
            return decrypt_bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return decrypt(value)               # raises the labelled error
        except KeyDestroyedError:
            if erased_is_null:
                return None
            raise
    return process


def _bound_result_processor(st: AttachedColumn) -> Processor:
    """Values of a row-bound column: they arrive with their row's binding values (see
    :mod:`.binding`) and decrypt only with them."""
    guard = st.guard
    split = st.binding.split  # type: ignore[union-attr]
    decrypt_in_row = st.decrypt_in_row
    is_envelope = st.is_envelope
    allow_plaintext = st.allow_plaintext
    erased_is_null = st.on_destroyed == "null"

    def process(value: Any) -> Any:
        if value is None:
            return None
        stored, row = split(value)
        if stored is None:
            return None
        if guard.policy is not None:
            if allow_plaintext and not is_envelope(stored):
                return Sealed(stored, st, legacy=True)
            return Sealed(stored, st, row=row)
        try:
            return decrypt_in_row(stored, row)
        except KeyDestroyedError:
            if erased_is_null:
                return None
            raise
    return process
