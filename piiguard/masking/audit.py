"""The audit trail: structured events for full reveals, searches and key operations.

Events go to the ``piiguard.audit`` logger (as JSON in the message, and as the
``piiguard_event`` attribute of the log record), to optional sinks, and, when asked, to
an audit table in the application's database. An event carries time, action, role,
purpose, ``table.column``, row keys where known, a count, key id and outcome: never a
value. ``emit`` takes only the field names in :data:`ALLOWED_FIELDS`, so a value can
never slip into the trail under a new name.

    >>> trail = AuditTrail()
    >>> event = trail.emit("reveal", column="customers.national_id", count=3)
    >>> sorted(event)
    ['action', 'column', 'count', 'outcome', 'purpose', 'role', 'time']

**Reveals are batched, with exact counts.** Reading 100,000 rows as a ``reveal`` role
must not write 100,000 log records, so :meth:`AuditTrail.record_reveal` (what
:func:`~piiguard.masking.view.render` calls) only adds one to a counter kept per
``(role, purpose, table.column, key id)``; :meth:`AuditTrail.flush` turns each counter
into one ``reveal`` event whose ``count`` is the exact number of values revealed (with
the first ``max_row_keys`` row keys when the caller knew them, the time of the first
reveal in ``first_at``, and ``time`` = when the event was written). Pending counts are
flushed:

- when an :func:`~piiguard.acting_as` block ends (so a request or a job run under a role
  is accounted for when it finishes);
- when ``batch_size`` reveals are pending, or the oldest pending reveal is older than
  ``max_delay`` seconds (a timer thread, :mod:`piiguard.masking.ticker`, writes them
  within about ``max_delay`` seconds even while the process is idle);
- by an explicit ``guard.audit.flush()`` and by ``guard.close()``;
- at interpreter exit (``atexit``).

A failed decryption under ``reveal`` is written at once, as a ``reveal`` event with
``outcome="error"``. A batched trail whose writes fail keeps the counts and tries again
at the next flush.

**Durable mode** (``AuditTrail(durable=True, table=True)`` or with ``sinks``): Vault's
rule, *if it cannot be audited, it is not revealed*. The record of a reveal is written
(the audit table's transaction committed, every sink returned) **before** the plaintext
is returned; if the write fails, the read raises :class:`~piiguard.errors.AuditError`
and returns nothing. To keep this to one write per query result rather than one per
value, the ORM decides reveals when it loads a result (:class:`RevealBatch`: every value
of the result the role may see whole), and the first value read writes the record of
the whole batch; values read one by one outside a batch (Core rows, pydantic fields)
are written one by one. A worker killed in the middle of its work has every value it
was given on record. Durable mode needs a destination that can fail: a table or a sink
(the logger alone cannot tell piiguard that a record was lost).

    >>> with acting_as("admin", purpose="ticket-7"):
    ...     for row in (1, 2, 3):
    ...         trail.record_reveal("customers.phone", 4, row)
    ...     trail.pending()
    3
    >>> trail.pending()
    0
    >>> event = trail.last_events[-1]
    >>> event["role"], event["purpose"], event["count"], event["row_keys"], event["key_id"]
    ('admin', 'ticket-7', 3, [1, 2, 3], 4)
"""

from __future__ import annotations

import atexit
import json
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Integer, MetaData, String, Table
from sqlalchemy.engine import Engine

from piiguard.errors import AuditError, ConfigurationError
from piiguard.masking import ticker
from piiguard.masking.context import acting_as  # noqa: F401 - the doctests use it
from piiguard.masking.context import current_purpose, current_role, register_exit_hook

__all__ = ["ALLOWED_FIELDS", "AuditTrail", "AuditWarning", "RevealBatch", "audit_table",
           "flush_all"]

logger = logging.getLogger("piiguard.audit")

#: Fields an event may carry; anything else passed to ``emit`` is refused, so a value
#: can never slip into the trail under a new name.
ALLOWED_FIELDS = frozenset({
    "column", "row_keys", "count", "key_id", "kind", "scope", "master_key_id",
    "previous_key_id", "previous_master_key_id", "reason", "mask", "error", "rows",
    "table", "outcome", "first_at", "row_keys_omitted",
    # erasure receipts and epochs (no personal data: ids, times, states)
    "key_ids", "epoch", "status", "erased_at", "completed_at", "retired_master_key_ids",
})

_CURRENT: Any = object()  # "take role / purpose from the context"

# Trails with pending reveal counts (weak: a trail that is gone has nothing to flush).
_LIVE: weakref.WeakSet[AuditTrail] = weakref.WeakSet()
_LIVE_LOCK = threading.Lock()   # WeakSet iteration is not safe against concurrent adds


