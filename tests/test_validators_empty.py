"""Empty input (or whitespace only) fails the rule ``empty`` in every validator, not
whichever rule the empty string happened to fail first (issue 16: "ASCII digits only"
for a T.C. number, "province rule failed" for an address)."""

from __future__ import annotations

import pytest
from pydantic import BaseModel
from pydantic import ValidationError as PydanticError

from piiguard import errors
from piiguard.kinds import kind
from piiguard.pydantic import Address, Email, NationalId, Phone, TaxId, optional
from piiguard.validators import address, email, name, phone, tckn, vkn

MODULES = {"tckn": tckn, "vkn": vkn, "phone": phone, "email": email, "address": address,
           "name": name}


@pytest.mark.parametrize("mod", sorted(MODULES))
@pytest.mark.parametrize("s", ["", " ", "   ", "\t", "\n", " \t\r\n "])
def test_every_validator_names_the_empty_rule(mod, s):
    m = MODULES[mod]
    with pytest.raises(errors.InvalidLengthError) as info:
        m.validate(s)
    assert info.value.rule == "empty"
    assert "empty" in str(info.value)
    assert m.is_valid(s) is False


@pytest.mark.parametrize("mod", ["tckn", "vkn"])
def test_separators_only_are_empty_too(mod):
    # nothing is left once the separators are gone
    with pytest.raises(errors.InvalidLengthError) as info:
        MODULES[mod].validate(" - . ")
    assert info.value.rule == "empty"


def test_not_empty_but_wrong_keeps_its_rule():
    for m, s, rule in ((tckn, "abc", "format"), (vkn, "12a", "format"),
                       (phone, "abc", "format"), (address, "Foo Cad. No:1, Gotham", "province"),
                       (email, "x", "syntax")):
        with pytest.raises(errors.InvalidInputError) as info:
            m.validate(s)
        assert info.value.rule == rule, m.__name__


def test_the_kinds_use_it():
    for k in ("national_id", "tax_id", "phone", "email", "address", "name"):
        with pytest.raises(errors.InvalidLengthError) as info:
            kind(k).validate("  ")
        assert info.value.rule == "empty"


class Form(BaseModel):
    national_id: optional(NationalId) = None
    tax_id: optional(TaxId) = None
    phone: optional(Phone) = None
    email: optional(Email) = None
    address: optional(Address) = None


@pytest.mark.parametrize("field,prefix", [("national_id", "tckn"), ("tax_id", "vkn"),
                                          ("phone", "phone"), ("email", "email"),
                                          ("address", "address")])
def test_pydantic_error_type_is_prefix_empty(field, prefix):
    with pytest.raises(PydanticError) as info:
        Form(**{field: ""})
    assert info.value.errors()[0]["type"] == f"{prefix}_empty"


def test_names_are_kept_as_written():
    assert name.validate("  McDonald   de la\tCruz ") == "McDonald de la Cruz"
    assert name.validate("S\u0327u\u0308kru\u0308") == "Şükrü"       # NFC
    for bad in ("Ali\x00", "Ali\u200b", "A\x7f"):
        with pytest.raises(errors.InvalidFormatError):
            name.validate(bad)
    with pytest.raises(errors.InvalidLengthError):
        name.validate("a" * 301)
