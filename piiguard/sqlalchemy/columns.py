"""The encrypted column types: :class:`EncryptedString` and one subclass per PII kind.

A type is built with its options (checked at once) and the kind's facts from
:mod:`piiguard.kinds` (validator, longest value, padding) into a
:class:`~.state.ColumnSpec`; when its column joins a table it makes the
:class:`~.state.AttachedColumn` that everything else works with.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Column, LargeBinary, Text
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

from piiguard.crypto.blind_index import check_bits
from piiguard.crypto.envelope import BINARY_OVERHEAD
from piiguard.crypto.padding import bucket_size
from piiguard.errors import ConfigurationError
from piiguard.field import FieldCipher, FieldIndex
from piiguard.kinds import kind as kind_of
from piiguard.kinds import text_canonical
from piiguard.sqlalchemy import hooks, processors
from piiguard.sqlalchemy._sa_private import on_table_attach, replace_impl
from piiguard.sqlalchemy.binding import check_bound_to
from piiguard.sqlalchemy.comparator import EncryptedComparator
from piiguard.sqlalchemy.sealed import Sealed
from piiguard.sqlalchemy.state import AttachedColumn, BoundRow, ColumnSpec
from piiguard.sqlalchemy.storage import Ciphertext, storage_impl

__all__ = [
    "EncryptedAddress",
    "EncryptedEmail",
    "EncryptedNationalId",
    "EncryptedPhone",
    "EncryptedString",
    "EncryptedTaxId",
]


class EncryptedString(TypeDecorator):
    """A text column stored encrypted (AES-256-GCM envelope bound to table.column).

    - ``guard``: the application's :class:`~piiguard.Guard` (hashed by identity; no key
      material is ever an argument).
    - ``searchable``: keep a blind index in ``<column>_bidx`` for ``==`` / ``in_()``.
    - ``index_bits``: truncate the index (fewer bits leak less; see
      :func:`~piiguard.crypto.blind_index.recommend_bits` and
      :func:`~piiguard.sqlalchemy.lookup`).
    - ``text``: store the ``pg1:`` text envelope in VARCHAR/TEXT instead of binary.
    - ``padded``: pad to size buckets before encryption (default: the kind's, on for
      free text).
    - ``key_scope``: name of a sibling column whose value picks the row's DEK scope
      (``"<table>:<value>"``): one tenant's or subject's data can be shredded alone.
      A key-scoped value is bound to its row's scope: moved to another subject's row
      it fails to decrypt.
    - ``bound_to``: names of sibling columns (integers, strings, UUIDs) whose values
      are bound into every envelope, e.g. ``bound_to=("customer_ref", "version")``:
      an envelope copied to another row, or replayed into its own row after the
      version changed, fails to decrypt. Changing one of them re-encrypts the row's
      bound values in the same statement or flush.
    - ``strict_binding``: refuse (``DecryptionError``) envelopes of a bound column
      written before row binding, instead of reading them until ``reencrypt``
      upgrades them.
    - ``kind``: the PII kind (masking policy rules are per kind).
    - ``allow_plaintext``: while migrating a plaintext column, read legacy plaintext
      values as they are (off by default: a non-envelope value is an error).
    - ``on_destroyed``: ``"null"`` (the default; ``None`` says the same) reads a value
      under a crypto-shredded key as ``None``, so a query over rows that include erased
      subjects returns them all; ``"raise"`` (the strict form) raises
      :class:`~piiguard.errors.KeyDestroyedError` instead.

    ``None`` stays NULL. Values are validated and canonicalised before encryption:
    invalid input raises a :class:`~piiguard.errors.InvalidInputError` (a
    ``ValueError``) naming ``table.column`` before anything reaches the database.
    ``EncryptedString`` itself only NFC-normalises, whatever ``kind=`` says; the
    subclasses apply their kind's validator.
    """

    impl = LargeBinary
    cache_ok = True
    #: The default kind (``kind=`` overrides it for masking and sizing).
    _kind = "text"
    #: Validate with the registry's validator of ``_kind`` (False: free text, NFC only).
    _validates_kind = False
    coerce_to_is_types = (type(None),)
    comparator_factory = EncryptedComparator

    def __init__(self, guard: Any, *, searchable: bool = False, index_bits: int = 256,
                 text: bool = False, padded: bool | None = None, key_scope: Any = None,
                 kind: str | None = None, allow_plaintext: bool = False,
                 on_destroyed: str | None = "null", bound_to: Any = None,
                 strict_binding: bool = False) -> None:
        super().__init__()
        if on_destroyed is None:
            on_destroyed = "null"
        if on_destroyed not in ("raise", "null"):
            raise ConfigurationError("on_destroyed must be 'null' (the default: erased "
                                     "values read as None) or 'raise'")
        bound = check_bound_to(bound_to)
        for attr in ("field", "blind_index", "register_scope", "columns"):
            if not hasattr(guard, attr):
                raise ConfigurationError("an encrypted column needs a piiguard Guard")
        declared = kind_of(kind or self._kind)      # ConfigurationError if unknown
        if searchable:
            check_bits(index_bits)
        if key_scope is not None and not isinstance(key_scope, str) and not hasattr(
                key_scope, "key") and not hasattr(key_scope, "column"):
            raise ConfigurationError("key_scope must name a sibling column")
        validating = kind_of(self._kind) if self._validates_kind else None
        if searchable and validating is not None and not validating.searchable:
            raise ConfigurationError(f"{type(self).__name__} cannot be searchable: equal "
                                     f"{validating.name} values have no one text form")
        self._spec = ColumnSpec(
            guard=guard, kind=declared.name, text=bool(text),
            padded=declared.padded if padded is None else bool(padded),
            searchable=bool(searchable), index_bits=int(index_bits), key_scope=key_scope,
            allow_plaintext=bool(allow_plaintext), on_destroyed=on_destroyed,
            validate=self._make_validator(),
            canonical_never_envelope=validating is not None
            and validating.canonical_never_envelope,
            bound_to=bound, strict_binding=bool(strict_binding),
            search_form=validating.search_form if validating is not None else None,
            decode=validating.decode if validating is not None else None)
        self._max_plain_bytes = declared.max_bytes
        # The Column this instance was given (_set_parent), whether this instance (not a
        # copy sharing its __dict__) was the one given it, and the attached state.
        self._column: Column | None = None
        self._owns_column = False
        self._attached_column: AttachedColumn | None = None
        self._adopt_index = False
        if self._spec.text:
            replace_impl(self, Text())

    # -- options (as built) ----------------------------------------------------------------
    @property
    def guard(self) -> Any:
        return self._spec.guard

    @property
    def kind(self) -> str:
        return self._spec.kind

    @property
    def text(self) -> bool:
        return self._spec.text

    @property
    def padded(self) -> bool:
        return self._spec.padded

    @property
    def searchable(self) -> bool:
        return self._spec.searchable

    @property
    def index_bits(self) -> int:
        return self._spec.index_bits

    @property
    def key_scope(self) -> Any:
        return self._spec.key_scope

    @property
    def allow_plaintext(self) -> bool:
        return self._spec.allow_plaintext

    @property
    def on_destroyed(self) -> str:
        return self._spec.on_destroyed

    @property
    def bound_to(self) -> tuple[Any, ...]:
        return self._spec.bound_to

    @property
    def strict_binding(self) -> bool:
        return self._spec.strict_binding

    def _make_validator(self) -> Callable[[Any], str]:
        """``validate(value) -> canonical str`` of this type."""
        return kind_of(self._kind).validate if self._validates_kind else text_canonical

    @property
    def max_bytes(self) -> int | None:
        """Largest stored envelope in bytes (None: unbounded)."""
        n = self._max_plain_bytes
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

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        return storage_impl(dialect, self.text, self.max_bytes)

    @property
    def python_type(self) -> type:
        return str

    # -- schema events: learn the column, then the table -----------------------------------
    def _set_parent(self, parent: Any, outer: bool = False, **kw: Any) -> None:
        super()._set_parent(parent, outer=outer, **kw)
        if not isinstance(parent, Column):
            return
        if self._column is not parent:
            att = self._attached_column
            if self._owns_column and att is not None:
                raise ConfigurationError(
                    "one encrypted column type instance per column: this one is already "
                    f"used by {att.label}", column=att.label)
            self._column = parent
            self._attached_column = None
        self._owns_column = True
        on_table_attach(parent, self._on_attach)

    def _on_attach(self, column: Column, table: Any) -> None:
        if column.type is not self or self._column is not column:
            return      # a listener copied onto another column by Column._copy()
        att = self._attached_column
        if att is not None:
            if att.table is table:
                return
            raise ConfigurationError("encrypted column attached to a second table",
                                     column=att.label)
        att = AttachedColumn(self._spec, column, table, adopt_index=self._adopt_index)
        self._attached_column = att
        hooks.register_column(att)
        self.guard.columns.append(self)
        hooks.register_alembic_if_loaded()

    def copy(self, **kw: Any) -> EncryptedString:
        # Column._copy() (mixins, to_metadata) and dialect adaptation both copy types; a
        # copy keeps the state until it is given a column of its own (_set_parent).
        instance = self.__class__.__new__(self.__class__)
        instance.__dict__.update(self.__dict__)
        instance._owns_column = False
        att = self._attached_column
        # copying an attached searchable column: its table's index column is copied too
        instance._adopt_index = att is not None and att.search is not None and \
            att.search.resolved
        return instance

    def _resolve_for_python_type(self, python_type: Any, matched_on: Any,
                                 matched_on_flattened: Any) -> Any:
        # The ORM's type_annotation_map hands one type object to every column annotated
        # with the same Python type: give each column its own copy.
        resolved = super()._resolve_for_python_type(python_type, matched_on,
                                                    matched_on_flattened)
        return resolved.copy() if resolved is self else resolved

    @property
    def _static_cache_key(self) -> Any:
        att, col = self._attached_column, self._column
        if att is not None:
            label: str | None = att.label
        elif col is not None:
            label = f"?.{col.name}" if col.name else "?"
        else:
            label = None
        ks = self.key_scope
        return (self.__class__, id(self.guard), self.kind, self.text, self.padded,
                self.searchable, self.index_bits, self.allow_plaintext,
                ks if isinstance(ks, str) else id(ks), label,
                id(att if att is not None else col), self.on_destroyed,
                tuple(b if isinstance(b, str) else id(b) for b in self.bound_to),
                self.strict_binding)

    # -- public column interface (what the ops jobs and lookups use) -----------------------
    @property
    def attached_column(self) -> AttachedColumn | None:
        """The column's attached state (None until the column joins a table)."""
        return self._attached_column

    def attached(self) -> AttachedColumn:
        """The attached state; :class:`ConfigurationError` before the column has a table."""
        att = self._attached_column
        if att is None:
            raise ConfigurationError("this encrypted column type is not attached to a "
                                     "table yet")
        return att

    @property
    def table(self) -> Any:
        """The Table this column belongs to (None until attached)."""
        att = self._attached_column
        return None if att is None else att.table

    @property
    def column(self) -> Column | None:
        """The Column (None until attached to a table)."""
        att = self._attached_column
        return None if att is None else att.column

    @property
    def label(self) -> str:
        return self.attached().label

    @property
    def cipher(self) -> FieldCipher:
        return self.attached().cipher

    @property
    def index(self) -> FieldIndex | None:
        return self.attached().index

    @property
    def index_column(self) -> Column | None:
        return self.attached().index_column

    @property
    def text_form(self) -> bool:
        return self.text

    @property
    def key_scope_column(self) -> Column | None:
        """The sibling column whose value picks each row's DEK scope (or None)."""
        return self.attached().scope_column

    def scope_for(self, scope_value: Any) -> str:
        return self.attached().scope_for(scope_value)

    @property
    def binding_columns(self) -> tuple[Column, ...]:
        """The sibling columns every envelope is bound to: the key scope column first,
        then ``bound_to`` (empty: bound to ``table.column`` only)."""
        rb = self.attached().binding
        return () if rb is None else rb.columns

    def binding_for(self, values: Any) -> BoundRow:
        """The binding bytes and DEK scope of a row whose :attr:`binding_columns` hold
        ``values`` (in that order): what the ops jobs open and seal its values with."""
        return self.attached().bound_row(values)

    def encrypt_value(self, value: Any, *, scope_value: Any = None,
                      row: Any = None) -> bytes | str:
        """Validate, canonicalise and encrypt ``value`` into its stored form. A row-bound
        column needs ``row`` (its binding columns' values, by key or name), or
        ``scope_value`` when it is bound to its key scope only."""
        return self.attached().encrypt_value(value, scope_value=scope_value, row=row)

    def decrypt_stored(self, stored: bytes | str, *, scope_value: Any = None,
                       row: Any = None) -> str:
        """Plaintext of a stored value (no masking: for operators' jobs). A row-bound
        envelope opens only with its row: ``row`` (its binding columns' values, by key
        or name), or ``scope_value`` for a column bound to its key scope only."""
        st = self.attached()
        rb = st.binding
        if rb is None:
            return st.decrypt(stored)
        values = None
        if row is not None:
            by_name = all(k in row for k in rb.names) and not all(k in row for k in rb.keys)
            values = rb.values_from(row, by_name=by_name)
        elif scope_value is not None and rb.has_scope and len(rb.keys) == 1:
            values = [scope_value]
        return st.decrypt_in_row(stored, values)

    def stored_key_id(self, stored: bytes | str) -> int:
        """DEK id named by a stored envelope (no decryption)."""
        return self.attached().stored_key_id(stored)

    def is_envelope(self, stored: bytes | str) -> bool:
        """True if ``stored`` is an envelope (False for legacy plaintext)."""
        return self.attached().is_envelope(stored)

    def canonical(self, value: Any) -> str:
        """The canonical form ``value`` would be encrypted in (validates)."""
        return self.attached().canonical(value)

    def index_for(self, canonical: str) -> bytes | None:
        """Blind index value of a canonical value under the active index key."""
        return self.attached().index_for(canonical)

    # -- value processing ------------------------------------------------------------------
    def bind_processor(self, dialect: Dialect) -> Any:
        return processors.bind_processor(self.attached())

    def result_processor(self, dialect: Dialect, coltype: Any) -> Any:
        return processors.result_processor(self.attached())

    def column_expression(self, column: Any) -> Any:
        # A row-bound column is read with its row's binding columns (one JSON array,
        # see .binding); every other column is read as it is. Runs at compile time only.
        att = self._attached_column
        if att is None or att.binding is None:
            return column
        return att.binding.read_expression(column, self.text)

    def literal_processor(self, dialect: Dialect) -> Any:
        # literal_binds (offline migrations, printed statements) render the envelope,
        # never the plaintext: X'..' (SQLite, MySQL) or '\x..'::bytea (PostgreSQL).
        st = self.attached()
        pg = dialect.name == "postgresql"

        def render(value: Any) -> str:
            stored = st.encrypt_value(value)
            if isinstance(stored, str):
                return "'" + stored + "'"
            return ("'\\x" + stored.hex() + "'::bytea") if pg else ("X'" + stored.hex() + "'")
        return render

    def compare_values(self, x: Any, y: Any) -> bool:
        if type(x) is Sealed or type(y) is Sealed:
            return type(x) is type(y) and bool(x == y)
        return bool(x == y)


