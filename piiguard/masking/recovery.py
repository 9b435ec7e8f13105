"""How many values a mask leaves possible, and whether search lets a role recover one.

A role that sees ``1********46`` of a T.C. number and may search the column can try
candidates until one matches. This module counts the candidates a mask leaves for the
kinds whose values are short numbers (``national_id``, ``tax_id``, ``phone``), so a
:class:`~piiguard.masking.MaskingPolicy` can refuse a mask and search limit that
together let a role recover a number within a day (:func:`recovery_risk`).

The counts are exact for T.C. numbers and VKNs (the check digits are worked into the
count: a visible check digit removes candidates) and the *smallest* over every value
the visible characters could show, so they never flatter the mask:

>>> candidates_left("national_id", "partial", 1, 2)     # '1********46'
2000000
>>> candidates_left("national_id", "partial", 0, 0)     # nothing shown: every valid T.C.
900000000
>>> candidates_left("tax_id", "partial", 0, 1)         # the VKN's check digit shown
100000000

A T.C. number is 11 digits: d1 is 1-9, d10 = (7*(d1+d3+d5+d7+d9) - (d2+d4+d6+d8)) mod
10 and d11 = (d1+...+d10) mod 10. Showing d1, d10 and d11 leaves d2..d9 (10^8 choices)
bound by the two check-digit equations: subtracting them leaves 8*(d1+d3+...+d9) fixed
mod 10, which fixes the odd-position sum mod 5 (2 of 10 residues), and then d11 fixes
the even-position sum mod 10 (1 of 10): 10^8 * 2/10 * 1/10 = 2,000,000.

Phones are counted in the attacker's favour: the canonical form is E.164
(``+905321234567``); the country code and the 3-digit operator or area code are taken as
known (there are few of them, and an attacker often knows the operator), so only hidden
digits of the 7-digit subscriber number count, 10 choices each:

>>> candidates_left("phone", "partial", 3, 2)           # '+90********67'
100000
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from typing import NamedTuple

__all__ = ["ANALYSED_KINDS", "MAX_RECOVERY_CHANCE", "RecoveryRisk", "candidates_left",
           "recovery_risk"]

#: The kinds whose candidates are counted.
ANALYSED_KINDS = ("national_id", "tax_id", "phone")
#: A role may search a column it sees partially only if, at its search limit, the
#: chance of hitting the real value within 24 hours is at most this.
MAX_RECOVERY_CHANCE = 0.01

_TCKN_LEN = 11
_VKN_LEN = 10
_PHONE_LEN = 13          # '+90' + 10 digits
_PHONE_KNOWN = 6         # '+', '9', '0' and the 3-digit operator / area code


def _visible(length: int, first: int, last: int) -> set[int]:
    """Indexes a ``partial:first:last`` mask shows of a ``length``-character value
    (none when it would show every character: it then stars them all)."""
    if length <= first + last:
        return set()
    return set(range(first)) | set(range(length - last, length))


def _tckn(first: int, last: int) -> int:
    shown = _visible(_TCKN_LEN, first, last)
    # Hidden digits among d1..d9 (index 0..8), by (odd-position sum, even-position sum)
    # mod 10; the visible ones are fixed, and every fixing is tried below.
    hidden = Counter({(0, 0): 1})
    for i in range(9):
        if i in shown:
            continue
        step: Counter[tuple[int, int]] = Counter()
        for (o, e), n in hidden.items():
            for d in range(1 if i == 0 else 0, 10):
                step[((o + d) % 10, e) if i % 2 == 0 else (o, (e + d) % 10)] += n
        hidden = step
    # What the visible digits add to each sum: any residue (a superset of the possible
    # ones, so the minimum below can only be lower than the truth).
    odd_sums = range(10) if any(i in shown for i in range(0, 9, 2)) else (0,)
    even_sums = range(10) if any(i in shown for i in range(1, 9, 2)) else (0,)
    show10, show11 = 9 in shown, 10 in shown
    best = math.inf
    for vo in odd_sums:
        for ve in even_sums:
            # candidates by the check digits they would show
            by_check: Counter[tuple[int | None, int | None]] = Counter()
            for (o, e), count in hidden.items():
                odd, even = (o + vo) % 10, (e + ve) % 10
                c10 = (odd * 7 - even) % 10
                by_check[(c10 if show10 else None,
                          (odd + even + c10) % 10 if show11 else None)] += count
            best = min(best, min(by_check.values()))
    return int(best)


def _vkn_weight(digit: int, i: int) -> int:
    c1 = (digit + i) % 10
    return 0 if not c1 else (c1 * 2**i) % 9 or 9


def _vkn(first: int, last: int) -> int:
    shown = _visible(_VKN_LEN, first, last)
    hidden = Counter({0: 1})
    for j in range(9):
        if j in shown:
            continue
        step: Counter[int] = Counter()
        for s, n in hidden.items():
            for d in range(10):
                step[(s + _vkn_weight(d, 9 - j)) % 10] += n
        hidden = step
    visible_sums = range(10) if any(j in shown for j in range(9)) else (0,)
    checks = range(10) if 9 in shown else (None,)
    best = math.inf
    for vs in visible_sums:
        for c in checks:
            n = sum(count for s, count in hidden.items()
                    if c is None or (10 - (s + vs) % 10) % 10 == c)
            if n:
                best = min(best, n)
    return int(best)


def _phone(first: int, last: int) -> int:
    shown = _visible(_PHONE_LEN, first, last)
    return 10 ** sum(1 for i in range(_PHONE_KNOWN, _PHONE_LEN) if i not in shown)


_FULL = {"national_id": _tckn(0, 0), "tax_id": _vkn(0, 0), "phone": _phone(0, 0)}


@functools.lru_cache(maxsize=1024)
def candidates_left(kind: str, mask_name: str, first: int = 0, last: int = 0
                    ) -> int | None:
    """The fewest values a role seeing ``kind`` through the mask must still tell apart
    (``None``: ``kind`` is not analysed, or the mask is a custom one).

    ``mask_name`` is a built-in mask name; ``first``/``last`` are a ``partial`` mask's
    numbers. Masks that show nothing of the digits (``redact``, ``null``, ``pseudonym``)
    leave every valid value; ``reveal`` leaves one.
    """
    if kind not in _FULL:
        return None
    if mask_name == "reveal":
        return 1
    if mask_name in ("redact", "null", "pseudonym", "email", "city"):
        return _FULL[kind]
    if mask_name != "partial":
        return None
    if kind == "national_id":
        return _tckn(first, last)
    if kind == "tax_id":
        return _vkn(first, last)
    return _phone(first, last)


class RecoveryRisk(NamedTuple):
    """What a role that may search gets out of a mask at its search limit."""

    candidates: int
    tries_per_day: float
    chance_per_day: float

    @property
    def too_high(self) -> bool:
        return self.chance_per_day > MAX_RECOVERY_CHANCE

    def describe(self) -> str:
        tries = "unlimited" if math.isinf(self.tries_per_day) else \
            f"{int(self.tries_per_day):,}"
        return (f"{self.candidates:,} candidates, {tries} tries a day: a "
                f"{min(self.chance_per_day, 1.0):.2%} chance of recovering a value within "
                f"24 hours (the most allowed is {MAX_RECOVERY_CHANCE:.0%})")


def recovery_risk(candidates: int, tries_per_day: float) -> RecoveryRisk:
    """The chance that ``tries_per_day`` distinct guesses hit one of ``candidates``.

    >>> risk = recovery_risk(2_000_000, 14_460)
    >>> risk.chance_per_day, risk.too_high
    (0.00723, False)
    >>> print(risk.describe())
    2,000,000 candidates, 14,460 tries a day: a 0.72% chance of recovering a value within
    24 hours (the most allowed is 1%)
    """
    chance = 1.0 if math.isinf(tries_per_day) else min(1.0, tries_per_day / candidates)
    return RecoveryRisk(candidates, tries_per_day, chance)
