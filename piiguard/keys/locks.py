"""Brief lock waits: read or write the key table without stalling behind another connection.

A key refresh runs inside whatever encryption or decryption found the cache stale. If
another connection holds a lock the refresh needs (the application's own write
transaction on SQLite, a row lock on the key row elsewhere), waiting for the connection's
usual timeout would stall that encryption for seconds. While the cached key may still
serve, :func:`brief_lock_waits` cuts the wait short instead::

    >>> from sqlalchemy import create_engine, text
    >>> engine = create_engine("sqlite://")
    >>> with engine.connect() as conn:
    ...     with brief_lock_waits(conn):
    ...         conn.execute(text("PRAGMA busy_timeout")).scalar() == BRIEF_LOCK_WAIT_MS
    ...     conn.execute(text("PRAGMA busy_timeout")).scalar()   # put back afterwards
    True
    5000
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

__all__ = ["BRIEF_LOCK_WAIT_MS", "brief_lock_waits"]

#: How long (milliseconds) a refresh that can fall back on the cached key, or a write of
#: use counts, waits for a lock held by another connection. It must stay far below the
#: connection's usual wait (SQLite's busy timeout is 5 s by default); giving up only
#: postpones the work to the next refresh.
BRIEF_LOCK_WAIT_MS = 50


@contextmanager
def brief_lock_waits(conn: Connection, ms: int = BRIEF_LOCK_WAIT_MS) -> Iterator[Connection]:
    """A transaction on ``conn`` in which waiting for a lock held by another connection
    ends after about ``ms`` (:data:`BRIEF_LOCK_WAIT_MS`) with an ``OperationalError``, instead of
    after the connection's usual wait (SQLite: the busy timeout; PostgreSQL:
    ``lock_timeout``, none by default; MariaDB/MySQL: ``innodb_lock_wait_timeout``, 50 s
    by default).

    PostgreSQL gets ``SET LOCAL``, which ends with the transaction. SQLite and
    MariaDB/MySQL set the wait for the session and put the connection's own value back
    afterwards, because pooled connections are reused (a connection whose value cannot be
    put back is invalidated). Other databases keep their waits.
    """
    dialect = conn.dialect
    if dialect.name == "postgresql":
        with conn.begin():
            conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{max(ms, 1)}ms'")
            yield conn
        return
    if dialect.name == "sqlite":
        get, put, brief = "PRAGMA busy_timeout", "PRAGMA busy_timeout = {}", ms
    elif dialect.name in ("mysql", "mariadb"):
        get = "SELECT @@SESSION.innodb_lock_wait_timeout"
        put = "SET SESSION innodb_lock_wait_timeout = {}"
        # Whole seconds: MariaDB takes 0 (do not wait at all); MySQL's least is 1.
        brief = 0 if getattr(dialect, "is_mariadb", False) else 1
    else:
        with conn.begin():
            yield conn
        return
    try:
        before = int(conn.exec_driver_sql(get).scalar_one())
        conn.exec_driver_sql(put.format(brief))
        conn.commit()
    except SQLAlchemyError:
        # A server without this setting (a MySQL look-alike): its own waits apply. If the
        # database is unreachable instead, the statements below fail as they would anyway.
        conn.rollback()
        with conn.begin():
            yield conn
        return
    try:
        with conn.begin():
            yield conn
    finally:
        try:
            conn.exec_driver_sql(put.format(before))
            conn.commit()
        except SQLAlchemyError:
            conn.invalidate()  # never hand the pool a connection that gives up early
