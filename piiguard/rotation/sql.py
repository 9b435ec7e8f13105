"""The SQL the rotation jobs run: untyped table views, key-id expressions, CAS updates.

Which key a stored value uses is written in its envelope header, so "how many rows use
key 7" is a substring of the stored value, grouped: one ``GROUP BY`` query per column,
no decryption. Which substring is the envelope's business
(:data:`piiguard.crypto.envelope.KEY_PREFIX`: the first bytes of a binary envelope, or
the first characters of a text envelope's body); this module turns it into ``substr``
expressions. A text envelope's prefix also carries 2 random bits of the nonce, so each
key shows as at most 8 groups, folded together in Python. ``substr`` is the same
function on SQLite, PostgreSQL (``substr(bytea, int, int)``) and MariaDB; MariaDB
compares text case-insensitively by default, so there the substring is cast to
``BINARY`` before it is grouped or compared (base64 is case-sensitive).

>>> decode_text_group('EAAAAAF'), decode_binary_group(bytes((0x11, 0, 0, 0, 9)))
(1, 9)
>>> decode_index_group(bytes((0, 0, 0, 7))), decode_index_group(b"junk!")
(7, None)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from sqlalchemy import (
    LargeBinary,
    and_,
    bindparam,
    case,
    cast,
    column,
    false,
    func,
    literal_column,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy import table as table_clause
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql.elements import ColumnElement

from piiguard.crypto.blind_index import KEY_ID_SIZE as _INDEX_KEY_BYTES
from piiguard.crypto.envelope import (
    FORMATS,
    KEY_PREFIX,
    TEXT_PREFIX,
    key_ids_in_prefix,
    key_prefixes,
    unbound_prefixes,
)
from piiguard.rotation.targets import EncryptedColumn, TableTarget

__all__ = [
    "Lite",
    "decode_binary_group",
    "decode_index_group",
    "decode_text_group",
    "or_all",
    "text_key_prefixes",
]

#: Alias of the grouped expression: unusual, so it never shadows a real column.
_KID = "piiguard_kid"


class _CompiledCas(NamedTuple):
    """A compare-and-swap UPDATE compiled for one dialect and shape (see
    :meth:`Lite.run_cas`)."""

    sql: str
    positional: bool        # the driver takes tuples in ``names`` order
    names: list[str]        # parameter names, in the order of the tuples given


def _lit(n: int) -> Any:
    # Inline integers: the same expression in SELECT and GROUP BY must render the same.
    return literal_column(str(int(n)))


def text_key_prefixes(key_id: int) -> list[str]:
    """The body prefixes a text envelope under ``key_id`` can start with."""
    return key_prefixes(key_id, text=True)  # type: ignore[return-value]


def decode_text_group(prefix: str | bytes | None) -> int | None:
    """DEK id from a text envelope's body prefix; ``None`` if it is not an envelope's."""
    return key_ids_in_prefix(prefix, text=True)


def decode_binary_group(prefix: Any) -> int | None:
    """DEK id from the prefix of a binary envelope; ``None`` if not one."""
    return key_ids_in_prefix(prefix)


def decode_index_group(prefix: Any) -> int | None:
    """Index key id from the prefix :meth:`Lite.index_groups` groups blind index values
    by; ``None`` if it cannot be one (a value too short to be an index)."""
    if isinstance(prefix, (bytes, bytearray, memoryview)) and len(prefix) == _INDEX_KEY_BYTES:
        return int.from_bytes(bytes(prefix), "big")
    return None


class Lite:
    """An untyped view of one table: raw stored values in and out, no type processors.

    Built from a :class:`TableTarget`; ``c`` maps column names to untyped columns.
    Everything the jobs execute is built here, per dialect.
    """

    def __init__(self, target: TableTarget, engine: Engine | Connection) -> None:
        self.target = target
        t = target.table
        names: list[str] = list(target.pk)
        for ec in target.columns:
            names.append(ec.name)
            if ec.index_name:
                names.append(ec.index_name)
            if ec.scope_name:
                names.append(ec.scope_name)
            names.extend(ec.binding_names)
        self.names = list(dict.fromkeys(names))
        self.tc = table_clause(t.name, *[column(n) for n in self.names], schema=t.schema)
        self.c = self.tc.c
        self.dialect = engine.dialect.name
        self.mysql = self.dialect in ("mysql", "mariadb")
        self._updates: dict[tuple[tuple[str, ...], tuple[str, ...]], _CompiledCas] = {}

    # -- expressions ------------------------------------------------------------------------
    def _exact(self, expr):
        """``expr`` as something that compares byte for byte (MariaDB: cast to BINARY)."""
        return cast(expr, LargeBinary) if self.mysql else expr

    def key_expr(self, ec: EncryptedColumn):
        """The part of the stored value that names its DEK (see the module docstring)."""
        col = self.c[ec.name]
        if ec.text_form:
            return self._exact(func.substr(col, _lit(KEY_PREFIX.text_offset + 1),
                                           _lit(KEY_PREFIX.text_length)))
        return func.substr(col, _lit(1), _lit(KEY_PREFIX.binary_length))

    def is_text_envelope(self, ec: EncryptedColumn):
        col = self.c[ec.name]
        return self._exact(func.substr(col, _lit(1), _lit(len(TEXT_PREFIX)))) \
            == self._prefix_value()

    def _prefix_value(self):
        # Inline literal, so that the same CASE renders identically in SELECT and GROUP BY.
        if self.mysql:
            return literal_column("CAST('" + TEXT_PREFIX + "' AS BINARY)")
        return literal_column("'" + TEXT_PREFIX + "'")

    def is_envelope(self, ec: EncryptedColumn) -> ColumnElement:
        """Stored value looks like an envelope (cheap SQL test, confirmed in Python)."""
        col = self.c[ec.name]
        if ec.text_form:
            return and_(col.is_not(None), self.is_text_envelope(ec))
        return and_(col.is_not(None),
                    func.substr(col, _lit(1), _lit(1)).in_(
                        [bindparam(None, bytes((f,)), type_=LargeBinary) for f in FORMATS]))

    def is_plaintext(self, ec: EncryptedColumn) -> ColumnElement:
        """Stored value is not NULL and does not look like an envelope."""
        col = self.c[ec.name]
        if ec.text_form:
            return and_(col.is_not(None), ~self.is_text_envelope(ec))
        return and_(col.is_not(None),
                    func.substr(col, _lit(1), _lit(1)).not_in(
                        [bindparam(None, bytes((f,)), type_=LargeBinary) for f in FORMATS]))

    def is_unbound(self, ec: EncryptedColumn) -> ColumnElement:
        """Stored value is an envelope that is not bound to its row (written before row
        binding): what ``reencrypt`` upgrades in a row-bound column."""
        col = self.c[ec.name]
        if ec.text_form:
            values: list[Any] = list(unbound_prefixes(text=True))
            if self.mysql:
                values = [v.encode("ascii") for v in values]
            body = self._exact(func.substr(col, _lit(KEY_PREFIX.text_offset + 1), _lit(2)))
            return and_(self.is_text_envelope(ec),
                        body.in_([bindparam(None, v) for v in values]))
        return and_(col.is_not(None), func.substr(col, _lit(1), _lit(1)).in_(
            [bindparam(None, v, type_=LargeBinary) for v in unbound_prefixes()]))

    def uses_deks(self, ec: EncryptedColumn, key_ids: Iterable[int]) -> ColumnElement:
        """Stored value is an envelope under one of ``key_ids``."""
        ids = sorted(set(key_ids))
        if not ids:
            return false()
        col = self.c[ec.name]
        if ec.text_form:
            values: list[Any] = [p for i in ids for p in text_key_prefixes(i)]
            if self.mysql:
                values = [v.encode("ascii") for v in values]
            return and_(self.is_text_envelope(ec),
                        self.key_expr(ec).in_([bindparam(None, v) for v in values]))
        raw = [p for i in ids for p in key_prefixes(i)]
        return func.substr(col, _lit(1), _lit(KEY_PREFIX.binary_length)).in_(
            [bindparam(None, v, type_=LargeBinary) for v in raw])

    def _index_col(self, ec: EncryptedColumn) -> Any:
        if ec.index_name is None:
            raise ValueError(f"{ec.label} has no blind index")
        return self.c[ec.index_name]

    def index_key_expr(self, ec: EncryptedColumn):
        """The part of a stored blind index value that names its index key."""
        return func.substr(self._index_col(ec), _lit(1), _lit(_INDEX_KEY_BYTES))

    def uses_index_keys(self, ec: EncryptedColumn, key_ids: Iterable[int]) -> ColumnElement:
        ids = sorted(set(key_ids))
        if not ids or ec.index_name is None:
            return false()
        return self.index_key_expr(ec).in_(
            [bindparam(None, i.to_bytes(_INDEX_KEY_BYTES, "big"), type_=LargeBinary)
             for i in ids])

    def index_missing(self, ec: EncryptedColumn, skip_deks: Iterable[int] = ()
                      ) -> ColumnElement:
        """A searchable column whose ciphertext is set but whose blind index is not
        (values under ``skip_deks``, e.g. destroyed keys, excluded)."""
        if ec.index_name is None:
            return false()
        cond = and_(self.c[ec.index_name].is_(None), self.is_envelope(ec))
        skip = set(skip_deks)
        return and_(cond, ~self.uses_deks(ec, skip)) if skip else cond

    # -- queries ----------------------------------------------------------------------------
    def pk_cols(self):
        return [self.c[n] for n in self.target.pk]

    def after(self, last: Sequence[Any] | None):
        """Keyset condition: rows after ``last`` in primary key order."""
        if last is None:
            return None
        cols = self.pk_cols()
        if len(cols) == 1:
            return cols[0] > last[0]
        return tuple_(*cols) > tuple_(*last)

    def page(self, names: Sequence[str], where: ColumnElement | None, *, last=None,
             upto: Any = None, limit: int, lock: bool = False):
        """``SELECT pk, names… WHERE where AND pk > last [AND pk <= upto] ORDER BY pk
        LIMIT n`` (``FOR UPDATE SKIP LOCKED`` on PostgreSQL when ``lock``)."""
        pk = self.pk_cols()
        q = select(*pk, *[self.c[n] for n in names])
        conds = [c for c in (where, self.after(last)) if c is not None]
        if upto is not None:
            conds.append(pk[0] <= upto)
        if conds:
            q = q.where(and_(*conds))
        q = q.order_by(*pk).limit(limit)
        if lock and self.dialect == "postgresql":
            q = q.with_for_update(skip_locked=True)
        return q

    def count(self, where: ColumnElement | None):
        q = select(func.count()).select_from(self.tc)
        return q if where is None else q.where(where)

    def pk_bounds(self, where: ColumnElement | None):
        pk = self.pk_cols()[0]
        q = select(func.min(pk), func.max(pk))
        return q if where is None else q.where(where)

    def key_groups(self, ec: EncryptedColumn):
        """One query: stored values of ``ec`` grouped by the key they name.

        Text form: ``CASE WHEN envelope THEN prefix END`` so plaintext falls in the NULL
        group (counted with ``count(col)``, which skips real NULLs)."""
        col = self.c[ec.name]
        if ec.text_form:
            grouped = case((self.is_text_envelope(ec), self.key_expr(ec)), else_=None)
        else:
            grouped = self.key_expr(ec)
        return (select(grouped.label(_KID), func.count(col))
                .where(col.is_not(None)).group_by(literal_column(_KID)))

    def index_groups(self, ec: EncryptedColumn):
        """One query: stored blind index values of ``ec`` grouped by index key."""
        col = self._index_col(ec)
        expr = self.index_key_expr(ec)
        return (select(expr.label(_KID), func.count(col))
                .where(col.is_not(None)).group_by(literal_column(_KID)))

    def cas_update(self, sets: Sequence[str], checks: Sequence[str]):
        """``UPDATE t SET s = :n_s … WHERE pk = :pk_… AND c = :o_c …`` (compare-and-swap).

        Parameters: ``n_<col>`` for each set column, ``pk_<name>``, then ``o_<col>`` for
        each checked column. Text comparisons are byte-exact on MariaDB."""
        conds = [self.c[n] == bindparam(f"pk_{n}") for n in self.target.pk]
        for n in checks:
            conds.append(self._exact(self.c[n]) == bindparam(f"o_{n}"))
        return (update(self.tc).where(and_(*conds))
                .values({n: bindparam(f"n_{n}") for n in sets}))

    def run_cas(self, conn: Connection, sets: tuple[str, ...], checks: tuple[str, ...],
                params: list[tuple[Any, ...]]) -> int:
        """Execute one compare-and-swap per tuple ``(*new, *pk, *old)`` as one
        executemany on the driver; returns how many rows matched (were swapped).

        The statement is compiled once per shape and the tuples go to the driver as
        they are: per-row SQLAlchemy parameter processing would cost more than the
        encryption."""
        key = (sets, checks)
        compiled = self._updates.get(key)
        if compiled is None:
            c = self.cas_update(sets, checks).compile(dialect=conn.dialect)
            names = [f"n_{n}" for n in sets] + [f"pk_{n}" for n in self.target.pk] + \
                [f"o_{n}" for n in checks]
            positional = bool(c.positional) and list(c.positiontup or ()) == names
            if c.positional and not positional:  # pragma: no cover - defensive
                raise RuntimeError("unexpected parameter order in compiled CAS update")
            compiled = self._updates[key] = _CompiledCas(c.string, positional, names)
        if compiled.positional:
            return conn.exec_driver_sql(compiled.sql, params).rowcount
        named = [dict(zip(compiled.names, p, strict=True)) for p in params]
        return conn.exec_driver_sql(compiled.sql, named).rowcount

    def exact_param(self, value: Any) -> Any:
        """A CAS comparison value: MariaDB compares the bytes (see :meth:`_exact`)."""
        if self.mysql and isinstance(value, str):
            return value.encode("utf-8")
        return value


def or_all(conds: list[ColumnElement]) -> ColumnElement:
    """``c1 OR c2 …`` (``false()`` for none)."""
    conds = [c for c in conds if c is not None]
    if not conds:
        return false()
    return conds[0] if len(conds) == 1 else or_(*conds)
