"""Phone numbers: agreement with phonenumbers, and the TR fast path with the full parse."""

from __future__ import annotations

import random

import phonenumbers
import pytest
from hypothesis import given
from hypothesis import strategies as st

from piiguard import errors
from piiguard.validators import phone

E164 = phonenumbers.PhoneNumberFormat.E164


def reference(s: str, region: str | None = "TR") -> str | None:
    """What phonenumbers itself says: E.164 of a valid number, else None."""
    try:
        n = phonenumbers.parse(s, region)
    except phonenumbers.NumberParseException:
        return None
    return phonenumbers.format_number(n, E164) if phonenumbers.is_valid_number(n) else None


TURKISH_FORMATS = [
    "0532 123 45 67", "05321234567", "+90 (532) 123-45-67", "5321234567", "905321234567",
    "+905321234567", "+90 532 123 45 67", "0 (532) 123 45 67", "0532-123-45-67",
    "0532.123.45.67", "(0532) 123 45 67", "+90-532-123-4567", "00905321234567",
    "0090 532 123 45 67", "  +90 532 1234567  ", "0212 345 67 89", "02123456789",
    "+90 212 345 67 89", "(212) 345 67 89", "0312 123 45 67", "0850 123 45 67",
    "0800 123 45 67", "0900 123 45 67", "444 1 444", "0505 123 45 67", "0542 123 45 67",
    "0555 123 45 67", "+90 216 123 45 67", "0232 123 45 67", "+90 850 123 45 67",
    "0512 123 45 67", "0592 211 12 34", "+90 0532 123 45 67",
]
INVALID = ["+90 599 123 45 67", "0599 123 45 67", "+90 532 123 45 6", "+90 532 123 45 678",
           "0532 123 45", "+90 100 123 45 67", "12", "+999 123 456",
           "0000000000", "+90", "5"]


@pytest.mark.parametrize("s", TURKISH_FORMATS)
def test_agrees_with_phonenumbers_e164_on_turkish_formats(s):
    expected = reference(s)
    assert expected is not None, s
    assert phone.validate(s) == expected
    assert phone.is_valid(s)


@pytest.mark.parametrize("s", INVALID)
def test_refuses_what_phonenumbers_finds_invalid(s):
    assert reference(s) is None
    assert not phone.is_valid(s)
    with pytest.raises(errors.InvalidInputError) as info:
        phone.validate(s)
    assert info.value.rule in {"format", "length", "number_range", "country_code"}
    digits = "".join(c for c in s if c.isdigit())
    if len(digits) >= 4:
        assert digits not in str(info.value)


def test_the_four_spellings_in_the_issue():
    for s in ("0532 123 45 67", "+90 (532) 123-45-67", "5321234567", "905321234567"):
        assert phone.validate(s) == "+905321234567"


def test_number_types():
    assert phone.number_type("+905321234567") == "mobile"
    assert phone.number_type("0212 345 67 89") == "fixed_line"
    assert phone.number_type("0850 123 45 67") == "voip"
    assert phone.number_type("0800 123 45 67") == "toll_free"
    assert phone.number_type("0900 123 45 67") == "premium_rate"
    assert phone.number_type("+44 7400 123456") == "mobile"


def test_options():
    assert phone.validate("+44 20 7946 0958") == "+442079460958"
    with pytest.raises(errors.InvalidComponentError) as info:
        phone.validate("+44 20 7946 0958", only_region="TR")
    assert info.value.rule == "region"
    assert phone.validate("+44 20 7946 0958", only_region="GB") == "+442079460958"
    with pytest.raises(errors.InvalidComponentError) as info:
        phone.validate("+905321234567", only_region="GB")
    assert info.value.rule == "region"
    with pytest.raises(errors.InvalidComponentError) as info:
        phone.validate("+902123456789", mobile_only=True)
    assert info.value.rule == "mobile"
    assert phone.validate("+905321234567", mobile_only=True) == "+905321234567"
    assert phone.validate("030 123456", region="DE") == "+4930123456"
    with pytest.raises(errors.InvalidComponentError):
        phone.validate("0532 123 45 67", region=None)     # no region, no +: no country
    with pytest.raises(errors.ConfigurationError):
        phone.validate("+905321234567", region="XX")
    with pytest.raises(errors.ConfigurationError):
        phone.is_valid("+905321234567", only_region="XX")


