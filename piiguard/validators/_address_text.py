"""The character and spacing rules of Turkish address text (private to
:mod:`piiguard.validators.address`, which re-exports :func:`normalize`).

:func:`normalize` makes one spelling of an address text (NFC, format characters dropped,
whitespace and punctuation spacing made uniform, Turkish upper case); :func:`clean` and
:func:`written` apply the character rules only, keeping the user's letters and order.
"""

from __future__ import annotations

import re
import unicodedata

from piiguard.errors import InvalidFormatError
from piiguard.validators._turkish import BY_CANONICAL as _BY_CANONICAL
from piiguard.validators._turkish import BY_FOLDED as _BY_KEY
from piiguard.validators._turkish import PROVINCES, Province, tr_lower, tr_upper
from piiguard.validators._turkish import fold as _fold
from piiguard.validators._util import require_str

__all__ = ["MAX_LENGTH", "clean", "normalize", "spacing", "written"]

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
    return spacing(tr_upper(clean(text)))


def clean(text: str) -> str:
    """``text`` NFC, invisible format characters dropped; digits from other scripts and
    control characters refused (the character rules, without any case or spacing)."""
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
    return text


def spacing(text: str) -> str:
    """Whitespace collapsed and the spaces around ``,`` ``/`` ``:`` made uniform."""
    # The rules are _WS.sub(" ", text).strip(), then _COMMA.sub(", ", …),
    # _SLASH.sub("/", …), _COLON.sub(":", …) and .strip(" ,"); string methods do the
    # same faster. str.split() splits at runs of the characters \s matches
    # (str.isspace) and drops them at both ends, which leaves single spaces only. Then
    # _COMMA turns each run of spaces and commas that has a comma into ", " (runs at
    # either end are stripped at the end anyway, so dropping them is the same), and
    # _SLASH/_COLON drop every space next to "/" or ":". Each step runs only when it
    # would change something.
    text = " ".join(text.split())
    if " ," in text or ",," in text or text.count(",") != text.count(", "):
        text = ", ".join([part for part in (p.strip(" ") for p in text.split(",")) if part])
    if " /" in text or "/ " in text:
        text = text.replace(" /", "/").replace("/ ", "/")
    if " :" in text or ": " in text:
        text = text.replace(" :", ":").replace(": ", ":")
    return text.strip(" ,")



def written(text: str) -> str:
    """The address as written, cleaned but not rewritten: NFC, invisible format
    characters dropped, whitespace collapsed (no check of its structure).

    >>> written('  Moda Cad.   No:5,\tKadıköy, İstanbul 34710 ')
    'Moda Cad. No:5, Kadıköy, İstanbul 34710'
    """
    text = require_str(text, _NAME, MAX_LENGTH)
    if text.isascii() and _ASCII_CONTROL.search(text) is None:
        return " ".join(text.split())
    return " ".join(clean(text).split())


# --------------------------------------------------------------------------- typed fast path
# Hand-typed text in the usual alphabet (Turkish letters in either case, digits, the
# usual punctuation, spaces) is checked without being rewritten: the strict rules only
# need to know that it *would* be accepted. The checks below decide acceptance the way
# _from_text and normalized() do on the normalised text; anything unusual returns False
# ("ask the full rules"), never a refusal. The tests check, on generated input, that
# whatever is accepted here is accepted by validate() too.
_TYPED_TEXT = re.compile("[A-Za-z0-9 \t.,:/'\\-ÂÇÎÖÛÜĞİŞâçîöûüğış]*+\\Z").match
# Province names as people usually type them (İSTANBUL, İstanbul, istanbul) -> province:
# a dict hit instead of case folding for most input.
_SPELLED: dict[str, Province] = {}
for _p in PROVINCES:
    for _spelling in (_p.canonical, tr_lower(_p.canonical),
                      _p.canonical[0] + tr_lower(_p.canonical[1:])):
        _SPELLED[_spelling] = _p
del _p, _spelling
_DIGITS5 = re.compile(r"[0-9]{5}").search
_FIVE = re.compile(r"(?:^| )[0-9]{5}(?=[ ,]|$)").search


def _typed_accepts(t: str) -> bool:
    """True if the strict rules accept ``t`` (written form, :data:`_TYPED_TEXT`
    alphabet); False means "not known"."""
    commas = t.count(",")
    if (commas and (commas != t.count(", ") or " ," in t or t[0] == "," or t[-1] == ",")) \
            or t.count("/") > 1:
        return False
    if ": " in t or " :" in t:
        t = t.replace(" :", ":").replace(": ", ":")
    if "/ " in t or " /" in t:
        t = t.replace(" /", "/").replace("/ ", "/")
    head, _, last = t.rpartition(" ")
    postal = None
    if len(last) == 5 and last.isdigit():
        postal, t = last, head.rstrip(",")
        head, _, last = t.rpartition(" ")
    district, slash, name = last.rpartition("/")
    if not name.isalpha():
        return False
    p = _SPELLED.get(name) or _BY_CANONICAL.get(tr_upper(name)) or _BY_KEY.get(_fold(name))
    if p is None:
        return False
    if slash and not district.isalpha():
        return False
    # what is left before the province (and its district): one more postal code at
    # most, right before the district (or province), and a street with a letter or digit
    if head.endswith(","):
        return False
    rest = head
    r_head, _, r_last = rest.rpartition(" ")
    if len(r_last) == 5 and r_last.isdigit():
        if postal is not None and postal != r_last:
            return False
        postal, rest = r_last, r_head
    if (_DIGITS5(rest) is not None and _FIVE(rest) is not None) \
            or _ALNUM.search(rest) is None:
        return False
    j = rest.rfind(", ")
    if j >= 0 and (slash or postal is not None) and _ALNUM.search(rest[:j]) is None:
        return False
    return postal is None or int(postal[:2]) == p.code