class AuditWarning(UserWarning):
    """Audit events would be lost (a Guard bound with nowhere to write them)."""


def flush_all() -> None:
    """Flush the pending reveal counts of every audit trail in this process."""
    with _LIVE_LOCK:
        trails = list(_LIVE)
    for trail in trails:
        try:
            trail.flush()
        except Exception as exc:  # noqa: BLE001 - an exit hook must not mask the real error
            logger.error("could not write audit events: %s", type(exc).__name__)


class _Batch:
    """Reveal counts of one ``(role, purpose, column, key id)``."""

    __slots__ = ("count", "first_at", "omitted", "row_keys")

    def __init__(self, first_at: datetime) -> None:
        self.count = 0
        self.row_keys: list = []
        self.omitted = 0
        self.first_at = first_at

    def add(self, row_key: Any, max_row_keys: int, n: int = 1) -> None:
        self.count += n
        if row_key is not None:
            if len(self.row_keys) < max_row_keys:
                self.row_keys.append(row_key)
            else:
                self.omitted += 1

    def merge(self, other: _Batch, max_row_keys: int) -> None:
        self.count += other.count
        room = max(0, max_row_keys - len(self.row_keys))
        self.row_keys.extend(other.row_keys[:room])
        self.omitted += other.omitted + max(0, len(other.row_keys) - room)
        self.first_at = min(self.first_at, other.first_at)


def audit_table(name: str = "piiguard_audit", metadata: MetaData | None = None) -> Table:
    md = metadata if metadata is not None else MetaData()
    return Table(
        name, md,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("time", DateTime(timezone=True), nullable=False),
        Column("action", String(64), nullable=False),
        Column("role", String(128), nullable=True),
        Column("purpose", String(255), nullable=True),
        Column("column", String(255), nullable=True),
        Column("key_id", String(512), nullable=True),
        Column("count", Integer, nullable=True),
        Column("outcome", String(32), nullable=False),
        Column("detail", JSON, nullable=True),
    )


class RevealBatch:
    """Reveals decided together (the values of one ORM result a role may see whole),
    written as one record by :meth:`write` before the first of them is shown.

    >>> trail = AuditTrail(sinks=[lambda event: None], durable=True)
    >>> batch = trail.open_batch("admin", "ticket-9")
    >>> for row in (1, 2):
    ...     batch.add("customers.phone", 3, row)
    >>> batch.write(); batch.write()                 # the second is a no-op
    >>> [(e["count"], e["row_keys"]) for e in trail.last_events]
    [(2, [1, 2])]
    """

    __slots__ = ("_groups", "_lock", "purpose", "role", "trail", "written")

    def __init__(self, trail: AuditTrail, role: str | None, purpose: str | None) -> None:
        self.trail = trail
        self.role = role
        self.purpose = purpose
        self.written = False
        self._groups: dict[tuple, _Batch] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"RevealBatch(role={self.role!r}, values="
                f"{sum(b.count for b in self._groups.values())}, written={self.written})")

    def add(self, column: str | None, key_id: int | None, row_key: Any) -> None:
        """Count one value of ``column`` under DEK ``key_id`` (row ``row_key``)."""
        b = self._groups.get((column, key_id))
        if b is None:
            b = self._groups[(column, key_id)] = _Batch(self.trail.now())
        b.add(row_key, self.trail.max_row_keys)

    def write(self) -> None:
        """Write the batch's record (once); raises :class:`AuditError` if it cannot."""
        if self.written:
            return
        with self._lock:
            if not self.written:
                self.trail.write_reveals(self.role, self.purpose, self._groups)
                self.written = True


