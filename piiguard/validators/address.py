"""Turkish postal addresses: structured (:class:`TurkishAddress`) or free text.

An address is a street line (neighbourhood, street, building and door), an optional
district (ilçe), a province (il) and an optional 5-digit postal code. The province is
checked against the 81 provinces (:data:`PROVINCES`, with their plate codes); a postal
code must start with its province's plate code (``34710`` is in İstanbul, plate 34).

Normalisation makes one string of the many ways to write the same address: Unicode NFC,
invisible format characters removed, runs of whitespace collapsed, spaces around ``,``
``/`` and ``:`` made uniform, and Turkish upper case (``i→İ``, ``ı→I``; plain
``str.upper()``/``str.lower()`` get these wrong). Province names are recognised with
or without Turkish letters and in any case (``Istanbul``, ``istanbul``, ``İSTANBUL``)
and written in their official form. Digits from other scripts (``٣``, ``３``, ``²``)
and control characters are refused. Abbreviations (``MAH.``/``MAHALLESİ``) are kept as
written.

The canonical text puts the district and province last, after the final ``", "``, the
way Turkish mail is addressed, so both are recoverable (:func:`province_of`,
:func:`district_of`)::

    <STREET LINE>, [<POSTAL CODE> ][<DISTRICT>/]<PROVINCE>

Free text is read from its end: the last word must be a province (a trailing
``TÜRKİYE`` and a postal code after the province are allowed); a district is recognised
in the ``District/Province`` form, and when the district has several words it must
follow a comma or the postal code (otherwise only its last word is taken).

>>> validate('Atatürk Mah. Cumhuriyet Cad. No: 5 D: 3, 34710 Kadıköy / İstanbul')
'ATATÜRK MAH. CUMHURİYET CAD. NO:5 D:3, 34710 KADIKÖY/İSTANBUL'
>>> validate('atatürk mah. cumhuriyet cad. no:5 d:3 34710 kadıköy/istanbul')
'ATATÜRK MAH. CUMHURİYET CAD. NO:5 D:3, 34710 KADIKÖY/İSTANBUL'
>>> a = TurkishAddress(street='Kızılay Mah. Atatürk Blv. No:1', district='Çankaya',
...                    province='Ankara', postal_code='06420')
>>> a.format()
'KIZILAY MAH. ATATÜRK BLV. NO:1, 06420 ÇANKAYA/ANKARA'
>>> TurkishAddress.parse(a.format()) == TurkishAddress.parse(str(a.format()))
True
>>> province_of(a.format()), district_of(a.format())
('ANKARA', 'ÇANKAYA')
>>> validate('Cumhuriyet Cad. No:5, Gotham')
Traceback (most recent call last):
    ...
piiguard.errors.InvalidComponentError: invalid value: province rule failed
    (address does not end with one of the 81 provinces)
>>> validate('Cumhuriyet Cad. No:5, 06710 Kadıköy/İstanbul')
Traceback (most recent call last):
    ...
piiguard.errors.InvalidComponentError: invalid value: postal_code rule failed
    (postal code does not start with the province's plate code)
>>> validate('Kadıköy/İstanbul')
Traceback (most recent call last):
    ...
piiguard.errors.InvalidComponentError: invalid value: street rule failed
    (address has no street line)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from piiguard.errors import (
    ConfigurationError,
    InvalidComponentError,
    InvalidFormatError,
)
from piiguard.validators._turkish import (  # the provinces and Turkish case, re-exported
    BY_CANONICAL as _BY_CANONICAL,
    BY_FOLDED as _BY_KEY,
    PROVINCES,
    Province,
    fold as _fold,
    province_by_code,
    province_by_name,
    tr_lower,
    tr_upper,
)
from piiguard.validators._address_text import (  # the text rules (tests read them here)
    _ALNUM,
    _BAD_CATEGORIES,  # noqa: F401
    _DIGIT,
    _NORMAL,
    _POSTAL,
    _POSTAL_WORD,
    MAX_LENGTH,
    _is_normal,  # noqa: F401
    _TYPED_TEXT,
    _typed_accepts,
    normalize,
    written,
)
from piiguard.validators._util import empty, require_str

__all__ = [
    "LEVELS",
    "MAX_LENGTH",
    "PROVINCES",
    "AddressCheck",
    "Province",
    "TurkishAddress",
    "as_written",
    "as_written_lenient",
    "check",
    "district_of",
    "is_valid",
    "normalize",
    "province_by_code",
    "province_by_name",
    "province_of",
    "search_form",
    "tr_lower",
    "tr_upper",
    "validate",
    "written",
]

_NAME = "address"




# --------------------------------------------------------------------------- structure

@dataclass(frozen=True, kw_only=True)
class TurkishAddress:
    """A structured Turkish address; :meth:`parse` reads text, :meth:`format` writes
    the canonical text. Instances made with :meth:`parse` or :meth:`normalized` hold
    normalised, checked parts. The ``repr`` shows the province only.

    >>> TurkishAddress(street='Bağdat Cad. No:1', province='istanbul')
    TurkishAddress(street=<redacted>, district=<redacted>, province='istanbul',
                   postal_code=<redacted>)
    >>> TurkishAddress(street='Bağdat Cad. No:1', province='istanbul').format()
    'BAĞDAT CAD. NO:1, İSTANBUL'
    >>> TurkishAddress(street='Bağdat Cad. No:1', province='istanbul', postal_code='3471').format()
    Traceback (most recent call last):
        ...
    piiguard.errors.InvalidFormatError: invalid value: postal_code rule failed
        (postal code has 5 ASCII digits)
    """

    street: str = field(repr=False)
    province: str | int
    district: str | None = field(default=None, repr=False)
    postal_code: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return (f"TurkishAddress(street=<redacted>, district=<redacted>, "
                f"province={self.province!r}, postal_code=<redacted>)")

    @property
    def plate_code(self) -> int:
        """The province's plate code."""
        return self._province().code

    def _province(self) -> Province:
        if isinstance(self.province, int) and not isinstance(self.province, bool):
            return province_by_code(self.province)
        return province_by_name(self.province)  # type: ignore[arg-type]

    def normalized(self) -> TurkishAddress:
        """Check every part and return the address with normalised parts."""
        street = normalize(self.street)
        if _ALNUM.search(street) is None:
            raise InvalidComponentError("street", detail=f"{_NAME} has no street line")
        province = self._province()
        district = None
        if self.district is not None:
            district = normalize(self.district) or None
            if district is not None and (
                    "," in district or "/" in district or _DIGIT.search(district) is not None):
                raise InvalidComponentError(
                    "district", detail="district name has no digits, commas or slashes")
        postal = None
        if self.postal_code is not None:
            postal = require_str(self.postal_code, "postal code", 16).strip() or None
            if postal is not None:
                if len(postal) != 5 or not (postal.isascii() and postal.isdigit()):
                    raise InvalidFormatError("postal_code", detail="postal code has 5 ASCII digits")
                if int(postal[:2]) != province.code:
                    raise InvalidComponentError(
                        "postal_code",
                        detail="postal code does not start with the province's plate code")
        return TurkishAddress(street=street, province=province.canonical, district=district,
                              postal_code=postal)

    def format(self) -> str:
        """The canonical text: ``STREET, [POSTAL ][DISTRICT/]PROVINCE``."""
        a = self.normalized()
        tail = a.province
        if a.district:
            tail = f"{a.district}/{tail}"
        if a.postal_code:
            tail = f"{a.postal_code} {tail}"
        return f"{a.street}, {tail}"

    @classmethod
    def parse(cls, text: str) -> TurkishAddress:
        """Read free text or canonical text into a normalised :class:`TurkishAddress`.

        >>> TurkishAddress.parse('Bağdat Cad. No:1 Kadıköy/Istanbul Türkiye').district
        'KADIKÖY'
        """
        return cls._from_text(normalize(text)).normalized()

    @classmethod
    def _from_text(cls, t: str) -> TurkishAddress:
        if not t:
            raise empty(_NAME)
        postal: str | None = None
        head, tok = _split_last(t)
        # Trailing country name and postal code after the province.
        for _ in range(2):
            # A province in canonical spelling or five digits never folds to a country
            # name, so those skip _fold.
            if tok not in _BY_CANONICAL and _POSTAL.fullmatch(tok) is None and (
                    _fold(tok.rstrip(".")) in ("TURKIYE", "TURKEY")):
                t = head.rstrip(" ,")
            elif postal is None and _POSTAL.fullmatch(tok):
                postal, t = tok, head.rstrip(" ,")
            else:
                break               # nothing changed: another round would do the same
            head, tok = _split_last(t)
        p = _BY_CANONICAL.get(tok) or _BY_KEY.get(_fold(tok.rstrip(".")))
        if p is None:
            raise InvalidComponentError(
                "province", detail=f"{_NAME} does not end with one of the 81 provinces")
        district = None
        if head.endswith("/"):
            h = head[:-1]
            j = h.rfind(", ")
            seg, prefix = (h[j + 2:], h[:j]) if j >= 0 else (h, "")
            matches = list(_POSTAL_WORD.finditer(seg))
            m = matches[-1] if matches else None
            if m is not None:
                span, before = seg[m.end():].strip(), seg[:m.start()]
                postal = _merge_postal(postal, m.group(1))
            elif j >= 0:
                span, before = seg, ""
            else:
                before, _, span = seg.rpartition(" ")
            if span and _DIGIT.search(span) is None:
                district = span
            else:
                before = f"{before} {span}".strip()
            street = ", ".join(x for x in (prefix, before.strip()) if x)
        else:
            h = head.rstrip(" ,")
            j = h.rfind(", ")
            seg, prefix = (h[j + 2:], h[:j]) if j >= 0 else (h, "")
            if head.endswith(" ") and not head.endswith(", ") and (
                    _POSTAL.fullmatch(seg[-5:]) and (len(seg) == 5 or seg[-6] == " ")):
                postal = _merge_postal(postal, seg[-5:])
                seg = seg[:-5].strip()
            street = ", ".join(x for x in (prefix, seg) if x)
        street = street.strip(" ,")
        if not street:
            raise InvalidComponentError("street", detail=f"{_NAME} has no street line")
        return cls(street=street, province=p.canonical, district=district, postal_code=postal)