def test_refused_characters():
    for s in ("0532 ABC 45 67", "+90 532 123 45 67 ext. 12", "tel:+90-532-123-4567",
              "+90 532 123 45 67#12", "＋90 532 123 45 67", "٠٥٣٢١٢٣٤٥٦٧", "0532 123 45 6７",
              "+90 532 1*** ** 67", "+90\x00532 123 45 67"):
        assert not phone.is_valid(s)
        with pytest.raises(errors.InvalidInputError):
            phone.validate(s)


def _outcome(fn, *args):
    try:
        return fn(*args)
    except errors.InvalidInputError as exc:
        return (type(exc), exc.rule)


def _fast_or_slow(s: str, region: str = "TR"):
    return phone._check(s, region)


def _shapes(nsn: str) -> list[str]:
    return [
        "+90" + nsn, "0" + nsn, nsn, "90" + nsn,
        f"+90 {nsn[:3]} {nsn[3:6]} {nsn[6:8]} {nsn[8:]}",
        f"0 ({nsn[:3]}) {nsn[3:6]}-{nsn[6:8]}-{nsn[8:]}",
        f"({nsn[:3]}) {nsn[3:6]} {nsn[6:]}",
    ]


def test_fast_path_agrees_with_full_parse_on_every_prefix():
    """Every 3-digit national prefix (000-999), random subscriber digits, several spellings:
    the fast path (where it answers) gives exactly the full parse's number, type and region,
    and validate() (hot path included) equals phonenumbers' own E.164 verdict."""
    assert phone._FAST is not None, "fast path disabled: TR metadata changed shape"
    rng = random.Random(90)
    fast_hits = 0
    for prefix in range(1000):
        per_prefix = 8 if f"{prefix:03d}".startswith("5") else 2
        for _ in range(per_prefix):
            nsn = f"{prefix:03d}{rng.randrange(10**7):07d}"
            for s in _shapes(nsn):
                fast = phone._fast(s, "TR")
                slow = _outcome(phone._slow, s, "TR")
                if fast is not None:
                    fast_hits += 1
                    assert fast == slow, s
                assert _outcome(_fast_or_slow, s) == slow, s
            canonical = "+90" + nsn
            expected = reference(canonical)
            got = _outcome(phone.validate, canonical)
            assert (got if isinstance(got, str) else None) == expected, canonical
            for mobile_only in (True, False):
                fast_v = _outcome(lambda c=canonical, m=mobile_only: phone.validate(
                    c, mobile_only=m))
                slow_v = _outcome(lambda c=canonical, m=mobile_only: phone._apply_options(
                    phone._slow(c, "TR"), None, m))
                assert fast_v == slow_v, (canonical, mobile_only)
    assert fast_hits > 2_000


def test_fast_path_covers_mobile_ranges_exhaustively_by_block():
    """Every 5XXYY block of mobile-looking numbers (10,000 blocks, one random number each):
    hot path == full parse."""
    rng = random.Random(5)
    for block in range(500_00, 600_00, 1):
        nsn = f"{block:05d}{rng.randrange(10**5):05d}"
        canonical = "+90" + nsn
        hot = _outcome(phone.validate, canonical)
        slow = _outcome(lambda c=canonical: phone._slow(c, "TR").e164)
        assert hot == slow, canonical


@given(nsn=st.sampled_from(["5321234567", "2123456789", "8501234567", "5051234567",
                            "3121234567", "8001234567"]),
       seps=st.lists(st.sampled_from(["", " ", "-", ".", "(", ")", "/", "  "]),
                     min_size=11, max_size=11),
       lead=st.sampled_from(["+90", "0", "", "90", "0090"]))
