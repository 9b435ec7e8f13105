"""Key-change notifications: every process sharing a key table hears a key change
within a stated bound.

Every change of the key table's key states or wrapped keys (rotate, retire, destroy,
shred, index rotation, master-key rewrap) calls :func:`key_table_changed` inside its
own transaction. It bumps a *generation* counter (a one-row table next to the key
table, ``<key table>_generation``) and, on PostgreSQL, issues ``NOTIFY`` on the
channel :data:`CHANNEL`. Both happen at commit or not at all.

Each :class:`~piiguard.keys.manager.KeyManager` owns a :class:`ChangeWatch`:

- on PostgreSQL a listener thread on its own connection (``LISTEN``) hears the change
  as it commits, and keeps a *deadline* up to which the cached key states are known to
  be current. If its connection is lost it logs so, reconnects, and until then the
  cache falls back to polling the generation. The listener starts once keys have been
  used over a few check periods (:data:`LISTEN_AFTER`), and closes its connection after
  :data:`IDLE_CLOSE` seconds without key use; meanwhile the cache polls, with the same
  bound;
- on MariaDB/MySQL and SQLite (and PostgreSQL without a listener) the first use of a
  key after the deadline reads the generation (one indexed one-row SELECT), at most
  once per check period.

A generation the watch has not seen makes every cached key re-read its state from the
key table before it is used again (no KMS call: the plaintext stays cached). The
bound (``CacheLimits.change_bound``) defaults to :data:`PUSH_BOUND` (1 s) on
PostgreSQL and :data:`POLL_BOUND` (2 s) elsewhere; checks run every
:data:`CHECK_SHARE` of it so that a check's own duration stays inside the bound.

    >>> from sqlalchemy import create_engine
    >>> from piiguard.keys.table import key_table
    >>> engine = create_engine("sqlite://")
    >>> gen = generation_table(key_table())
    >>> gen.name
    'piiguard_data_keys_generation'
    >>> create_generation(engine, gen)
    >>> with engine.begin() as conn:
    ...     key_table_changed(conn, gen)
    >>> with engine.connect() as conn:
    ...     read_generation(conn, gen)
    1
"""

from __future__ import annotations

import atexit
from datetime import datetime, timezone
import logging
import select
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from sqlalchemy import BigInteger, Column, Integer, MetaData, Table, select as sql_select
from sqlalchemy import text, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError, SQLAlchemyError

from piiguard.keys.locks import brief_lock_waits


__all__ = ["CHANNEL", "CHECK_SHARE", "POLL_BOUND", "PUSH_BOUND", "ChangeWatch", "Flusher",
           "create_generation", "default_bound", "exit_flush", "generation_table",
           "key_table_changed", "read_generation", "settle_wait"]

log = logging.getLogger("piiguard.keys")

#: The PostgreSQL ``NOTIFY`` channel of key changes (payload: ``schema.table:generation``).
CHANNEL = "piiguard_keys"
#: Default bound (seconds) within which a key change reaches a process, by transport.
PUSH_BOUND, POLL_BOUND = 1.0, 2.0
#: Share of the bound after which the cached key states must be confirmed again.
CHECK_SHARE = 0.6
#: Seconds the listener waits for a notification before it renews the deadline.
LISTEN_TICK = 0.25
#: Seconds without any key use after which the listener closes its connection (use
#: polls again, and starts it again): a forgotten Guard does not hold a connection.
IDLE_CLOSE = 15.0
#: Polls in a row (key use over about this many check periods) before a listener is
#: started: short-lived Guards (scripts, tests) poll and never hold a connection.
LISTEN_AFTER = 3


def _drain(conn: Any) -> list[str]:
    """Payloads of the notifications that arrived on a DBAPI connection (psycopg 3 or
    psycopg2), without waiting."""
    notifies = conn.notifies
    if callable(notifies):  # psycopg 3
        return [n.payload for n in notifies(timeout=0)]
    conn.poll()             # psycopg2
    out = [n.payload for n in notifies]
    notifies.clear()
    return out


def generation_table(key_table: Table) -> Table:
    """The one-row generation table that goes with ``key_table`` (same schema)."""
    return Table(f"{key_table.name}_generation", MetaData(schema=key_table.schema),
                 Column("id", Integer, primary_key=True, autoincrement=False),
                 Column("generation", BigInteger, nullable=False))


def create_generation(engine: Engine, gen: Table) -> None:
    """Create the generation table and its one row if missing (safe to race)."""
    try:
        gen.create(engine, checkfirst=True)
    except (OperationalError, ProgrammingError, IntegrityError):
        with engine.connect() as conn:  # another process created it first
            if not engine.dialect.has_table(conn, gen.name, schema=gen.schema):
                raise
    try:
        with engine.begin() as conn:
            if conn.execute(sql_select(gen.c.id).where(gen.c.id == 1)).first() is None:
                conn.execute(gen.insert().values(id=1, generation=0))
    except IntegrityError:
        pass  # another process inserted the row first


