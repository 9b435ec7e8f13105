"""T.C. Kimlik No: agreement with python-stdnum (test-only oracle), substitutions, scripts."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from stdnum.tr import tckimlik

from piiguard import errors
from piiguard.validators import tckn

VALID = "10000000146"


def make_valid(rng: random.Random) -> str:
    head = str(rng.randrange(100_000_000, 1_000_000_000))
    return head + tckimlik.calc_check_digits(head)


def test_agrees_with_stdnum_on_100k_random_strings():
    rng = random.Random(20240301)
    disagreements = []
    for _ in range(100_000):
        s = f"{rng.randrange(10**11):011d}"
        if tckn.is_valid(s) != tckimlik.is_valid(s):
            disagreements.append(s)
    assert disagreements == []


def test_agrees_with_stdnum_on_100k_valid_numbers():
    rng = random.Random(7)
    for _ in range(100_000):
        s = make_valid(rng)
        assert tckn.validate(s) == s


def test_calc_check_digits_agrees_with_stdnum():
    rng = random.Random(8)
    for _ in range(10_000):
        head = str(rng.randrange(100_000_000, 1_000_000_000))
        assert tckn.calc_check_digits(head) == tckimlik.calc_check_digits(head)


def test_every_single_digit_substitution_is_refused():
    rng = random.Random(11)
    numbers = [VALID] + [make_valid(rng) for _ in range(200)]
    for number in numbers:
        for i in range(11):
            for d in "0123456789":
                if d == number[i]:
                    continue
                changed = number[:i] + d + number[i + 1:]
                assert not tckn.is_valid(changed), (number, i, d)
                with pytest.raises((errors.InvalidChecksumError, errors.InvalidFormatError)):
                    tckn.validate(changed)


@pytest.mark.parametrize("table", [
    str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"),      # Arabic-Indic
    str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹"),      # Extended Arabic-Indic
    str.maketrans("0123456789", "０１２３４５６７８９"),  # fullwidth
    str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹"),      # superscripts
    str.maketrans("0123456789", "𝟎𝟏𝟐𝟑𝟒𝟓𝟔𝟕𝟖𝟗"),      # mathematical bold
])
def test_digits_from_other_scripts_are_refused(table):
    foreign = VALID.translate(table)
    assert foreign != VALID
    with pytest.raises(errors.InvalidFormatError):
        tckn.validate(foreign)
    # one foreign digit is enough
    mixed = VALID[:5] + VALID[5].translate(table) + VALID[6:]
    assert not tckn.is_valid(mixed)


def test_separators_and_whitespace():
    for s in ("100 000 001 46", "100-000-001-46", "100.000.001.46", " 10000000146\n",
              "1-0.0 00000146"):
        assert tckn.validate(s) == VALID
    for s in ("100_000_001_46", "100/000/001/46", "1000000014 6x", "+10000000146"):
        with pytest.raises(errors.InvalidFormatError):
            tckn.validate(s)


def test_errors_name_the_rule_and_never_the_value():
    cases = {
        "10000000147": (errors.InvalidChecksumError, "checksum"),
        "1000000014": (errors.InvalidLengthError, "length"),
        "100000001466": (errors.InvalidLengthError, "length"),
        "01000000146": (errors.InvalidFormatError, "format"),
        "1000000014a": (errors.InvalidFormatError, "format"),
        "1********46": (errors.MaskedValueError, "masked"),
    }
    for value, (cls, rule) in cases.items():
        with pytest.raises(cls) as info:
            tckn.validate(value)
        assert info.value.rule == rule
        assert isinstance(info.value, ValueError)
        assert value not in str(info.value) and value[:6] not in str(info.value)
        col = info.value.with_column("customers.national_id")
        assert type(col) is cls and "customers.national_id" in str(col)


def test_kind_citizen_and_foreign():
    ykn = "990000001" + tckn.calc_check_digits("990000001")
    assert tckimlik.is_valid(ykn)
    assert tckn.kind(ykn) == "foreign"
    assert tckn.kind(VALID) == "citizen"
    with pytest.raises(errors.InvalidChecksumError):
        tckn.kind("99000000111")


@given(head=st.text(alphabet="0123456789", min_size=9, max_size=9).filter(lambda h: h[0] != "0"),
       seps=st.lists(st.sampled_from(["", " ", "-", ".", "  "]), min_size=12, max_size=12))
def test_formatted_round_trip(head, seps):
    number = head + tckn.calc_check_digits(head)
    formatted = "".join(seps[i] + ch for i, ch in enumerate(number)) + seps[11]
    assert tckn.validate(formatted) == number
    assert tckn.validate(tckn.format(formatted)) == number
    assert tckn.compact(formatted) == number
