"""Marked strings: :class:`MaskedStr`, a ``str`` that says it is not the real value,
and :class:`RevealedStr`, a real value whose reveal is already in the audit trail.

Every mask returns a :class:`MaskedStr`, so the column types and encrypted pydantic
fields can refuse to write a masked view back (:class:`~piiguard.errors.MaskedValueError`;
the column types also compare *values*, so a masked view that lost its marker through
``str()``, an f-string or JSON is refused too: see :mod:`piiguard.masking.writeback`).
It is the lowest piece of masking (masks make them,
:func:`~piiguard.masking.view.render` returns them) and is also importable as
``piiguard.masking.view.MaskedStr``.
"""

from __future__ import annotations

__all__ = ["MaskedStr", "RevealedStr", "is_masked"]


class MaskedStr(str):
    """A masked view of a value (``'1********46'``, ``'[REDACTED]'``, a pseudonym).

    It behaves as the ``str`` it shows (its ``repr`` is the masked text) and marks that
    it is not the real value, so piiguard refuses to store it.

    >>> m = MaskedStr('1********46')
    >>> m, m == '1********46', is_masked(m), is_masked('1********46')
    ('1********46', True, True, False)
    """

    __slots__ = ()

    def __reduce__(self) -> tuple[type[MaskedStr], tuple[str]]:
        # Keep the marker through pickle and copy.
        return (MaskedStr, (str(self),))


def is_masked(value: object) -> bool:
    """True for a :class:`MaskedStr` (a value that must never be written back)."""
    return isinstance(value, MaskedStr)


class RevealedStr(str):
    """A revealed value whose reveal the audit trail has already recorded (with its
    column, key id and row key): what an encrypted column's attribute returns to a
    ``reveal`` role under a policy. The pydantic types serialise it without counting
    the reveal a second time. Any string operation gives a plain ``str``.

    >>> v = RevealedStr('10000000146')
    >>> v, type(v.strip()).__name__
    ('10000000146', 'str')
    """

    __slots__ = ()

    def __reduce__(self) -> tuple[type[str], tuple[str]]:
        # A copy that leaves the process is a plain value: its reveal was recorded here.
        return (str, (str(self),))
