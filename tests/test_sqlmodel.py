"""SQLModel table models with encrypted columns, written as docs/sqlmodel.md shows them:
usable as a FastAPI ``response_model`` (masked by role, sync and async endpoints),
``model_dump()`` masked under a policy, piiguard fields validated at ``model_validate``
with the columns' own validators, no input in validation errors, no value in ``repr``."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Annotated

import pytest

sqlmodel = pytest.importorskip("sqlmodel")
pytest.importorskip("fastapi")
from fastapi import Depends, FastAPI, Header  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from pydantic import ValidationError  # noqa: E402
from sqlalchemy.orm import registry  # noqa: E402
from sqlmodel import Field, Session, SQLModel, select  # noqa: E402

import piiguard.fastapi  # noqa: E402
from piiguard import Guard, MaskingPolicy, acting_as  # noqa: E402
from piiguard.errors import ConfigurationError, InvalidInputError, MaskedValueError  # noqa: E402
from piiguard.pydantic import NationalId, Phone  # noqa: E402
from piiguard.sqlalchemy import (  # noqa: E402
    EncryptedEmail,
    EncryptedNationalId,
    EncryptedPhone,
    EncryptedString,
)

POLICY = {"default": "redact",
          "national_id": {"admin": "reveal", "support": "partial:1:2", "analyst": "pseudonym"},
          "phone": {"admin": "reveal", "support": "partial:3:2", "analyst": "pseudonym"},
          "name": {"admin": "reveal", "support": "partial:1:0"},
          "email": {"admin": "reveal", "support": "email"},
          "search": {"national_id": ["admin", "support"]}}
AYSE = {"name": "Ayşe Yılmaz", "national_id": "10000000146", "phone": "+905321234567",
        "email": "ayse@example.com"}
VIEWS = {
    "admin": AYSE,
    "support": {"name": "A**********", "national_id": "1********46",
                "phone": "+90********67", "email": "a***@example.com"},
    None: dict.fromkeys(AYSE, "[REDACTED]"),
}


def models(guard):
    """The table model as the docs declare it (a registry of its own per test)."""
    class Base(SQLModel, registry=registry()):
        pass

    class Customer(Base, table=True):
        __tablename__ = "customers"
        id: int | None = Field(default=None, primary_key=True)
        name: str = Field(sa_type=EncryptedString(guard, kind="name"))
        national_id: str = Field(sa_type=EncryptedNationalId(guard, searchable=True))
        phone: str = Field(sa_type=EncryptedPhone(guard, mobile_only=True))
        email: str | None = Field(default=None, sa_type=EncryptedEmail(guard))

    return Base, Customer


@pytest.fixture
def world(sqlite_engine, local_kms):
    guard = Guard(kms=local_kms)
    Base, Customer = models(guard)
    Base.metadata.create_all(sqlite_engine)
    guard.bind(sqlite_engine)
    with Session(sqlite_engine) as session:
        session.add(Customer.model_validate(AYSE))
        session.commit()
    guard.policy = MaskingPolicy.from_dict(POLICY)
    return guard, sqlite_engine, Customer


def caller_role(x_role: Annotated[str | None, Header()] = None) -> str | None:
    return x_role


def make_app(guard, engine, Customer):
    app = FastAPI()
    piiguard.fastapi.install(app, guard, role=caller_role)

    def db():
        with Session(engine) as session:
            yield session

    @app.get("/customers/{cid}", response_model=Customer)
    def get_customer(cid: int, session: Session = Depends(db)):  # noqa: B008
        return session.get(Customer, cid)

    @app.get("/async/customers/{cid}", response_model=Customer)
    async def get_customer_async(cid: int, session: Session = Depends(db)):  # noqa: B008
        await asyncio.sleep(0)
        return session.get(Customer, cid)

    @app.get("/customers", response_model=list[Customer])
    def list_customers(session: Session = Depends(db)):  # noqa: B008
        return session.exec(select(Customer)).all()

    return app


@pytest.mark.parametrize("path", ["/customers/1", "/async/customers/1"])
def test_a_table_model_is_a_response_model_masked_by_role(world, path, caplog):
    guard, engine, Customer = world
    caplog.set_level(logging.INFO, logger="piiguard.audit")
    with TestClient(make_app(guard, engine, Customer)) as client:
        for role, view in VIEWS.items():
            r = client.get(path, headers={"X-Role": role} if role else {})
            assert r.status_code == 200, r.text
            assert {k: v for k, v in r.json().items() if k != "id"} == view, role
        r = client.get(path, headers={"X-Role": "analyst"})
        body = r.json()
        assert body["national_id"].startswith("psn_") and body["phone"].startswith("psn_")
        assert body["name"] == body["email"] == "[REDACTED]"
        listed = client.get("/customers", headers={"X-Role": "support"}).json()
        assert [c["national_id"] for c in listed] == ["1********46"]
    # the admin's reveals are audited (one per column), without values
    reveals = [r.piiguard_event for r in caplog.records
               if getattr(r, "piiguard_event", {}).get("action") == "reveal"]
    assert sorted(e["column"] for e in reveals) == [
        "customers.email", "customers.name", "customers.national_id", "customers.phone"]
    assert "10000000146" not in caplog.text and "Ayşe" not in caplog.text


def test_model_dump_under_a_policy_gives_the_roles_view(world):
    guard, engine, Customer = world
    with Session(engine) as session:
        c = session.exec(select(Customer)).one()
        for role, view in VIEWS.items():
            with acting_as(role) if role else _nothing():
                dumped = c.model_dump(exclude={"id"})
                assert dumped == view, role
                assert json.loads(c.model_dump_json(exclude={"id"})) == view
        # even with masking switched off for plain values, a stored value is its view
        assert c.model_dump(context={"piiguard": None})["national_id"] == "[REDACTED]"
        # repr never shows a value
        assert repr(c) == "Customer(id=1)"


def _nothing():
    import contextlib
    return contextlib.nullcontext()


def test_model_validate_uses_the_columns_validators_and_hides_inputs(world):
    guard, engine, Customer = world
    for field, value, error_type in (
            ("national_id", "10000000147", "national_id_checksum"),
            ("phone", "0212 123 45 67", "phone_mobile"),      # the column: mobile_only
            ("email", "x@@example.com", "email_syntax"),
            ("name", "Ay\udcffşe", "name_encoding")):
        with pytest.raises(ValidationError) as ei:
            Customer.model_validate({**AYSE, field: value})
        errors = ei.value.errors()
        assert [e["type"].replace("tckn_", "national_id_") for e in errors] == [error_type]
        assert value not in str(ei.value) and "input_value" not in str(ei.value)
    ok = Customer.model_validate({**AYSE, "national_id": "100 000 001 46",
                                  "phone": "0532 123 45 67"})
    with acting_as("admin"):           # (under the policy, attributes show the view)
        assert (ok.national_id, ok.phone) == ("10000000146", "+905321234567")


def test_a_piiguard_annotation_of_the_same_kind_is_kept(sqlite_engine, local_kms):
    guard = Guard(kms=local_kms)

    class Base(SQLModel, registry=registry()):
        pass

    class Person(Base, table=True):
        id: int | None = Field(default=None, primary_key=True)
        national_id: NationalId = Field(sa_type=EncryptedNationalId(guard))
        phone: Phone | None = Field(default=None, sa_type=EncryptedPhone(guard))

    with pytest.raises(ValidationError) as ei:
        Person.model_validate({"national_id": "10000000147"})
    assert ei.value.errors()[0]["type"] == "tckn_checksum"
    assert Person.model_validate({"national_id": "10000000146"}).phone is None


def test_an_annotation_of_another_kind_is_refused(local_kms):
    guard = Guard(kms=local_kms)

    class Base(SQLModel, registry=registry()):
        pass

    with pytest.raises(ConfigurationError, match="Wrong.phone .*national_id type.*phone"):
        class Wrong(Base, table=True):
            id: int | None = Field(default=None, primary_key=True)
            phone: NationalId = Field(sa_type=EncryptedPhone(guard))


def test_the_constructor_does_not_validate_but_the_flush_refuses(world):
    """SQLModel skips validation in a table model's constructor (its documented
    behaviour): the column refuses at flush, with a piiguard error and no value."""
    guard, engine, Customer = world
    with pytest.raises(InvalidInputError) as ei, Session(engine) as session:
        session.add(Customer(**{**AYSE, "national_id": "10000000147"}))
        session.commit()
    assert ei.value.column == "customers.national_id" and ei.value.rule == "checksum"
    assert "10000000147" not in str(ei.value)
    with pytest.raises(InvalidInputError, match="required") as ei, Session(engine) as s:
        s.add(Customer(**{**AYSE, "name": None}))
        s.commit()
    assert ei.value.column == "customers.name"


def test_updates_write_values_not_views(world):
    guard, engine, Customer = world
    with acting_as("support"), Session(engine) as session:
        c = session.get(Customer, 1)
        c.sqlmodel_update({"phone": "0533 765 43 21"})
        session.add(c)
        session.commit()
        session.refresh(c)
        assert c.phone == "+90********21"
        # a masked view written back is refused (the docs' update recipe dumps input
        # models with context={"piiguard": None})
        with pytest.raises(MaskedValueError):
            c.national_id = c.model_dump()["national_id"]
            session.commit()
        session.rollback()
    with acting_as("admin"), Session(engine) as session:
        c = session.get(Customer, 1)
        assert (c.phone, c.national_id, c.name) == ("+905337654321", "10000000146",
                                                    "Ayşe Yılmaz")


def test_search_by_blind_index_with_select(world):
    guard, engine, Customer = world
    with acting_as("support"), Session(engine) as session:
        found = session.exec(select(Customer).where(
            Customer.national_id == "100 000 001 46")).all()
        assert [c.id for c in found] == [1]
        with pytest.raises(InvalidInputError):
            select(Customer).where(Customer.national_id == "10000000147")
