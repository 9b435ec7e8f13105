"""Telephone numbers, Turkish first, through Google's libphonenumber (``phonenumbers``).

The canonical form is E.164: ``+`` country code and national number, ASCII digits only
(``+905321234567``). Input without a ``+`` is read in ``region`` (default ``'TR'``), so
``0532 123 45 67``, ``+90 (532) 123-45-67``, ``5321234567`` and ``905321234567`` are all
the same number. A number must be *valid* (an assigned range of its country, right
length), not merely possible: ``+90 599 …`` is refused. Options restrict the accepted
numbers to one region (``only_region='TR'``) or to mobiles (``mobile_only=True``).

Only ASCII digits, one leading ``+`` and the separators space, tab, no-break space
(U+00A0, U+202F, U+2007: what text pasted from a web page or a word processor holds),
``-``, ``.``, ``(``, ``)``, ``/`` are accepted; every separator means the same on the
fast path and in the full parse (tabs and no-break spaces are read as spaces before
``phonenumbers`` sees the text, which would otherwise refuse a tab). Empty input (or
whitespace only) fails the rule ``empty``. Refused: digits from other scripts,
letters (vanity numbers) and extensions, because E.164 could not keep them.

Speed: ``phonenumbers.parse`` plus ``is_valid_number`` costs about 19 µs. Input that is
already canonical for Türkiye (``+90`` and ten digits, and the common national
spellings) takes a fast path that checks the national number against libphonenumber's
own TR metadata patterns, compiled once at import; a test proves the fast path agrees
with the full parse. Everything else goes through ``phonenumbers``.

>>> validate('0532 123 45 67')
'+905321234567'
>>> validate('+90 (532) 123-45-67'), validate('5321234567'), validate('905321234567')
('+905321234567', '+905321234567', '+905321234567')
>>> validate('+49 30 123456')
'+4930123456'
>>> number_type('+905321234567'), number_type('0212 345 67 89')
('mobile', 'fixed_line')
>>> is_valid('+90 599 123 45 67'), is_valid(None)
(False, False)
>>> validate('+90 599 123 45 67')
Traceback (most recent call last):
    ...
piiguard.errors.InvalidComponentError: invalid value: number_range rule failed
    (phone number is not in an assigned range of its country)
>>> validate('+90 532 123 45 6')
Traceback (most recent call last):
    ...
piiguard.errors.InvalidLengthError: invalid value: length rule failed
    (phone number has the wrong number of digits)
>>> validate('0532 ABC 45 67')
Traceback (most recent call last):
    ...
piiguard.errors.InvalidFormatError: invalid value: format rule failed
    (phone number has ASCII digits, a leading + and separators only)
>>> validate('+49 30 123456', only_region='TR')
Traceback (most recent call last):
    ...
piiguard.errors.InvalidComponentError: invalid value: region rule failed
    (phone number is not from the required region)
>>> validate('0212 345 67 89', mobile_only=True)
Traceback (most recent call last):
    ...
piiguard.errors.InvalidComponentError: invalid value: mobile rule failed
    (phone number is not a mobile number)
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import NamedTuple

import phonenumbers
from phonenumbers import (
    NumberParseException,
    PhoneMetadata,
    PhoneNumberFormat,
    PhoneNumberType,
)

from piiguard.errors import (
    ConfigurationError,
    InvalidComponentError,
    InvalidFormatError,
    InvalidLengthError,
    MaskedValueError,
)
from piiguard.validators._util import empty, is_blank, require_str

__all__ = [
    "TYPE_NAMES",
    "check_region",
    "compact",
    "format",
    "is_valid",
    "number_type",
    "region_of",
    "validate",
]

_NAME = "phone number"
_MAX_LEN = 48

#: ``phonenumbers.PhoneNumberType`` value -> the name :func:`number_type` returns.
TYPE_NAMES: dict[int, str] = {
    PhoneNumberType.FIXED_LINE: "fixed_line",
    PhoneNumberType.MOBILE: "mobile",
    PhoneNumberType.FIXED_LINE_OR_MOBILE: "fixed_line_or_mobile",
    PhoneNumberType.TOLL_FREE: "toll_free",
    PhoneNumberType.PREMIUM_RATE: "premium_rate",
    PhoneNumberType.SHARED_COST: "shared_cost",
    PhoneNumberType.VOIP: "voip",
    PhoneNumberType.PERSONAL_NUMBER: "personal_number",
    PhoneNumberType.PAGER: "pager",
    PhoneNumberType.UAN: "uan",
    PhoneNumberType.VOICEMAIL: "voicemail",
    PhoneNumberType.UNKNOWN: "unknown",
}
_MOBILE_TYPES = frozenset({PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE})

# ASCII only: [0-9] is a literal range here, unlike \d.
_ALLOWED = re.compile(r"[ \t]*\+?[0-9 \t\-./()]*\Z")
_SEPARATORS = str.maketrans("", "", " \t-./()")
# Separators read as a space before anything else looks at the text (both paths).
_AS_SPACE = str.maketrans({"\t": " ", "\u00a0": " ", "\u202f": " ", "\u2007": " "})


class _Checked(NamedTuple):
    e164: str
    type: int
    region: str | None


def check_region(region: str | None) -> str | None:
    """Return ``region`` if libphonenumber knows it (or it is None), else raise
    :class:`~piiguard.errors.ConfigurationError`. Used to check options when types are built.

    >>> check_region('TR')
    'TR'
    >>> check_region('XX')
    Traceback (most recent call last):
        ...
    piiguard.errors.ConfigurationError: unknown phone region 'XX'
    """
    if region is not None and region not in phonenumbers.SUPPORTED_REGIONS:
        raise ConfigurationError(f"unknown phone region {region!r}")
    return region


# --------------------------------------------------------------------------- fast path
# A replica of phonenumbers' type detection (``_number_type_helper``) for Türkiye's
# ten-digit national numbers, built from the installed metadata. Only *acceptance* is
# decided here; anything the fast path does not accept goes through the full parse,
# which then produces the error, so the two paths cannot disagree on error details.

class _TrFastPath(NamedTuple):
    """The TR type detection compiled from the installed metadata."""

    #: ``match(number, pos)``: the ten-digit national number at ``pos``, one named group
    #: per type (``t<type>``), or None.
    match: Callable[[str, int], re.Match[str] | None]
    #: Group name -> ``PhoneNumberType``.
    types: dict[str, int]
    #: Full match of a national number against the mobile pattern (FIXED_LINE_OR_MOBILE).
    mobile_match: Callable[[str], object]
    #: The same as ``match`` for a whole ``+90`` E.164 string (validate()'s hot path).
    e164: Callable[[str], re.Match[str] | None]


def _build_tr_fast_path() -> _TrFastPath | None:
    md = PhoneMetadata.metadata_for_region("TR")
    if md is None or md.country_code != 90 or md.same_mobile_and_fixed_line_pattern:
        return None

    def desc(d):
        if d is None or not d.national_number_pattern:
            return None
        lengths = tuple(d.possible_length or ())
        if lengths and 10 not in lengths:
            return None          # never matches a ten-digit national number
        if re.compile(d.national_number_pattern).groups:
            raise ValueError("capturing groups")
        return d.national_number_pattern

    try:
        general = desc(md.general_desc)
        # phonenumbers' order (_number_type_helper): the special types, then fixed
        # line, then mobile; the first type whose pattern matches wins.
        ordered = [
            (PhoneNumberType.PREMIUM_RATE, desc(md.premium_rate)),
            (PhoneNumberType.TOLL_FREE, desc(md.toll_free)),
            (PhoneNumberType.SHARED_COST, desc(md.shared_cost)),
            (PhoneNumberType.VOIP, desc(md.voip)),
            (PhoneNumberType.PERSONAL_NUMBER, desc(md.personal_number)),
            (PhoneNumberType.PAGER, desc(md.pager)),
            (PhoneNumberType.UAN, desc(md.uan)),
            (PhoneNumberType.VOICEMAIL, desc(md.voicemail)),
            (PhoneNumberType.FIXED_LINE, desc(md.fixed_line)),
            (PhoneNumberType.MOBILE, desc(md.mobile)),
        ]
        mobile = desc(md.mobile)
    except ValueError:
        return None
    if general is None:
        return None
    ordered = [(t, p) for t, p in ordered if p is not None]
    # One regex: the general pattern as a lookahead, then the types as alternatives in
    # phonenumbers' order. Alternation tries left to right, so the first alternative
    # that matches the whole national number names the type, as in phonenumbers.
    alternatives = "|".join(f"(?P<t{t}>{p})" for t, p in ordered)
    body = f"(?=(?:{general})\\Z)(?:{alternatives})\\Z"
    combined = re.compile(body)
    types = {f"t{t}": t for t, _ in ordered}
    mobile_match = re.compile(mobile).fullmatch if mobile is not None else (lambda s: None)
    # The same for a whole E.164 string "+90" + ten ASCII digits (re.ASCII: \\d is 0-9
    # only), for validate()'s hot path: one regex call decides acceptance and type.
    e164 = re.compile(f"\\+90(?=[1-9][0-9]{{9}}\\Z){body}", re.ASCII)
    return _TrFastPath(combined.match, types, mobile_match, e164.match)


_FAST = _build_tr_fast_path()
_E164_TR = _FAST.e164 if _FAST is not None else (lambda s: None)

# The national spellings people type, as one regex: an optional +90 / 0 prefix, the
# area code (in parentheses or not), then 3-2-2 or 3-4 digits separated by single
# spaces or dashes. It only reads the ten-digit national number out of the text;
# whether that number is valid (and its type) is still decided by _E164_TR, the TR
# metadata. Without a prefix a number starting with 9 is left to the full parse (as
# in _fast: "90…" may be a country code).
_NATIONAL = re.compile(
    r"(?:(\+90 ?|0)|(?=[1-8]))\(?([1-9][0-9]{2})\)?[ -]?([0-9]{3})[ -]?"
    r"([0-9]{2})[ -]?([0-9]{2})\Z", re.ASCII).match


def _tr_type(number: str, pos: int) -> int:
    """Type of the ten-digit TR national number ``number[pos:]`` (already checked to be
    ASCII digits), or UNKNOWN."""
    fast = _FAST
    if fast is None:  # only called once the fast path accepted: never None here
        return PhoneNumberType.UNKNOWN
    m = fast.match(number, pos)
    if m is None or m.lastgroup is None:
        return PhoneNumberType.UNKNOWN
    t = fast.types[m.lastgroup]
    if t == PhoneNumberType.FIXED_LINE and fast.mobile_match(number[pos:]) is not None:
        return PhoneNumberType.FIXED_LINE_OR_MOBILE
    return t


_NSN_FIRST = frozenset("123456789")


def _fast(number: str, region: str | None) -> _Checked | None:
    """Accept canonical TR input quickly; None means "ask phonenumbers"."""
    if _FAST is None or len(number) > 24:
        return None
    if region == "TR":
        m = _NATIONAL(number)
        if m is not None:
            e164 = "+90" + "".join(m.groups("")[1:])
            if _E164_TR(e164) is None:
                return None
            return _Checked(e164, _tr_type(e164, 3), "TR")
    if not number.isascii():
        number = number.translate(_AS_SPACE)     # no-break spaces are separators too
        if not number.isascii():
            return None
    if len(number) == 13 and number.startswith("+90") and number[1:].isdigit():
        nsn = number[3:]
    else:
        c = number.translate(_SEPARATORS)
        if c.startswith("+"):
            if not (len(c) == 13 and c.startswith("+90") and c[1:].isdigit()):
                return None
            if number.lstrip(" \t")[0] != "+":
                return None
            nsn = c[3:]
        elif region != "TR" or not c.isdigit():
            return None
        elif len(c) == 10 and c[0] != "9":
            nsn = c
        elif len(c) == 11 and c[0] == "0" and c[1] != "9":
            nsn = c[1:]
        elif len(c) == 12 and c.startswith("90"):
            nsn = c[2:]
        else:
            return None
    if nsn[0] not in _NSN_FIRST:
        return None
    t = _tr_type(nsn, 0)
    if t == PhoneNumberType.UNKNOWN:
        return None
    return _Checked("+90" + nsn, t, "TR")


# --------------------------------------------------------------------------- full path

def _slow(number: object, region: str | None) -> _Checked:
    number = require_str(number, _NAME, _MAX_LEN).translate(_AS_SPACE)
    if "*" in number:
        raise MaskedValueError("masked", detail=f"{_NAME} looks like a masked value")
    if is_blank(number):
        raise empty(_NAME)
    if _ALLOWED.match(number) is None:
        raise InvalidFormatError(
            "format", detail=f"{_NAME} has ASCII digits, a leading + and separators only")
    try:
        n = phonenumbers.parse(number, region, keep_raw_input=False)
    except NumberParseException as exc:
        if exc.error_type == NumberParseException.INVALID_COUNTRY_CODE:
            raise InvalidComponentError(
                "country_code", detail=f"{_NAME} has no known country code") from None
        if exc.error_type == NumberParseException.NOT_A_NUMBER:
            raise InvalidFormatError("format", detail=f"{_NAME} is not a number") from None
        raise InvalidLengthError(
            "length", detail=f"{_NAME} has the wrong number of digits") from None
    if n.extension:
        raise InvalidFormatError("format", detail=f"{_NAME} extensions are not supported")
    if not phonenumbers.is_valid_number(n):
        # Only now ask why, to name the rule (saves a metadata walk on success).
        reason = phonenumbers.is_possible_number_with_reason(n)
        if reason == phonenumbers.ValidationResult.INVALID_COUNTRY_CODE:
            raise InvalidComponentError(
                "country_code", detail=f"{_NAME} has no known country code")
        if reason != phonenumbers.ValidationResult.IS_POSSIBLE:
            raise InvalidLengthError("length", detail=f"{_NAME} has the wrong number of digits")
        raise InvalidComponentError(
            "number_range", detail=f"{_NAME} is not in an assigned range of its country")
    return _Checked(
        phonenumbers.format_number(n, PhoneNumberFormat.E164),
        phonenumbers.number_type(n),
        phonenumbers.region_code_for_number(n),
    )


def _check(number: object, region: str | None) -> _Checked:
    if type(number) is str:
        hit = _fast(number, region)
        if hit is not None:
            return hit
    return _slow(number, region)


def _apply_options(c: _Checked, only_region: str | None, mobile_only: bool) -> str:
    if only_region is not None and c.region != only_region:
        raise InvalidComponentError("region", detail=f"{_NAME} is not from the required region")
    if mobile_only and c.type not in _MOBILE_TYPES:
        raise InvalidComponentError("mobile", detail=f"{_NAME} is not a mobile number")
    return c.e164


def compact(number: str) -> str:
    """Remove separators (space, tab, ``-``, ``.``, ``/``, parentheses); no other check.

    >>> compact('+90 (532) 123-45-67')
    '+905321234567'
    """
    return require_str(number, _NAME, _MAX_LEN).translate(_SEPARATORS)


def validate(number: str, region: str | None = "TR", *, only_region: str | None = None,
             mobile_only: bool = False) -> str:
    """Check a phone number and return it in E.164 (``+905321234567``).

    ``region`` is how to read numbers written without ``+`` (None: they are refused);
    ``only_region`` refuses numbers of any other region; ``mobile_only`` refuses
    everything but mobiles. Raises :class:`~piiguard.errors.InvalidFormatError`,
    :class:`~piiguard.errors.InvalidLengthError`,
    :class:`~piiguard.errors.InvalidComponentError` (``country_code``, ``number_range``,
    ``region``, ``mobile``) or :class:`~piiguard.errors.MaskedValueError`.

    >>> validate('+905321234567', mobile_only=True, only_region='TR')
    '+905321234567'
    >>> validate('030 123456', region='DE')
    '+4930123456'
    """
    if region != "TR":
        check_region(region)
    if only_region is not None and only_region != "TR":
        check_region(only_region)
    # Hot paths: TR E.164 as stored and as most APIs send it, then the national
    # spellings people type (0532 123 45 67, +90 532 123 4567).
    if type(number) is str:
        m = _E164_TR(number)
        if m is None and region == "TR" and not mobile_only and only_region is None:
            n = _NATIONAL(number)
            if n is not None:
                e164 = "+90" + "".join(n.groups("")[1:])
                if _E164_TR(e164) is not None:
                    return e164
        if m is not None:
            if not mobile_only and (only_region is None or only_region == "TR"):
                return number
            t = _tr_type(number, 3)
            if only_region is not None and only_region != "TR":
                raise InvalidComponentError(
                    "region", detail=f"{_NAME} is not from the required region")
            if mobile_only and t not in _MOBILE_TYPES:
                raise InvalidComponentError("mobile", detail=f"{_NAME} is not a mobile number")
            return number
    return _apply_options(_check(number, region), only_region, mobile_only)


def is_valid(number: object, region: str | None = "TR", *, only_region: str | None = None,
             mobile_only: bool = False) -> bool:
    """True if :func:`validate` accepts ``number`` with these options; never raises
    for any value (a misconfigured region is still a ``ConfigurationError``).

    >>> is_valid('0532 123 45 67'), is_valid('0532 123 45 67', mobile_only=True)
    (True, True)
    >>> is_valid('٠٥٣٢١٢٣٤٥٦٧'), is_valid(5321234567)
    (False, False)
    """
    try:
        validate(number, region, only_region=only_region, mobile_only=mobile_only)  # type: ignore[arg-type]
    except ValueError:
        return False
    return True


def number_type(number: str, region: str | None = "TR") -> str:
    """Validate ``number`` and name its type: ``'mobile'``, ``'fixed_line'``,
    ``'toll_free'``, ``'premium_rate'``, ``'voip'``, ``'fixed_line_or_mobile'`` …

    >>> number_type('0850 123 45 67'), number_type('0800 123 45 67')
    ('voip', 'toll_free')
    """
    if region != "TR":
        check_region(region)
    return TYPE_NAMES.get(_check(number, region).type, "unknown")


def region_of(number: str, region: str | None = "TR") -> str | None:
    """Validate ``number`` and return its ISO 3166 region code (``'TR'``).

    >>> region_of('+905321234567'), region_of('+4930123456')
    ('TR', 'DE')
    """
    if region != "TR":
        check_region(region)
    return _check(number, region).region


_STYLES = {
    "e164": PhoneNumberFormat.E164,
    "international": PhoneNumberFormat.INTERNATIONAL,
    "national": PhoneNumberFormat.NATIONAL,
}


def format(number: str, style: str = "international", region: str | None = "TR") -> str:
    """Validate ``number`` and write it for people: ``'international'`` (default),
    ``'national'`` or ``'e164'``.

    >>> format('05321234567')
    '+90 532 123 45 67'
    >>> format('+905321234567', 'national')
    '0532 123 45 67'
    """
    if style not in _STYLES:
        raise ConfigurationError(f"unknown phone format style {style!r}")
    e164 = validate(number, region)
    if style == "e164":
        return e164
    return phonenumbers.format_number(phonenumbers.parse(e164, None), _STYLES[style])
