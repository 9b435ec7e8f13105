"""Sealed: what an encrypted column reads as while a masking policy is set.

A :class:`Sealed` holds the stored envelope and the column it came from, and decrypts
only when the view for the role in effect needs the plaintext (through
:func:`piiguard.masking.view.render`). :func:`unseal` is the package's way to the
plaintext without masking (re-writing a value to its own column, exact lookups).

A reveal of a sealed value is recorded once per role and purpose: reading the same
loaded value again is not a new disclosure. With a durable audit trail the ORM puts the
values of one result in a :class:`~piiguard.masking.audit.RevealBatch` when it loads
them (:mod:`.reveals`), and the first one shown writes the batch's record.
"""

from __future__ import annotations

from typing import Any, NoReturn, Protocol, cast

from sqlalchemy.types import TypeEngine

from piiguard.errors import KeyDestroyedError, PIIGuardError
from piiguard.masking.audit import RevealBatch
from piiguard.masking.context import current_purpose, current_role
from piiguard.masking.view import MaskedStr, RevealedStr

__all__ = ["Sealed", "SealedSource", "unseal"]


class SealedSource(Protocol):
    """What a sealed value needs from its column (an attached encrypted column)."""

    label: str
    kind: str
    guard: Any
    on_destroyed: str
    #: stored text -> Python value of a typed column (None: text columns)
    decode: Any

    def decrypt(self, stored: Any) -> str: ...

    def decrypt_in_row(self, stored: Any, values: Any) -> str: ...

    def stored_key_id(self, stored: Any) -> int: ...


class Sealed:
    """A stored encrypted value, read while a masking policy is set.

    It holds the envelope and the column it came from, and decrypts only when the view
    for the role in effect needs the plaintext (a ``redact`` or ``null`` role never
    decrypts). ``str()``, ``format()`` and ``==`` with a string use that view, worked
    out at the moment they are called; ``repr()`` never shows a value. ORM attributes
    of encrypted columns unwrap it for you (``customer.national_id`` is the view).
    Written back to the same column unchanged, the envelope is reused byte for byte.

    ``column`` is the encrypted column type the value was read from (or its attached
    state, which is what the result processor passes). A value of a row-bound column
    (``key_scope=``, ``bound_to=``) keeps its row's binding values (``row``): it decrypts
    only with them.
    """

    __slots__ = ("_audit", "_bound", "_col", "_legacy", "_row", "stored")

    def __init__(self, stored: bytes | str, column: Any, *, legacy: bool = False,
                 row: Any = None) -> None:
        self.stored = stored
        if isinstance(column, TypeEngine):    # a column type, as applications pass it
            column = cast(Any, column).attached()
        self._col: SealedSource = column
        self._legacy = legacy
        self._row = row
        self._bound = getattr(column, "binding", None) is not None
        # (role, purpose) this value's reveal is on record for, or the RevealBatch that
        # will record it, or None
        self._audit: Any = None

    @property
    def column(self) -> str:
        """``table.column`` the value was read from."""
        return self._col.label

    @property
    def kind(self) -> str:
        return self._col.kind

    @property
    def origin(self) -> SealedSource:
        """The attached encrypted column the value was read from."""
        return self._col

    @property
    def legacy(self) -> bool:
        """True for a legacy plaintext value (``allow_plaintext=True``), not an envelope."""
        return self._legacy

    @property
    def key_id(self) -> int | None:
        """The DEK id named by the envelope (None for legacy plaintext)."""
        if self._legacy:
            return None
        return self._col.stored_key_id(self.stored)

    def _plaintext(self) -> str:
        if self._legacy:
            return self.stored if isinstance(self.stored, str) else self.stored.decode()
        if self._bound:
            return self._col.decrypt_in_row(self.stored, self._row)
        return self._col.decrypt(self.stored)

    def view(self, *, row_key: Any = None) -> Any:
        """The value as the role in effect may see it (plaintext, a MaskedStr, or None;
        a typed column's revealed value is its Python value: a ``date`` …)."""
        col = self._col
        guard = col.guard
        policy = guard.policy
        decode = col.decode
        try:
            if policy is None:
                plain = self._plaintext()
                return plain if decode is None else decode(plain)
            role = current_role()
            mask = policy.mask_for(kind=col.kind, column=col.label, role=role)
            if mask.is_reveal:
                revealed = self._reveal(guard, role, row_key)
                return revealed if decode is None else decode(str(revealed))
            # what render() does for a mask, without looking the mask up again
            if not mask.needs_plaintext:
                return mask(None, kind=col.kind, guard=guard, column=col.label)
            return mask(self._plaintext(), kind=col.kind, guard=guard, column=col.label)
        except KeyDestroyedError:
            if col.on_destroyed == "null":   # crypto-shredded: NULL unless "raise"
                return None
            raise

    def _reveal(self, guard: Any, role: str | None, row_key: Any) -> str:
        """The plaintext for a ``reveal`` role, its reveal on record (once)."""
        purpose = current_purpose()
        mark = self._audit
        recorded = False
        if mark is not None:
            if type(mark) is RevealBatch:
                if mark.role == role and mark.purpose == purpose:
                    mark.write()           # the whole batch, once; AuditError: no value
                    recorded = True
            elif mark == (role, purpose):
                recorded = True
        try:
            value = self._plaintext()
        except PIIGuardError as exc:
            if not isinstance(exc, KeyDestroyedError):
                guard.audit.emit("reveal", outcome="error", column=self._col.label,
                                 key_id=self.key_id,
                                 row_keys=None if row_key is None else [row_key], count=1,
                                 error=type(exc).__name__)
            raise
        if not recorded:
            guard.audit.record_reveal(self._col.label, self.key_id, row_key, role, purpose)
            self._audit = (role, purpose)
        return RevealedStr(value)

    def join_batch(self, batch: RevealBatch) -> None:
        """Have ``batch`` record this value's reveal (the ORM, when it loads a result)."""
        self._audit = batch

    def __str__(self) -> str:
        v = self.view()
        if v is None:   # mask "null": an empty *masked* string, never storable
            return MaskedStr("")
        return v if isinstance(v, str) else str(v)      # a typed column's value

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)

    def __repr__(self) -> str:
        return f"Sealed(column={self._col.label!r}, key_id={self.key_id})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sealed):
            return other._col is self._col and other.stored == self.stored
        if isinstance(other, str):
            return self.view() == other
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        r = self.__eq__(other)
        return r if r is NotImplemented else not r

    def __hash__(self) -> int:
        return hash(self.stored)

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Sealed value cannot be pickled (it refers to its Guard)")


def unseal(value: Sealed) -> str:
    """The plaintext of a sealed value, without masking and without an audit event: for
    piiguard's own use (re-encrypting, exact comparisons), never for showing."""
    return value._plaintext()
