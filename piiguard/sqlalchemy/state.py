"""What one encrypted column knows, before and after it is attached to a table.

An encrypted column type lives through two stages, and each has its own type here:

- :class:`ColumnSpec`, made when the type is built: the options and the kind's facts
  (validator, padding, whether a canonical value can look like an envelope);
- :class:`AttachedColumn`, made when the column joins its table: the table, the
  ``table.column`` label, the cipher and (searchable columns) the :class:`BlindIndexColumn`,
  (``key_scope=`` columns) the :class:`KeyScope`. Nothing in it is ``None`` "until later".

:class:`AttachedColumn` validates, encrypts, decrypts and computes blind indexes for its
column; the per-value hot paths built from it are in :mod:`.processors`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import Column, Table, event

from piiguard.crypto.envelope import (
    TEXT_PREFIX,
    decode_text,
    encode_text,
    is_binary_shape,
    is_bound,
    key_id_of,
    looks_like_envelope,
    to_blob,
)
from piiguard.errors import (
    ConfigurationError,
    DecryptionError,
    EnvelopeFormatError,
    InvalidFormatError,
    InvalidInputError,
    MaskedValueError,
    PIIGuardError,
)
from piiguard.field import FieldCipher, FieldIndex, FormIndex, utf8
from piiguard.sqlalchemy.binding import RowBinding
from piiguard.masking.view import MaskedStr
from piiguard.sqlalchemy._sa_private import set_context_default
from piiguard.sqlalchemy.sealed import Sealed, unseal
from piiguard.sqlalchemy.storage import BlindIndex

__all__ = [
    "EXACT_INDEX_BITS",
    "INDEX_SUFFIX",
    "AttachedColumn",
    "BlindIndexColumn",
    "BoundRow",
    "ColumnSpec",
    "KeyScope",
    "Pending",
    "attached_column_of",
    "with_label",
]

#: Blind indexes at least this wide are treated as exact (a false match among N rows
#: has probability about N / 2**bits); narrower ones need a re-check after decryption.
EXACT_INDEX_BITS = 128
#: Name of a searchable column's blind-index sibling: ``<column>_bidx``.
INDEX_SUFFIX = "_bidx"


@dataclass(frozen=True)
class ColumnSpec:
    """Everything an encrypted column type decides when it is built (no table yet)."""

    guard: Any
    kind: str
    text: bool
    padded: bool
    searchable: bool
    index_bits: int
    key_scope: Any
    allow_plaintext: bool
    on_destroyed: str
    #: ``validate(value) -> canonical str`` (raises InvalidInputError)
    validate: Callable[[Any], str]
    #: no canonical value can parse as an envelope: encryption may skip that check
    canonical_never_envelope: bool
    #: sibling columns whose values are bound into every envelope (``bound_to=``)
    bound_to: tuple[Any, ...] = ()
    #: refuse envelopes written before row binding (``strict_binding=True``)
    strict_binding: bool = False
    #: ``form(stored) -> str`` the blind index and comparisons use when it is not the
    #: stored form (addresses: stored as written, searched by canonical text)
    search_form: Callable[[str], str] | None = None
    #: ``decode(stored text) -> value`` of a typed column (None: text columns)
    decode: Callable[[str], Any] | None = None


class BoundRow(NamedTuple):
    """What a row gives a row-bound column's envelope: the binding bytes of its values
    and the DEK scope they pick (None: not key-scoped)."""

    binding: bytes
    scope: str | None


class Pending:
    """A value on its way to a key-scoped or row-bound column, with what its row gives
    it: the DEK scope (None: the column's own) and the binding bytes (None: not known
    yet). ``row`` holds the binding values an ORM object knew when it was flushed; the
    statement's own parameters take precedence over them."""

    __slots__ = ("binding", "row", "scope", "value")

    def __init__(self, value: Any, scope: str | None = None, binding: bytes | None = None,
                 row: dict[str, Any] | None = None) -> None:
        self.value = value
        self.scope = scope
        self.binding = binding
        self.row = row

    def __repr__(self) -> str:
        return f"Pending(<redacted>, scope={self.scope!r})"


def with_label(exc: PIIGuardError, label: str) -> PIIGuardError:
    """``exc`` naming ``label`` in its message; a refused value's error keeps no frames
    (they hold the value) and no chained error (a validator's may quote it)."""
    exc.with_column(label)
    return exc.detached() if isinstance(exc, InvalidInputError) else exc


