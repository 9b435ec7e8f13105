"""Mask functions: each mask on each kind, Turkish letters, pseudonym keys, custom masks."""

from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from piiguard.errors import ConfigurationError, PolicyError
from piiguard.masking.masks import (
    PSEUDONYM_PREFIX,
    REDACTED,
    Mask,
    custom,
    parse_spec,
    partial,
)
from piiguard.masking.view import MaskedStr
from piiguard.validators import address, email, phone, tckn

# Canonical sample values per kind (synthetic; the T.C. number is built with its checksum).
SAMPLES = {
    "national_id": "10000000146",
    "tax_id": "1234567890",
    "phone": "+905321234567",
    "address": address.validate("Şişli Mah. Çınar Sk. No:3 D:5, 34394 Şişli/İstanbul"),
    "email": email.validate("Şükrü.Öztürk@Örnek.com.tr"),
    "name": "Şükrü Ğüleç İnce",
    "text": "Iğdır'da çalışıyor; ÖZEL NOT",
}
ALL_SPECS = ["reveal", "redact", "null", "partial:1:2", "partial:0:2", "partial:3:2",
             "email", "city", "city:province", "pseudonym", "pseudonym:analytics"]


def _never(*_a, **_k):
    raise AssertionError("plaintext was read")


@pytest.fixture
def pguard(guard):
    return guard


def test_samples_are_canonical():
    assert tckn.validate(SAMPLES["national_id"]) == SAMPLES["national_id"]
    assert phone.validate(SAMPLES["phone"]) == SAMPLES["phone"]
    assert SAMPLES["address"] == "ŞİŞLİ MAH. ÇINAR SK. NO:3 D:5, 34394 ŞİŞLİ/İSTANBUL"
    assert SAMPLES["email"] == "Şükrü.Öztürk@örnek.com.tr"


@pytest.mark.parametrize("kind", sorted(SAMPLES))
@pytest.mark.parametrize("spec", ALL_SPECS)
def test_each_mask_on_each_kind(spec, kind, pguard):
    value = SAMPLES[kind]
    mask = parse_spec(spec)
    out = mask(value, kind=kind, guard=pguard, column=f"t.{kind}")
    if spec == "reveal":
        assert out == value and type(out) is str
        return
    if spec == "null":
        assert out is None
        return
    assert type(out) is MaskedStr
    assert out != value and value not in out
    if spec == "redact":
        assert out == REDACTED
    elif spec.startswith("partial:"):
        first, last = map(int, spec.split(":")[1:])
        assert len(out) == len(value)
        assert out[:first] == value[:first]
        assert out[len(out) - last:] == value[len(value) - last:]
        assert set(out[first:len(out) - last]) == {"*"}
    elif spec == "email":
        if kind == "email":
            assert out == "Ş***@örnek.com.tr"
        else:
            assert out == REDACTED  # fails closed on a value that is no e-mail address
    elif spec.startswith("city"):
        if kind == "address":
            assert out == ("ŞİŞLİ/İSTANBUL" if spec == "city" else "İSTANBUL")
        else:
            assert out == REDACTED
    elif spec.startswith("pseudonym"):
        assert re.fullmatch(PSEUDONYM_PREFIX + "[a-z2-7]{26}", out)


def test_partial_examples():
    assert partial(1, 2)("10000000146", kind="national_id") == "1********46"
    # The '+90*******67' has 7 stars; on the 13-character E.164 form partial:3:2
    # hides 8 characters: stars are counted on the canonical value.
    assert partial(3, 2)("+905321234567", kind="phone") == "+90********67"
    assert partial(0, 2)("+905321234567", kind="phone") == "*" * 11 + "67"
    assert partial(0, 0)("abc", kind="text") == "***"
    assert partial(2, 0)("Şükrü", kind="name") == "Şü***"


def test_partial_counts_characters_not_bytes_or_combining_marks():
    decomposed = unicodedata.normalize("NFD", "Şükrü")   # S + cedilla, u + diaeresis ...
    assert len(decomposed) == 8
    out = partial(1, 1)(decomposed, kind="name")
    assert out == "Ş***ü" and len(out) == 5
    assert partial(1, 1)("İğdır", kind="name") == "İ***r"


