"""Small helpers shared by the validators (private).

The validators never trust ``str.isdigit()``, ``int()`` or the regex ``\\d`` on input
they have not yet checked: those accept digits from every script (``'٣'``, ``'３'``,
``'²'``). :func:`is_ascii_digits` accepts only ``'0123456789'``.

>>> is_ascii_digits('0123456789'), is_ascii_digits('٣'), is_ascii_digits('²'), is_ascii_digits('')
(True, False, False, False)
"""

from __future__ import annotations

from piiguard.errors import InvalidFormatError, InvalidLengthError, MaskedValueError

__all__ = ["empty", "is_ascii_digits", "is_blank", "require_str", "strip_separators"]

#: Longest input any numeric validator looks at; longer input is refused before any work.
MAX_INPUT = 64


def is_ascii_digits(s: str) -> bool:
    """True when ``s`` is non-empty and made only of the ASCII digits ``0-9``.

    ``str.isascii()`` rules out every non-ASCII code point and, among ASCII characters,
    ``str.isdigit()`` is true for ``0-9`` only, so the pair is an exact and fast test.
    """
    return s.isascii() and s.isdigit()


def require_str(value: object, what: str, max_len: int = MAX_INPUT) -> str:
    """Return ``value`` if it is a ``str`` of bounded length, else raise a piiguard error."""
    if not isinstance(value, str):
        raise InvalidFormatError("type", detail=f"{what} must be a string")
    if len(value) > max_len:
        raise InvalidLengthError("length", detail=f"{what} input is too long")
    return value


def is_blank(s: str) -> bool:
    """True when ``s`` is empty or whitespace only (what every validator calls empty)."""
    return not s or s.isspace()


def empty(what: str) -> InvalidLengthError:
    """The error for empty input: its own rule, ``empty``, in every validator (rather
    than whichever rule the empty string happens to fail first)."""
    return InvalidLengthError("empty", detail=f"{what} is empty")


_SEPARATORS = str.maketrans("", "", " -.")


def strip_separators(s: str, what: str) -> str:
    """Remove the separators ``' '``, ``'-'`` and ``'.'`` and surrounding whitespace.

    A value containing ``*`` is a masked view (``1********46``), never a number.
    """
    if "*" in s:
        raise MaskedValueError("masked", detail=f"{what} looks like a masked value")
    return s.translate(_SEPARATORS).strip()