class KeyScope:
    """The sibling column whose value picks each row's DEK scope (``key_scope=``).

    It is found by name or column object when first needed: the scope column may be
    declared after the encrypted one.
    """

    __slots__ = ("_column", "declared", "label", "table")

    def __init__(self, declared: Any, table: Table, label: str) -> None:
        self.declared = declared
        self.table = table
        self.label = label
        self._column: Column | None = None

    @property
    def column(self) -> Column:
        if self._column is None:
            ks = self.declared
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
            self._column = col
        return self._column


class BlindIndexColumn:
    """The blind index of a searchable column: its keyed index and the
    ``<column>_bidx`` sibling column that stores it.

    The sibling is added to the table, or adopted when the table has one already. A
    copy of a whole table (``Table.to_metadata()``, Alembic) copies the sibling after
    the encrypted column: then it is adopted when it arrives, or added on first use if
    it never does.
    """

    def __init__(self, owner: AttachedColumn, index: FieldIndex, *, adopt: bool) -> None:
        self.owner = owner
        self.index = index
        self.exact = index.bits >= EXACT_INDEX_BITS
        self.name = owner.column.name + INDEX_SUFFIX
        self.awaiting = False
        self._column: Column | None = None
        existing = owner.table.c.get(self.name)
        if existing is not None:
            self._column = self._adopt(existing)
        elif adopt:
            self.awaiting = True
        else:
            self._column = self._create()

    @property
    def column(self) -> Column:
        if self._column is None:
            existing = self.owner.table.c.get(self.name)
            self._column = self._adopt(existing) if existing is not None else self._create()
        return self._column

    @property
    def resolved(self) -> bool:
        """True once the sibling column is known (added or adopted)."""
        return self._column is not None

    def adopt(self, col: Column) -> None:
        """Take ``col`` (the copy of the sibling that just joined the table)."""
        self._column = self._adopt(col)

    def _adopt(self, col: Column) -> Column:
        if not isinstance(col.type, BlindIndex):
            table = col.table.name if isinstance(col.table, Table) else "?"
            raise ConfigurationError(f"{table}.{col.name} already exists and is "
                                     "not a blind index column", column=self.owner.label)
        set_context_default(col, _index_default(self.owner))
        self.awaiting = False
        return col

    def _create(self) -> Column:
        idx_col: Column[Any] = Column(
            self.name, BlindIndex(self.index.bits), nullable=True, index=True,
            default=_index_default(self.owner),
            info={"piiguard": "blind_index", "of": self.owner.column.name})
        event.listen(idx_col, "after_parent_attach", _on_index_column_attach, propagate=True)
        self.owner.table.append_column(idx_col)
        self.awaiting = False
        return idx_col

    def candidates_of(self, canonical: Iterable[str]) -> list[bytes]:
        """Blind index values to look for: every canonical value under every usable
        index key (the active one and, during a rotation, the previous ones)."""
        out: list[bytes] = []
        for v in canonical:
            for c in self.index.candidates(v):
                if c not in out:
                    out.append(c)
        return out


