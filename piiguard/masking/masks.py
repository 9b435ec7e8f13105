"""Mask functions: what a role sees of a value instead of the value itself.

A :class:`Mask` is a named, pure function of a canonical plaintext (the form the
validators produce and the column stores) and the PII kind. Built-in masks, by the name a
policy uses:

=================  =======================================================  ============
name               result                                                   plaintext?
=================  =======================================================  ============
``reveal``         the value itself (audited as a reveal)                   yes
``redact``         ``[REDACTED]`` whatever the value (length not revealed)  no
``null``           ``None``                                                 no
``partial:F:L``    first ``F`` and last ``L`` characters, the rest ``*``    yes
``email``          first character of the local part, ``***``, the domain  yes
``city``           ``DISTRICT/PROVINCE`` of an address (``city:province``:  yes
                   the province only)
``pseudonym``      ``psn_`` + 26 base32 characters of a keyed HMAC          yes
                   (``pseudonym:SCOPE`` picks the key scope)
``year``           the year of a date or datetime (``1990``)                yes
=================  =======================================================  ============

``partial`` counts Unicode characters (code points after NFC normalisation) of the
canonical value, so ``Ş`` is one character however it was typed, and the number of
stars is the number of hidden characters: an E.164 phone ``+905321234567`` (13
characters) under ``partial:3:2`` is ``+90********67`` (8 stars). When a value has no
more than ``F + L`` characters nothing would be hidden, so every character becomes ``*``
(a partial mask never shows a whole value).

Masks that need the value but cannot read it (``city`` on a text that is not an
address, ``email`` without an ``@``) fail closed: they return ``[REDACTED]``.

Every masked result is a :class:`~piiguard.masking.view.MaskedStr`, so a column type or
an encrypted pydantic field can refuse to write it back.

>>> partial(1, 2)('10000000146', kind='national_id')
'1********46'
>>> partial(3, 2)('+905321234567', kind='phone')
'+90********67'
>>> partial(1, 1)('Şükrü', kind='name')
'Ş***ü'
>>> builtin('email')('ğül.şen@örnek.com.tr', kind='email')
'ğ***@örnek.com.tr'
>>> builtin('city')('BAĞDAT CAD. NO:1, 34728 KADIKÖY/İSTANBUL', kind='address')
'KADIKÖY/İSTANBUL'
>>> builtin('redact')(None, kind='phone'), builtin('null')(None, kind='phone')
('[REDACTED]', None)
>>> parse_spec('partial:1')
Traceback (most recent call last):
    ...
piiguard.errors.PolicyError: bad mask 'partial:1': partial takes two numbers,
partial:FIRST:LAST (e.g. partial:1:2)
"""

from __future__ import annotations

import base64
import inspect
import re
import unicodedata
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from piiguard.errors import ConfigurationError, PolicyError
from piiguard.kinds import KINDS
from piiguard.masking.masked import MaskedStr

if TYPE_CHECKING:
    from piiguard.crypto.blind_index import BlindIndexKey

__all__ = [
    "BUILTIN_MASKS",
    "PseudonymKeys",
    "KIND_SPECIFIC",
    "PSEUDONYM_PREFIX",
    "REDACTED",
    "Mask",
    "builtin",
    "custom",
    "parse_spec",
    "partial",
    "reveal_plaintext",
]

#: What ``redact`` shows: the same placeholder for every value, so no length leaks.
REDACTED = "[REDACTED]"
#: Prefix of ``pseudonym`` tokens.
PSEUDONYM_PREFIX = "psn_"
#: The largest ``F`` or ``L`` a ``partial`` mask accepts.
MAX_PARTIAL = 256
#: Built-in mask names.
BUILTIN_MASKS = ("reveal", "redact", "null", "partial", "email", "city", "pseudonym",
                 "year")
#: Masks that only make sense for one kind of value (checked when a policy names them
#: under another kind; under ``default`` and ``table.column`` rules they fail closed).
KIND_SPECIFIC = {"email": "email", "city": "address"}



