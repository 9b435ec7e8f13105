"""No masked write-back, by construction: what a role may write over a stored value.

A role that cannot see a value sees a masked view (``1********46``, ``A**********``,
``[REDACTED]``). Marking the view (:class:`~piiguard.masking.view.MaskedStr`) is not
enough: ``str()``, an f-string, ``.strip()``, a JSON round trip or ``''.join`` give a
plain ``str``, and for free text the view is valid input. So every write path of the
column types (ORM assignment and flush, Core ``update()``) calls :func:`check_write`
with the *stored* value, and it compares **values**, not types:

- the policy must let the role write the column (the ``write`` section), else
  :class:`~piiguard.errors.AccessDeniedError`;
- a role that may reveal the column may write anything (and pays nothing here);
- a new value equal to a masked view of the stored value, under any mask the policy
  gives any role for that column, after Unicode normalisation, whitespace folding and
  case folding, and after the column's own canonicalisation, is refused with
  :class:`~piiguard.errors.MaskedValueError` naming the column (never the value);
- clearing a stored value (``None``, or an empty string) needs the ``clear`` rule
  (roles that may reveal it, and those the ``clear`` section names): refused with
  :class:`~piiguard.errors.MaskedValueError` when the role's own view is ``None``
  (writing back what it sees), else with :class:`~piiguard.errors.AccessDeniedError`.

A role that cannot see a value may still replace it with a new, valid one (support
updates a customer's phone).

>>> from piiguard.masking.policy import MaskingPolicy
>>> from piiguard.masking.context import acting_as
>>> class Host:                                  # a Guard, as far as this needs
...     policy = MaskingPolicy.from_dict({"name": {"admin": "reveal",
...                                                "support": "partial:1:2"}})
>>> with acting_as("support"):
...     check_write(Host(), kind="name", column="customers.name",
...                 new=" ş*********RK ", stored=lambda: "Şükrü Öztürk")
Traceback (most recent call last):
    ...
piiguard.errors.MaskedValueError: invalid value for customers.name: masked rule failed
(the new value equals a masked view of the stored value: a role that cannot see a value
may replace it, not write its view back) operation=write
>>> with acting_as("support"):
...     check_write(Host(), kind="name", column="customers.name",
...                 new="Ayşe Yılmaz", stored=lambda: "Şükrü Öztürk")
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from typing import Any, Protocol

from piiguard.errors import (
    AccessDeniedError,
    InvalidInputError,
    KeyDestroyedError,
    MaskedValueError,
)
from piiguard.masking.context import current_role

__all__ = ["NOTHING_STORED", "check_write", "normalise"]

#: ``stored()`` returns this when there is no stored value to protect.
NOTHING_STORED: Any = object()


class _Host(Protocol):
    @property
    def policy(self) -> Any: ...


def normalise(value: str) -> str:
    """The form views and new values are compared in: NFC, whitespace runs folded to
    one space and trimmed, case-folded.

    >>> normalise("  A**\\t**  ") == normalise("a** **")
    True
    """
    return " ".join(unicodedata.normalize("NFC", value).split()).casefold()


def check_write(host: _Host, *, kind: str, column: str, new: Any,
                stored: Callable[[], Any],
                canonical: Callable[[str], str] | None = None) -> None:
    """Refuse writing ``new`` over the value ``stored()`` returns (its plaintext, or
    ``None`` / :data:`NOTHING_STORED`), for the role in effect; see the module
    docstring. ``stored`` is called only when a check needs it (not for reveal roles);
    ``canonical`` is the column's canonicaliser (compares ``' 0532…'`` as
    ``'+90532…'``)."""
    policy = host.policy
    if policy is None:
        return
    role = current_role()
    if not policy.may_write(kind=kind, column=column, role=role):
        raise AccessDeniedError("write", role=role, column=column, operation="write")
    mask = policy.mask_for(kind=kind, column=column, role=role)
    if mask.is_reveal:
        return
    text = None if new is None else str(new)
    clearing = text is None or not text.strip()
    try:
        plaintext = stored()
    except KeyDestroyedError:
        return                 # erased: nothing left to protect
    if plaintext is None or plaintext is NOTHING_STORED:
        return
    if clearing:
        if policy.may_clear(kind=kind, column=column, role=role):
            return
        if mask(plaintext, kind=kind, guard=host, column=column) is None:
            raise MaskedValueError("masked", column=column, operation="write",
                                   detail="the role in effect sees this value as NULL; "
                                          "clearing it needs a role that can see it")
        raise AccessDeniedError("clear", role=role, column=column, operation="write",
                                detail="it cannot see the value")
    assert text is not None
    tried = {normalise(text)}
    if canonical is not None:
        try:
            tried.add(normalise(canonical(text)))
        except InvalidInputError:
            pass
    for m in policy.masks_for_column(kind=kind, column=column):
        view = m(plaintext, kind=kind, guard=host, column=column)
        if view is not None and normalise(view) in tried:
            raise MaskedValueError(
                "masked", column=column, operation="write",
                detail="the new value equals a masked view of the stored value: a role "
                       "that cannot see a value may replace it, not write its view back")