class EncryptedNationalId(EncryptedString):
    """T.C. Kimlik No (11 digits, checksum), stored encrypted; canonical form is 11
    ASCII digits (``100 000 001 46`` -> ``10000000146``)."""

    _kind = "national_id"
    _validates_kind = True


class EncryptedTaxId(EncryptedString):
    """Vergi Kimlik Numarası (10 digits, checksum), stored encrypted."""

    _kind = "tax_id"
    _validates_kind = True


class EncryptedPhone(EncryptedString):
    """A phone number, stored encrypted in E.164 (``+905321234567``).

    ``region`` reads numbers written without ``+`` (default ``'TR'``); ``only_region``
    and ``mobile_only`` restrict what is accepted (see :mod:`piiguard.validators.phone`).
    """

    _kind = "phone"
    _validates_kind = True

    def __init__(self, guard: Any, *, region: str | None = "TR",
                 only_region: str | None = None, mobile_only: bool = False,
                 **kw: Any) -> None:
        # imported with the first phone column: phonenumbers is slow to import
        from piiguard.validators import phone
        if region is not None and region != "TR":
            phone.check_region(region)
        if only_region is not None and only_region != "TR":
            phone.check_region(only_region)
        self.region = region
        self.only_region = only_region
        self.mobile_only = bool(mobile_only)
        super().__init__(guard, **kw)

    def _make_validator(self) -> Callable[[Any], str]:
        validate = kind_of("phone").validate
        region, only_region, mobile_only = self.region, self.only_region, self.mobile_only
        if region == "TR" and only_region is None and not mobile_only:
            return validate

        def check(value: Any) -> str:
            return validate(value, region, only_region=only_region, mobile_only=mobile_only)
        return check

    @property
    def _static_cache_key(self) -> Any:
        return super()._static_cache_key + (self.region, self.only_region, self.mobile_only)