def test_partial_never_shows_a_whole_short_value():
    assert partial(1, 2)("abc", kind="text") == "***"
    assert partial(1, 2)("ab", kind="text") == "**"
    assert partial(5, 5)("", kind="text") == ""


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=40), st.integers(0, 6), st.integers(0, 6))
def test_partial_property(value, first, last):
    v = unicodedata.normalize("NFC", value)
    out = partial(first, last)(value, kind="text")
    assert isinstance(out, MaskedStr) and len(out) == len(v)
    if len(v) <= first + last:
        assert out == "*" * len(v)
    else:
        hidden = len(v) - first - last
        assert out == v[:first] + "*" * hidden + v[len(v) - last:]


@pytest.mark.parametrize("value, expected", [
    ("ali@example.com", "a***@example.com"),
    ("a@example.com", "a***@example.com"),          # the length of the local part is hidden
    ("ğül.şen@örnek.com.tr", "ğ***@örnek.com.tr"),
    ("İlkay@example.com", "İ***@example.com"),
    ("\"a@b\"@example.com", "\"***@example.com"),   # the last @ separates the domain
    ("not-an-address", REDACTED),
    ("@example.com", REDACTED),
])
def test_email_mask(value, expected):
    assert parse_spec("email")(value, kind="email") == expected


def test_email_mask_normalises_decomposed_local_part():
    value = unicodedata.normalize("NFD", "şule@example.com")
    assert parse_spec("email")(value, kind="email") == "ş***@example.com"


@pytest.mark.parametrize("raw, city, province", [
    ("Atatürk Mah. Cumhuriyet Cad. No: 5 D: 3, 34710 Kadıköy / İstanbul",
     "KADIKÖY/İSTANBUL", "İSTANBUL"),
    ("Kızılay Mah. Atatürk Blv. No:1, 06420 Çankaya/Ankara", "ÇANKAYA/ANKARA", "ANKARA"),
    ("Bağdat Cad. No:1, İzmir", "İZMİR", "İZMİR"),
    ("çarşı mah. no:1, 63000 eyyübiye/şanlıurfa", "EYYÜBİYE/ŞANLIURFA", "ŞANLIURFA"),
    ("Iğdır Cad. No:2, 76000 Merkez/Iğdır", "MERKEZ/IĞDIR", "IĞDIR"),
])
def test_city_mask_on_turkish_addresses(raw, city, province):
    canonical = address.validate(raw)
    assert parse_spec("city")(canonical, kind="address") == city
    assert parse_spec("city:province")(canonical, kind="address") == province
    # nothing of the street line is shown
    street = canonical.split(", ")[0]
    assert street not in parse_spec("city")(canonical, kind="address")


def test_city_mask_fails_closed_on_garbage():
    assert parse_spec("city")("Gotham City", kind="address") == REDACTED
    assert parse_spec("city")("", kind="address") == REDACTED


def test_no_plaintext_masks_ignore_the_value():
    for spec in ("redact", "null"):
        m = parse_spec(spec)
        assert m.needs_plaintext is False
        assert m(None, kind="national_id") == (None if spec == "null" else REDACTED)
        assert m("10000000146", kind="national_id") == (None if spec == "null" else REDACTED)
    for spec in ALL_SPECS:
        if spec not in ("redact", "null"):
            assert parse_spec(spec).needs_plaintext is True


def test_masks_pass_null_through():
    for spec in ALL_SPECS:
        if spec not in ("redact",):
            assert parse_spec(spec)(None, kind="phone") is None


# ----------------------------------------------------------------------------- pseudonym

def test_pseudonym_is_stable_keyed_and_separate(guard):
    m = parse_spec("pseudonym")
    a1 = m("10000000146", kind="national_id", guard=guard)
    a2 = m("10000000146", kind="national_id", guard=guard, column="other.table")
    b = m("10000000154", kind="national_id", guard=guard)
    assert a1 == a2 != b
    assert re.fullmatch(r"psn_[a-z2-7]{26}", a1)
    # another kind and another scope give other tokens for the same characters
    assert m("10000000146", kind="text", guard=guard) != a1
    assert parse_spec("pseudonym:analytics")("10000000146", kind="national_id",
                                             guard=guard) != a1
    # its key is of kind 'pseudonym', separate from DEKs and blind-index keys
    infos = guard.keys.keys()       # KeyManager.keys(): the key table rows
    assert "pseudonym" in {k.kind for k in infos}
    pkeys = [k for k in infos if k.kind == "pseudonym"]
    assert {k.scope for k in pkeys} == {"default", "analytics"}
    other_ids = {k.id for k in infos if k.kind != "pseudonym"}
    assert not other_ids & {k.id for k in pkeys}
    # stable across a cache clear (the key is unwrapped again from the key table)
    guard.keys.clear_cache()
    assert m("10000000146", kind="national_id", guard=guard) == a1


