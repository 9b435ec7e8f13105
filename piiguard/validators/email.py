"""E-mail addresses, checked and normalised by ``email-validator``.

Syntax only (no DNS lookups): ``validate_email(s, check_deliverability=False)``. The
canonical form keeps the local part as written (RFC 5321 says it may be case-sensitive;
pass ``lowercase_local=True`` to fold it; email-validator itself folds RFC 2142 role
names such as ``POSTMASTER``) and lower-cases the domain, with
internationalised domains in their Unicode form (NFC). Addresses for special-use
domains (``.test``, ``localhost``) and IP-literal domains are refused.

>>> validate('Ali.Veli@Example.COM.TR')
'Ali.Veli@example.com.tr'
>>> validate(' Ali.Veli@Example.COM.TR ', lowercase_local=True)
'ali.veli@example.com.tr'
>>> local_part('Ali.Veli@example.com.tr'), domain('Ali.Veli@example.com.tr')
('Ali.Veli', 'example.com.tr')
>>> is_valid('ali@example.com'), is_valid('ali@'), is_valid(None)
(True, False, False)
>>> validate('ali veli@example.com')
Traceback (most recent call last):
    ...
piiguard.errors.InvalidFormatError: invalid value: syntax rule failed
    (e-mail address is not well formed)
>>> validate('a' * 300 + '@example.com')
Traceback (most recent call last):
    ...
piiguard.errors.InvalidLengthError: invalid value: length rule failed (e-mail address is too long)
"""

from __future__ import annotations

import re

import email_validator
from email_validator import EmailNotValidError, validate_email
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES

from piiguard.errors import InvalidFormatError, InvalidLengthError, MaskedValueError
from piiguard.validators._util import empty, require_str

__all__ = ["MAX_LENGTH", "domain", "is_valid", "local_part", "validate"]

_NAME = "e-mail address"
#: Longest address accepted (RFC 5321 path limit is 256 octets including ``<>``).
MAX_LENGTH = 254
_LOCAL_MAX = 64     # RFC 5321 4.5.3.1.1; email-validator checks it only when strict

# The fast path: a dot-atom local part of RFC 5322 atext without "*" (masked views take
# the full rules), "@", and a domain of ASCII letter-digit-hyphen labels (1-63
# characters, no hyphen at either end) with a top-level domain of 2-63 letters.
_ATEXT = r"A-Za-z0-9!#$%&'+/=?^_`{|}~-"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_FAST = re.compile(rf"([{_ATEXT}]+(?:\.[{_ATEXT}]+)*)@((?:{_LABEL}\.)+[A-Za-z]{{2,63}})")
# (copy of the list, the names as a set, whether any name has a dot); replaced whole.
_special: tuple[list[str] | None, frozenset[str], bool] = (None, frozenset(), False)


def _special_names() -> tuple[frozenset[str], bool]:
    """email-validator's special-use domain names (a list its users may change) as a
    set, and whether any has a dot; rebuilt when the list changes."""
    global _special
    names = email_validator.SPECIAL_USE_DOMAIN_NAMES
    cache = _special
    if names != cache[0]:
        cache = (list(names), frozenset(names), any("." in n for n in names))
        _special = cache
    return cache[1], cache[2]


