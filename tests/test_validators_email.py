"""E-mail: email-validator behind piiguard errors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from piiguard import errors
from piiguard.validators import email


def test_normalisation():
    assert email.validate("Ali.Veli@Example.COM.TR") == "Ali.Veli@example.com.tr"
    assert email.validate("  Ali.Veli@Example.COM.TR\n") == "Ali.Veli@example.com.tr"
    lowered = email.validate("Ali.Veli@Example.COM.TR", lowercase_local=True)
    assert lowered == "ali.veli@example.com.tr"
    assert email.validate("ğül@ÖRNEK.com.tr") == "ğül@örnek.com.tr"
    assert email.validate("gu\u0308l@example.com") == "gül@example.com"          # NFC
    assert email.local_part("ali@example.com") == "ali"
    assert email.domain("ali@example.com") == "example.com"


@pytest.mark.parametrize("bad", ["zeynep", "zeynep@", "@example.com", "zeynep veli@example.com",
                                 "zeynep@example", "zeynep@localhost", "zeynep@[127.0.0.1]",
                                 "zeynep@example..com", "zeynep@exa mple.com",
                                 "zeynep@example.com\x00",
                                 "zeynep@test.test"])
def test_refused_without_echo(bad):
    assert not email.is_valid(bad)
    with pytest.raises(errors.InvalidInputError) as info:
        email.validate(bad)
    if len(bad) > 4:
        assert bad.strip("\x00") not in str(info.value)
    assert "zeynep" not in str(info.value)


def test_length():
    with pytest.raises(errors.InvalidLengthError):
        email.validate("a" * 250 + "@example.com")
    with pytest.raises(errors.InvalidLengthError):
        email.validate("")


@given(local=st.from_regex(r"[a-zA-Z][a-zA-Z0-9._]{0,20}[a-zA-Z0-9]", fullmatch=True).filter(
           lambda s: ".." not in s and "._" not in s),
       domain=st.sampled_from(["example.com", "Example.COM.tr", "ÖRNEK.com", "mail.example.org"]))
def test_idempotent(local, domain):
    once = email.validate(f"{local}@{domain}")
    assert email.validate(once) == once
    assert email.domain(once) == email.domain(once).lower()
    # email-validator folds RFC 2142 role names (POSTMASTER, WWW …); others keep their case
    assert email.local_part(once).lower() == local.lower()


# --------------------------------------------------------------------------- fast path
# email.validate answers addresses of a strict ASCII form (email._fast) without calling
# email-validator. These tests check that it answers exactly as the full path
# (email._validate_full, i.e. email-validator) does: same result, or the same error.

import string  # noqa: E402

import email_validator  # noqa: E402
import idna  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

_ATEXT = string.ascii_letters + string.digits + "!#$%&'+/=?^_`{|}~-"


def outcome(fn, value, **kw):
    """What a validator does with ``value``: ('ok', result) or the error's class, rule
    and message."""
    try:
        return ("ok", fn(value, **kw))
    except errors.PIIGuardError as exc:
        return (type(exc).__name__, exc.rule, str(exc))


def assert_agrees(value):
    for lower in (False, True):
        assert outcome(email.validate, value, lowercase_local=lower) == outcome(
            email._validate_full, value, lowercase_local=lower), value


atom = st.text(alphabet=_ATEXT, min_size=1, max_size=12)
local_st = st.lists(atom, min_size=1, max_size=4).map(".".join)
label_st = st.from_regex(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,12}[A-Za-z0-9])?", fullmatch=True)
tld_st = st.one_of(st.sampled_from(["com", "tr", "org", "COM", "Tr", "test", "local", "arpa",
                                    "onion", "invalid", "localhost", "example", "io", "museum"]),
                   st.from_regex(r"[A-Za-z]{2,8}", fullmatch=True))
domain_st = st.builds(lambda labels, tld: ".".join([*labels, tld]),
                      st.lists(label_st, min_size=1, max_size=4), tld_st)
fast_form = st.builds(lambda local, dom: f"{local}@{dom}", local_st, domain_st)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fast_form)
def test_fast_path_agrees_with_email_validator(address):
    assert_agrees(address)
    result = email._fast(address)
    if result is not None:                           # the fast path answered: check it
        local, dom = result
        assert email._validate_full(address) == f"{local}@{dom}"
        assert email.validate(address) == f"{local}@{dom}"


# Characters that make an address interesting for email-validator: quoting, IDN,
# combining marks, separators, masks, whitespace, full-width and homoglyph at-signs.
_TRICKY = list('."@-_*<>[]() \\,;:') + ["..", "--", "xn--", "ö", "İ", "ı", "\u0308", "\u200b",
                                        "\u00a0", "＠", "。", "Ａ", "\x00", "\t", "é", "ß", "Ⅻ"]


@st.composite
def near_miss(draw):
    s = draw(fast_form)
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(s)))
        op = draw(st.sampled_from(["insert", "replace", "delete", "upper", "dup"]))
        piece = draw(st.one_of(st.sampled_from(_TRICKY), st.characters(max_codepoint=0x2FFF)))
        if op == "insert":
            s = s[:i] + piece + s[i:]
        elif op == "replace":
            s = s[:i] + piece + s[i + 1:]
        elif op == "delete":
            s = s[:i] + s[i + 1:]
        elif op == "upper":
            s = s[:i] + s[i:i + 1].upper() + s[i + 1:]
        else:
            s = s[:i] + s[i:i + 1] * 2 + s[i:]
    return s


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(near_miss())
def test_near_misses_agree_with_email_validator(address):
    assert_agrees(address)


@settings(max_examples=300, deadline=None)
@given(local=st.integers(1, 70), labels=st.lists(st.integers(1, 66), min_size=1, max_size=5),
       tld=st.integers(2, 64))
def test_length_limits_agree(local, labels, tld):
    # local parts around 64, labels around 63, addresses around 254
    address = "a" * local + "@" + ".".join("b" * n for n in labels) + "." + "c" * tld
    assert_agrees(address)
    if len(address) > email.MAX_LENGTH or local > 64 or max(labels) > 63 or tld > 63:
        assert email._fast(address) is None


FAST = [  # answered by the fast path, with email-validator's result
    ("ali.veli@example.com.tr", "ali.veli@example.com.tr"),
    ("Ali.Veli@Example.COM.TR", "Ali.Veli@example.com.tr"),
    ("  ali@example.com\n", "ali@example.com"),
    ("o'neil+tag=x@mail-1.example.org", "o'neil+tag=x@mail-1.example.org"),
    ("a{b}|c~d^e`f#g$h%i&j!k?l/m@example.com", "a{b}|c~d^e`f#g$h%i&j!k?l/m@example.com"),
    ("_@x.co", "_@x.co"),
    ("ali@x.example", "ali@x.example"),                  # 'example' is not refused
    ("Postmaster@example.com", "postmaster@example.com"),    # RFC 2142 role name folded
    ("INFO@example.com", "info@example.com"),
    ("a" * 64 + "@example.com", "a" * 64 + "@example.com"),
    ("ali@" + "b" * 63 + ".com", "ali@" + "b" * 63 + ".com"),
    ("ali@a-b.com", "ali@a-b.com"),
    ("ali@123.com", "ali@123.com"),
]

SLOW = [  # left to email-validator (accepted or refused there)
    '"ali"@example.com', '"ali veli"@example.com', "ali@xn--rnek-4qa.com", "ali@XN--RNEK-4QA.com",
    "ali@örnek.com.tr", "ğül@example.com", "gu\u0308l@example.com", "ali@example.com.",
    "ali@example..com", "ali..veli@example.com", ".ali@example.com", "ali.@example.com",
    "ali@-example.com", "ali@example-.com", "ali@ex-.ample.com", "ali@ab--cd.com", "ali@a--b.com",
    "ali@localhost", "ali@x.localhost", "ali@x.test", "ali@test", "ali@x.local", "ali@x.arpa",
    "ali@x.onion", "ali@x.invalid", "ali@example", "ali@x.c", "ali@x.c0m", "ali@x.co-m",
    "ali@1.2.3.4", "ali@[1.2.3.4]", "ali@[IPv6:::1]", "Ali <ali@example.com>", "<ali@example.com>",
    "a" * 65 + "@example.com", "a" * 64 + "@" + "b" * 64 + ".com",
    "a" * 64 + "@" + ".".join(["b" * 60] * 4) + ".com", "ali@exa_mple.com", "ali@exa mple.com",
    "ali＠example.com", "ali@example。com", "ali@ＥＸＡＭＰＬＥ.com", "a***@example.com",
    "ali*@example.com",
    "ali@example.com\x00", "ali\u200b@example.com", "ali@", "@example.com", "ali", "", " ",
    "ali@@example.com", "ali@example@com", "ali(comment)@example.com", "ali\\@example.com",
]


@pytest.mark.parametrize("address,expected", FAST)
def test_fast_table(address, expected):
    assert email._fast(address.strip()) is not None
    assert email.validate(address) == expected == email._validate_full(address)
    assert_agrees(address)


@pytest.mark.parametrize("address", SLOW)
def test_slow_table(address):
    assert email._fast(address.strip()) is None
    assert_agrees(address)


def test_tricky_results():
    # A few of the slow ones, spelled out (what email-validator does with them).
    assert email.validate("ali@XN--RNEK-4QA.com") == "ali@örnek.com"
    assert email.validate("ali@a--b.com") == "ali@a--b.com"
    assert email.validate("ali@x.c") == "ali@x.c"
    assert email.validate("a" * 65 + "@example.com") == "a" * 65 + "@example.com"   # not strict
    for bad in ("ali@x.test", "ali@localhost", '"ali"@example.com', "ali@ab--cd.com", "ali@x.arpa",
                "ali@example.com.", "a***@example.com"):
        assert not email.is_valid(bad), bad


def test_uts46_maps_ascii_hostname_characters_to_lower_case():
    # The fast path lower-cases ASCII domains instead of calling idna.uts46_remap.
    for c in string.ascii_letters + string.digits + "-.":
        assert idna.uts46_remap(c, std3_rules=False, transitional=False) == c.lower()
    mapped = idna.uts46_remap("Mail-1.Example.COM", std3_rules=False, transitional=False)
    assert mapped == "mail-1.example.com"


def test_fast_path_follows_email_validator_settings(monkeypatch):
    # SPECIAL_USE_DOMAIN_NAMES is part of email-validator's API; users may change it.
    names = [*email_validator.SPECIAL_USE_DOMAIN_NAMES, "corp"]
    monkeypatch.setattr(email_validator, "SPECIAL_USE_DOMAIN_NAMES", names)
    assert email._fast("ali@x.corp") is None and not email.is_valid("ali@x.corp")
    names.append("example.com")                       # a name with a dot: suffix check
    for address in ("ali@example.com", "ali@mail.example.com", "ali@notexample.com", "ali@x.com"):
        assert_agrees(address)
    assert not email.is_valid("ali@mail.example.com") and email.is_valid("ali@notexample.com")
    monkeypatch.setattr(email_validator, "SPECIAL_USE_DOMAIN_NAMES", [])
    assert email.validate("ali@x.test") == "ali@x.test" == email._validate_full("ali@x.test")
    # Settings that only widen what email-validator accepts never change a fast answer.
    for attr, value in (("TEST_ENVIRONMENT", True), ("GLOBALLY_DELIVERABLE", False),
                        ("STRICT", True), ("ALLOW_SMTPUTF8", False), ("ALLOW_QUOTED_LOCAL", True)):
        monkeypatch.setattr(email_validator, attr, value)
        for address, _ in FAST:
            assert_agrees(address)