def _split_last(t: str) -> tuple[str, str]:
    i = max(t.rfind(" "), t.rfind(","), t.rfind("/"))
    return t[:i + 1], t[i + 1:]


def _merge_postal(a: str | None, b: str) -> str:
    if a is not None and a != b:
        raise InvalidComponentError("postal_code", detail=f"{_NAME} has two different postal codes")
    return b


# --------------------------------------------------------------------------- canonical text

# Canonical text as one regex: normal text (the _NORMAL lookahead), a street with a
# letter or digit (str.isalnum, over the canonical alphabet), then after the last ", "
# (the tail has no comma) [POSTAL ][DISTRICT/]PROVINCE, the district without digits.
_ALNUM_CANONICAL = "0-9A-ZÂÇÎÖÛÜĞİŞ"
_CANONICAL = re.compile(
    f"(?=(?:{_NORMAL.pattern})\\Z)[^{_ALNUM_CANONICAL}]*+[{_ALNUM_CANONICAL}].*, "
    "(?:(?P<postal>[0-9]{5}) )?(?:(?P<district>[^ ,/0-9][^,/0-9]*)/)?"
    "(?P<province>[^ ,/0-9]++)")
_PLATE_BY_CANONICAL: dict[str, str] = {p.canonical: f"{p.code:02d}" for p in PROVINCES}


