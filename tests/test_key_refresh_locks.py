"""A key refresh never makes an encryption wait for a lock someone else holds.

When the cache's soft TTL lapses, the key manager reads the key table again and records
the use count of the active DEK (an UPDATE of its row). Another connection may hold what
that UPDATE needs: on SQLite the application's own open write transaction on the same
file, on PostgreSQL and MariaDB a transaction holding the key row (``SELECT ... FOR
UPDATE``). The refresh then carries on under the cached key after a brief wait (tens of
milliseconds, not the connection's 5 s busy timeout or lock timeout), keeps the count in
memory and records it at a later refresh. What cannot fall back on the cache fails closed
as before: a rotation at ``max_uses`` refuses to encrypt while it cannot be written.

The clock is injected (``Guard(clock=...)``); wall time is measured only to tell "did not
wait" (< 1 s) from "waited for the 5 s timeout".
"""

from __future__ import annotations

import logging
import sqlite3
import time
from contextlib import contextmanager

import pytest
from sqlalchemy import (Column, Integer, LargeBinary, MetaData, Table, create_engine, event,
                        insert, select)
from sqlalchemy.exc import OperationalError

from piiguard import CacheLimits, Guard
from piiguard.testing import CountingKMS as SpyKMS
from piiguard.testing import ManualClock as Clock
from piiguard.testing import StatementCounter as SQLCounter

SOFT, HARD = 60.0, 600.0
NO_WAIT = 1.0      # seconds: far below the 5 s the connections below would wait
LOCK_WAIT = 5      # seconds a blocked statement waits on every engine here


notes = Table("notes", MetaData(), Column("id", Integer, primary_key=True),
              Column("body", LargeBinary, nullable=False))


def make_guard(engine, **limits):
    clock, kms = Clock(), SpyKMS()
    notes.create(engine, checkfirst=True)
    guard = Guard(kms=kms, clock=clock,
                  cache=CacheLimits(**{"soft_ttl": SOFT, "hard_ttl": HARD, **limits}))
    guard.bind(engine)
    return guard, guard.field("notes", "body"), clock, kms


def key_id(blob: bytes) -> int:
    return int.from_bytes(blob[1:5], "big")


def recorded_uses(guard, kid: int) -> int:
    return {k.id: k.encryption_count for k in guard.keys.keys(kind="dek")}[kid]


def timed(fn, *args):
    start = time.monotonic()
    result = fn(*args)
    return result, time.monotonic() - start


def bound_lock_waits(engine, seconds: int) -> None:
    """Make every new connection of a server engine give up on a lock after ``seconds``
    (so that a regression fails after a few seconds instead of hanging)."""
    if engine.dialect.name == "postgresql":
        sql = f"SET lock_timeout = '{seconds}s'"
    else:
        sql = f"SET SESSION innodb_lock_wait_timeout = {seconds}"

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, record):
        cur = dbapi_conn.cursor()
        cur.execute(sql)
        cur.close()
        dbapi_conn.commit()


def session_lock_waits(engine) -> set:
    """The lock wait of every connection now in the pool (checked out all at once)."""
    get = {"sqlite": "PRAGMA busy_timeout", "postgresql": "SHOW lock_timeout"}.get(
        engine.dialect.name, "SELECT @@SESSION.innodb_lock_wait_timeout")
    conns = [engine.connect() for _ in range(max(engine.pool.checkedin(), 1))]
    try:
        return {c.exec_driver_sql(get).scalar() for c in conns}
    finally:
        for c in conns:
            c.close()