def key_table_changed(conn: Connection, gen: Table) -> None:
    """Tell every process sharing the key table that a key changed: bump the generation
    and, on PostgreSQL, ``NOTIFY``; both in ``conn``'s transaction (call it inside the
    transaction that changes the key table, never after it)."""
    bumped = update(gen).where(gen.c.id == 1).values(generation=gen.c.generation + 1)
    if conn.dialect.name != "postgresql":
        if conn.execute(bumped).rowcount == 0:  # a table made before the row existed
            conn.execute(gen.insert().values(id=1, generation=1))
        return
    value = conn.execute(bumped.returning(gen.c.generation)).scalar()
    if value is None:
        value = 1
        conn.execute(gen.insert().values(id=1, generation=1))
    conn.execute(text("SELECT pg_notify(:channel, current_schema() || '.' || :name "
                      "|| ':' || :gen)"),
                 {"channel": CHANNEL, "name": gen.name, "gen": str(value)})


def read_generation(conn: Connection, gen: Table) -> int:
    """The key table's current generation (0 if the row is missing)."""
    value = conn.execute(sql_select(gen.c.generation).where(gen.c.id == 1)).scalar()
    return int(value or 0)


def settle_wait(bound: float, changed_at: datetime | None, now: datetime) -> float:
    """Seconds to wait, at ``now``, until a key change made at ``changed_at`` has reached
    every process (``bound`` after it); 0 if it has already.

        >>> from datetime import datetime, timedelta, timezone
        >>> t = datetime(2024, 1, 1, tzinfo=timezone.utc)
        >>> settle_wait(2.0, t, t + timedelta(seconds=0.5)), settle_wait(2.0, t, t + timedelta(3))
        (1.5, 0.0)
        >>> settle_wait(2.0, None, t)
        0.0
    """
    if changed_at is None:
        return 0.0
    if changed_at.tzinfo is None:  # SQLite returns naive datetimes (stored in UTC)
        changed_at = changed_at.replace(tzinfo=timezone.utc)
    # A change stamped in the future (clock skew between hosts): wait the whole bound.
    return min(bound, max(0.0, bound - (now - changed_at).total_seconds()))


def default_bound(engine: Engine) -> float:
    """The default change bound of ``engine``'s database: push or poll."""
    return PUSH_BOUND if engine.dialect.name == "postgresql" else POLL_BOUND


class ChangeWatch:
    """What one key manager knows of the key table's generation, and until when.

    ``deadline`` (on the manager's clock) is when the cached key states must be
    confirmed again (:meth:`check`); ``generation`` the last generation seen. On a new
    generation ``on_change`` runs (the manager marks every cached key for a re-check).
    With ``enabled=False`` (benchmark comparisons) nothing is checked: only the soft TTL
    refreshes keys, as before notifications existed.
    """

    def __init__(self, engine: Engine, gen: Table, on_change: Callable[[], None], *,
                 clock: Callable[[], float], bound: float | None = None,
                 enabled: bool = True, push: bool = True) -> None:
        self.engine = engine
        self.gen = gen
        self.on_change = on_change
        self.clock = clock
        self.bound = bound if bound is not None else default_bound(engine)
        self.period = self.bound * CHECK_SHARE
        self.enabled = enabled
        self.push = push and enabled and engine.dialect.name == "postgresql"
        self.generation = 0
        self.deadline = float("inf") if not enabled else float("-inf")
        self._checking = threading.Lock()
        self._polls = 0
        self._failing_since: float | None = None
        self._warned = False
        self._listener: _Listener | None = None
        self.used = time.monotonic()  # last key use that reached check()
        if enabled:
            self.check(clock())

    def __repr__(self) -> str:
        mode = "off" if not self.enabled else ("push" if self.push else "poll")
        return f"ChangeWatch({mode}, bound={self.bound}s, generation={self.generation})"

    def check(self, now: float) -> None:
        """Confirm the cached key states if the deadline passed: read the generation
        (unless another thread is reading it right now: then return at once, the
        caller serves its cached key meanwhile). Starts the listener on PostgreSQL."""
        self.used = time.monotonic()
        if now < self.deadline:
            return
        if self.push and (self._listener is None or not self._listener.thread.is_alive()):
            self._polls += 1
            if self._polls >= LISTEN_AFTER:
                self._polls = 0
                self._listener = _Listener(self)
        if not self._checking.acquire(blocking=False):
            return
        try:
            try:
                with self.engine.connect() as conn:
                    if conn.dialect.name == "sqlite":
                        # Readers wait for a writer's EXCLUSIVE lock (often the
                        # application's own bulk insert): do not wait, retry later.
                        with brief_lock_waits(conn, 0):
                            value = read_generation(conn, self.gen)
                    else:  # MVCC: a plain read waits for no lock
                        value = read_generation(conn, self.gen)
            except SQLAlchemyError:
                # A busy moment is normal (SQLite during a bulk write); say so once the
                # changes have gone unheard for longer than the bound.
                if self._failing_since is None:
                    self._failing_since = now
                elif now - self._failing_since >= self.bound and not self._warned:
                    log.warning("cannot read the key table's generation; cached keys "
                                "serve on and the check is retried (key changes made "
                                "elsewhere are not heard meanwhile)")
                    self._warned = True
                self.deadline = now + self.period / 3
                return
            if self._warned:
                log.warning("key table's generation readable again")
            self._failing_since, self._warned = None, False
            self.heard(value, now)
        finally:
            self._checking.release()

    def heard(self, value: int, since: float) -> None:
        """The key table's generation was ``value`` at ``since`` (or later)."""
        if value != self.generation:
            self.generation = value
            self.on_change()
        self.deadline = max(self.deadline, since + self.period)

    @property
    def listening(self) -> bool:
        """True while a listener thread hears changes (PostgreSQL)."""
        return self._listener is not None and self._listener.connected

    @property
    def listener_pid(self) -> int | None:
        """The PostgreSQL backend pid of the listener's connection, if connected."""
        return self._listener.pid if self._listener is not None else None

    def stop(self) -> None:
        """Stop the listener (if any); later checks poll."""
        if self._listener is not None:
            self._listener.stop()
            self._listener = None
        self.push = False


