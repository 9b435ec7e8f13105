"""Durable audit, one write per ORM result: reveals decided when the ORM loads rows.

With ``AuditTrail(durable=True)`` each reveal must be on record before its value is
returned. Writing one record per value read would cost a database transaction per
value; instead, when the ORM loads an instance (``load`` and ``refresh`` events of each
mapper with encrypted columns), every sealed value of it that the role in effect may
see whole joins the open :class:`~piiguard.masking.audit.RevealBatch` of that query
(kept in the query context, one per audit trail, role and purpose). The first of them
read writes the batch's record (all of them, one write), and the rest are read without
another write. A result read with ``yield_per`` gets one batch per chunk.

The listeners are added to a mapper only once one of its Guards has a durable trail
(:meth:`~piiguard.Guard.watch_audit`): a batched trail costs ORM loads nothing.
"""

from __future__ import annotations

import weakref
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Mapper

from piiguard.masking.audit import RevealBatch
from piiguard.masking.context import current_purpose, current_role
from piiguard.sqlalchemy.sealed import Sealed
from piiguard.sqlalchemy.state import AttachedColumn

__all__ = ["listen"]

_KEY = "piiguard.reveal_batch"


def listen(mapper: Mapper, columns: list[tuple[str, AttachedColumn]]) -> None:
    """Batch the durable reveals of ``mapper``'s encrypted ``columns`` (attribute key,
    column state) when its instances are loaded or refreshed, from the moment one of
    their Guards has a durable audit trail."""
    by_guard: dict[int, tuple[Any, list[tuple[str, AttachedColumn]]]] = {}
    for key, st in columns:
        by_guard.setdefault(id(st.guard), (st.guard, []))[1].append((key, st))
    groups = tuple((g, tuple(cols)) for g, cols in by_guard.values())
    mapper_ref = weakref.ref(mapper)
    added: list[bool] = []

    def on_load(state: Any, context: Any) -> None:
        for guard, cols in groups:
            if guard.audit.durable and guard.policy is not None:
                _join(guard, cols, state, context)

    def on_refresh(state: Any, context: Any, attrs: Any) -> None:
        on_load(state, context)

    def watcher(trail: Any) -> None:
        m = mapper_ref()
        if added or m is None or not trail.durable:
            return
        added.append(True)
        event.listen(m, "load", on_load, raw=True)
        event.listen(m, "refresh", on_refresh, raw=True)

    for guard, _cols in groups:
        watch = getattr(guard, "watch_audit", None)
        if callable(watch):
            watch(watcher)


def _join(guard: Any, cols: tuple[tuple[str, AttachedColumn], ...], state: Any,
          context: Any) -> None:
    policy = guard.policy
    role = current_role()
    dict_ = state.dict
    batch: RevealBatch | None = None
    row_key = None
    for key, st in cols:
        value = dict_.get(key)
        if type(value) is not Sealed or not policy.mask_for(
                kind=st.kind, column=st.label, role=role).is_reveal:
            continue
        if batch is None:
            batch = _open_batch(guard.audit, context, role)
            ident = state.identity
            row_key = None if ident is None else ",".join(str(i) for i in ident)
        batch.add(st.label, value.key_id, row_key)
        value.join_batch(batch)


def _open_batch(trail: Any, context: Any, role: str | None) -> RevealBatch:
    """The batch of this query for ``trail`` and the role in effect (a new one once
    the last was written, e.g. the next ``yield_per`` chunk)."""
    purpose = current_purpose()
    attributes = getattr(context, "attributes", None)
    key = (_KEY, id(trail))
    batch = attributes.get(key) if attributes is not None else None
    if batch is None or batch.written or batch.trail is not trail or (
            batch.role, batch.purpose) != (role, purpose):
        batch = trail.open_batch(role, purpose)
        if attributes is not None:
            attributes[key] = batch
    return batch
