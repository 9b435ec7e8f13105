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
from piiguard.sqlalchemy.sealed import Sealed
from piiguard.sqlalchemy.state import AttachedColumn, Pending, with_label

__all__ = ["bind_processor", "result_processor"]

Processor = Callable[[Any], Any]


def bind_processor(st: AttachedColumn) -> Processor:
    """``process(value) -> stored form`` for values written to ``st``'s column."""
    slow = _bind_slow(st)
    if st.binding is not None:
        return slow   # key-scoped and row-bound values arrive as Pending, with their row
    # Validation and encryption fused into one call (FieldCipher.encryptor): this
    # runs once per value of every INSERT/UPDATE, so every call saved counts.
    encrypt = st.cipher.encryptor(st.validate,
                                  check_envelope=not st.spec.canonical_never_envelope)
    label = st.label

    if st.text_form:
        def process_text(value: Any) -> Any:
            if value is None:
                return None
            if type(value) is str:
                try:
                    return encode_text(encrypt(value))
                except PIIGuardError as exc:
                    raise with_label(exc, label) from None
            return slow(value)
        return process_text

    def process(value: Any) -> Any:
        if value is None:
            return None
        if type(value) is str:
            try:
                return encrypt(value)
            except PIIGuardError as exc:
                raise with_label(exc, label) from None
        return slow(value)
    return process


def _bind_slow(st: AttachedColumn) -> Processor:
    """Every value that is not a plain ``str`` (and every value of a key-scoped column)."""
    def process(value: Any) -> Any:
        if value is None:
            return None
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
    return process


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