class AttachedColumn:
    """An encrypted column attached to its table: everything it needs, worked out once.

    Made by the column type when its column joins a table; the type's public column
    interface (``label``, ``cipher``, ``encrypt_value`` …) and its processors use it.
    """

    def __init__(self, spec: ColumnSpec, column: Column, table: Table, *,
                 adopt_index: bool = False) -> None:
        if column.primary_key or column.unique:
            raise ConfigurationError(
                "an encrypted column cannot be a primary key or unique: every encryption "
                "is randomised (make it searchable and put a unique index on its blind "
                "index column instead)", column=f"{table.name}.{column.name}")
        self.spec = spec
        self.column = column
        self.table = table
        self.label = f"{table.name}.{column.name}"
        self.guard = guard = spec.guard
        self.kind = spec.kind
        self.text_form = spec.text
        self.allow_plaintext = spec.allow_plaintext
        self.on_destroyed = spec.on_destroyed
        self.key_scope = spec.key_scope
        self.validate = spec.validate
        self.decode = spec.decode
        self.cipher: FieldCipher = guard.field(table.name, column.name, padded=spec.padded)
        guard.register_scope("dek", self.cipher.scope)
        self.search: BlindIndexColumn | None = None
        if spec.searchable:
            index = guard.blind_index(table.name, column.name, bits=spec.index_bits)
            guard.register_scope("index", index.scope)
            if spec.search_form is not None:
                index = FormIndex(index, spec.search_form)
            self.search = BlindIndexColumn(self, index, adopt=adopt_index)
        self.scope: KeyScope | None = None if spec.key_scope is None else \
            KeyScope(spec.key_scope, table, self.label)
        #: the row values every envelope is bound to (key-scoped and ``bound_to=``
        #: columns; None: bound to ``table.column`` only)
        self.binding: RowBinding | None = None
        if spec.key_scope is not None or spec.bound_to:
            self.binding = RowBinding(table, self.label, spec.key_scope, spec.bound_to)
        self.strict_binding = spec.strict_binding

    def __repr__(self) -> str:
        return f"AttachedColumn({self.label!r}, kind={self.kind!r})"

    # -- optional parts, as the column interface shows them --------------------------------
    @property
    def index(self) -> FieldIndex | None:
        return None if self.search is None else self.search.index

    @property
    def index_column(self) -> Column | None:
        return None if self.search is None else self.search.column

    @property
    def scope_column(self) -> Column | None:
        return None if self.scope is None else self.scope.column

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
            if isinstance(value, MaskedStr):
                raise MaskedValueError("masked", column=self.label,
                                       detail="a masked view cannot be written or searched")
            if isinstance(value, Sealed):
                if value.origin is not self:
                    raise MaskedValueError("sealed", column=self.label,
                                           detail="a sealed value of another column")
                return unseal(value)
        try:
            return self.validate(value)
        except InvalidInputError as exc:
            raise exc.with_column(self.label).detached() from None

    def encrypt(self, canonical: str, scope: str | None = None) -> bytes | str:
        try:
            blob = self.cipher.encrypt_str(canonical, scope=scope)
        except PIIGuardError as exc:
            raise with_label(exc, self.label) from None
        return encode_text(blob) if self.text_form else blob

    def bound_row(self, values: Any) -> BoundRow:
        """What a row gives a value of this row-bound column: ``values`` are the row's
        values of the binding columns (in :attr:`RowBinding.keys` order)."""
        rb = self.binding
        assert rb is not None
        canonical = rb.canonical(values)
        scope = self.scope_for(canonical[0]) if rb.has_scope else None
        return BoundRow(rb.aad(canonical), scope)

    def bind_row(self, values: Any) -> Pending:
        """A :class:`Pending` (no value yet) bound to the row whose binding columns hold
        ``values``."""
        row = self.bound_row(values)
        return Pending(None, row.scope, row.binding)

    def encrypt_value(self, value: Any, *, scope_value: Any = None,
                      row: Any = None) -> bytes | str:
        """Validate, canonicalise and encrypt ``value`` (any accepted input form).

        A row-bound column needs its row: ``row`` maps the binding columns (by key or
        by name) to the row's values; a column bound to its key scope only may be given
        ``scope_value`` instead."""
        if self.binding is not None:
            return self._encrypt_bound(value, scope_value, row)
        scope: str | None = None
        if isinstance(value, Pending):
            value, scope = value.value, value.scope
        elif self.scope is not None:
            if scope_value is None:
                raise ConfigurationError(
                    "this column has a per-row key scope: the row's key scope value "
                    "is needed to encrypt", column=self.label, operation="encrypt")
            scope = self.scope_for(scope_value)
        if scope is None and self._is_own_envelope(value):
            return self._stored_form(value.stored)
        return self.encrypt(self.canonical(value), scope)

    def _encrypt_bound(self, value: Any, scope_value: Any, row: Any) -> bytes | str:
        rb = self.binding
        assert rb is not None
        if isinstance(value, Pending):
            given = value
            value = value.value
        elif row is not None:
            by_name = all(k in row for k in rb.names) and not all(k in row for k in rb.keys)
            given = self.bind_row(rb.values_from(row, by_name=by_name))
        elif scope_value is not None and rb.has_scope and len(rb.keys) == 1:
            given = self.bind_row([scope_value])
        else:
            given = Pending(None)
        if given.binding is None:
            what = "a per-row key scope: the row's key scope value and" if rb.has_scope \
                else "a binding to its row (bound_to): the"
            raise ConfigurationError(
                f"this column has {what} values of {', '.join(rb.names)} are needed "
                "(pass row=)", column=self.label, operation="encrypt")
        canonical = self.canonical(value)
        try:
            blob = self.cipher.encrypt_bound(utf8(canonical, self.label), given.binding,
                                             scope=given.scope)
        except PIIGuardError as exc:
            raise with_label(exc, self.label) from None
        return encode_text(blob) if self.text_form else blob

    def decrypt_in_row(self, stored: Any, values: Any) -> str:
        """Plaintext of a value of this row-bound column read with its row's binding
        values (``values``, in :attr:`RowBinding.keys` order; None: read without its
        row, which only an envelope written before row binding survives)."""
        rb = self.binding
        assert rb is not None
        blob = to_blob(stored)
        if blob is None:
            return self.decrypt(stored)          # plaintext (allow_plaintext) or an error
        try:
            if values is None:
                if is_bound(blob):
                    raise ConfigurationError(
                        "this value is bound to its row (" + ", ".join(rb.names) + "): "
                        "select it from its table, with those columns in the same FROM "
                        "(not through text() or a subquery without them)",
                        column=self.label, operation="decrypt")
                if self.strict_binding:
                    raise DecryptionError("decryption failed: the envelope is not bound "
                                          "to its row (strict_binding)", column=self.label,
                                          operation="decrypt")
                return self.cipher.decrypt(blob).decode("utf-8")
            try:
                canonical = rb.canonical(values)
            except ConfigurationError:
                raise DecryptionError("decryption failed: the row's binding values are "
                                      "unreadable", column=self.label,
                                      operation="decrypt") from None
            scope = None
            if rb.has_scope:
                scope = "\0" if canonical[0] is None else self.scope_for(canonical[0])
            return self.cipher.decrypt_bound(blob, rb.aad(canonical), scope=scope,
                                             strict=self.strict_binding).decode("utf-8")
        except PIIGuardError as exc:
            raise with_label(exc, self.label) from None
        except UnicodeDecodeError:
            raise DecryptionError("decrypted value is not UTF-8", column=self.label,
                                  operation="decrypt") from None

    def _is_own_envelope(self, value: Any) -> bool:
        """A Sealed envelope read from this column (written back: reused as it is; a
        row-bound column never reuses one: the row may have changed)."""
        return isinstance(value, Sealed) and value.origin is self and not value.legacy \
            and self.binding is None

    def _stored_form(self, stored: bytes | str) -> bytes | str:
        if self.text_form:
            return stored if isinstance(stored, str) else encode_text(bytes(stored))
        return decode_text(stored) if isinstance(stored, str) else stored

    def is_envelope(self, stored: Any) -> bool:
        if isinstance(stored, str):
            return stored.startswith(TEXT_PREFIX) and looks_like_envelope(stored)
        return is_binary_shape(stored)

    def decrypt(self, stored: Any) -> str:
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
            raise with_label(exc, self.label) from None
        except UnicodeDecodeError:
            raise DecryptionError("decrypted value is not UTF-8", column=self.label,
                                  operation="decrypt") from None

    def stored_key_id(self, stored: Any) -> int:
        try:
            return key_id_of(stored)
        except EnvelopeFormatError as exc:
            raise exc.with_column(self.label) from None

    def same_value(self, a: str, b: str) -> bool:
        """True if two stored forms are the same value (compared by search form)."""
        form = self.spec.search_form
        if form is None or a == b:
            return a == b
        return form(a) == form(b)

    def index_for(self, canonical: str) -> bytes | None:
        return None if self.search is None else self.search.index.compute(canonical)

    def index_of_value(self, value: Any) -> bytes | None:
        """Blind index of a value being written (any accepted input form)."""
        if value is None or self.search is None:
            return None
        if isinstance(value, Pending):
            value = value.value
        if isinstance(value, Sealed) and value.origin is self and not value.legacy:
            canonical = unseal(value)
        else:
            canonical = self.canonical(value)
        return self.search.index.compute(canonical)


def attached_column_of(type_: Any) -> AttachedColumn | None:
    """The attached state of an encrypted column type (None for any other type, and for
    an encrypted type not attached to a table yet)."""
    st = getattr(type_, "attached_column", None)
    return st if isinstance(st, AttachedColumn) else None


# ---------------------------------------------------------------------------------------
# the blind index on INSERT: a context-sensitive default of the sibling column
# ---------------------------------------------------------------------------------------
def _index_default(st: AttachedColumn) -> Callable[[Any], bytes | None]:
    key = st.column.key

    def compute_index(context: Any) -> bytes | None:
        value = context.get_current_parameters().get(key)
        return None if value is None else st.index_of_value(value)
    return compute_index


def _on_index_column_attach(col: Column, table: Table) -> None:
    """A blind-index column (or its copy: Column._copy() copies listeners) joined a
    table: the encrypted column it belongs to adopts it if it is waiting for it."""
    main = table.c.get(col.info.get("of", ""))
    st = attached_column_of(getattr(main, "type", None))
    if st is not None and st.table is table and st.search is not None \
            and st.search.awaiting:
        st.search.adopt(col)