def _canonical_match(text: object) -> re.Match | None:
    """The ``_CANONICAL`` match of ``text`` when it is canonical text, else None."""
    if type(text) is not str or len(text) > MAX_LENGTH:
        return None
    m = _CANONICAL.fullmatch(text)
    if m is None:
        return None
    postal, _, name = m.groups()
    plate = _PLATE_BY_CANONICAL.get(name)
    if plate is None or (postal is not None and not postal.startswith(plate)):
        return None
    return m


class _CanonicalParts(NamedTuple):
    """Canonical text read into its parts (the province as its record)."""

    street: str
    postal_code: str | None
    district: str | None
    province: Province


def _canonical_parts(text: object) -> _CanonicalParts | None:
    """The parts of ``text`` (street, postal code, district, province) when it is
    canonical text that :func:`validate` returns unchanged, else None ("not known": use
    the full rules).

    Sound by construction (see the tests, which check it against the full rules): the
    text is a fixed point of :func:`normalize` (the ``_NORMAL`` lookahead), its tail
    after the last ``", "`` has no comma, so the parser splits it there too, the tail is
    ``[POSTAL ][DISTRICT/]PROVINCE`` with a district without digits, a province in its
    canonical spelling and a postal code of that province, and the street has a letter
    or digit. (:func:`province_of` and :func:`district_of` read the named groups of
    the same match, without building the parts.)
    """
    m = _canonical_match(text)
    if m is None:
        return None
    postal, district, name = m.groups()
    # the tail has no comma: the street is everything before the last ", "
    s = m.string
    return _CanonicalParts(s[:s.rfind(", ")], postal, district, _BY_CANONICAL[name])


