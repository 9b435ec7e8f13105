"""Junk to every validator: is_valid says False, validate raises a piiguard error, nothing
else escapes (the style rule of DESIGN.md)."""

from __future__ import annotations

import importlib

import pytest

from piiguard import errors
from piiguard.validators import address, email, name, phone, tckn, vkn

JUNK = [None, "", " ", 0, 1, 10000000146, 3.5, b"10000000146", bytearray(b"1"), object(),
        [], {}, ("1",), "٣", "３", "²", "⑤", "Ⅻ", "\x00", "1" * 10**6, "10000000146\x00",
        "\x00" * 50, "+\x00905321234567", "\ud800", "\U0001f600", "@", "*", "/", ",", "İ",
        "1" * 11 + "\u200b", "-" * 20, ". , /", "\n\t\r", "ｉｓｔａｎｂｕｌ"]

VALIDATORS = {
    "tckn": (tckn.validate, tckn.is_valid),
    "vkn": (vkn.validate, vkn.is_valid),
    "phone": (phone.validate, phone.is_valid),
    "phone_mobile": (lambda s: phone.validate(s, mobile_only=True, only_region="TR"),
                     lambda s: phone.is_valid(s, mobile_only=True, only_region="TR")),
    "address": (address.validate, address.is_valid),
    "email": (email.validate, email.is_valid),
}
# Names are free text: most junk strings ('@', 'İ', '٣') are someone's name as far as a
# validator can tell, so only the junk no name can be is fed to them.
NAME_JUNK = [j for j in JUNK if not isinstance(j, str) or not j.strip() or "\x00" in j
             or "\ud800" in j or len(j) > 300 or "\u200b" in j]


@pytest.mark.parametrize("junk", NAME_JUNK, ids=lambda j: f"{type(j).__name__}:{str(j)[:12]!r}")
def test_junk_names(junk):
    assert name.is_valid(junk) is False
    with pytest.raises(errors.PIIGuardError) as info:
        name.validate(junk)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("name", sorted(VALIDATORS))
@pytest.mark.parametrize("junk", JUNK, ids=lambda j: f"{type(j).__name__}:{str(j)[:12]!r}")
def test_junk(name, junk):
    validate, is_valid = VALIDATORS[name]
    assert is_valid(junk) is False
    with pytest.raises(errors.PIIGuardError) as info:
        validate(junk)
    assert isinstance(info.value, ValueError)
    if isinstance(junk, str) and len(junk) > 3:
        assert junk not in str(info.value)


@pytest.mark.parametrize("name", ["tckn", "vkn", "phone", "address", "email"])
def test_junk_helpers(name):
    mod = importlib.import_module(f"piiguard.validators.{name}")
    for fn_name in ("compact", "calc_check_digits", "calc_check_digit", "kind", "format",
                    "number_type", "region_of", "province_of", "district_of", "local_part",
                    "domain", "normalize"):
        fn = getattr(mod, fn_name, None)
        if fn is None:
            continue
        for junk in (None, 0, object(), "1" * 10**6, "\x00"):
            try:
                fn(junk)
            except errors.PIIGuardError:
                pass


@pytest.mark.parametrize("name", ["piiguard.validators", "piiguard.validators.tckn",
                                  "piiguard.validators.vkn", "piiguard.validators.phone",
                                  "piiguard.validators.address", "piiguard.validators.email",
                                  "piiguard.validators.name",
                                  "piiguard.pydantic", "piiguard.pydantic.types",
                                  "piiguard.pydantic.serialization",
                                  "piiguard.pydantic.encryption"])
def test_all_is_exact(name):
    mod = importlib.import_module(name)
    assert len(mod.__all__) == len(set(mod.__all__))
    for attr in mod.__all__:
        assert hasattr(mod, attr), attr
    public = {k for k, v in vars(mod).items()
              if not k.startswith("_") and getattr(v, "__module__", None) == name
              and callable(v)}
    assert public <= set(mod.__all__), public - set(mod.__all__)


def test_package_exports_modules():
    import piiguard.validators as v
    assert sorted(v.__all__) == ["address", "email", "name", "phone", "tckn", "vkn"]
    assert v.tckn is tckn and v.phone is phone