def test_formatted_round_trip_and_agreement(nsn, seps, lead):
    s = lead + "".join(seps[i] + c for i, c in enumerate(nsn)) + seps[10]
    assert _outcome(_fast_or_slow, s) == _outcome(phone._slow, s, "TR")
    expected = reference(s)
    got = _outcome(phone.validate, s)
    assert (got if isinstance(got, str) else None) == expected
    if expected is not None:
        assert phone.validate(phone.format(s)) == expected
        assert phone.validate(phone.format(s, "national")) == expected


def test_format_and_region():
    assert phone.format("05321234567") == "+90 532 123 45 67"
    assert phone.format("05321234567", "national") == "0532 123 45 67"
    assert phone.format("05321234567", "e164") == "+905321234567"
    assert phone.region_of("+4930123456") == "DE"
    with pytest.raises(errors.ConfigurationError):
        phone.format("05321234567", "weird")


@pytest.mark.parametrize("s", ["+90532123456\u0667", "+90\uff15321234567", "+905321234567\n",
                               "+9005321234567", "+90532123456", "+9053212345678"])
def test_hot_path_takes_only_ten_ascii_digits(s):
    # The E.164 hot path is one regex (re.ASCII); anything else is the full parse's call.
    assert phone._E164_TR(s) is None
    assert _outcome(phone.validate, s) == _outcome(lambda: phone._apply_options(
        phone._slow(s, "TR"), None, False))


# Every separator the module accepts, tab and the no-break spaces included (issue 16: the
# fast path took '0501\t2345678' while the full parse refused '0900\t123 45 67').
SEPARATORS = ["", " ", "\t", "\u00a0", "\u202f", "\u2007", "-", ".", "(", ")", "/", "  ",
              " - ", "\t\t"]


def _as_spaces(s: str) -> str:
    return s.replace("\t", " ").replace("\u00a0", " ").replace("\u202f", " ").replace(
        "\u2007", " ")


@given(nsn=st.from_regex(r"\A[0-9]{10}\Z"),
       seps=st.lists(st.sampled_from(SEPARATORS), min_size=11, max_size=11),
       lead=st.sampled_from(["+90", "0", "", "90", "0090", "+90 ", "0 ", "\t+90"]))
def test_fast_path_agrees_with_full_rules_on_every_separator(nsn, seps, lead):
    s = lead + "".join(seps[i] + c for i, c in enumerate(nsn)) + seps[10]
    slow = _outcome(phone._slow, s, "TR")
    fast = phone._fast(s, "TR")
    if fast is not None:
        assert fast == slow, repr(s)
    assert _outcome(_fast_or_slow, s) == slow, repr(s)
    got = _outcome(phone.validate, s)
    # and both say what phonenumbers says of the text with its separators as spaces
    assert (got if isinstance(got, str) else None) == reference(_as_spaces(s)), repr(s)


@given(s=st.text(alphabet="0123456789+ \t\u00a0-.()/*9", max_size=24))
def test_fast_path_agrees_with_full_rules_on_any_text_of_the_alphabet(s):
    fast = phone._fast(s, "TR")
    slow = _outcome(phone._slow, s, "TR")
    if fast is not None:
        assert fast == slow, repr(s)
    assert _outcome(_fast_or_slow, s) == slow, repr(s)


@pytest.mark.parametrize("s", ["0501\t2345678", "0900\t123 45 67", "0532\u00a0123\u00a045\u00a067",
                               "+90\t532\t123\t45\t67", "0532\u202f123 45 67"])
def test_tab_and_no_break_space_are_separators_on_both_paths(s):
    assert phone.validate(s) == reference(_as_spaces(s)) is not None
    assert phone._slow(s, "TR").e164 == phone.validate(s)


@pytest.mark.parametrize("s", ["", " ", "\t", "\u00a0 "])
def test_empty_input_has_its_own_rule(s):
    with pytest.raises(errors.InvalidLengthError) as info:
        phone.validate(s)
    assert info.value.rule == "empty"