class PseudonymKeys(Protocol):
    """What a mask may use of its host: the key of a ``pseudonym`` scope. It is the part
    of :class:`~piiguard.masking.host.MaskingHost` (a Guard) that masks see (the host
    sits above masks and policies, so masks name only this)."""

    def pseudonym_key(self, scope: str) -> BlindIndexKey:
        """The active key of a ``pseudonym:<scope>`` mask."""
        ...


_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]{0,63}")
_SCOPE_RE = re.compile(r"[A-Za-z0-9_.\-]{1,128}")


class Mask:
    """One mask: ``name`` (``'partial'``), ``spec`` (``'partial:1:2'``, what a policy
    says), ``needs_plaintext`` (False for ``redact`` and ``null``: no decryption
    happens for them) and ``__call__(plaintext, *, kind)``.

    ``guard`` (the :class:`~piiguard.masking.host.MaskingHost`, seen as
    :class:`PseudonymKeys`) is passed by :func:`~piiguard.masking.view.render` for masks
    that need keys (``pseudonym``); ``column`` is ``table.column`` or ``Model.field``.

    >>> m = parse_spec('partial:0:2')
    >>> m, m.name, m.spec, m.needs_plaintext
    (Mask('partial:0:2'), 'partial', 'partial:0:2', True)
    >>> type(m('+905321234567', kind='phone')).__name__
    'MaskedStr'
    """

    __slots__ = ("_fn", "args", "is_reveal", "name", "needs_plaintext", "spec")

    def __init__(self, name: str, fn: Callable[..., str | None], *,
                 needs_plaintext: bool = True, args: tuple = (),
                 spec: str | None = None) -> None:
        self.name = name
        self.spec = spec or name
        self.args = args
        self.needs_plaintext = bool(needs_plaintext)
        self.is_reveal = name == "reveal"
        self._fn = fn

    def __repr__(self) -> str:
        return f"Mask({self.spec!r})"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Mask) and other.spec == self.spec
                and (other._fn is self._fn or self.name in BUILTIN_MASKS))

    def __hash__(self) -> int:
        return hash(self.spec)

    def renamed(self, name: str) -> Mask:
        """This mask's function under another name (a custom mask registered as
        ``name``).

        >>> parse_spec('redact').renamed('hide')
        Mask('hide')
        """
        return Mask(name, self._fn, needs_plaintext=self.needs_plaintext)

    def __call__(self, plaintext: str | None, *, kind: str, guard: PseudonymKeys | None = None,
                 column: str | None = None) -> str | None:
        if self.is_reveal:
            return plaintext
        if not self.needs_plaintext:
            plaintext = None      # such a mask never sees the value, even if it is at hand
        elif plaintext is None:
            return None
        else:
            plaintext = _masked_form(plaintext, kind)
        out = self._fn(plaintext, kind, guard, column)
        if out is None:
            return None
        if not isinstance(out, str):
            raise ConfigurationError(f"mask {self.spec!r} returned a {type(out).__name__}, "
                                     "not a str or None", column=column, operation="mask")
        return out if type(out) is MaskedStr else MaskedStr(out)


def _masked_form(value: str, kind: str) -> str:
    """The form a mask sees: a kind stored as written (addresses) is masked by its
    canonical text, so every spelling of one value gets the same view and pseudonym."""
    facts = KINDS.get(kind)
    form = None if facts is None or facts.search is None else facts.search_form
    if form is None:
        return value
    try:
        return form(value)
    except ValueError:
        return value       # not the kind's text at all: the mask decides (city redacts)


def reveal_plaintext(value: str | None) -> str | None:
    """The ``reveal`` mask's function (identity)."""
    return value


# --------------------------------------------------------------------------- built-ins

def _nfc(value: str) -> str:
    return value if value.isascii() else unicodedata.normalize("NFC", value)


