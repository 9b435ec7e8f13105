"""pydantic types: canonical values, stable error types, no echo, repr, JSON schema."""

from __future__ import annotations

import json
import warnings
from typing import Annotated

import pytest
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from piiguard import errors
from piiguard.pydantic import (
    Address,
    Email,
    EmailOptions,
    MobilePhone,
    NationalId,
    NationalIdValue,
    Phone,
    PhoneOptions,
    PhoneValue,
    TaxId,
    optional,
)

GOOD = {"national_id": "100 000 001 46", "tax_id": "1234567890", "phone": "0532 123 45 67",
        "address": "Bağdat Cad. No:1, 34728 Kadıköy/İstanbul", "email": "Ali@Example.COM"}
CANON = {"national_id": "10000000146", "tax_id": "1234567890", "phone": "+905321234567",
         "address": "Bağdat Cad. No:1, 34728 Kadıköy/İstanbul",    # as written (issue 16)
         "email": "Ali@example.com"}


class Customer(BaseModel):
    model_config = ConfigDict(hide_input_in_errors=True)
    national_id: NationalId
    tax_id: TaxId
    phone: Phone
    address: Address
    email: Email


class Loud(BaseModel):            # no hide_input_in_errors: pydantic echoes input itself
    national_id: NationalId


def test_canonical_plain_str_values():
    c = Customer(**GOOD)
    assert c.model_dump() == CANON
    assert all(type(v) is str for v in c.model_dump().values())
    assert Customer.model_validate_json(c.model_dump_json()) == c


def test_repr_hides_every_field():
    c = Customer(**GOOD)
    for text in (repr(c), str(c)):
        for v in list(CANON.values()) + ["10000000146", "5321234567", "KADIKÖY"]:
            assert v not in text
    assert repr(c) == "Customer()"


@pytest.mark.parametrize("field,value,etype", [
    ("national_id", "10000000147", "tckn_checksum"),
    ("national_id", "1000000014", "tckn_length"),
    ("national_id", "01000000146", "tckn_format"),
    ("national_id", "1000000014٦", "tckn_format"),
    ("national_id", "1********46", "tckn_masked"),
    ("tax_id", "1234567891", "vkn_checksum"),
    ("phone", "+90 599 123 45 67", "phone_number_range"),
    ("phone", "+90 532 123 45 6", "phone_length"),
    ("phone", "0532 ABC 45 67", "phone_format"),
    ("address", "Cumhuriyet Cad. No:5, Gotham", "address_province"),
    ("address", "Cumhuriyet Cad. No:5, 06710 Kadıköy/İstanbul", "address_postal_code"),
    ("email", "zeynep veli@example.com", "email_syntax"),
])
def test_stable_error_types_and_no_echo(field, value, etype):
    data = dict(GOOD, **{field: value})
    with pytest.raises(ValidationError) as info:
        Customer(**data)
    errs = info.value.errors()
    assert [e["type"] for e in errs] == [etype]
    assert errs[0]["loc"] == (field,)
    assert value not in str(info.value) and value not in errs[0]["msg"]
    assert value not in repr(info.value)
    assert value not in info.value.json(include_input=False)


def test_pydantic_echoes_input_unless_hidden():
    with pytest.raises(ValidationError) as info:
        Loud(national_id="10000000147")
    assert "10000000147" in str(info.value)          # why the docs say hide_input_in_errors
    with pytest.raises(ValidationError) as info:
        Customer(**dict(GOOD, national_id="10000000147"))
    assert "10000000147" not in str(info.value)


def test_non_strings_are_refused_with_pydantic_type_errors():
    for bad in (10000000146, None, b"\xff", object()):
        with pytest.raises(ValidationError) as info:
            Customer(**dict(GOOD, national_id=bad))
        assert info.value.errors()[0]["type"] in ("string_type", "string_unicode", "tckn_format")


def test_phone_options_replace_default():
    class M(BaseModel):
        model_config = ConfigDict(hide_input_in_errors=True)
        mobile: Annotated[Phone, PhoneOptions(mobile_only=True)]
        tr_mobile: MobilePhone
        german: Annotated[Phone, PhoneOptions(region="DE")]
        email: Annotated[Email, EmailOptions(lowercase_local=True)]

    m = M(mobile="0532 123 45 67", tr_mobile="+905321234567", german="030 123456",
          email="Ali@Example.com")
    assert (m.mobile, m.tr_mobile, m.german, m.email) == (
        "+905321234567", "+905321234567", "+4930123456", "ali@example.com")
    with pytest.raises(ValidationError) as info:
        M(mobile="0212 345 67 89", tr_mobile="+44 7400 123456", german="030 123456",
          email="a@example.com")
    assert [e["type"] for e in info.value.errors()] == ["phone_mobile", "phone_region"]


def test_options_checked_when_built():
    with pytest.raises(errors.ConfigurationError):
        PhoneOptions(region="XX")
    with pytest.raises(errors.ConfigurationError):
        PhoneOptions(only_region="Türkiye")


def test_optional_and_containers_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")

        class M(BaseModel):
            national_id: optional(NationalId) = None
            phones: Annotated[list[PhoneValue], Field(repr=False)] = []
            other: Annotated[NationalIdValue | None, Field(repr=False)] = None

        m = M(national_id="10000000146", phones=["0532 123 45 67"], other="10000000146")
        assert m.national_id == "10000000146" and m.phones == ["+905321234567"]
        assert "10000000146" not in repr(m) and "532" not in repr(m)
        assert M().national_id is None
        with pytest.raises(ValidationError):
            M(national_id="10000000147")
        assert TypeAdapter(NationalIdValue).validate_python("100 000 001 46") == "10000000146"


def test_json_schema():
    schema = Customer.model_json_schema()
    props = schema["properties"]
    assert props["national_id"]["format"] == "tckn"
    assert props["national_id"]["examples"] == ["10000000146"]
    assert props["phone"]["format"] == "phone"
    assert props["email"]["format"] == "email"
    assert props["address"]["type"] == "string"
    ser = Customer.model_json_schema(mode="serialization")["properties"]
    # Serialised values are canonical or, under a masking policy, masked views
    # ('1********46', null): no pattern in serialization mode (changed by the masking issue).
    assert ser["national_id"]["format"] == "tckn" and "pattern" not in ser["national_id"]
    assert {"type": "null"} in ser["national_id"]["anyOf"]
    # examples are themselves valid
    Customer(**{k: v["examples"][0] for k, v in props.items()})
    json.dumps(schema)


def test_fastapi_openapi():
    fastapi = pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    app = fastapi.FastAPI()

    @app.post("/customers")
    def create(c: Customer) -> dict:
        return {"ok": True}

    client = TestClient(app)
    spec = client.get("/openapi.json").json()
    props = spec["components"]["schemas"]["Customer"]["properties"]
    assert props["national_id"]["format"] == "tckn"
    r = client.post("/customers", json=dict(GOOD, national_id="10000000147"))
    assert r.status_code == 422
    assert r.json()["detail"][0]["type"] == "tckn_checksum"
    # Known and documented: FastAPI's default handler echoes "input" to the client.
    assert r.json()["detail"][0].get("input") in (None, "10000000147")
    assert client.post("/customers", json=GOOD).status_code == 200
