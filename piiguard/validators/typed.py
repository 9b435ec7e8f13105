"""Typed values as text: how dates, datetimes, integers, decimals, JSON documents and
bytes are written before encryption, and read back after decryption.

Every encrypted column encrypts text; a typed column (``EncryptedDate`` …) writes its
value as one canonical text with the ``*_text`` function of its type and reads it back
with the ``*_value`` function, so envelopes, key scopes, row binding, masking and
rotation work for it as for text. Each ``*_text`` function also takes the text form
itself (what ``encrypt-existing`` reads from a legacy column, or what a form sends).

======================  ==================================  ========================
type                    stored text                          Python value read back
======================  ==================================  ========================
date                    ``1990-01-31`` (ISO 8601)            ``datetime.date``
datetime                ``2026-11-29T19:53:58.123456+00:00`` aware ``datetime`` in UTC
                        (aware only, normalised to UTC;
                        naive datetimes are refused)
integer                 ``-42`` (at most 40 digits)          ``int``
decimal                 ``12.50`` (as given: scale kept;     ``decimal.Decimal``
                        searched by ``12.5``)
JSON                    ``{"a":1,"b":[true,null]}``          ``dict``/``list``/…
                        (keys sorted, no spaces, UTF-8)
bytes                   base64 (standard alphabet)           ``bytes``
======================  ==================================  ========================

Refused values raise :class:`~piiguard.errors.InvalidFormatError` naming the rule
(``type``, ``format``, ``timezone``, ``range``, ``finite``) and never the value.

>>> import datetime, decimal
>>> date_text(datetime.date(1990, 1, 31)), date_value('1990-01-31')
('1990-01-31', datetime.date(1990, 1, 31))
>>> tz = datetime.timezone(datetime.timedelta(hours=3))
>>> datetime_text(datetime.datetime(2026, 11, 29, 22, 0, tzinfo=tz))
'2026-11-29T19:00:00.000000+00:00'
>>> datetime_text(datetime.datetime(2026, 11, 29, 22, 0))
Traceback (most recent call last):
    ...
piiguard.errors.InvalidFormatError: invalid value: timezone rule failed
    (a datetime must be timezone-aware: naive datetimes are refused)
>>> decimal_text(decimal.Decimal('12.50')), decimal_search('12.50'), decimal_search('1.25E1')
('12.50', '12.5', '12.5')
>>> json_text({'b': [True, None], 'a': 1})
'{"a":1,"b":[true,null]}'
>>> bytes_text(b'\\x00\\xff'), bytes_value('AP8=')
('AP8=', b'\\x00\\xff')
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import decimal
import json
import re
from typing import Any

from piiguard.errors import InvalidFormatError, InvalidLengthError, MaskedValueError
from piiguard.validators._util import empty, is_blank

__all__ = [
    "MAX_INTEGER_DIGITS",
    "bytes_text",
    "bytes_value",
    "date_text",
    "date_value",
    "datetime_text",
    "datetime_value",
    "decimal_search",
    "decimal_text",
    "decimal_value",
    "integer_text",
    "integer_value",
    "json_text",
    "json_value",
]

#: Longest integer accepted, in digits (a sign aside).
MAX_INTEGER_DIGITS = 40
_MAX_DECIMAL_CHARS = 80
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}\Z", re.ASCII)
_INTEGER = re.compile(r"[+-]?[0-9]{1,40}\Z", re.ASCII)
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,4})?\Z",
                      re.ASCII)
_DT_FORMAT = "%Y-%m-%dT%H:%M:%S.%f+00:00"


def _wrong_type(what: str) -> InvalidFormatError:
    article = "an" if what[0] in "aeiou" else "a"
    return InvalidFormatError("type", detail=f"{article} {what} column takes {article} "
                                             f"{what} value")


def _text_of(value: Any, what: str, limit: int = 64) -> str:
    """A text form given for a typed value: stripped, bounded, never a masked view."""
    if len(value) > limit:
        raise InvalidLengthError("length", detail=f"{what} text is too long")
    if is_blank(value):
        raise empty(what)
    if "*" in value or "[REDACTED]" in value:
        raise MaskedValueError("masked", detail=f"{what} looks like a masked value")
    return value.strip()


# --------------------------------------------------------------------------- dates

def date_text(value: Any) -> str:
    """``date`` (or its ISO text ``YYYY-MM-DD``) -> ``YYYY-MM-DD``. A ``datetime`` is
    refused (it is a ``date`` subclass, and its time would be lost silently)."""
    if isinstance(value, _dt.datetime):
        raise InvalidFormatError("type", detail="a date column takes a date, not a "
                                                "datetime (use .date())")
    if isinstance(value, _dt.date):
        return value.isoformat()
    if isinstance(value, str):
        return date_text(date_value(_text_of(value, "date")))
    raise _wrong_type("date")


def date_value(text: str) -> _dt.date:
    """``YYYY-MM-DD`` -> ``date``."""
    if type(text) is not str or _DATE.match(text) is None:
        raise InvalidFormatError("format", detail="a date is written YYYY-MM-DD")
    try:
        return _dt.date.fromisoformat(text)
    except ValueError:
        raise InvalidFormatError("range", detail="no such date") from None


def datetime_text(value: Any) -> str:
    """Aware ``datetime`` (or ISO 8601 text with an offset) -> UTC text with
    microseconds and ``+00:00``. Naive datetimes are refused (rule ``timezone``): the
    instant they name depends on a time zone nobody wrote down."""
    if isinstance(value, str):
        text = _text_of(value, "datetime")
        try:
            value = _dt.datetime.fromisoformat(text)
        except ValueError:
            raise InvalidFormatError("format", detail="a datetime is ISO 8601 text with "
                                                      "a UTC offset") from None
    if not isinstance(value, _dt.datetime):
        raise _wrong_type("datetime")
    offset = value.utcoffset()
    if offset is None:
        raise InvalidFormatError("timezone", detail="a datetime must be timezone-aware: "
                                                    "naive datetimes are refused")
    try:
        utc = value.astimezone(_dt.timezone.utc)
    except OverflowError:
        raise InvalidFormatError("range", detail="datetime out of range in UTC") from None
    return utc.strftime(_DT_FORMAT) if utc.year >= 1000 else \
        utc.replace(tzinfo=None).isoformat(timespec="microseconds") + "+00:00"


def datetime_value(text: str) -> _dt.datetime:
    """UTC text -> aware ``datetime`` (tzinfo ``timezone.utc``)."""
    if type(text) is not str or not text.endswith("+00:00"):
        raise InvalidFormatError("format", detail="a stored datetime is UTC ISO 8601 text")
    try:
        return _dt.datetime.fromisoformat(text).astimezone(_dt.timezone.utc)
    except ValueError:
        raise InvalidFormatError("format", detail="a stored datetime is UTC ISO 8601 "
                                                  "text") from None


# --------------------------------------------------------------------------- numbers

def integer_text(value: Any) -> str:
    """``int`` (not ``bool``), or its decimal text -> decimal text (no leading zeros,
    no ``+``); at most :data:`MAX_INTEGER_DIGITS` digits."""
    if isinstance(value, bool):
        raise _wrong_type("integer")
    if isinstance(value, int):
        text = str(int(value)) if abs(value) < 10 ** MAX_INTEGER_DIGITS else ""
        if not text:
            raise InvalidFormatError("range", detail=f"an integer has at most "
                                                     f"{MAX_INTEGER_DIGITS} digits")
        return text
    if isinstance(value, str):
        text = _text_of(value, "integer")
        if _INTEGER.match(text) is None:
            raise InvalidFormatError("format", detail="an integer is written with ASCII "
                                                      "digits and an optional sign")
        return str(int(text))
    raise _wrong_type("integer")


def integer_value(text: str) -> int:
    """Decimal text -> ``int``."""
    if type(text) is not str or _INTEGER.match(text) is None:
        raise InvalidFormatError("format", detail="a stored integer is decimal text")
    return int(text)


def decimal_text(value: Any) -> str:
    """``Decimal``, ``int`` or decimal text -> the decimal's text as given (its scale
    kept: ``12.50`` stays ``12.50``); ``float`` is refused (it is not the number it
    prints), and so are NaN and infinities."""
    if isinstance(value, bool) or isinstance(value, float):
        raise InvalidFormatError("type", detail="a decimal column takes a Decimal, an "
                                                "int or decimal text (not a float)")
    if isinstance(value, int):
        return integer_text(value)
    if isinstance(value, str):
        text = _text_of(value, "decimal", _MAX_DECIMAL_CHARS)
        if _DECIMAL.match(text) is None:
            raise InvalidFormatError("format", detail="a decimal is written with ASCII "
                                                      "digits, a point and a sign")
        value = decimal.Decimal(text)
    if not isinstance(value, decimal.Decimal):
        raise _wrong_type("decimal")
    if not value.is_finite():
        raise InvalidFormatError("finite", detail="a decimal must be finite")
    text = str(value)
    if len(text) > _MAX_DECIMAL_CHARS:
        raise InvalidLengthError("length", detail="decimal text is too long")
    return text


def decimal_value(text: str) -> decimal.Decimal:
    """Decimal text -> ``Decimal``."""
    if type(text) is not str or _DECIMAL.match(text) is None:
        raise InvalidFormatError("format", detail="a stored decimal is decimal text")
    return decimal.Decimal(text)


def decimal_search(text: str) -> str:
    """The form a decimal is searched by: equal numbers, one text (``12.50``, ``12.5``
    and ``1.25E1`` are all ``12.5``; ``-0`` is ``0``)."""
    d = decimal_value(decimal_text(text))
    if d.is_zero():
        return "0"
    out = format(d.normalize(), "f")
    return out


# --------------------------------------------------------------------------- JSON, bytes

def json_text(value: Any) -> str:
    """A JSON document (``dict``, ``list``, ``str``, numbers, ``bool``, ``None``) ->
    compact JSON text with sorted keys, UTF-8 (not ``\\u`` escapes); NaN and infinities
    are refused. A ``str`` is a JSON *string* value, not JSON text to parse."""
    if value is None:
        raise InvalidFormatError("type", detail="a JSON column stores NULL as SQL NULL")
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        raise InvalidFormatError("type", detail="the value is not a JSON document "
                                                "(or has NaN/Infinity)") from None


def json_value(text: str) -> Any:
    """JSON text -> the document."""
    try:
        return json.loads(text)
    except (TypeError, ValueError, RecursionError):
        raise InvalidFormatError("format", detail="a stored JSON document is JSON text") \
            from None


def bytes_text(value: Any) -> str:
    """``bytes``, ``bytearray`` or ``memoryview`` -> base64 text."""
    if isinstance(value, (bytes, bytearray, memoryview)) or (
            hasattr(type(value), "__bytes__") and not isinstance(value, (str, int))):
        return base64.b64encode(bytes(value)).decode("ascii")
    raise _wrong_type("bytes")


def bytes_value(text: str) -> bytes:
    """base64 text -> ``bytes``."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise InvalidFormatError("format", detail="stored bytes are base64 text") from None