class EncryptedAddress(EncryptedString):
    """A Turkish postal address, stored encrypted as the user wrote it (NFC, whitespace
    collapsed; padded to size buckets so the ciphertext length does not tell the
    address length), searched by its canonical text (see
    :func:`piiguard.validators.address.check`).

    ``level``: ``"strict"`` (the default) refuses an address that breaks any rule of
    :func:`~piiguard.validators.address.validate`; ``"lenient"`` accepts any address
    with a recognisable province (``address.check(value, "lenient").unchecked`` tells
    what could not be checked), for imports of real customer data.
    """

    _kind = "address"
    _validates_kind = True

    def __init__(self, guard: Any, *, level: str = "strict", **kw: Any) -> None:
        from piiguard.validators.address import LEVELS
        if level not in LEVELS:
            raise ConfigurationError(f"unknown address validation level {level!r}; "
                                     "expected 'strict' or 'lenient'")
        self.level = level
        super().__init__(guard, **kw)

    def _make_validator(self) -> Callable[[Any], str]:
        if self.level == "strict":
            return kind_of("address").validate
        from piiguard.validators.address import as_written_lenient
        return as_written_lenient

    @property
    def _static_cache_key(self) -> Any:
        return super()._static_cache_key + (self.level,)


class EncryptedEmail(EncryptedString):
    """An e-mail address, stored encrypted (domain lower-cased; ``lowercase_local``
    folds the local part too)."""

    _kind = "email"
    _validates_kind = True

    def __init__(self, guard: Any, *, lowercase_local: bool = False, **kw: Any) -> None:
        self.lowercase_local = bool(lowercase_local)
        super().__init__(guard, **kw)

    def _make_validator(self) -> Callable[[Any], str]:
        validate = kind_of("email").validate
        if not self.lowercase_local:
            return validate

        def check(value: Any) -> str:
            return validate(value, lowercase_local=True)
        return check

    @property
    def _static_cache_key(self) -> Any:
        return super()._static_cache_key + (self.lowercase_local,)