@contextmanager
def key_row_locked(engine, kid: int):
    """Another transaction holds what writing key ``kid``'s row needs: on SQLite the
    application's open write transaction (an INSERT not yet committed), elsewhere the row
    lock (``SELECT ... FOR UPDATE``). Committed on leaving the block."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(insert(notes).values(body=b"application row"))
        else:
            t = Table("piiguard_data_keys", MetaData(), autoload_with=conn)
            conn.execute(select(t.c.id).where(t.c.id == kid).with_for_update())
        yield conn
        conn.commit()


@pytest.fixture
def warnings_of_keys(caplog):
    caplog.set_level(logging.DEBUG, logger="piiguard.keys")

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records
                if r.name == "piiguard.keys" and r.levelno >= logging.WARNING]

    return warnings


# -- (1) SQLite: the application's own write transaction --------------------------------------
def test_sqlite_soft_refresh_does_not_wait_for_the_applications_write_transaction(
        sqlite_engine, warnings_of_keys):
    assert session_lock_waits(sqlite_engine) == {5000}  # pysqlite's 5 s busy timeout
    guard, cipher, clock, _ = make_guard(sqlite_engine)
    kid = key_id(cipher.encrypt(b"10000000146"))
    for _ in range(2):
        cipher.encrypt(b"10000000146")                # 3 uses, counted in memory only
    assert recorded_uses(guard, kid) == 0

    with key_row_locked(sqlite_engine, kid) as app:
        clock.advance(SOFT)                            # the next encryption refreshes
        blob, took = timed(cipher.encrypt, b"10000000146")
        assert took < NO_WAIT, f"encryption waited {took:.2f}s for the key table"
        assert key_id(blob) == kid and cipher.decrypt(blob) == b"10000000146"
        assert len(warnings_of_keys()) == 1
        assert f"key id={kid}" in warnings_of_keys()[0]
        assert "10000000146" not in warnings_of_keys()[0]

        sql = SQLCounter(sqlite_engine)                # not retried on every encryption
        for _ in range(10):
            cipher.encrypt(b"10000000146")
        sql.stop()
        assert sql.n == 0

        clock.advance(SOFT)                            # still locked at the next refresh:
        _, took = timed(cipher.encrypt, b"10000000146")
        assert took < NO_WAIT
        assert len(warnings_of_keys()) == 1           # ... warned once, not again
        app.execute(insert(notes).values(body=blob))
    # The application committed: the next refresh records every use counted meanwhile.
    assert recorded_uses(guard, kid) == 0
    clock.advance(SOFT)
    cipher.encrypt(b"10000000146")
    assert recorded_uses(guard, kid) == 3 + 1 + 10 + 1
    guard.close()
    assert recorded_uses(guard, kid) == 3 + 1 + 10 + 1 + 1
    assert session_lock_waits(sqlite_engine) == {5000}  # pooled connections restored


def test_sqlite_refresh_keeps_the_cached_key_while_the_database_is_exclusively_locked(
        sqlite_engine, warnings_of_keys):
    """A large write transaction that spilled its cache to disk holds SQLite's EXCLUSIVE
    lock: then even reading the key table waits; the cached key serves until later."""
    guard, cipher, clock, kms = make_guard(sqlite_engine)
    old = cipher.encrypt(b"+905321234567")
    kid = key_id(old)
    raw = sqlite3.connect(sqlite_engine.url.database, isolation_level=None)
    try:
        raw.execute("BEGIN EXCLUSIVE")
        clock.advance(SOFT)
        blob, took = timed(cipher.encrypt, b"+905321234567")  # write path
        assert key_id(blob) == kid and took < NO_WAIT
        # The check for key changes made elsewhere (the generation) cannot read either:
        # it says so once per streak, and does not wait either.
        def busy():
            return [w for w in warnings_of_keys() if "generation" not in w]
        assert len(busy()) == 1
        clock.advance(SOFT)
        value, took = timed(cipher.decrypt, old)       # read path
        assert value == b"+905321234567" and took < NO_WAIT
        assert len(busy()) == 2                        # one per refresh, not per value
        assert len(warnings_of_keys()) == 3
        sql = SQLCounter(sqlite_engine)
        for _ in range(5):
            cipher.decrypt(cipher.encrypt(b"+905321234567"))
        sql.stop()
        assert sql.n == 0
    finally:
        raw.rollback() if raw.in_transaction else None
        raw.close()
    clock.advance(SOFT)
    cipher.encrypt(b"+905321234567")
    assert recorded_uses(guard, kid) == 1 + 1 + 5
    assert kms.calls == {"generate": 1}
    assert session_lock_waits(sqlite_engine) == {5000}


def test_hard_ttl_reload_does_not_wait_for_the_use_count_write(sqlite_engine):
    guard, cipher, clock, kms = make_guard(sqlite_engine)
    kid = key_id(cipher.encrypt(b"x"))
    with key_row_locked(sqlite_engine, kid):
        clock.advance(HARD)                            # the plaintext key must be unwrapped
        blob, took = timed(cipher.encrypt, b"y")
        assert took < NO_WAIT and key_id(blob) == kid
        assert kms.calls == {"generate": 1, "decrypt": 1}
    clock.advance(SOFT)
    cipher.encrypt(b"z")
    assert recorded_uses(guard, kid) == 2              # the pending use survived the reload


# -- (2) PostgreSQL and MariaDB: the key row locked by another transaction --------------------
@pytest.mark.parametrize("engine_name", ["pg_engine", "mariadb_engine"])
def test_soft_refresh_does_not_wait_for_a_lock_on_the_key_row(request, engine_name,
                                                               warnings_of_keys):
    engine = request.getfixturevalue(engine_name)
    bound_lock_waits(engine, LOCK_WAIT)
    guard, cipher, clock, kms = make_guard(engine)
    kid = key_id(cipher.encrypt(b"10000000146"))
    cipher.encrypt(b"10000000146")
    before = session_lock_waits(engine)
    assert before in ({"5s"}, {LOCK_WAIT})

    with key_row_locked(engine, kid):
        clock.advance(SOFT)
        blob, took = timed(cipher.encrypt, b"10000000146")
        assert took < NO_WAIT, f"encryption waited {took:.2f}s for the key row"
        assert key_id(blob) == kid
        assert len(warnings_of_keys()) == 1 and f"key id={kid}" in warnings_of_keys()[0]
        sql = SQLCounter(engine)
        for _ in range(10):
            cipher.encrypt(b"10000000146")
        sql.stop()
        assert sql.n == 0
        assert recorded_uses(guard, kid) == 0          # reads are not blocked by the lock
    clock.advance(SOFT)
    cipher.encrypt(b"10000000146")
    assert recorded_uses(guard, kid) == 2 + 1 + 10
    assert kms.calls == {"generate": 1}
    assert session_lock_waits(engine) == before        # the brief wait did not leak


# -- (3) fail closed: max_uses reached while the key table cannot be written ------------------
@pytest.mark.parametrize("db", ["sqlite", "postgresql", "mariadb"])
def test_max_uses_while_the_key_table_is_locked_refuses_to_encrypt(request, tmp_path, db):
    if db == "sqlite":  # a short busy timeout: the refused rotation waits for it
        engine = create_engine(f"sqlite:///{tmp_path / 'short.db'}",
                               connect_args={"timeout": 0.5})
    else:
        engine = request.getfixturevalue({"postgresql": "pg_engine",
                                          "mariadb": "mariadb_engine"}[db])
        bound_lock_waits(engine, 1)
    guard, cipher, clock, _ = make_guard(engine, max_uses=3)
    blobs = [cipher.encrypt(b"v") for _ in range(3)]
    kid = key_id(blobs[0])
    assert {key_id(b) for b in blobs} == {kid}
    with key_row_locked(engine, kid):
        for _ in range(2):                             # refused every time, never a 4th use
            with pytest.raises(OperationalError):
                cipher.encrypt(b"v")
        assert [k.state for k in guard.keys.keys(kind="dek")] == ["active"]
    blob = cipher.encrypt(b"v")                        # lock gone: rotates, then encrypts
    assert key_id(blob) != kid and cipher.decrypt(blob) == b"v"
    counts = {k.id: (k.state, k.encryption_count) for k in guard.keys.keys(kind="dek")}
    assert counts[kid] == ("decrypt_only", 3)
    guard.close()
    if db == "sqlite":
        engine.dispose()


def test_sqlite_lookup_keys_refresh_does_not_wait_for_an_exclusive_lock(sqlite_engine):
    """Lookups consult the set of usable index keys; refreshing it while another
    connection holds SQLite's EXCLUSIVE lock keeps the cached set instead of waiting."""
    guard, _cipher, clock, _kms = make_guard(sqlite_engine)
    index = guard.blind_index("notes", "body")
    before = index.candidates("10000000146")
    raw = sqlite3.connect(sqlite_engine.url.database, isolation_level=None)
    try:
        raw.execute("BEGIN EXCLUSIVE")
        clock.advance(SOFT)
        during, took = timed(index.candidates, "10000000146")
        assert took < NO_WAIT and during == before
    finally:
        raw.rollback() if raw.in_transaction else None
        raw.close()
    guard.keys.rotate("index", index.scope)        # after the lock: the set is read again
    after = index.candidates("10000000146")
    assert len(after) == 2 and after[1] == before[0]
    assert session_lock_waits(sqlite_engine) == {5000}