def test_pseudonym_keys_are_created_when_the_policy_is_set(guard):
    from piiguard import MaskingPolicy

    def pseudonym_scopes():
        return {k.scope for k in guard.keys.keys() if k.kind == "pseudonym"}

    assert pseudonym_scopes() == set()
    guard.policy = MaskingPolicy.from_dict({"phone": {"a": "pseudonym:bi",
                                                      "b": "pseudonym"}})
    assert pseudonym_scopes() == {"bi", "default"}      # at configuration, not mid-read


def test_pseudonym_differs_between_guards_with_different_keys(sqlite_engine, tmp_path):
    from sqlalchemy import create_engine

    from piiguard import Guard, LocalKMS

    g1 = Guard(kms=LocalKMS.generate()).bind(sqlite_engine)
    g2 = Guard(kms=LocalKMS.generate()).bind(create_engine(f"sqlite:///{tmp_path / 'b.db'}"))
    m = parse_spec("pseudonym")
    assert m("10000000146", kind="national_id", guard=g1) != \
        m("10000000146", kind="national_id", guard=g2)


def test_pseudonym_needs_a_guard():
    with pytest.raises(ConfigurationError, match="needs a Guard"):
        parse_spec("pseudonym")("10000000146", kind="national_id")


# ----------------------------------------------------------------------------- custom

def test_custom_masks():
    last4 = custom("last4", lambda v: "…" + v[-4:])
    assert last4("+905321234567", kind="phone") == "…4567"
    assert type(last4("+905321234567", kind="phone")) is MaskedStr
    seen = []
    kinded = custom("kinded", lambda v, *, kind: seen.append(kind) or f"<{kind}>")
    assert kinded("x", kind="email") == "<email>" and seen == ["email"]
    blind = custom("blind", lambda v: f"len? {v}", needs_plaintext=False)
    assert blind("secret", kind="text") == "len? None"
    bad = custom("bad", lambda v: 42)
    with pytest.raises(ConfigurationError, match="returned a int"):
        bad("x", kind="text")
    assert custom("dropper", lambda v: None)("x", kind="text") is None


@pytest.mark.parametrize("name", ["reveal", "partial", "pseudonym", "", "1abc", "a b",
                                  "x" * 65, None])
def test_custom_mask_names_refused(name):
    with pytest.raises(PolicyError):
        custom(name, lambda v: v)


def test_custom_mask_must_be_callable():
    with pytest.raises(PolicyError, match="not callable"):
        custom("m", "not a function")


@pytest.mark.parametrize("spec, message", [
    ("blur", "unknown mask 'blur'"),
    ("partial", "partial takes two numbers"),
    ("partial:1", "partial takes two numbers"),
    ("partial:1:2:3", "partial takes two numbers"),
    ("partial:a:b", "whole numbers"),
    ("partial:-1:2", "whole numbers"),
    ("partial:1:999", "whole numbers"),
    ("partial:١:2", "whole numbers"),            # Arabic-Indic digit
    ("redact:1", "redact takes no arguments"),
    ("pseudonym:", "key scope"),
    ("pseudonym:a b", "key scope"),
    (3, "a mask is a string"),
    (None, "a mask is a string"),
])
def test_bad_specs(spec, message):
    with pytest.raises(PolicyError, match=re.escape(message)):
        parse_spec(spec)


def test_mask_identity_and_repr():
    assert parse_spec("partial:1:2") == parse_spec(" partial:1:2 ")
    assert repr(parse_spec("redact")) == "Mask('redact')"
    assert isinstance(parse_spec("reveal"), Mask) and parse_spec("reveal").is_reveal