class AuditTrail:
    """Where audit events go. ``table=True`` also writes them to ``piiguard_audit``.

    - ``durable``: write each reveal's record before the value is returned, failing
      closed (see the module docstring); needs ``table=True`` or ``sinks``.
    - ``engine``: where the audit table lives (default: the database the Guard is bound
      to). On SQLite in rollback-journal mode, a durable table in the application's own
      database file cannot be written while a result is still being streamed from it
      (``yield_per``): give it another database, or use WAL mode.
    - ``sinks``: callables that get every event (a dict); a sink with a
      ``write_batch(events)`` method gets the events of one write at once.
    - ``batch_size`` / ``max_delay``: when pending reveal counts are flushed (batched
      mode); ``max_row_keys``: how many row keys a reveal event lists (the rest are
      counted in ``row_keys_omitted``).
    - ``last_events``: the most recent events (``keep_last`` of them), for tests and
      the CLI.
    """

    def __init__(self, *, table: bool = False, table_name: str = "piiguard_audit",
                 sinks: list[Callable[[dict], None]] | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 batch_size: int = 10_000, max_delay: float = 5.0,
                 max_row_keys: int = 100, keep_last: int = 100,
                 monotonic: Callable[[], float] = time.monotonic,
                 durable: bool = False, engine: Engine | None = None) -> None:
        if type(batch_size) is not int or batch_size < 1:
            raise ConfigurationError("audit batch_size must be a positive integer")
        if not isinstance(max_delay, (int, float)) or max_delay < 0:
            raise ConfigurationError("audit max_delay must be a number of seconds >= 0")
        if type(max_row_keys) is not int or max_row_keys < 0:
            raise ConfigurationError("audit max_row_keys must be an integer >= 0")
        if not isinstance(durable, bool):
            raise ConfigurationError("audit durable must be a bool")
        if durable and not table and not sinks:
            raise ConfigurationError(
                "a durable audit trail needs a destination that can fail: "
                "AuditTrail(durable=True, table=True) or sinks=[...] (log handlers "
                "cannot tell piiguard that a record was lost)")
        if engine is not None and not isinstance(engine, Engine):
            raise ConfigurationError("audit engine= must be a SQLAlchemy Engine")
        self.table = audit_table(table_name) if table else None
        self.engine: Engine | None = engine
        self._own_engine = engine is not None
        self.sinks = list(sinks or [])
        self._durable = durable
        self._clock = clock
        self._mono = monotonic
        self.batch_size = batch_size
        self.max_delay = float(max_delay)
        self.max_row_keys = max_row_keys
        self.last_events: deque[dict] = deque(maxlen=keep_last)
        self._lock = threading.Lock()
        self._pending: dict[tuple, _Batch] = {}
        self._pending_total = 0
        self._pending_since = 0.0

    def __repr__(self) -> str:
        return (f"AuditTrail(table={self.table is not None}, sinks={len(self.sinks)}, "
                f"durable={self.durable}, pending={self._pending_total})")

    @property
    def durable(self) -> bool:
        """Durable mode (fixed when the trail is built)."""
        return self._durable

    def now(self) -> datetime:
        """The trail's clock (UTC)."""
        return self._clock()

    # -- reveals ---------------------------------------------------------------------------
    def record_reveal(self, column: str | None, key_id: int | None = None,
                      row_key: Any = None, role: Any = _CURRENT,
                      purpose: Any = _CURRENT) -> None:
        """Count one revealed value (batched: a dict update under a lock); in durable
        mode, write its record now (raises :class:`AuditError` if it cannot)."""
        if role is _CURRENT:
            role = current_role()
        if purpose is _CURRENT:
            purpose = current_purpose()
        if self._durable:
            one = _Batch(self._clock())
            one.add(row_key, self.max_row_keys)
            self.write_reveals(role, purpose, {(column, key_id): one})
            return
        k = (role, purpose, column, key_id)
        with self._lock:
            b = self._pending.get(k)
            if b is None:
                if not self._pending:
                    self._started_pending()
                b = self._pending[k] = _Batch(self._clock())
            b.add(row_key, self.max_row_keys)
            self._pending_total += 1
            due = (self._pending_total >= self.batch_size
                   or self._mono() - self._pending_since >= self.max_delay)
        if due:
            self.flush()

    def _started_pending(self) -> None:
        # Called under self._lock when the first count arrives.
        self._pending_since = self._mono()
        with _LIVE_LOCK:
            _LIVE.add(self)
        if self.max_delay > 0:
            ticker.schedule(self, self.max_delay)

    def open_batch(self, role: str | None, purpose: str | None) -> RevealBatch:
        """A :class:`RevealBatch` for reveals to ``role`` / ``purpose``."""
        return RevealBatch(self, role, purpose)

    def pending(self) -> int:
        """How many reveals are counted but not yet written as events."""
        return self._pending_total

    def flush(self) -> list[dict]:
        """Write one ``reveal`` event per pending ``(role, purpose, column, key id)``.
        If the write fails the counts stay pending (and :class:`AuditError` is raised)."""
        with self._lock:
            if not self._pending:
                return []
            pending, self._pending = self._pending, {}
            self._pending_total = 0
            with _LIVE_LOCK:
                _LIVE.discard(self)
        events = [self._reveal_event(role, purpose, column, key_id, b)
                  for (role, purpose, column, key_id), b in pending.items()]
        try:
            self._write(events)
        except AuditError:
            self._requeue(pending)
            raise
        return events

    def _requeue(self, pending: dict[tuple, _Batch]) -> None:
        with self._lock:
            if not self._pending:
                self._started_pending()
            for k, b in pending.items():
                mine = self._pending.get(k)
                if mine is None:
                    self._pending[k] = b
                else:
                    mine.merge(b, self.max_row_keys)
                self._pending_total += b.count

    def write_reveals(self, role: str | None, purpose: str | None,
                      groups: dict[tuple, _Batch]) -> list[dict]:
        """Write reveal events now, one per ``(column, key id)`` group, in one write."""
        events = [self._reveal_event(role, purpose, column, key_id, b)
                  for (column, key_id), b in groups.items()]
        self._write(events)
        return events

    def _reveal_event(self, role: Any, purpose: Any, column: Any, key_id: Any,
                      b: _Batch) -> dict:
        return self._event("reveal", "ok", role, purpose, {
            "column": column, "key_id": key_id, "count": b.count,
            "row_keys": b.row_keys or None, "row_keys_omitted": b.omitted or None,
            "first_at": b.first_at.isoformat()})

    # -- destinations ----------------------------------------------------------------------
    def bind(self, engine: Engine, *, create: bool = True) -> None:
        """Use ``engine`` for the audit table (unless the trail was given its own), and
        create the table if it is missing (``create=False``: refuse a database without
        it, :class:`~piiguard.errors.ConfigurationError`)."""
        if not self._own_engine:
            self.engine = engine
        if self.table is None or self.engine is None:
            return
        if create:
            self.table.create(self.engine, checkfirst=True)
            return
        with self.engine.connect() as conn:
            if not self.engine.dialect.has_table(conn, self.table.name,
                                                 schema=self.table.schema):
                raise ConfigurationError(
                    f"piiguard table {self.table.name} missing and create_tables=False: "
                    "create it in a migration (piiguard.sqlalchemy.alembic."
                    "create_piiguard_tables(op, audit_table=True); docs/alembic.md)",
                    operation="bind")

    def goes_nowhere(self) -> bool:
        """True when events would be dropped silently: no sink, no table, and no
        handler on the ``piiguard.audit`` logger that takes INFO records."""
        if self.sinks or self.table is not None:
            return False
        return logger.disabled or not (logger.isEnabledFor(logging.INFO)
                                       and logger.hasHandlers())

    def emit(self, action: str, *, outcome: str = "ok", role: Any = _CURRENT,
             purpose: Any = _CURRENT, **fields: Any) -> dict:
        """Write one event now. ``role`` and ``purpose`` default to the ones in effect;
        other fields must be in :data:`ALLOWED_FIELDS`."""
        unknown = set(fields) - ALLOWED_FIELDS
        if unknown:
            raise TypeError(f"audit events take no field(s) {sorted(unknown)}")
        event = self._event(action, outcome, role, purpose, fields)
        self._write([event])
        return event

    def _event(self, action: str, outcome: str, role: Any, purpose: Any,
               fields: dict[str, Any]) -> dict:
        event: dict[str, Any] = {
            "time": self._clock().isoformat(),
            "action": action,
            "role": current_role() if role is _CURRENT else role,
            "purpose": current_purpose() if purpose is _CURRENT else purpose,
            "outcome": outcome,
        }
        event.update({k: v for k, v in fields.items() if v is not None})
        return event

    def _write(self, events: list[dict]) -> None:
        """Table (one transaction), then sinks, then the logger. A failure of the table
        or a sink raises :class:`AuditError` naming the destination, never an event."""
        if self.table is not None and self.engine is not None:
            try:
                self._insert(events)
            except Exception as exc:  # noqa: BLE001 - any failure: the record is not written
                raise AuditError(f"could not write audit events to the {self.table.name} "
                                 f"table ({type(exc).__name__})",
                                 operation="audit") from None
        for sink in self.sinks:
            try:
                write_batch = getattr(sink, "write_batch", None)
                if callable(write_batch):
                    write_batch(events)
                else:
                    for event in events:
                        sink(event)
            except Exception as exc:  # noqa: BLE001 - any failure: the record is not written
                raise AuditError(f"could not write audit events to a sink "
                                 f"({type(exc).__name__})", operation="audit") from None
        for event in events:
            logger.info("%s", json.dumps(event, default=str, sort_keys=True),
                        extra={"piiguard_event": event})
            self.last_events.append(event)

    def _insert(self, events: Iterable[dict]) -> None:
        assert self.table is not None and self.engine is not None
        rows = []
        for event in events:
            detail = {k: v for k, v in event.items()
                      if k not in {"time", "action", "role", "purpose", "column", "key_id",
                                   "count", "outcome"}}
            rows.append(dict(
                time=self._clock(), action=event["action"], role=event["role"],
                purpose=event["purpose"], column=event.get("column"),
                key_id=None if event.get("key_id") is None else str(event["key_id"]),
                count=event.get("count"), outcome=event["outcome"],
                detail=json.loads(json.dumps(detail, default=str)) or None))
        with self.engine.begin() as conn:
            conn.execute(self.table.insert(), rows)


register_exit_hook(flush_all)
atexit.register(flush_all)