def _is_canonical(text: object) -> bool:
    """True when ``text`` is canonical text (what :func:`validate`'s hot path asks)."""
    return _canonical_match(text) is not None


# --------------------------------------------------------------------------- API

def validate(value: str | TurkishAddress | Mapping[str, object]) -> str:
    """Check an address (text, :class:`TurkishAddress` or a mapping of its fields) and
    return the canonical text.

    Canonical text (what this returns) is recognised by a few cheap tests and returned
    as it is, and so is free text once :func:`normalize` has made it canonical; other
    input goes through the full rules. The result is the same either way.

    Raises :class:`~piiguard.errors.InvalidFormatError` (type, characters, postal code
    shape), :class:`~piiguard.errors.InvalidLengthError` or
    :class:`~piiguard.errors.InvalidComponentError` (``province``, ``postal_code``,
    ``district``, ``street``); messages never contain the address.

    >>> validate({'street': 'Alsancak Mah. 1470 Sk. No:3', 'district': 'Konak',
    ...           'province': 35, 'postal_code': '35220'})
    'ALSANCAK MAH. 1470 SK. NO:3, 35220 KONAK/İZMİR'
    >>> validate('ALSANCAK MAH. 1470 SK. NO:3, 35220 KONAK/İZMİR')
    'ALSANCAK MAH. 1470 SK. NO:3, 35220 KONAK/İZMİR'
    """
    if _canonical_match(value) is not None:
        return value  # type: ignore[return-value]
    if isinstance(value, str):
        text = normalize(value)
        # The full rules parse normalize(value); when that is canonical text (so a fixed
        # point of normalize), they do exactly what they do for that text: return it.
        if _canonical_match(text) is not None:
            return text
        return TurkishAddress._from_text(text).normalized().format()
    return _validate_full(value)


def _validate_full(value: str | TurkishAddress | Mapping[str, object]) -> str:
    """:func:`validate` without the shortcut for canonical text."""
    if isinstance(value, TurkishAddress):
        return value.format()
    if isinstance(value, Mapping):
        unknown = set(value) - {"street", "district", "province", "postal_code"}
        if unknown or "street" not in value or "province" not in value:
            raise InvalidFormatError(
                "structure", detail="address fields are street, district, province, postal_code")
        return TurkishAddress(**value).format()  # type: ignore[arg-type]
    return TurkishAddress.parse(value).format()


# --------------------------------------------------------------------------- as written

#: The validation levels of :func:`check` (``"strict"`` is every column's default).
LEVELS = ("strict", "lenient")


class AddressCheck(NamedTuple):
    """What :func:`check` found out about an address.

    - ``text``: the address as written (what a column stores and returns): NFC,
      invisible format characters dropped, runs of whitespace collapsed to one space;
    - ``canonical``: the one spelling of the address (what the blind index, masks and
      comparisons use): :func:`validate`'s result when the strict rules hold, else the
      normalised text (:func:`normalize`);
    - ``province``: the province it is in (official upper-case name);
    - ``unchecked``: the rules the lenient level could not check (empty when every
      strict rule held): ``"province"`` (the text does not end with a province: one
      was found elsewhere in it, so the street, district and postal code could not be
      told apart), ``"postal_code"``, ``"street"``, ``"district"``.
    """

    text: str
    canonical: str
    province: str
    unchecked: tuple[str, ...]

    def __repr__(self) -> str:
        return (f"AddressCheck(text=<redacted>, canonical=<redacted>, "
                f"province={self.province!r}, unchecked={self.unchecked!r})")


def check(value: str | TurkishAddress | Mapping[str, object],
          level: str = "strict") -> AddressCheck:
    """Validate an address at ``level`` and tell what was found (see :class:`AddressCheck`).

    ``"strict"`` (the default) applies every rule of :func:`validate`. ``"lenient"``
    needs a recognisable province anywhere in the text and reports in ``unchecked``
    the rules it could not check instead of refusing the address; the character rules
    (no control characters, no digits from other scripts), the length and ``empty``
    still refuse. Structured input (a :class:`TurkishAddress` or a mapping) is written
    as its canonical text.

    >>> c = check('Moda Cad. No:5, Kadıköy, İstanbul 34710')
    >>> c.text, c.canonical, c.unchecked
    ('Moda Cad. No:5, Kadıköy, İstanbul 34710', 'MODA CAD. NO:5, KADIKÖY, 34710 İSTANBUL', ())
    >>> c = check('Cumhuriyet Cad. No:5, 06710 Kadıköy/İstanbul', 'lenient')
    >>> c.province, c.unchecked
    ('İSTANBUL', ('postal_code',))
    >>> check('Cumhuriyet Cad. No:5, Gotham', 'lenient')
    Traceback (most recent call last):
        ...
    piiguard.errors.InvalidComponentError: invalid value: province rule failed
        (address does not end with one of the 81 provinces)
    """
    if level not in LEVELS:
        raise ConfigurationError(f"unknown address validation level {level!r}; "
                                 "expected 'strict' or 'lenient'")
    if not isinstance(value, str):
        canonical = _validate_full(value)
        return AddressCheck(canonical, canonical, province_of(canonical), ())
    text = written(value)
    try:
        canonical = validate(text)
    except InvalidComponentError as exc:
        if level == "strict":
            raise exc.detached() from None
        return _lenient(text, exc.rule)
    return AddressCheck(text, canonical, province_of(canonical), ())