class _Listener:
    """``LISTEN`` on its own PostgreSQL connection, in a daemon thread.

    The thread holds the watch weakly: it ends when the watch is stopped or collected."""

    def __init__(self, watch: ChangeWatch) -> None:
        self._watch = weakref.ref(watch)
        self._stop = threading.Event()
        self._engine = watch.engine
        self._gen = watch.gen
        self._clock = watch.clock
        self.connected = False
        self.pid: int | None = None
        self.thread = threading.Thread(target=self._run, name="piiguard-key-listener",
                                       daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        lost = False
        while not self._stop.is_set():
            try:
                self._listen()
                return
            except Exception:  # noqa: BLE001 - any failure: poll meanwhile, reconnect
                if self._stop.is_set():
                    return
                if not lost:
                    log.warning("key-change listener lost its PostgreSQL connection; "
                                "key changes are polled until it reconnects")
                lost = True
                self._stop.wait(1.0)

    def _listen(self) -> None:
        fairy = self._engine.raw_connection()
        fairy.detach()  # our own connection for as long as we listen, not the pool's
        conn: Any = fairy.dbapi_connection
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SET application_name = 'piiguard-key-listener'")
                cur.execute(f"LISTEN {CHANNEL}")
                cur.execute("SELECT pg_backend_pid()")
                self.pid = int(cur.fetchone()[0])
                cur.execute("SELECT current_schema()")
                schema = cur.fetchone()[0]
                cur.execute(f'SELECT generation FROM "{self._gen.name}" WHERE id = 1')
                row = cur.fetchone()
            prefix = f"{schema}.{self._gen.name}:"
            log.debug("key-change listener on channel %s", CHANNEL)
            self._tick(int(row[0]) if row else 0)
            self.connected = True
            while not self._stop.is_set():
                started = self._clock()
                with conn.cursor() as cur:  # a round trip: the connection works, and
                    cur.execute("SELECT 1")  # what was notified before it has arrived
                newest = None
                for payload in _drain(conn):
                    if payload.startswith(prefix):
                        newest = max(newest or 0, int(payload[len(prefix):]))
                if not self._tick(newest, started):
                    return
                select.select([conn.fileno()], [], [], LISTEN_TICK)
        finally:
            self.connected = False
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - already broken
                pass

    def _tick(self, value: int | None, since: float | None = None) -> bool:
        watch = self._watch()
        if watch is None or self._stop.is_set():
            return False
        if time.monotonic() - watch.used > IDLE_CLOSE:
            return False  # idle: close; the next use polls and starts a listener again
        if since is None:  # the generation read at connect: as it is
            watch.heard(watch.generation if value is None else value, self._clock())
            return True
        # A notification that arrives after a poll saw a newer generation is old news.
        news = value if value is not None and value > watch.generation else None
        watch.heard(watch.generation if news is None else news, since)
        return True


def exit_flush(flush: Callable[[], None]) -> Callable[[], None]:
    """Register ``flush`` (a bound method, held weakly) to run at normal interpreter exit;
    returns the function to pass to ``atexit.unregister``."""
    ref = weakref.WeakMethod(flush)

    def at_exit() -> None:
        fn = ref()
        if fn is not None:
            try:
                fn()
            except Exception:  # noqa: BLE001 - never fail the interpreter's exit
                log.warning("could not record use counts at exit")
    atexit.register(at_exit)
    return at_exit


class Flusher:
    """Calls ``flush`` (held weakly) every ``interval`` seconds in a daemon thread."""

    def __init__(self, flush: Callable[[], None], interval: float) -> None:
        self._ref = weakref.WeakMethod(flush)
        self._stop = threading.Event()
        self.interval = interval
        self.thread = threading.Thread(target=self._run, name="piiguard-use-counts",
                                       daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            fn = self._ref()
            if fn is None:
                return
            try:
                fn()
            except Exception:  # noqa: BLE001 - bookkeeping: retried at the next tick
                log.debug("use counts not recorded this time", exc_info=True)
            del fn

