"""The audit trail: one structured event per full reveal and per key operation.

Events go to the ``piiguard.audit`` logger (as JSON in the message, and as the
``piiguard_event`` attribute of the log record) and, when asked, to an audit table in
the application's database. An event carries time, action, role, purpose,
``table.column``, row keys where known, a count, key id and outcome: never a value.

    >>> trail = AuditTrail()
    >>> event = trail.emit("reveal", column="customers.national_id", count=3)
    >>> sorted(event)
    ['action', 'column', 'count', 'outcome', 'purpose', 'role', 'time']
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any, Callable

from sqlalchemy import JSON, Column, DateTime, Integer, MetaData, String, Table
from sqlalchemy.engine import Engine

from piiguard.masking.context import current_purpose, current_role

logger = logging.getLogger("piiguard.audit")

#: Fields an event may carry; anything else passed to ``emit`` is refused, so a value
#: can never slip into the trail under a new name.
ALLOWED_FIELDS = frozenset({
    "column", "row_keys", "count", "key_id", "kind", "scope", "master_key_id",
    "previous_key_id", "previous_master_key_id", "reason", "mask", "error", "rows",
    "table", "outcome",
})


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
    """Where audit events go. ``table=True`` also writes them to ``piiguard_audit``."""

    def __init__(self, *, table: bool = False, table_name: str = "piiguard_audit",
                 sinks: list[Callable[[dict], None]] | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self.table = audit_table(table_name) if table else None
        self.engine: Engine | None = None
        self.sinks = list(sinks or [])
        self._clock = clock

    def __repr__(self) -> str:
        return f"AuditTrail(table={self.table is not None}, sinks={len(self.sinks)})"

    def bind(self, engine: Engine) -> None:
        self.engine = engine
        if self.table is not None:
            self.table.create(engine, checkfirst=True)

    def emit(self, action: str, *, outcome: str = "ok", **fields: Any) -> dict:
        unknown = set(fields) - ALLOWED_FIELDS
        if unknown:
            raise TypeError(f"audit events take no field(s) {sorted(unknown)}")
        event: dict[str, Any] = {
            "time": self._clock().isoformat(),
            "action": action,
            "role": current_role(),
            "purpose": current_purpose(),
            "outcome": outcome,
        }
        event.update({k: v for k, v in fields.items() if v is not None})
        logger.info("%s", json.dumps(event, default=str, sort_keys=True),
                    extra={"piiguard_event": event})
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
