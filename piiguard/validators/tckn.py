"""T.C. Kimlik No (Türkiye Cumhuriyeti Kimlik Numarası, Turkish national identity number).

An 11-digit number that does not start with ``0``; the last two digits are check digits::

    d10 = ((d1 + d3 + d5 + d7 + d9) * 7 - (d2 + d4 + d6 + d8)) mod 10
    d11 = (d1 + d2 + ... + d10) mod 10

Foreign residents get a YKN (Yabancı Kimlik Numarası) from the same number space; it
starts with ``99`` and follows the same rules, and :func:`kind` tells the two apart.

The canonical form is the 11 ASCII digits. Spaces, dashes and dots are removed; digits
from other scripts (Arabic-Indic ``٣``, fullwidth ``３``, superscripts ``²``) are refused,
never stored as they came. The module follows python-stdnum's ``stdnum.tr.tckimlik``
(``compact``, ``validate``, ``is_valid``, ``calc_check_digits``) and agrees with it.

>>> validate('10000000146')
'10000000146'
>>> validate('100 000 001-46')
'10000000146'
>>> is_valid('10000000146'), is_valid('10000000147'), is_valid(None)
(True, False, False)
>>> calc_check_digits('100000001')
'46'
>>> kind('10000000146'), kind('99000000110')
('citizen', 'foreign')
>>> validate('10000000147')
Traceback (most recent call last):
    ...
piiguard.errors.InvalidChecksumError: invalid value: checksum rule failed
    (T.C. Kimlik No check digits do not match)
>>> validate('1000000014')
Traceback (most recent call last):
    ...
piiguard.errors.InvalidLengthError: invalid value: length rule failed (T.C. Kimlik No has 11 digits)
>>> validate('01000000146')
Traceback (most recent call last):
    ...
piiguard.errors.InvalidFormatError: invalid value: format rule failed
    (T.C. Kimlik No does not start with 0)
>>> validate('1000000014٦')
Traceback (most recent call last):
    ...
piiguard.errors.InvalidFormatError: invalid value: format rule failed
    (T.C. Kimlik No has ASCII digits 0-9 only)
>>> validate('1********46')
Traceback (most recent call last):
    ...
piiguard.errors.MaskedValueError: invalid value: masked rule failed
    (T.C. Kimlik No looks like a masked value)
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

__all__ = ["calc_check_digits", "compact", "format", "is_valid", "kind", "validate"]

_NAME = "T.C. Kimlik No"


def compact(number: str) -> str:
    """Remove separators (space, dash, dot) and surrounding whitespace.

    No other check is made; :func:`validate` is the function that decides.

    >>> compact(' 100.000.001-46 ')
    '10000000146'
    >>> compact(10000000146)
    Traceback (most recent call last):
        ...
    piiguard.errors.InvalidFormatError: invalid value: type rule failed
        (T.C. Kimlik No must be a string)
    """
    return strip_separators(require_str(number, _NAME), _NAME)


def calc_check_digits(number: str) -> str:
    """Return the two check digits (d10 d11) for the first 9 digits of ``number``.

    >>> calc_check_digits('100000001')
    '46'
    >>> calc_check_digits('12345')
    Traceback (most recent call last):
        ...
    piiguard.errors.InvalidLengthError: invalid value: length rule failed
        (T.C. Kimlik No check digits need the first 9 digits)
    """
    number = require_str(number, _NAME)
    if len(number) < 9:
        raise InvalidLengthError("length", detail=f"{_NAME} check digits need the first 9 digits")
    head = number[:9]
    if not is_ascii_digits(head):
        raise InvalidFormatError("format", detail=f"{_NAME} has ASCII digits 0-9 only")
    d = head.encode("ascii")
    odd = d[0] + d[2] + d[4] + d[6] + d[8] - 5 * 48
    even = d[1] + d[3] + d[5] + d[7] - 4 * 48
    d10 = (odd * 7 - even) % 10
    d11 = (odd + even + d10) % 10
    return f"{d10}{d11}"


def _checksum_ok(number: str) -> bool:
    # ``number`` is 11 ASCII digits: work on the byte values (ord('0') == 48).
    d1, d2, d3, d4, d5, d6, d7, d8, d9, d10, d11 = number.encode("ascii")
    odd = d1 + d3 + d5 + d7 + d9
    even = d2 + d4 + d6 + d8
    return (odd * 7 - even - 31 * 48) % 10 == d10 - 48 and (odd + even + d10 - 480) % 10 == d11 - 48


def validate(number: str) -> str:
    """Check a T.C. Kimlik No (or YKN) and return its canonical form: 11 ASCII digits.

    Raises :class:`~piiguard.errors.InvalidFormatError` (not a string, characters other
    than ASCII digits and separators, leading ``0``),
    :class:`~piiguard.errors.InvalidLengthError` (not 11 digits),
    :class:`~piiguard.errors.InvalidChecksumError` (d10 or d11 wrong) or
    :class:`~piiguard.errors.MaskedValueError` (a masked view such as ``1********46``).
    Messages never contain the value.

    >>> validate('99000000110')
    '99000000110'
    """
    # Hot path: already canonical (what a database round-trip or an API usually sends).
    if type(number) is str and len(number) == 11 and number.isascii() and number.isdigit():
        if number[0] == "0":
            raise InvalidFormatError("format", detail=f"{_NAME} does not start with 0")
        if _checksum_ok(number):
            return number
        raise InvalidChecksumError("checksum", detail=f"{_NAME} check digits do not match")
    number = compact(number)
    if not is_ascii_digits(number):
        if is_blank(number):
            raise empty(_NAME)
        raise InvalidFormatError("format", detail=f"{_NAME} has ASCII digits 0-9 only")
    if number[0] == "0":
        raise InvalidFormatError("format", detail=f"{_NAME} does not start with 0")
    if len(number) != 11:
        raise InvalidLengthError("length", detail=f"{_NAME} has 11 digits")
    if not _checksum_ok(number):
        raise InvalidChecksumError("checksum", detail=f"{_NAME} check digits do not match")
    return number


def is_valid(number: object) -> bool:
    """True if ``number`` is a valid T.C. Kimlik No or YKN; never raises.

    >>> is_valid('10000000146'), is_valid('٣'), is_valid(0), is_valid(object())
    (True, False, False, False)
    """
    try:
        validate(number)  # type: ignore[arg-type]
    except ValueError:
        return False
    return True


def kind(number: str) -> str:
    """Validate ``number`` and say whose it is: ``'citizen'`` or ``'foreign'`` (YKN, ``99…``).

    >>> kind('10000000146')
    'citizen'
    >>> kind('99000000110')
    'foreign'
    """
    return "foreign" if validate(number).startswith("99") else "citizen"


def format(number: str) -> str:
    """Return the canonical printable form (T.C. numbers are written without separators).

    >>> format('100 000 001 46')
    '10000000146'
    """
    return validate(number)