def _lenient(text: str, failed: str) -> AddressCheck:
    """The lenient reading of ``text``, which failed the strict rule ``failed``."""
    norm = normalize(text)
    found: Province | None = None
    for tok in reversed(_TOKENS.split(norm)):       # the province nearest the end wins
        found = _BY_CANONICAL.get(tok) or _BY_KEY.get(_fold(tok.rstrip(".")))
        if found is not None:
            break
    if found is None:
        raise InvalidComponentError(
            "province", detail=f"{_NAME} does not end with one of the 81 provinces")
    return AddressCheck(text, norm, found.canonical, (failed,))


_TOKENS = re.compile(r"[ ,/]+")


def as_written(value: str | TurkishAddress | Mapping[str, object],
               level: str = "strict") -> str:
    """:func:`check`'s ``text``: what an address column stores (validated at ``level``).

    >>> as_written('moda cad. no:5  kadıköy/istanbul')
    'moda cad. no:5 kadıköy/istanbul'
    """
    if type(value) is str and level == "strict":
        if len(value) <= MAX_LENGTH and _TYPED_TEXT(value) is not None:
            text = value                         # the written form of such text
            if "  " in value or "\t" in value or value[:1] == " " or value[-1:] == " ":
                text = " ".join(value.split())
            if _typed_accepts(text):
                return text
        text = written(value)
        validate(text)
        return text
    return check(value, level).text


def as_written_lenient(value: str | TurkishAddress | Mapping[str, object]) -> str:
    """``as_written(value, "lenient")``."""
    return check(value, "lenient").text


def search_form(text: str) -> str:
    """The spelling an address is searched and masked by: its canonical text when the
    strict rules hold, else its normalised text. Every spelling of one address has the
    same search form, and so has the canonical text stored by earlier releases.

    >>> search_form('moda cad. no:5 kadıköy/istanbul 34710 Türkiye')
    'MODA CAD. NO:5, 34710 KADIKÖY/İSTANBUL'
    >>> search_form('Moda Cad. No:5, 34710 Kadıköy / İstanbul')
    'MODA CAD. NO:5, 34710 KADIKÖY/İSTANBUL'
    """
    try:
        return validate(text)
    except InvalidComponentError:
        return normalize(text)


def is_valid(value: object) -> bool:
    """True if :func:`validate` accepts ``value``; never raises.

    >>> is_valid('Bağdat Cad. No:1, İstanbul'), is_valid('Bağdat Cad.'), is_valid(None)
    (True, False, False)
    """
    try:
        validate(value)  # type: ignore[arg-type]
    except (ValueError, TypeError):
        return False
    return True


def province_of(canonical: str) -> str:
    """The province of an address, as in canonical text (for a ``city`` mask).

    >>> province_of('BAĞDAT CAD. NO:1, 34728 KADIKÖY/İSTANBUL')
    'İSTANBUL'
    """
    m = _canonical_match(canonical)   # canonical text: read the tail, no parsing
    if m is not None:
        return _BY_CANONICAL[m["province"]].canonical
    return TurkishAddress.parse(canonical).province  # type: ignore[return-value]


def district_of(canonical: str) -> str | None:
    """The district of an address, or None when it has none (for a ``city`` mask).

    >>> district_of('BAĞDAT CAD. NO:1, 34728 KADIKÖY/İSTANBUL')
    'KADIKÖY'
    >>> district_of('BAĞDAT CAD. NO:1, İSTANBUL') is None
    True
    """
    m = _canonical_match(canonical)
    if m is not None:
        return m["district"]
    return TurkishAddress.parse(canonical).district
