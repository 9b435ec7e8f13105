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
piiguard.errors.InvalidFormatError: invalid value: syntax rule failed (e-mail address is not well formed)
>>> validate('a' * 300 + '@example.com')
Traceback (most recent call last):
    ...
piiguard.errors.InvalidLengthError: invalid value: length rule failed (e-mail address is too long)
"""

from __future__ import annotations

from email_validator import EmailNotValidError, validate_email

from piiguard.errors import InvalidFormatError, InvalidLengthError, MaskedValueError
from piiguard.validators._util import require_str

__all__ = ["MAX_LENGTH", "domain", "is_valid", "local_part", "validate"]

_NAME = "e-mail address"
#: Longest address accepted (RFC 5321 path limit is 256 octets including ``<>``).
MAX_LENGTH = 254


def validate(address: str, *, lowercase_local: bool = False) -> str:
    """Check an e-mail address and return its canonical form (domain lower-cased).

    Raises :class:`~piiguard.errors.InvalidFormatError` (``syntax``) or
    :class:`~piiguard.errors.InvalidLengthError`; messages never contain the address.

    >>> validate('ğül@Örnek.com.tr')
    'ğül@örnek.com.tr'
    """
    address = require_str(address, _NAME, max_len=4 * MAX_LENGTH).strip()
    if len(address) > MAX_LENGTH:
        raise InvalidLengthError("length", detail=f"{_NAME} is too long")
    if not address:
        raise InvalidLengthError("length", detail=f"{_NAME} is empty")
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
