"""``==`` / ``!=`` / ``in_()`` on an encrypted column, through its blind index.

The comparator turns ``Customer.national_id == "10000000146"`` into
``national_id_bidx IN (:candidates)``: the value is validated and canonicalised when the
expression is built, and its blind index under every usable index key (the active one
and, during an index key rotation, the previous ones) is computed when the statement
runs. Comparisons that an index cannot answer (``<``, ``LIKE`` …) are refused.

With a warm key cache the IN list is a fixed number of plain parameters (one slot per
value and usable key, plus a spare): SQLAlchemy compiles such a statement once and
caches it. With a cold cache, or more than :data:`MAX_INDEX_SLOTS` parameters, an
expanding IN is used instead.

Under a masking policy every search is admitted by the Guard's
:class:`~piiguard.masking.search.SearchGate` when the expression is built: the role must
be allowed to search the column, the principal's rate limit must cover the number of
candidate values (an ``in_()`` of 1,000 values is 1,000 tries), and the search is
audited (role, purpose, column, count; never a value).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Column, bindparam
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import ClauseElement
from sqlalchemy.types import TypeDecorator

from piiguard.errors import ConfigurationError, PIIGuardError, scrub_frames
from piiguard.sqlalchemy.seams import refused
from piiguard.sqlalchemy.state import AttachedColumn, BlindIndexColumn, attached_column_of

__all__ = ["MAX_INDEX_SLOTS", "EncryptedComparator"]

#: Above this many parameters (values x usable index keys) a lookup uses an expanding IN.
MAX_INDEX_SLOTS = 32


class EncryptedComparator(TypeDecorator.Comparator):
    """``==`` / ``!=`` / ``in_`` through the blind index; other comparisons refused."""

    __slots__ = ()

    _REFUSED = frozenset({
        operators.lt, operators.le, operators.gt, operators.ge, operators.like_op,
        operators.not_like_op, operators.ilike_op, operators.not_ilike_op,
        operators.contains_op, operators.not_contains_op, operators.startswith_op,
        operators.not_startswith_op, operators.endswith_op, operators.not_endswith_op,
        operators.between_op, operators.not_between_op, operators.match_op,
        operators.not_match_op, operators.regexp_match_op, operators.not_regexp_match_op,
        operators.concat_op, operators.is_distinct_from, operators.is_not_distinct_from,
        operators.add, operators.sub,
    })

    def operate(self, op: Any, *other: Any, **kw: Any) -> Any:
        try:
            return self._operate(op, other, kw)
        except PIIGuardError as exc:
            err = exc
        del other, kw    # the compared values: not in this frame when the error leaves
        scrub_frames(err, libraries_only=True)          # (_operate's, finished now)
        raise err

    def _operate(self, op: Any, other: tuple[Any, ...], kw: dict[str, Any]) -> Any:
        if op is operators.eq or op is operators.ne:
            value = other[0] if other else None
            if value is None or isinstance(value, ClauseElement) or hasattr(
                    value, "__clause_element__"):
                # IS NULL, and column-to-column comparisons (SQLAlchemy itself compares
                # columns this way, e.g. as dictionary keys)
                return super().operate(op, *other, **kw)
            return self._match([value], negate=op is operators.ne, exact_only=True)
        if op is operators.in_op or op is operators.not_in_op:
            values = other[0] if other else ()
            if not isinstance(values, (list, tuple, set, frozenset)):
                raise _compare_error(self._state(), "in_() on an encrypted column takes a "
                                     "list of plain values")
            return self._match(list(values), negate=op is operators.not_in_op,
                               exact_only=True)
        if op in self._REFUSED:
            raise _compare_error(self._state(), "encrypted values cannot be compared with "
                                 f"{getattr(op, '__name__', op)} (only ==, !=, in_() on a "
                                 "searchable column, and IS NULL)")
        return super().operate(op, *other, **kw)

    def blind_match(self, value: Any) -> Any:
        """Rows whose blind index matches ``value`` (or any of a list of values). With a
        truncated index this is a superset of the true matches: re-check them, or use
        :func:`~piiguard.sqlalchemy.lookup`."""
        values = value if isinstance(value, (list, tuple, set, frozenset)) else [value]
        return self._match(list(values), negate=False, exact_only=False)

    def _state(self) -> AttachedColumn:
        st = attached_column_of(self.expr.type)
        if st is None:
            raise ConfigurationError("this encrypted column is not attached to a table",
                                     operation="compare")
        return st

    def _index_col(self, st: AttachedColumn, search: BlindIndexColumn) -> Column:
        table = getattr(self.expr, "table", None)
        if table is not None and table is not st.table and hasattr(table, "c"):
            col = table.c.get(search.column.key)   # an alias of the table
            if col is not None:
                return col
        return search.column

    def _match(self, values: list[Any], *, negate: bool, exact_only: bool) -> Any:
        try:
            return self._build_match(values, negate=negate, exact_only=exact_only)
        except PIIGuardError as exc:
            err = exc
        del values     # the search values: not in this frame when the error leaves it
        raise refused(err)   # (frames below cleared now, the caller's at the next rollback)

    def _build_match(self, values: list[Any], *, negate: bool, exact_only: bool) -> Any:
        st = self._state()
        search = st.search
        if search is None:
            raise _compare_error(st, f"{st.label} is not searchable: every encryption is "
                                 "randomised, so == can never match; declare it with "
                                 "searchable=True")
        if exact_only and not search.exact:
            raise _compare_error(st, f"{st.label} has a truncated blind index (bits="
                                 f"{search.index.bits}): == would also match other values; "
                                 "use piiguard.sqlalchemy.lookup() (re-checks after "
                                 "decryption) or .blind_match() for the raw candidates")
        canonical = [st.canonical(v) for v in values]     # validated now, at build time
        guard = st.guard
        policy = guard.policy
        if policy is not None:
            guard.searches.admit(policy, guard.audit, kind=st.kind, column=st.label,
                                 count=len(set(canonical)))
        col = self._index_col(st, search)
        # The index keys are looked up when the statement runs (inside SQLAlchemy's
        # greenlet with async engines), not when the expression is built.
        n = search.index.cached_key_count()
        slots = None if n is None else len(canonical) * (n + 1)
        if slots is None or slots > MAX_INDEX_SLOTS:
            cands = bindparam(None, callable_=lambda: search.candidates_of(canonical),
                              expanding=True, type_=col.type)
            return col.not_in(cands) if negate else col.in_(cands)
        # Warm key cache: a fixed IN list of plain parameters, which SQLAlchemy compiles
        # once and caches (an expanding IN is re-rendered at every execution, about as
        # costly as the lookup itself on SQLite). One spare slot per value for an index
        # key rotation starting between building and running; spare slots repeat the
        # first candidate. More candidates than slots fails instead of missing rows.
        memo = _slot_memo(search, canonical)
        binds = [bindparam(None, callable_=_index_slot(memo, st.label, i, slots),
                           type_=col.type) for i in range(slots)]
        return col.not_in(binds) if negate else col.in_(binds)


def _index_slot(memo: Callable[[], list[bytes]], label: str, i: int,
                slots: int) -> Callable[[], bytes]:
    """Value of parameter ``i`` of a fixed-size blind-index IN list: candidate ``i``."""
    def value() -> bytes:
        cands = memo()
        if len(cands) > slots:
            raise ConfigurationError(
                "the blind-index keys changed while this statement waited to run (index "
                "key rotation): build the query again", column=label, operation="compare")
        return cands[i] if i < len(cands) else cands[0]
    return value


def _slot_memo(search: BlindIndexColumn,
               canonical: list[str]) -> Callable[[], list[bytes]]:
    """The candidates of one statement, computed once per set of usable index keys and
    shared by its parameters."""
    # (usable-keys list, candidates) is replaced in one assignment, so concurrent
    # executions of the statement never pair one key set with another's candidates.
    box: list[tuple[Any, list[bytes]]] = [(None, [])]

    def memo() -> list[bytes]:
        keys = search.index.usable_keys()
        seen = box[0]
        if seen[0] is keys:
            return seen[1]
        cands = search.candidates_of(canonical)
        box[0] = (keys, cands)
        return cands
    return memo


def _compare_error(st: AttachedColumn, message: str) -> ConfigurationError:
    return ConfigurationError(message, column=st.label, operation="compare")
