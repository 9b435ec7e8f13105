"""Masked views: :class:`MaskedStr`, a ``str`` that says it is not the real value.

Every mask returns one, so the column types and encrypted pydantic fields can refuse to
write a masked view back (:class:`~piiguard.errors.MaskedValueError`). It is the lowest
piece of masking (masks make them, :func:`~piiguard.masking.view.render` returns them)
and is also importable as ``piiguard.masking.view.MaskedStr``.
"""

from __future__ import annotations

__all__ = ["MaskedStr", "is_masked"]


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
