"""VKN: agreement with python-stdnum's stdnum.tr.vkn (test-only oracle)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from stdnum.tr import vkn as stdnum_vkn

from piiguard import errors
from piiguard.validators import vkn


def test_agrees_with_stdnum_on_100k_random_strings():
    rng = random.Random(3)
    bad = []
    for _ in range(100_000):
        s = f"{rng.randrange(10**10):010d}"
        if vkn.is_valid(s) != stdnum_vkn.is_valid(s):
            bad.append(s)
    assert bad == []


def test_agrees_with_stdnum_on_100k_valid_numbers():
    rng = random.Random(4)
    for _ in range(100_000):
        head = f"{rng.randrange(10**9):09d}"
        assert vkn.calc_check_digit(head) == stdnum_vkn.calc_check_digit(head)
        s = head + vkn.calc_check_digit(head)
        assert vkn.validate(s) == s


def test_single_digit_substitution_of_check_digit_is_refused():
    s = "1234567890"
    for d in "123456789":
        assert not vkn.is_valid(s[:9] + d)


def test_errors():
    for value, cls in [("1234567891", errors.InvalidChecksumError),
                       ("123456789", errors.InvalidLengthError),
                       ("12345678901", errors.InvalidLengthError),
                       ("12345678９0", errors.InvalidFormatError),
                       ("123456789O", errors.InvalidFormatError),
                       ("123*****90", errors.MaskedValueError)]:
        with pytest.raises(cls) as info:
            vkn.validate(value)
        assert value not in str(info.value)


@given(head=st.text(alphabet="0123456789", min_size=9, max_size=9),
       seps=st.lists(st.sampled_from(["", " ", "-", "."]), min_size=11, max_size=11))
def test_formatted_round_trip(head, seps):
    number = head + vkn.calc_check_digit(head)
    formatted = "".join(seps[i] + ch for i, ch in enumerate(number)) + seps[10]
    assert vkn.validate(formatted) == number == vkn.format(formatted)
