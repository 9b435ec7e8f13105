"""KeyStore: every SQL statement piiguard runs on the key table.

The store reads and writes rows and hands back named records (:class:`KeyRow` with the
wrapped key, :class:`KeyInfo` without); it knows nothing of the KMS, the plaintext cache
or when to refresh. Reads that may fall back on a cached key pass ``brief=True``: waiting
for another connection's lock then ends after
:data:`~piiguard.keys.locks.BRIEF_LOCK_WAIT_MS` with an ``OperationalError``.

    >>> from datetime import datetime, timezone
    >>> from sqlalchemy import create_engine
    >>> from piiguard.kms.base import DataKeyPair
    >>> store = KeyStore(key_table())
    >>> store.bind(create_engine("sqlite://"))
    >>> now = datetime(2024, 1, 1, tzinfo=timezone.utc)
    >>> added = store.insert_active("dek", "customers", DataKeyPair(b"k" * 32, b"w", "mk"), now)
    >>> added.created, added.row.id, added.row.state
    (True, 1, 'active')
    >>> store.active_row("dek", "customers")
    KeyRow(id=1, kind='dek', scope='customers', state='active', master_key_id='mk', ...)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Table, and_, bindparam, delete, select, update
from sqlalchemy.engine import Connection, CursorResult, Engine
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.sql import Select
from sqlalchemy.sql.elements import ColumnElement

from piiguard.errors import ConfigurationError, KeyInUseError, UnknownKeyError
from piiguard.keys.locks import brief_lock_waits
from piiguard.keys.notify import create_generation, generation_table, key_table_changed
from piiguard.keys.table import (ACTIVE, DECRYPT_ONLY, DESTROYED, ERASED, KEK, KEK_PREFIX,
                                 REOPENED, key_table)
from piiguard.kms.base import DataKeyPair

__all__ = ["KeyInfo", "KeyRow", "Inserted", "KeyStore", "LocalWrap", "StaleKekError"]

#: How many scopes one ``IN (...)`` list names (far below every driver's bind limit).
CHUNK = 500


class LocalWrap(NamedTuple):
    """A new key to be wrapped locally under KEK ``kek_id`` once its row id is known:
    ``wrap(key_id, scope)`` gives the wrapped bytes (key-table format 2)."""

    kek_id: int
    wrap: Callable[[int, str], bytes]

    @property
    def master_key_id(self) -> str:
        return f"{KEK_PREFIX}{self.kek_id}"


#: What a new key row is wrapped with: by the KMS (a KEK, or format 1) or locally.
NewKey = DataKeyPair | LocalWrap


class StaleKekError(Exception):
    """The KEK a new key was to be wrapped under is no longer the active one (an
    erasure epoch replaced it): nothing was written; wrap it under the new one."""

    def __init__(self, kek_id: int) -> None:
        super().__init__(f"KEK {kek_id} is no longer active")
        self.kek_id = kek_id


@dataclass(frozen=True)
class KeyInfo:
    """One key table row, without key material (what ``keys status`` shows)."""

    id: int
    kind: str
    scope: str
    state: str
    master_key_id: str
    created_at: datetime
    state_changed_at: datetime | None
    destroyed_at: datetime | None
    encryption_count: int


@dataclass(frozen=True)
class KeyRow:
    """One key table row with its wrapped key (``None`` once destroyed; never shown)."""

    id: int
    kind: str
    scope: str
    state: str
    master_key_id: str
    created_at: datetime
    state_changed_at: datetime | None
    destroyed_at: datetime | None
    encryption_count: int
    wrapped_key: bytes | None = field(repr=False)

    @classmethod
    def of(cls, row: Any) -> KeyRow:
        """The record of a row as SQLAlchemy returns it."""
        wrapped = row.wrapped_key
        return cls(row.id, row.kind, row.scope, row.state, row.master_key_id, row.created_at,
                   row.state_changed_at, row.destroyed_at, row.encryption_count or 0,
                   None if wrapped is None else bytes(wrapped))

    def info(self) -> KeyInfo:
        return KeyInfo(self.id, self.kind, self.scope, self.state, self.master_key_id,
                       self.created_at, self.state_changed_at, self.destroyed_at,
                       self.encryption_count)


@dataclass(frozen=True)
class Inserted:
    """What :meth:`KeyStore.insert_active` did: ``row`` is the active key, ours if
    ``created``, else the one another process inserted first."""

    row: KeyRow
    created: bool


def _slot(kind: str, scope: str) -> str:
    # The unique active_slot column: "one active key per kind and scope" as a DB rule.
    return f"{kind}:{scope}"


def _inserted_id(result: CursorResult[Any]) -> int:
    key = result.inserted_primary_key
    if key is None:  # only for statements other than a single-row INSERT
        raise ConfigurationError("the key table did not report the new key's id")
    return int(key[0])


class KeyStore:
    """The key table of one database (``table``, bound to ``engine`` by :meth:`bind`)."""

    def __init__(self, table: Table | None = None) -> None:
        self.table = table if table is not None else key_table()
        #: the one-row generation counter of key changes (:mod:`piiguard.keys.notify`)
        self.generation = generation_table(self.table)
        self.engine: Engine | None = None

    # -- connections ---------------------------------------------------------------------
    def bind(self, engine: Engine, *, create: bool = True) -> None:
        """Use ``engine``'s database, creating the key table if it is missing; with
        ``create=False`` refuse (``ConfigurationError``) a database without it (tables
        made by a migration: the application needs no DDL rights)."""
        if not create:
            with engine.connect() as conn:
                missing = [t.name for t in (self.table, self.generation)
                           if not engine.dialect.has_table(conn, t.name, schema=t.schema)]
            if missing:
                raise ConfigurationError(
                    f"piiguard table(s) {', '.join(missing)} missing and create_tables="
                    "False: create them in a migration (piiguard.sqlalchemy.alembic."
                    "create_piiguard_tables(op); docs/alembic.md)", operation="bind")
            self.engine = engine
            return
        try:
            self.table.create(engine, checkfirst=True)
        except (OperationalError, ProgrammingError, IntegrityError):
            # Another process created it between our check and our CREATE.
            with engine.connect() as conn:
                if not engine.dialect.has_table(conn, self.table.name):
                    raise
        create_generation(engine, self.generation)
        self.engine = engine

    def changed(self, conn: Connection) -> None:
        """Every process sharing the key table hears of a key change made in ``conn``'s
        transaction (call it in every transaction that changes a key's state or wrapped
        key: :func:`~piiguard.keys.notify.key_table_changed`)."""
        key_table_changed(conn, self.generation)

    def _engine(self) -> Engine:
        if self.engine is None:
            raise ConfigurationError("this Guard is not bound to a database: call "
                                     "guard.bind(engine) first", operation="key lookup")
        return self.engine

    @contextmanager
    def _reading(self, brief: bool) -> Iterator[Connection]:
        with self._engine().connect() as conn:
            if brief:
                with brief_lock_waits(conn):
                    yield conn
            else:
                yield conn

    def _first(self, query: Select[Any], brief: bool) -> KeyRow | None:
        with self._reading(brief) as conn:
            row = conn.execute(query).first()
        return None if row is None else KeyRow.of(row)

    # -- reads ---------------------------------------------------------------------------
    def row(self, key_id: int, *, brief: bool = False) -> KeyRow | None:
        """Key ``key_id`` (None if the table never had it)."""
        return self._first(select(self.table).where(self.table.c.id == key_id), brief)

    def active_row(self, kind: str, scope: str, *, brief: bool = False) -> KeyRow | None:
        """The active key of ``kind``/``scope`` (None if there is none)."""
        t = self.table
        return self._first(select(t).where(t.c.active_slot == _slot(kind, scope)), brief)

    def decrypt_only_ids(self, kind: str, scope: str, *, brief: bool = False) -> list[int]:
        """Ids of the decrypt-only keys of ``kind``/``scope``, oldest first."""
        t = self.table
        q = select(t.c.id).where(t.c.kind == kind, t.c.scope == scope,
                                 t.c.state == DECRYPT_ONLY).order_by(t.c.id)
        with self._reading(brief) as conn:
            return list(conn.execute(q).scalars().all())

    def infos(self, *, kind: str | None = None, scope: str | None = None,
              states: Iterable[str] | None = None) -> list[KeyInfo]:
        """Every key (filtered by kind, scope and states), oldest first. KEKs only when
        asked for (``kind="kek"``), tombstones only when their state is asked for."""
        t = self.table
        q = select(t).order_by(t.c.id)
        q = q.where(t.c.kind == kind) if kind is not None else q.where(t.c.kind != KEK)
        if scope is not None:
            q = q.where(t.c.scope == scope)
        if states is not None:
            q = q.where(t.c.state.in_(list(states)))
        else:
            q = q.where(t.c.state.not_in([ERASED, REOPENED]))
        with self._engine().connect() as conn:
            rows = conn.execute(q).all()
        return [KeyRow.of(r).info() for r in rows]

    def wrapped_elsewhere(self, master_key_id: str, limit: int) -> list[KeyRow]:
        """Up to ``limit`` keys (oldest first) wrapped by the KMS under another master key
        than ``master_key_id`` (destroyed keys have nothing to rewrap; keys wrapped
        locally under a KEK move with their KEK)."""
        t = self.table
        q = select(t).where(t.c.master_key_id != master_key_id, t.c.wrapped_key.is_not(None),
                            t.c.master_key_id.not_like(f"{KEK_PREFIX}%")) \
            .order_by(t.c.id).limit(limit)
        with self._engine().connect() as conn:
            return [KeyRow.of(r) for r in conn.execute(q).all()]

    # -- writes --------------------------------------------------------------------------
    def _new_active(self, kind: str, scope: str, pair: NewKey,
                    now: datetime) -> dict[str, Any]:
        # A locally wrapped key gets its bytes once the row has an id (they name it).
        wrapped = pair.wrapped if isinstance(pair, DataKeyPair) else b""
        return dict(kind=kind, scope=scope, state=ACTIVE, active_slot=_slot(kind, scope),
                    wrapped_key=wrapped, master_key_id=pair.master_key_id,
                    created_at=now, encryption_count=0)

    def _check_kek(self, conn: Connection, pair: NewKey) -> None:
        """A key wrapped locally is only written under a KEK that is still active, read
        with a share lock: an erasure epoch demotes the KEK (and later destroys it) only
        after this transaction ends, and its rewrap then finds the new key."""
        if not isinstance(pair, LocalWrap):
            return
        t = self.table
        state = conn.execute(select(t.c.state).where(t.c.id == pair.kek_id)
                             .with_for_update(read=True)).scalar()
        if state != ACTIVE:
            raise StaleKekError(pair.kek_id)

    def _insert(self, conn: Connection, values: dict[str, Any], pair: NewKey) -> int:
        """Insert one new key row (and wrap it locally, in the same transaction)."""
        self._check_kek(conn, pair)
        new_id = _inserted_id(conn.execute(self.table.insert().values(**values)))
        if isinstance(pair, LocalWrap):
            values["wrapped_key"] = pair.wrap(new_id, values["scope"])
            conn.execute(update(self.table).where(self.table.c.id == new_id)
                         .values(wrapped_key=values["wrapped_key"]))
        return new_id

    @staticmethod
    def _row_of(new_id: int, values: dict[str, Any]) -> KeyRow:
        return KeyRow(new_id, values["kind"], values["scope"], ACTIVE, values["master_key_id"],
                      values["created_at"], None, None, 0, values["wrapped_key"])

    def insert_active(self, kind: str, scope: str, pair: NewKey,
                      now: datetime) -> Inserted:
        """Insert ``pair`` as the active key of ``kind``/``scope``. If another process
        inserted one first (the unique slot), that one is returned, not created; so is a
        tombstone (state ``erased``) holding the slot of an erased scope."""
        values = self._new_active(kind, scope, pair, now)
        try:
            with self._engine().begin() as conn:
                new_id = self._insert(conn, values, pair)
        except IntegrityError:
            winner = self.active_row(kind, scope)
            if winner is None:
                raise
            return Inserted(winner, created=False)
        return Inserted(self._row_of(new_id, values), created=True)

    def replace_active(self, kind: str, scope: str, pair: NewKey, now: datetime, *,
                       expect_id: int | None) -> KeyRow | None:
        """In one transaction: the active key of ``kind``/``scope`` becomes decrypt-only
        and ``pair`` the active one. With ``expect_id``, only if that key is still the
        active one: None if it is not (another process rotated first)."""
        t = self.table
        cond: ColumnElement[bool] = and_(t.c.active_slot == _slot(kind, scope),
                                         t.c.state == ACTIVE)   # never a tombstone
        if expect_id is not None:
            cond = and_(cond, t.c.id == expect_id)
        values = self._new_active(kind, scope, pair, now)
        with self._engine().begin() as conn:
            demoted = conn.execute(update(t).where(cond).values(
                state=DECRYPT_ONLY, active_slot=None, state_changed_at=now)).rowcount
            if expect_id is not None and demoted == 0:
                return None
            new_id = self._insert(conn, values, pair)
            self.changed(conn)
        return self._row_of(new_id, values)

    def set_state(self, key_id: int, state: str, now: datetime, *,
                  expect: Sequence[str]) -> None:
        """Move key ``key_id`` from one of the ``expect`` states to ``state`` (destroying
        erases the wrapped key); :class:`UnknownKeyError` or :class:`KeyInUseError` if it
        is not in one of them."""
        t = self.table
        values: dict[str, Any] = dict(state=state, state_changed_at=now, active_slot=None)
        if state == DESTROYED:
            values.update(wrapped_key=None, destroyed_at=now)
        with self._engine().begin() as conn:
            n = conn.execute(update(t).where(t.c.id == key_id, t.c.state.in_(list(expect)))
                             .values(**values)).rowcount
            if n == 0:
                row = conn.execute(select(t.c.state).where(t.c.id == key_id)).first()
                if row is None:
                    raise UnknownKeyError("no key with this id", key_id=key_id,
                                          operation=f"set state {state}")
                raise KeyInUseError(f"key is {row.state}; cannot become {state}",
                                    key_id=key_id, operation=f"set state {state}")
            self.changed(conn)

    def add_uses(self, key_id: int, n: int, *, brief: bool = False) -> None:
        """Add ``n`` encryptions to the recorded ``encryption_count`` of key ``key_id``."""
        t = self.table
        bump = update(t).where(t.c.id == key_id) \
            .values(encryption_count=t.c.encryption_count + n)
        if brief:
            with self._engine().connect() as conn, brief_lock_waits(conn):
                conn.execute(bump)
        else:
            with self._engine().begin() as conn:
                conn.execute(bump)

    def set_wrapped(self, key_id: int, source_key_id: str, wrapped: bytes,
                    dest_key_id: str) -> None:
        """Key ``key_id`` is now ``wrapped`` under ``dest_key_id`` (if it still was under
        ``source_key_id``: a concurrent rewrap is not overwritten)."""
        t = self.table
        with self._engine().begin() as conn:
            conn.execute(update(t).where(t.c.id == key_id, t.c.master_key_id == source_key_id)
                         .values(wrapped_key=wrapped, master_key_id=dest_key_id))
            self.changed(conn)

    def set_wrapped_many(self, changes: Sequence[tuple[int, str, bytes, str]]) -> int:
        """:meth:`set_wrapped` for many keys in one transaction (one ``executemany``):
        each ``(key_id, source_master, wrapped, dest_master)``. Returns rows changed."""
        if not changes:
            return 0
        t = self.table
        stmt = update(t).where(t.c.id == bindparam("_id"),
                               t.c.master_key_id == bindparam("_src"),
                               t.c.wrapped_key.is_not(None)) \
            .values(wrapped_key=bindparam("_w"), master_key_id=bindparam("_dst"))
        with self._engine().begin() as conn:
            result = conn.execute(stmt, [{"_id": i, "_src": s, "_w": w, "_dst": d}
                                         for i, s, w, d in changes])
            self.changed(conn)
        return int(result.rowcount)

    def add_uses_many(self, counts: dict[int, int]) -> None:
        """Add each ``{key_id: n}`` to the recorded ``encryption_count`` (one
        ``executemany``; the counts of keys evicted from the cache)."""
        if not counts:
            return
        t = self.table
        stmt = update(t).where(t.c.id == bindparam("_id")) \
            .values(encryption_count=t.c.encryption_count + bindparam("_n"))
        with self._engine().begin() as conn:
            conn.execute(stmt, [{"_id": k, "_n": n} for k, n in counts.items()])

    # -- key hierarchy (format 2) ----------------------------------------------------------
    def active_rows(self, kind: str, scopes: Sequence[str]) -> dict[str, KeyRow]:
        """The row holding the active slot of ``kind`` in each of ``scopes`` (an active
        key or a tombstone), by scope; one query per :data:`CHUNK` scopes."""
        t = self.table
        out: dict[str, KeyRow] = {}
        with self._engine().connect() as conn:
            for i in range(0, len(scopes), CHUNK):
                slots = [_slot(kind, s) for s in scopes[i:i + CHUNK]]
                for r in conn.execute(select(t).where(t.c.active_slot.in_(slots))):
                    row = KeyRow.of(r)
                    out[row.scope] = row
        return out

    def insert_many(self, kind: str, scopes: Sequence[str], pair: LocalWrap,
                    now: datetime) -> list[KeyRow] | None:
        """Insert a locally wrapped active key of ``kind`` for each of ``scopes`` in one
        transaction: one multi-row INSERT ... RETURNING and one UPDATE ``executemany``
        per :data:`CHUNK`. None (nothing written) if any slot is taken meanwhile (another
        process created a key, or erased a scope): the caller goes one scope at a time."""
        t = self.table
        rows: list[KeyRow] = []
        try:
            with self._engine().begin() as conn:
                self._check_kek(conn, pair)
                for i in range(0, len(scopes), CHUNK):
                    part = [self._new_active(kind, s, pair, now) for s in scopes[i:i + CHUNK]]
                    # RETURNING the scope too: rows may come back in any order (an
                    # ordered RETURNING would make some drivers insert row by row).
                    ids = dict((s, n) for n, s in conn.execute(
                        t.insert().returning(t.c.id, t.c.scope), part).all())
                    wrapped = [{"_id": ids[v["scope"]], "_w": pair.wrap(ids[v["scope"]],
                                                                        v["scope"])}
                               for v in part]
                    conn.execute(update(t).where(t.c.id == bindparam("_id"))
                                 .values(wrapped_key=bindparam("_w")), wrapped)
                    for w, v in zip(wrapped, part, strict=True):
                        v["wrapped_key"] = w["_w"]
                        rows.append(self._row_of(w["_id"], v))
        except IntegrityError:
            return None
        return rows

    def locally_wrapped_outside(self, kek_id: int, limit: int, *,
                                after: int = 0) -> list[KeyRow]:
        """Up to ``limit`` keys (by id, above ``after``) wrapped locally under another KEK
        than ``kek_id``, or still wrapped by the KMS (format 1), KEKs excepted."""
        t = self.table
        q = select(t).where(t.c.id > after, t.c.wrapped_key.is_not(None), t.c.kind != KEK,
                            t.c.master_key_id != f"{KEK_PREFIX}{kek_id}") \
            .order_by(t.c.id).limit(limit)
        with self._engine().connect() as conn:
            return [KeyRow.of(r) for r in conn.execute(q).all()]

    def erase_scope(self, scope: str, kinds: Sequence[str], kek_id: int | None,
                    now: datetime) -> list[KeyRow]:
        """In one transaction: destroy every key of ``scope`` (wrapped key erased) and
        put a tombstone in the active slot of each of ``kinds``, recording the KEK whose
        destruction makes older copies of the key table unreadable too
        (``master_key_id`` = ``kek:<id>``; ``destroyed_at`` is set when that KEK is
        destroyed). Returns the keys destroyed now. A concurrent key creation either
        committed first (its key is destroyed here) or fails on the tombstone."""
        t = self.table
        with self._engine().begin() as conn:
            victims = [KeyRow.of(r) for r in conn.execute(
                select(t).where(t.c.scope == scope, t.c.state.in_([ACTIVE, DECRYPT_ONLY,
                                                                    "retired"]))
                .with_for_update())]
            conn.execute(update(t).where(t.c.scope == scope,
                                         t.c.state.in_([ACTIVE, DECRYPT_ONLY, "retired"]))
                         .values(state=DESTROYED, wrapped_key=None, active_slot=None,
                                 state_changed_at=now, destroyed_at=now))
            taken = set(conn.execute(select(t.c.active_slot).where(
                t.c.active_slot.in_([_slot(k, scope) for k in kinds]))).scalars())
            marker = "" if kek_id is None else f"{KEK_PREFIX}{kek_id}"
            for kind in kinds:
                if _slot(kind, scope) not in taken:
                    conn.execute(t.insert().values(
                        kind=kind, scope=scope, state=ERASED, active_slot=_slot(kind, scope),
                        wrapped_key=None, master_key_id=marker, created_at=now,
                        encryption_count=0))
            self.changed(conn)
        return victims

    def tombstones(self, scope: str | None = None) -> list[KeyRow]:
        """Tombstones of erased scopes (all, or ``scope``'s), oldest first."""
        t = self.table
        q = select(t).where(t.c.state == ERASED).order_by(t.c.id)
        if scope is not None:
            q = q.where(t.c.scope == scope)
        with self._engine().connect() as conn:
            return [KeyRow.of(r) for r in conn.execute(q).all()]

    def complete_tombstones(self, kek_ids: Sequence[int], now: datetime) -> list[KeyRow]:
        """Tombstones waiting for one of the KEKs ``kek_ids`` (now destroyed): their
        ``destroyed_at`` becomes ``now``. Returns them as they were."""
        t = self.table
        markers = [f"{KEK_PREFIX}{k}" for k in kek_ids]
        if not markers:
            return []
        cond = and_(t.c.state == ERASED, t.c.destroyed_at.is_(None),
                    t.c.master_key_id.in_(markers))
        with self._engine().begin() as conn:
            rows = [KeyRow.of(r) for r in conn.execute(select(t).where(cond))]
            conn.execute(update(t).where(cond).values(destroyed_at=now))
        return rows

    def reopen_scope(self, scope: str, now: datetime) -> int:
        """Free the active slots an erasure of ``scope`` holds (tombstones become
        ``reopened``, kept for the record). Returns how many."""
        t = self.table
        with self._engine().begin() as conn:
            n = int(conn.execute(update(t).where(t.c.scope == scope, t.c.state == ERASED)
                                 .values(state=REOPENED, active_slot=None,
                                         state_changed_at=now)).rowcount)
            self.changed(conn)
        return n

    def delete_row(self, key_id: int) -> None:
        """Delete key row ``key_id`` (a destroyed KEK: nothing of it stays in the table)."""
        with self._engine().begin() as conn:
            conn.execute(delete(self.table).where(self.table.c.id == key_id))
            self.changed(conn)
