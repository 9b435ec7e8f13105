"""Role-aware pydantic serialisation: model_dump / model_dump_json by the role in effect."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from piiguard import MaskingPolicy, acting_as
from piiguard.errors import ConfigurationError
from piiguard.masking.view import MaskedStr, is_masked
from piiguard.pydantic import (
    Address,
    Email,
    Masked,
    NationalId,
    Phone,
    TaxId,
    masking,
    optional,
)
from piiguard.pydantic.serialization import current_guard

POLICY = {
    "default": "redact",
    "national_id": {"admin": "reveal", "support": "partial:1:2", "ops": "null"},
    "tax_id": {"admin": "reveal", "support": "partial:0:3"},
    "phone": {"admin": "reveal", "support": "partial:3:2", "analyst": "pseudonym"},
    "address": {"admin": "reveal", "support": "city"},
    "email": {"admin": "reveal", "default": "email"},
    "Lead.national_id": {"support": "redact"},
}
RAW = {"national_id": "100 000 001 46", "tax_id": "1234567890", "phone": "0532 123 45 67",
           "email": "Şükrü.Öz@Örnek.com.tr",
           "address": "Moda Cad. No:5, 34710 Kadıköy/İstanbul"}
CANON = {"national_id": "10000000146", "tax_id": "1234567890", "phone": "+905321234567",
             "email": "Şükrü.Öz@örnek.com.tr",
             "address": "Moda Cad. No:5, 34710 Kadıköy/İstanbul"}


class Customer(BaseModel):
    model_config = ConfigDict(hide_input_in_errors=True)
    national_id: NationalId
    tax_id: TaxId
    phone: Phone
    email: Email
    address: Address


class Lead(BaseModel):
    national_id: NationalId
    phone: optional(Phone) = None


@pytest.fixture
def pguard(guard):
    guard.policy = MaskingPolicy.from_dict(POLICY)
    return guard


def test_without_a_guard_values_serialise_as_they_are(pguard):
    c = Customer(**RAW)
    assert c.model_dump() == CANON
    with acting_as("support"):
        assert c.model_dump() == CANON
        assert json.loads(c.model_dump_json()) == CANON


def test_guard_without_policy_reveals(guard):
    c = Customer(**RAW)
    with masking(guard), acting_as("support"):
        assert c.model_dump() == CANON


@pytest.mark.parametrize("role, expected", [
    ("admin", CANON),
    ("support", {"national_id": "1********46", "tax_id": "*******890", "phone": "+90********67",
                     "email": "Ş***@örnek.com.tr", "address": "KADIKÖY/İSTANBUL"}),
    ("ops", {"national_id": None, "tax_id": "[REDACTED]", "phone": "[REDACTED]",
                 "email": "Ş***@örnek.com.tr", "address": "[REDACTED]"}),
    ("stranger", {"national_id": "[REDACTED]", "tax_id": "[REDACTED]", "phone": "[REDACTED]",
                      "email": "Ş***@örnek.com.tr", "address": "[REDACTED]"}),
    (None, {"national_id": "[REDACTED]", "tax_id": "[REDACTED]", "phone": "[REDACTED]",
                "email": "Ş***@örnek.com.tr", "address": "[REDACTED]"}),
])
def test_dump_by_role(pguard, role, expected):
    c = Customer(**RAW)
    with masking(pguard):
        if role is None:
            dumped, text = c.model_dump(), c.model_dump_json()
        else:
            with acting_as(role):
                dumped, text = c.model_dump(), c.model_dump_json()
    assert dumped == expected
    assert json.loads(text) == expected
    for name, value in dumped.items():
        if value is not None and role != "admin":
            assert is_masked(value)
            assert CANON[name] not in text
    assert c.national_id == "10000000146"      # the model itself still holds the value


def test_role_is_read_at_serialisation_time(pguard):
    with masking(pguard), acting_as("admin"):
        c = Customer(**RAW)                     # built under admin ...
    with masking(pguard), acting_as("support"):
        assert c.model_dump()["national_id"] == "1********46"   # ... shown to support


def test_model_field_rules(pguard):
    with masking(pguard), acting_as("support"):
        assert Lead(national_id="10000000146").model_dump() == {
            "national_id": "[REDACTED]", "phone": None}
        assert Customer(**RAW).model_dump()["national_id"] == "1********46"
        assert Lead(national_id="10000000146", phone="05321234567").model_dump()["phone"] \
            == "+90********67"


def test_context_overrides(pguard):
    c = Customer(**RAW)
    with acting_as("support"):
        assert c.model_dump(context={"piiguard": pguard})["national_id"] == "1********46"
        with masking(pguard):
            assert c.model_dump(context={"piiguard": None}) == CANON
            assert c.model_dump(context={"other": 1})["national_id"] == "1********46"


def test_masked_annotation_binds_a_guard(pguard):
    class Bound(BaseModel):
        national_id: Annotated[NationalId, Masked(pguard)]
        other: Annotated[NationalId, Masked(pguard, column="customers.national_id")]

    b = Bound(national_id="10000000146", other="10000000146")
    with acting_as("support"):
        assert b.model_dump() == {"national_id": "1********46", "other": "1********46"}
    assert b.model_dump() == {"national_id": "[REDACTED]", "other": "[REDACTED]"}
    with pytest.raises(ConfigurationError, match="after a piiguard pydantic type"):
        class Wrong(BaseModel):
            x: Annotated[str, Masked(pguard)]


def test_pseudonym_in_json_is_stable(pguard):
    with masking(pguard), acting_as("analyst"):
        a = Customer(**RAW).model_dump()["phone"]
        b = Lead(national_id="10000000146", phone="+905321234567").model_dump()["phone"]
    assert a == b and a.startswith("psn_")


def test_reveals_are_audited_with_model_field(pguard):
    c = Customer(**RAW)
    with masking(pguard), acting_as("admin", purpose="export"):
        for _ in range(3):
            c.model_dump_json()
    events = [e for e in pguard.audit.last_events if e["action"] == "reveal"]
    per_column = {e["column"]: e["count"] for e in events}
    assert per_column == {f"Customer.{k}": 3 for k in CANON}
    assert {e["purpose"] for e in events} == {"export"}
    assert not any(v in json.dumps(list(events), default=str) for v in CANON.values())


def test_masked_values_pass_validation_and_are_not_masked_twice(pguard):
    with masking(pguard), acting_as("support"):
        masked = Customer(**RAW).model_dump()
        again = Customer.model_validate(masked)          # a response model from masked data
        assert again.national_id == "1********46" and is_masked(again.national_id)
        assert again.model_dump() == masked
    with masking(pguard), acting_as("admin"):
        assert again.model_dump()["national_id"] == "1********46"   # still only the view
    # a plain string that looks masked is input like any other: refused
    with pytest.raises(ValidationError) as info:
        Customer.model_validate({**CANON, "national_id": "1********46"})
    assert "1********46" not in str(info.value)


async def test_concurrent_tasks_serialise_by_their_own_role(pguard):
    c = Customer(**RAW)

    async def task(role):
        async with masking(pguard), acting_as(role):
            out = set()
            for _ in range(10):
                out.add(c.model_dump_json())
                await asyncio.sleep(0)
            return role, {json.loads(o)["national_id"] for o in out}

    results = dict(await asyncio.gather(*(task(r) for r in ("admin", "support", "ops", "x"))))
    assert results == {"admin": {"10000000146"}, "support": {"1********46"}, "ops": {None},
                       "x": {"[REDACTED]"}}


def test_masking_context_manager_and_decorator(pguard):
    assert current_guard() is None
    with masking(pguard):
        assert current_guard() is pguard
        with masking(None):
            assert current_guard() is None
    assert current_guard() is None

    @masking(pguard)
    def dump():
        return Customer(**RAW).model_dump()["phone"]

    with acting_as("support"):
        assert dump() == "+90********67"
    with pytest.raises(ConfigurationError):
        masking(object())


def test_python_mode_keeps_the_marker(pguard):
    with masking(pguard), acting_as("support"):
        dumped = Customer(**RAW).model_dump()
    assert type(dumped["national_id"]) is MaskedStr
