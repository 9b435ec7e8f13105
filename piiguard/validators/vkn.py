"""VKN (Vergi Kimlik Numarası, Turkish tax identification number).

A 10-digit number whose last digit is a check digit computed from the first nine: for
the digit ``d`` at position ``i`` counted from the right (``i = 1 … 9``)::

    c1 = (d + i) mod 10
    c2 = (c1 * 2**i) mod 9, or 9 when that is 0 (and c1 is not 0); 0 when c1 is 0
    check = (10 - sum(c2)) mod 10

The canonical form is the 10 ASCII digits (a VKN may start with ``0``, so keep it a
string). Spaces, dashes and dots are removed; digits from other scripts are refused. The
module follows python-stdnum's ``stdnum.tr.vkn`` and agrees with it.

>>> validate('1234567890')
'1234567890'
>>> validate('123 456 789-0')
'1234567890'
>>> is_valid('1234567890'), is_valid('1234567891'), is_valid(None)
(True, False, False)
>>> calc_check_digit('123456789')
'0'
>>> validate('1234567891')
Traceback (most recent call last):
    ...
piiguard.errors.InvalidChecksumError: invalid value: checksum rule failed
    (VKN check digit does not match)
>>> validate('123456789')
Traceback (most recent call last):
    ...
piiguard.errors.InvalidLengthError: invalid value: length rule failed (VKN has 10 digits)
>>> validate('12345678９0')
Traceback (most recent call last):
    ...
piiguard.errors.InvalidFormatError: invalid value: format rule failed
    (VKN has ASCII digits 0-9 only)
"""

from __future__ import annotations

from piiguard.errors import InvalidChecksumError, InvalidFormatError, InvalidLengthError
from piiguard.validators._util import (
    empty,
    is_ascii_digits,
    is_blank,
    require_str,
    strip_separators,
)

__all__ = ["calc_check_digit", "compact", "format", "is_valid", "validate"]

_NAME = "VKN"


def _c2(digit: int, i: int) -> int:
    c1 = (digit + i) % 10
    if not c1:
        return 0
    return (c1 * 2**i) % 9 or 9


# _TABLE[j][byte]: contribution of the ASCII digit ``byte`` at index j (0 = leftmost of 9).
_TABLE = tuple(
    {48 + d: _c2(d, 9 - j) for d in range(10)} for j in range(9)
)


def compact(number: str) -> str:
    """Remove separators (space, dash, dot) and surrounding whitespace.

    >>> compact(' 123-456-789.0 ')
    '1234567890'
    """
    return strip_separators(require_str(number, _NAME), _NAME)


def _check(head: bytes) -> int:
    t = _TABLE
    s = (t[0][head[0]] + t[1][head[1]] + t[2][head[2]] + t[3][head[3]] + t[4][head[4]]
         + t[5][head[5]] + t[6][head[6]] + t[7][head[7]] + t[8][head[8]])
    return (10 - s) % 10


def calc_check_digit(number: str) -> str:
    """Return the check digit for the first 9 digits of ``number``.

    >>> calc_check_digit('000000000')
    '1'
    >>> calc_check_digit('12')
    Traceback (most recent call last):
        ...
    piiguard.errors.InvalidLengthError: invalid value: length rule failed
        (VKN check digit needs the first 9 digits)
    """
    number = require_str(number, _NAME)
    if len(number) < 9:
        raise InvalidLengthError("length", detail=f"{_NAME} check digit needs the first 9 digits")
    head = number[:9]
    if not is_ascii_digits(head):
        raise InvalidFormatError("format", detail=f"{_NAME} has ASCII digits 0-9 only")
    return str(_check(head.encode("ascii")))


def validate(number: str) -> str:
    """Check a VKN and return its canonical form: 10 ASCII digits.

    Raises :class:`~piiguard.errors.InvalidFormatError`,
    :class:`~piiguard.errors.InvalidLengthError`,
    :class:`~piiguard.errors.InvalidChecksumError` or
    :class:`~piiguard.errors.MaskedValueError`; messages never contain the value.

    >>> validate('0000000001')
    '0000000001'
    """
    if not (type(number) is str and len(number) == 10 and number.isascii() and number.isdigit()):
        number = compact(number)
        if not is_ascii_digits(number):
            if is_blank(number):
                raise empty(_NAME)
            raise InvalidFormatError("format", detail=f"{_NAME} has ASCII digits 0-9 only")
        if len(number) != 10:
            raise InvalidLengthError("length", detail=f"{_NAME} has 10 digits")
    b = number.encode("ascii")
    if _check(b) != b[9] - 48:
        raise InvalidChecksumError("checksum", detail=f"{_NAME} check digit does not match")
    return number


def is_valid(number: object) -> bool:
    """True if ``number`` is a valid VKN; never raises.

    >>> is_valid('1234567890'), is_valid('３'), is_valid(0), is_valid(object())
    (True, False, False, False)
    """
    try:
        validate(number)  # type: ignore[arg-type]
    except ValueError:
        return False
    return True


def format(number: str) -> str:
    """Return the canonical printable form (VKNs are written without separators).

    >>> format('123 456 7890')
    '1234567890'
    """
    return validate(number)
