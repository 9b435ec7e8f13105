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
    assert email.validate("Ali.Veli@Example.COM.TR", lowercase_local=True) == "ali.veli@example.com.tr"
    assert email.validate("ğül@ÖRNEK.com.tr") == "ğül@örnek.com.tr"
    assert email.validate("gu\u0308l@example.com") == "gül@example.com"          # NFC
    assert email.local_part("ali@example.com") == "ali"
    assert email.domain("ali@example.com") == "example.com"


@pytest.mark.parametrize("bad", ["zeynep", "zeynep@", "@example.com", "zeynep veli@example.com",
                                 "zeynep@example", "zeynep@localhost", "zeynep@[127.0.0.1]",
                                 "zeynep@example..com", "zeynep@exa mple.com", "zeynep@example.com\x00",
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
