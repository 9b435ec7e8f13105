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
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from piiguard.errors import (
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
from piiguard.validators._util import empty, require_str

__all__ = [
    "MAX_LENGTH",
    "PROVINCES",
    "Province",
    "TurkishAddress",
    "district_of",
    "is_valid",
    "normalize",
    "province_by_code",
    "province_by_name",
    "province_of",
    "tr_lower",
    "tr_upper",
    "validate",
]

#: Longest address text accepted, in characters.
MAX_LENGTH = 500
_NAME = "address"


# --------------------------------------------------------------------------- normalising

_WS = re.compile(r"\s+")
_COMMA = re.compile(r" ?,[ ,]*")
_SLASH = re.compile(r" ?/ ?")
_COLON = re.compile(r" ?: ?")
_POSTAL = re.compile(r"[0-9]{5}")
_DIGIT = re.compile(r"[0-9]")
_ALNUM = re.compile(r"[^\W_]")                  # one character for which str.isalnum() is true
_POSTAL_WORD = re.compile(r"(?:^| )([0-9]{5})(?= |$)")
_ASCII_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_BAD_CATEGORIES = frozenset(("Nd", "No", "Nl", "Cf", "Cc", "Cs", "Co", "Cn"))


def _safe_ranges(lo: int, hi: int) -> str:
    """Regex ranges of the code points in ``[lo, hi)`` that :func:`normalize` keeps as
    they are (no digit from another script, no format or control character)."""
    parts, start = [], None
    for cp in range(lo, hi + 1):
        ok = cp < hi and unicodedata.category(chr(cp)) not in _BAD_CATEGORIES
        if ok and start is None:
            start = cp
        elif not ok and start is not None:
            parts.append(f"\\u{start:04x}-\\u{cp - 1:04x}")
            start = None
    return "".join(parts)


# Any non-ASCII character that needs a look by category (to be refused or dropped);
# characters outside U+0080…U+2FFF are always looked at.
_NEEDS_CHECK = re.compile("[^\\x00-\\x7f" + _safe_ranges(0x80, 0x3000) + "]")

# Canonical text is made of printable ASCII without lower-case letters and of Turkish
# upper-case letters: every such character is NFC, has no category to refuse or drop,
# and is unchanged by tr_upper (tested for each character).
_CANONICAL_CHARS = "\\x20-\\x60\\x7b-\\x7eÂÇÎÖÛÜĞİŞ"
# The same without the four characters the spacing rules are about (space , / :).
_WORD_CHARS = "\\x21-\\x2b\\x2d\\x2e\\x30-\\x39\\x3b-\\x60\\x7b-\\x7eÂÇÎÖÛÜĞİŞ"
# Text that normalize() returns unchanged, as one regex (one pass, no Python loop): runs
# of canonical characters joined by " " or ", ", each joint followed by a character of
# _WORD_CHARS (so never a space before a space, a comma, "/" or ":"), a space never
# right after "/" or ":", no space or comma first. Possessive quantifiers: no
# backtracking, linear time on any input. The tests check it against the full rules.
_RUN = f"[{_WORD_CHARS}/:]*+"
_NORMAL = re.compile(f"(?![ ,]){_RUN}(?:(?:(?<![/:]) |, )(?=[{_WORD_CHARS}]){_RUN})*+")


def _is_normal(text: str) -> bool:
    """True when ``text`` is a str that :func:`normalize` returns unchanged, decided by
    one regex (``_NORMAL``). False means "not known": use the full rules."""
    if type(text) is not str:
        return False
    return _NORMAL.fullmatch(text) is not None


def normalize(text: str) -> str:
    """One spelling for one address text (no structure check; see :func:`validate`).

    >>> normalize('  kızılay  mah. ,atatürk blv.\\tno : 1 / 2 ')
    'KIZILAY MAH., ATATÜRK BLV. NO:1/2'
    >>> normalize('No:٣')
    Traceback (most recent call last):
        ...
    piiguard.errors.InvalidFormatError: invalid value: characters rule failed
        (address has digits from another script)
    """
    text = require_str(text, _NAME, MAX_LENGTH)
    if _is_normal(text):
        return text
    return _normalize_full(text)


def _normalize_full(text: str) -> str:
    """:func:`normalize` without the shortcut for text that is already normal."""
    if not text.isascii():
        text = unicodedata.normalize("NFC", text.replace("i\u0307", "i"))
        if _NEEDS_CHECK.search(text) is not None:
            kept = []
            for ch in text:
                if ch.isascii():
                    kept.append(ch)
                    continue
                cat = unicodedata.category(ch)
                if cat in ("Nd", "No", "Nl"):
                    raise InvalidFormatError(
                        "characters", detail=f"{_NAME} has digits from another script")
                if cat == "Cf":
                    continue        # zero-width spaces, soft hyphens, BOM, direction marks
                if cat in ("Cc", "Cs", "Co", "Cn"):
                    raise InvalidFormatError("characters", detail=f"{_NAME} has control characters")
                kept.append(ch)
            text = "".join(kept)
    if _ASCII_CONTROL.search(text) is not None:
        raise InvalidFormatError("characters", detail=f"{_NAME} has control characters")
    # The rules are _WS.sub(" ", text).strip(), then _COMMA.sub(", ", …),
    # _SLASH.sub("/", …), _COLON.sub(":", …) and .strip(" ,"); string methods do the
    # same faster. str.split() splits at runs of the characters \s matches
    # (str.isspace) and drops them at both ends, which leaves single spaces only. Then
    # _COMMA turns each run of spaces and commas that has a comma into ", " (runs at
    # either end are stripped at the end anyway, so dropping them is the same), and
    # _SLASH/_COLON drop every space next to "/" or ":". Each step runs only when it
    # would change something.
    text = " ".join(tr_upper(text).split())
    if " ," in text or ",," in text or text.count(",") != text.count(", "):
        text = ", ".join([part for part in (p.strip(" ") for p in text.split(",")) if part])
    if " /" in text or "/ " in text:
        text = text.replace(" /", "/").replace("/ ", "/")
    if " :" in text or ": " in text:
        text = text.replace(" :", ":").replace(": ", ":")
    return text.strip(" ,")


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
