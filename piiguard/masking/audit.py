"""The audit trail: structured events for full reveals and key operations.

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
  ``max_delay`` seconds (checked at the next reveal);
- by an explicit ``guard.audit.flush()`` and by ``guard.close()``;
- at interpreter exit (``atexit``).

A failed decryption under ``reveal`` is written at once, as a ``reveal`` event with
``outcome="error"``.

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
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Integer, MetaData, String, Table
from sqlalchemy.engine import Engine

from piiguard.errors import ConfigurationError
from piiguard.masking.context import acting_as  # noqa: F401 - the doctests use it
from piiguard.masking.context import current_purpose, current_role, register_exit_hook

__all__ = ["ALLOWED_FIELDS", "AuditTrail", "audit_table", "flush_all"]

logger = logging.getLogger("piiguard.audit")

#: Fields an event may carry; anything else passed to ``emit`` is refused, so a value
#: can never slip into the trail under a new name.
ALLOWED_FIELDS = frozenset({
    "column", "row_keys", "count", "key_id", "kind", "scope", "master_key_id",
    "previous_key_id", "previous_master_key_id", "reason", "mask", "error", "rows",
    "table", "outcome", "first_at", "row_keys_omitted",
})

_CURRENT: Any = object()  # "take role / purpose from the context"

# Trails with pending reveal counts (weak: a trail that is gone has nothing to flush).
_LIVE: weakref.WeakSet[AuditTrail] = weakref.WeakSet()
_LIVE_LOCK = threading.Lock()   # WeakSet iteration is not safe against concurrent adds


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
    __slots__ = ("count", "first_at", "omitted", "row_keys")

    def __init__(self, first_at: datetime) -> None:
        self.count = 0
        self.row_keys: list = []
        self.omitted = 0
        self.first_at = first_at


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


class AuditTrail:
    """Where audit events go. ``table=True`` also writes them to ``piiguard_audit``.

    - ``sinks``: callables that get every event (a dict) after the logger.
    - ``batch_size`` / ``max_delay``: when pending reveal counts are flushed (see the
      module docstring); ``max_row_keys``: how many row keys a reveal event lists (the
      rest are counted in ``row_keys_omitted``).
    - ``last_events``: the most recent events (``keep_last`` of them), for tests and
      the CLI.
    """

    def __init__(self, *, table: bool = False, table_name: str = "piiguard_audit",
                 sinks: list[Callable[[dict], None]] | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 batch_size: int = 10_000, max_delay: float = 5.0,
                 max_row_keys: int = 100, keep_last: int = 100,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        if type(batch_size) is not int or batch_size < 1:
            raise ConfigurationError("audit batch_size must be a positive integer")
        if not isinstance(max_delay, (int, float)) or max_delay < 0:
            raise ConfigurationError("audit max_delay must be a number of seconds >= 0")
        if type(max_row_keys) is not int or max_row_keys < 0:
            raise ConfigurationError("audit max_row_keys must be an integer >= 0")
        self.table = audit_table(table_name) if table else None
        self.engine: Engine | None = None
        self.sinks = list(sinks or [])
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
                f"pending={self._pending_total})")

    # -- batched reveals -------------------------------------------------------------------
    def record_reveal(self, column: str | None, key_id: int | None = None,
                      row_key: Any = None, role: Any = _CURRENT,
                      purpose: Any = _CURRENT) -> None:
        """Count one revealed value (the hot path: a dict update under a lock)."""
        if role is _CURRENT:
            role = current_role()
        if purpose is _CURRENT:
            purpose = current_purpose()
        k = (role, purpose, column, key_id)
        with self._lock:
            b = self._pending.get(k)
            if b is None:
                if not self._pending:
                    self._pending_since = self._mono()
                    with _LIVE_LOCK:
                        _LIVE.add(self)
                b = self._pending[k] = _Batch(self._clock())
            b.count += 1
            if row_key is not None:
                if len(b.row_keys) < self.max_row_keys:
                    b.row_keys.append(row_key)
                else:
                    b.omitted += 1
            self._pending_total += 1
            due = (self._pending_total >= self.batch_size
                   or self._mono() - self._pending_since >= self.max_delay)
        if due:
            self.flush()

    def pending(self) -> int:
        """How many reveals are counted but not yet written as events."""
        return self._pending_total

    def flush(self) -> list[dict]:
        """Write one ``reveal`` event per pending ``(role, purpose, column, key id)``."""
        with self._lock:
            if not self._pending:
                return []
            pending, self._pending = self._pending, {}
            self._pending_total = 0
            with _LIVE_LOCK:
                _LIVE.discard(self)
        events = []
        for (role, purpose, column, key_id), b in pending.items():
            events.append(self.emit(
                "reveal", role=role, purpose=purpose, column=column, key_id=key_id,
                count=b.count, row_keys=b.row_keys or None,
                row_keys_omitted=b.omitted or None, first_at=b.first_at.isoformat()))
        return events

    def bind(self, engine: Engine) -> None:
        self.engine = engine
        if self.table is not None:
            self.table.create(engine, checkfirst=True)

    def emit(self, action: str, *, outcome: str = "ok", role: Any = _CURRENT,
             purpose: Any = _CURRENT, **fields: Any) -> dict:
        """Write one event now. ``role`` and ``purpose`` default to the ones in effect;
        other fields must be in :data:`ALLOWED_FIELDS`."""
        unknown = set(fields) - ALLOWED_FIELDS
        if unknown:
            raise TypeError(f"audit events take no field(s) {sorted(unknown)}")
        event: dict[str, Any] = {
            "time": self._clock().isoformat(),
            "action": action,
            "role": current_role() if role is _CURRENT else role,
            "purpose": current_purpose() if purpose is _CURRENT else purpose,
            "outcome": outcome,
        }
        event.update({k: v for k, v in fields.items() if v is not None})
        logger.info("%s", json.dumps(event, default=str, sort_keys=True),
                    extra={"piiguard_event": event})
        self.last_events.append(event)
        for sink in self.sinks:
            sink(event)
        if self.table is not None and self.engine is not None:
            detail = {k: v for k, v in event.items()
                      if k not in {"time", "action", "role", "purpose", "column", "key_id",
                                   "count", "outcome"}}
            with self.engine.begin() as conn:
                conn.execute(self.table.insert().values(
                    time=self._clock(), action=action, role=event["role"],
                    purpose=event["purpose"], column=event.get("column"),
                    key_id=None if event.get("key_id") is None else str(event["key_id"]),
                    count=event.get("count"), outcome=outcome,
                    detail=json.loads(json.dumps(detail, default=str)) or None))
        return event


register_exit_hook(flush_all)
atexit.register(flush_all)