def _partial_fn(first: int, last: int) -> Callable[..., str]:
    def fn(value: str, kind: str, guard: PseudonymKeys | None, column: str | None) -> str:
        value = _nfc(value)
        n = len(value)
        if n <= first + last:
            return "*" * n
        return value[:first] + "*" * (n - first - last) + (value[n - last:] if last else "")
    return fn


def partial(first: int, last: int) -> Mask:
    """``partial:FIRST:LAST``: keep the first and last characters, star the rest.

    >>> partial(0, 2)('+905321234567', kind='phone')
    '***********67'
    >>> partial(2, 2)('abc', kind='text')
    '***'
    """
    for n in (first, last):
        if type(n) is not int or not 0 <= n <= MAX_PARTIAL:
            raise PolicyError(f"partial takes whole numbers from 0 to {MAX_PARTIAL}")
    return Mask("partial", _partial_fn(first, last), args=(first, last),
                spec=f"partial:{first}:{last}")


def _redact(value: Any, kind: str, guard: PseudonymKeys | None, column: str | None) -> str:
    return REDACTED


def _null(value: Any, kind: str, guard: PseudonymKeys | None, column: str | None) -> None:
    return None


def _email(value: str, kind: str, guard: PseudonymKeys | None, column: str | None) -> str:
    local, at, domain = _nfc(value).rpartition("@")
    if not at or not local or not domain:
        return REDACTED
    return f"{local[0]}***@{domain}"


def _city_fn(district: bool) -> Callable[..., str]:
    def fn(value: str, kind: str, guard: PseudonymKeys | None, column: str | None) -> str:
        from piiguard.validators.address import TurkishAddress

        try:
            a = TurkishAddress.parse(value)
        except (ValueError, TypeError):
            return REDACTED
        if district and a.district:
            return f"{a.district}/{a.province}"
        return str(a.province)
    return fn


_YEAR = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}(?:T|\Z)")


def _year(value: str) -> str:
    """The year of a stored date or datetime (ISO text); anything else fails closed."""
    return value[:4] if _YEAR.match(value) else REDACTED


def _pseudonym_fn(scope: str) -> Callable[..., str]:
    def fn(value: str, kind: str, guard: PseudonymKeys | None, column: str | None) -> str:
        if guard is None:
            raise ConfigurationError("the pseudonym mask needs a Guard (its key is in the "
                                     "key table)", column=column, operation="mask")
        key = guard.pseudonym_key(scope)
        # The token depends on the kind and the value, not on the column, so the same
        # person's national id joins across tables; the 4-byte key id is dropped.
        digest = key.compute(b"pseudonym:" + kind.encode("ascii", "replace"),
                             _nfc(value).encode("utf-8"))[4:20]
        return PSEUDONYM_PREFIX + base64.b32encode(digest).decode("ascii").rstrip("=").lower()
    return fn


_REVEAL = Mask("reveal", lambda v, k, g, c: v)
_SIMPLE = {
    "reveal": _REVEAL,
    "redact": Mask("redact", _redact, needs_plaintext=False),
    "null": Mask("null", _null, needs_plaintext=False),
    "email": Mask("email", _email),
    "city": Mask("city", _city_fn(True)),
    "city:province": Mask("city", _city_fn(False), args=("province",), spec="city:province"),
    "pseudonym": Mask("pseudonym", _pseudonym_fn("default"), args=("default",),
                      spec="pseudonym"),
    "year": Mask("year", lambda value, kind, guard, column: _year(value)),
}


def builtin(spec: str) -> Mask:
    """The built-in mask named by ``spec`` (see :func:`parse_spec`)."""
    return parse_spec(spec)


def pseudonym_scope(mask: Mask) -> str | None:
    """The key scope a ``pseudonym`` mask uses, else None."""
    return mask.args[0] if mask.name == "pseudonym" else None


