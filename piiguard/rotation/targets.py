"""Which columns the rotation jobs work on: the encrypted columns a Guard knows about.

Every encrypted column type attached to a table registers itself in ``guard.columns``
(see ``piiguard.sqlalchemy``); :class:`ColumnType` is what the jobs use of one (its
public column interface). This module turns those entries into
:class:`EncryptedColumn` (one column: where its ciphertext and blind index live and how
to read them) grouped by table into :class:`TableTarget` (the primary key the jobs page
and compare-and-swap on). Jobs read raw stored values: no type processors run, so a job
never decrypts or encrypts by accident.

>>> envelope_key_id("10000000146") is None
True
>>> row_key(("id",), (42,))
'id=42'
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import Column, Table, inspect

from piiguard.crypto.blind_index import index_key_id_of
from piiguard.crypto.envelope import decode_text, encode_text, peek_key_id, to_blob
from piiguard.errors import ConfigurationError, EnvelopeFormatError
from piiguard.field import FieldCipher, FieldIndex

__all__ = [
    "ColumnType",
    "EncryptedColumn",
    "TableTarget",
    "discover",
    "envelope_key_id",
    "index_key_id",
    "row_key",
    "to_blob",
]


class ColumnType(Protocol):
    """What the jobs use of an encrypted column type registered in ``guard.columns``:
    the public column interface of ``piiguard.sqlalchemy`` (``table`` and ``column``
    are ``None`` until the type is attached to a table)."""

    allow_plaintext: bool

    @property
    def table(self) -> Table | None: ...

    @property
    def column(self) -> Column[Any] | None: ...

    @property
    def label(self) -> str: ...

    @property
    def cipher(self) -> FieldCipher: ...

    @property
    def index(self) -> FieldIndex | None: ...

    @property
    def index_column(self) -> Column[Any] | None: ...

    @property
    def text_form(self) -> bool: ...

    @property
    def key_scope_column(self) -> Column[Any] | None: ...

    @property
    def binding_columns(self) -> tuple[Column[Any], ...]: ...

    def binding_for(self, values: Any) -> Any: ...

    def encrypt_value(self, value: Any, *, scope_value: Any = None,
                      row: Any = None) -> bytes | str: ...

    def decrypt_stored(self, stored: bytes | str, *, scope_value: Any = None,
                       row: Any = None) -> str: ...

    def canonical(self, value: Any) -> str: ...

    def index_for(self, canonical: str) -> bytes | None: ...


def envelope_key_id(stored: Any) -> int | None:
    """The DEK id a stored envelope names (no decryption), ``None`` if not an envelope."""
    return peek_key_id(stored)


def index_key_id(stored: Any) -> int | None:
    """The index key id a stored blind index value names."""
    return index_key_id_of(stored)


def row_key(pk_names: Iterable[str], values: Iterable[Any]) -> str:
    """How a row is named in reports: its primary key, ``id=42`` (never a value)."""
    return ",".join(f"{n}={v}" for n, v in zip(pk_names, values, strict=True))


@dataclass(eq=False)
class EncryptedColumn:
    """One encrypted column as the jobs see it.

    ``entry`` is the column type instance (:class:`ColumnType`);
    ``name``/``index_name`` are the database column names of the ciphertext and of the
    blind index (``None`` when the column is not searchable); ``scope_name`` names the
    sibling column that picks each row's key scope (``key_scope=``), if any;
    ``binding_names`` the columns its envelopes are bound to (the key scope column
    first, then ``bound_to``; empty: bound to ``table.column`` only).
    """

    entry: ColumnType
    label: str
    name: str
    cipher: FieldCipher
    text_form: bool
    index_name: str | None
    index: FieldIndex | None
    allow_plaintext: bool
    scope_name: str | None = None
    binding_names: tuple[str, ...] = ()
    strict_binding: bool = False

    def __repr__(self) -> str:
        return f"EncryptedColumn({self.label!r}, text_form={self.text_form})"

    # -- reading and writing stored values (no type processors) ---------------------------
    def decrypt(self, stored: Any) -> bytes:
        """Plaintext bytes of a stored envelope (raises the cipher's errors)."""
        if isinstance(stored, str):
            stored = self._decode(stored)
        elif type(stored) is not bytes:
            stored = bytes(stored)
        return self.cipher.decrypt(stored)

    def _decode(self, text: str) -> bytes:
        try:
            return decode_text(text)
        except EnvelopeFormatError as exc:
            raise exc.with_column(self.label) from None

    def seal(self, plaintext: bytes, scope: str | None) -> Any:
        """A new stored value for ``plaintext`` under the active DEK of ``scope``."""
        blob = self.cipher.encrypt(plaintext, scope=scope)
        if self.text_form:
            return encode_text(blob)
        return blob

    def bound_row(self, values: Any) -> Any:
        """The binding bytes and DEK scope (a ``BoundRow``) of a row whose
        :attr:`binding_names` columns hold ``values``."""
        return self.entry.binding_for(values)

    def compute_index(self, canonical: str) -> bytes | None:
        """The blind index of ``canonical`` under the active index key."""
        if self.index_name is None:
            return None
        return self.entry.index_for(canonical)


@dataclass(eq=False)
class TableTarget:
    """The encrypted columns of one table and the primary key the jobs page on."""

    table: Table
    pk: tuple[str, ...]
    columns: list[EncryptedColumn] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.table.fullname

    def __repr__(self) -> str:
        return f"TableTarget({self.name!r}, columns={[c.label for c in self.columns]})"

    @property
    def int_pk(self) -> bool:
        """True if the primary key is one integer column (range partitioning works)."""
        if len(self.pk) != 1:
            return False
        try:
            return self.table.c[self.pk[0]].type.python_type is int
        except (NotImplementedError, AttributeError):
            return False


def _adapt(entry: ColumnType, col: Column[Any]) -> EncryptedColumn:
    idx_col = entry.index_column
    scope_col = entry.key_scope_column
    binding = tuple(c.name for c in getattr(entry, "binding_columns", ()))
    return EncryptedColumn(
        entry=entry, label=entry.label, name=col.name, cipher=entry.cipher,
        text_form=bool(entry.text_form),
        index_name=None if idx_col is None else idx_col.name,
        index=entry.index,
        allow_plaintext=bool(entry.allow_plaintext),
        scope_name=None if scope_col is None else scope_col.name,
        binding_names=binding, strict_binding=bool(getattr(entry, "strict_binding", False)))


def discover(guard: Any, *, table: str | None = None,
             column: str | None = None) -> list[TableTarget]:
    """The guard's encrypted columns grouped by table (optionally one table/column).

    Raises :class:`~piiguard.errors.ConfigurationError` when a named table or column is
    not among them, or not in the database (a typo must not look like "nothing to
    do"); declared tables the bound database does not have are skipped.
    """
    by_table: dict[str, TableTarget] = {}
    seen: set[str] = set()
    entries: list[ColumnType] = list(guard.columns)
    for entry in entries:
        t, col = entry.table, entry.column
        if t is None or col is None:
            continue  # declared but not attached to a table yet
        ec = _adapt(entry, col)
        if ec.label in seen:
            continue
        seen.add(ec.label)
        if table is not None and table not in (t.name, t.fullname):
            continue
        if column is not None and ec.name != column and ec.label != column:
            continue
        target = by_table.get(t.fullname)
        if target is None:
            pk = tuple(c.name for c in t.primary_key.columns)
            if not pk:
                raise ConfigurationError("table has no primary key; the jobs need one to "
                                         "compare-and-swap rows", column=ec.label)
            target = by_table[t.fullname] = TableTarget(t, pk)
        target.columns.append(ec)
    if table is not None and not by_table:
        where = f"{table}.{column}" if column else table
        raise ConfigurationError(f"no encrypted column registered for {where} (is the "
                                 "model imported by the --app module?)", column=where)
    engine = guard.engine
    if engine is not None and by_table:
        # Models the application declares but this database does not have (yet): a
        # named table must exist; otherwise they are skipped.
        with engine.connect() as conn:
            insp = inspect(conn)
            missing = [k for k, t in by_table.items()
                       if not insp.has_table(t.table.name, schema=t.table.schema)]
        if missing and table is not None:
            raise ConfigurationError(f"table {missing[0]} does not exist in this database",
                                     column=missing[0])
        for k in missing:
            del by_table[k]
    return [by_table[k] for k in sorted(by_table)]