def _fast(address: object) -> tuple[str, str] | None:
    """``(local part, lower-case domain)`` as ``validate_email(address,
    check_deliverability=False)`` normalises them, for addresses of the fast-path form
    (``_FAST``); None means "not known": use the full rules.

    Why the results agree: such an address has no display name, quotes, comments or
    domain literal; its local part matches email-validator's ASCII dot-atom rule, so
    it is kept as written (role names such as ``Postmaster`` are lower-cased, as
    email-validator does) and is within every length limit; UTS-46 mapping of an ASCII
    letter-digit-hyphen domain only lower-cases it (tested for each character); labels
    with ``--`` (Punycode ``xn--`` and the reserved ``ab--`` form) and special-use
    names are left to the full rules; the domain has a period and ends with a letter,
    as globally deliverable domains must.
    """
    if type(address) is not str or len(address) > MAX_LENGTH:
        return None
    m = _FAST.fullmatch(address)
    if m is None:
        return None
    local, dom = m.groups()
    if len(local) > _LOCAL_MAX or "--" in dom:
        return None
    dom = dom.lower()
    names, dotted = _special_names()
    if dom[dom.rfind(".") + 1:] in names or (
            dotted and any(dom == n or dom.endswith("." + n) for n in names)):
        return None
    if local.lower() in CASE_INSENSITIVE_MAILBOX_NAMES:
        local = local.lower()
    return local, dom


def validate(address: str, *, lowercase_local: bool = False) -> str:
    """Check an e-mail address and return its canonical form (domain lower-cased).

    Raises :class:`~piiguard.errors.InvalidFormatError` (``syntax``) or
    :class:`~piiguard.errors.InvalidLengthError`; messages never contain the address.

    Addresses of the common ASCII form (``ali.veli@example.com.tr``, any case in the
    domain) are checked by a strict regular expression that gives the same result as
    email-validator (see ``_fast``); all others go through email-validator.

    >>> validate('ğül@Örnek.com.tr')
    'ğül@örnek.com.tr'
    """
    # The full path strips surrounding whitespace after require_str's length bound.
    parts = None
    if type(address) is str and len(address) <= 4 * MAX_LENGTH:
        parts = _fast(address.strip())
    if parts is not None:
        local, dom = parts
        if lowercase_local:
            local = local.lower()
        return f"{local}@{dom}"
    return _validate_full(address, lowercase_local=lowercase_local)


def _validate_full(address: str, *, lowercase_local: bool = False) -> str:
    """:func:`validate` through email-validator, without the fast path."""
    address = require_str(address, _NAME, max_len=4 * MAX_LENGTH).strip()
    if len(address) > MAX_LENGTH:
        raise InvalidLengthError("length", detail=f"{_NAME} is too long")
    if not address:
        raise empty(_NAME)
    if "*" in address and "@" in address and "***" in address:
        raise MaskedValueError("masked", detail=f"{_NAME} looks like a masked value")
    try:
        result = validate_email(address, check_deliverability=False)
    except EmailNotValidError as exc:
        # email-validator's messages quote parts of the input: never pass them on.
        if "too long" in str(exc):
            raise InvalidLengthError("length", detail=f"{_NAME} is too long") from None
        raise InvalidFormatError("syntax", detail=f"{_NAME} is not well formed") from None
    normalized = result.normalized
    local, _, dom = normalized.rpartition("@")
    if lowercase_local:
        local = local.lower()
    return f"{local}@{dom.lower()}"


def is_valid(address: object, *, lowercase_local: bool = False) -> bool:
    """True if :func:`validate` accepts ``address``; never raises.

    >>> is_valid('ali@example.com'), is_valid(0), is_valid(object()), is_valid('٣')
    (True, False, False, False)
    """
    try:
        validate(address, lowercase_local=lowercase_local)  # type: ignore[arg-type]
    except ValueError:
        return False
    return True


def _split(canonical: str) -> tuple[str, str]:
    canonical = require_str(canonical, _NAME, max_len=4 * MAX_LENGTH)
    local, at, dom = canonical.rpartition("@")
    if not at or not local or not dom:
        raise InvalidFormatError("syntax", detail=f"{_NAME} is not well formed")
    return local, dom


def local_part(canonical: str) -> str:
    """The part before the last ``@`` of a canonical address (for masking).

    >>> local_part('ali@example.com')
    'ali'
    """
    return _split(canonical)[0]


def domain(canonical: str) -> str:
    """The domain of a canonical address (for masking).

    >>> domain('ali@example.com')
    'example.com'
    """
    return _split(canonical)[1]