def parse_spec(spec: object, custom: Mapping[str, Mask] | None = None) -> Mask:
    """The mask a policy string names: built-in (``partial:1:2``) or custom.

    Raises :class:`~piiguard.errors.PolicyError` that says what is wrong (the caller
    adds where).

    >>> parse_spec('pseudonym:analytics').args
    ('analytics',)
    >>> parse_spec('blur')
    Traceback (most recent call last):
        ...
    piiguard.errors.PolicyError: unknown mask 'blur' (built-in masks: reveal, redact, null,
    partial:F:L, email, city, city:province, pseudonym, pseudonym:SCOPE, year)
    >>> parse_spec('partial:-1:x')
    Traceback (most recent call last):
        ...
    piiguard.errors.PolicyError: bad mask 'partial:-1:x': partial takes whole numbers from 0
    to 256 (e.g. partial:1:2)
    """
    if not isinstance(spec, str):
        raise PolicyError(f"a mask is a string such as 'redact' or 'partial:1:2', "
                          f"not a {type(spec).__name__}")
    s = spec.strip()
    m = _SIMPLE.get(s)
    if m is not None:
        return m
    if custom and s in custom:
        return custom[s]
    name, _, rest = s.partition(":")
    if name == "partial":
        parts = rest.split(":") if rest else []
        if len(parts) != 2:
            raise PolicyError(f"bad mask {s!r}: partial takes two numbers, "
                              "partial:FIRST:LAST (e.g. partial:1:2)")
        if not all(p.isascii() and p.isdigit() and len(p) <= 4 for p in parts) \
                or max(int(p) for p in parts) > MAX_PARTIAL:
            raise PolicyError(f"bad mask {s!r}: partial takes whole numbers from 0 to "
                              f"{MAX_PARTIAL} (e.g. partial:1:2)")
        return partial(int(parts[0]), int(parts[1]))
    if name == "pseudonym":
        if not _SCOPE_RE.fullmatch(rest):
            raise PolicyError(f"bad mask {s!r}: pseudonym:SCOPE takes a key scope of "
                              "letters, digits, '_', '-' or '.'")
        return Mask("pseudonym", _pseudonym_fn(rest), args=(rest,), spec=s)
    if name in BUILTIN_MASKS:
        raise PolicyError(f"bad mask {s!r}: {name} takes no arguments")
    raise PolicyError(f"unknown mask {s!r} (built-in masks: reveal, redact, null, "
                      "partial:F:L, email, city, city:province, pseudonym, pseudonym:SCOPE, "
                      "year"
                      + (f"; custom: {', '.join(sorted(custom))}" if custom else "") + ")")


def custom(name: str, fn: Callable[..., str | None], *, needs_plaintext: bool = True) -> Mask:
    """A custom mask from a plain function ``fn(plaintext)`` or
    ``fn(plaintext, *, kind)`` returning a string (or None).

    With ``needs_plaintext=False`` the function gets ``None`` and no value is decrypted
    for it.

    >>> last4 = custom('last4', lambda v: '…' + v[-4:])
    >>> last4('+905321234567', kind='phone')
    '…4567'
    >>> custom('partial', str)
    Traceback (most recent call last):
        ...
    piiguard.errors.PolicyError: mask name 'partial' is a built-in mask
    """
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise PolicyError("a custom mask name is 1-64 letters, digits, '_' or '-', "
                          "starting with a letter or '_'")
    if name in BUILTIN_MASKS:
        raise PolicyError(f"mask name {name!r} is a built-in mask")
    if not callable(fn):
        raise PolicyError(f"custom mask {name!r} is not callable")
    params: Mapping[str, inspect.Parameter]
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins without a signature
        params = {}
    takes_kind = "kind" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
    if takes_kind:
        def wrapped(value: Any, kind: str, guard: PseudonymKeys | None, column: str | None) -> Any:
            return fn(value, kind=kind)
    else:
        def wrapped(value: Any, kind: str, guard: PseudonymKeys | None, column: str | None) -> Any:
            return fn(value)
    return Mask(name, wrapped, needs_plaintext=needs_plaintext)
