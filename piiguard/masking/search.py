"""Search as a governed capability: who may search, how fast, and a record of each search.

Equality search on an encrypted column (``==``, ``!=``, ``in_()``,
:func:`~piiguard.sqlalchemy.lookup`) answers "is this the value?" for every candidate
tried: to a role that sees ``1********46``, it is an oracle. So, once a masking policy
is set, every search goes through :meth:`SearchGate.admit` before its statement is
built:

1. the policy must let the role search the column
   (:meth:`~piiguard.masking.MaskingPolicy.may_search`: roles that may reveal it, and
   those its ``search`` section names), else
   :class:`~piiguard.errors.AccessDeniedError`;
2. the principal's rate limit (a token bucket per principal, or per role when
   ``acting_as`` names no principal; :meth:`~piiguard.masking.MaskingPolicy.search_limit`)
   must cover the number of *candidate values*, not statements (an ``in_()`` of 1,000
   values is 1,000 tries), else :class:`~piiguard.errors.SearchLimitError`;
3. a ``search`` audit event is written: role, purpose, column and ``count`` (candidate
   values), with ``outcome`` ``ok``, ``denied`` or ``limited``; never a value. With
   ``AuditTrail(durable=True)`` a search whose event cannot be written does not run.

With no policy (encryption-only mode) searches are neither limited nor audited, like
reveals. The buckets live in this process: with several worker processes each has its
own, so divide the limit by the number of processes (docs/masking.md).

>>> from piiguard.masking.audit import AuditTrail
>>> from piiguard.masking.policy import MaskingPolicy
>>> gate, trail = SearchGate(clock=lambda: 0.0), AuditTrail()
>>> policy = MaskingPolicy.from_dict({"national_id": {"admin": "reveal"},
...                                   "limits": {"search": {"default": "10/hour",
...                                                         "admin": {"rate": "10/hour",
...                                                                   "burst": 3}}}})
>>> with acting_as("admin"):
...     gate.admit(policy, trail, kind="national_id", column="c.national_id", count=2)
...     gate.admit(policy, trail, kind="national_id", column="c.national_id", count=2)
Traceback (most recent call last):
    ...
piiguard.errors.SearchLimitError: search limit reached for role 'admin' on c.national_id:
2 candidate values would exceed the search limit {'rate': '10/hour', 'burst': 3} of this
principal; try again later operation=search
>>> [(e["outcome"], e["count"]) for e in trail.last_events]
[('ok', 2), ('limited', 2)]
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from piiguard.errors import AccessDeniedError, SearchLimitError
from piiguard.masking.context import acting_as  # noqa: F401 - the doctest uses it
from piiguard.masking.context import current_principal, current_purpose, current_role
from piiguard.masking.rules import SearchLimit

if TYPE_CHECKING:
    from piiguard.masking.audit import AuditTrail
    from piiguard.masking.policy import MaskingPolicy

__all__ = ["SearchGate"]

#: Buckets kept at most (the least recently used are dropped first, i.e. refilled).
_MAX_BUCKETS = 100_000


class _Bucket:
    __slots__ = ("at", "tokens")

    def __init__(self, tokens: float, at: float) -> None:
        self.tokens = tokens
        self.at = at


class SearchGate:
    """Admits searches: policy check, per-principal token buckets, audit events.
    A Guard owns one (``guard.searches``); ``clock`` (monotonic seconds) is
    injectable for tests."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[tuple[str | None, str | None], _Bucket] = {}

    def __repr__(self) -> str:
        return f"SearchGate(principals={len(self._buckets)})"

    def admit(self, policy: MaskingPolicy, trail: AuditTrail, *, kind: str,
              column: str | None, count: int) -> None:
        """Let the role in effect search ``column`` for ``count`` candidate values, or
        raise (every outcome is audited)."""
        role = current_role()
        purpose = current_purpose()
        if not policy.may_search(kind=kind, column=column, role=role):
            trail.emit("search", outcome="denied", role=role, purpose=purpose,
                       column=column, count=count, reason="policy")
            raise AccessDeniedError("search", role=role, column=column,
                                    operation="search")
        limit = policy.search_limit(role)
        principal = current_principal()
        if not self._take(limit, (role, principal), count):
            trail.emit("search", outcome="limited", role=role, purpose=purpose,
                       column=column, count=count, reason="rate limit")
            raise SearchLimitError(
                "search_limit", role=role, column=column, operation="search",
                detail=f"{count} candidate value{'s' if count != 1 else ''} would exceed "
                       f"the search limit {limit.to_spec()!r} of this principal; try "
                       "again later")
        trail.emit("search", role=role, purpose=purpose, column=column, count=count)

    def _take(self, limit: SearchLimit, who: tuple[str | None, str | None],
              count: int) -> bool:
        if limit.per_second is None:
            return True
        # Per principal when one is named, else per role: every caller without a
        # principal shares its role's bucket.
        key = who if who[1] is not None else (who[0], None)
        now = self._clock()
        with self._lock:
            bucket = self._buckets.pop(key, None)
            if bucket is None:
                if len(self._buckets) >= _MAX_BUCKETS:
                    self._buckets.pop(next(iter(self._buckets)))
                bucket = _Bucket(float(limit.burst), now)
            else:
                bucket.tokens = min(float(limit.burst),
                                    bucket.tokens + (now - bucket.at) * limit.per_second)
                bucket.at = now
            self._buckets[key] = bucket          # most recently used last
            if bucket.tokens < count:
                return False
            bucket.tokens -= count
            return True

    def reset(self) -> None:
        """Forget every bucket (all principals start full again)."""
        with self._lock:
            self._buckets.clear()
