"""Customers with SQLModel: one table model, encrypted columns, responses masked by role.

Run it::

    PIIGUARD_EXAMPLE_DIR=/tmp/pg-sqlmodel uvicorn examples.sqlmodel_app.app:app

The table model ``Customer`` is both what is stored (its PII fields are encrypted
columns: ``Field(sa_type=EncryptedNationalId(guard, searchable=True))``) and what is
returned (``response_model=Customer``): piiguard validates its fields with the columns'
validators at ``model_validate``, and dumps each as the view the caller's role may see
(policy.toml). The input models use the piiguard pydantic types, so a bad T.C. number is
a 422 naming the rule, never the value. The role comes from ``Authorization: Bearer
<token>`` (tokens in :data:`TOKENS`); :func:`piiguard.fastapi.install` puts it in effect
for every request, answers errors without values and closes the Guard at shutdown.
Search is ``POST /customers/search`` with the number in the body: never put PII in a URL
(access logs, proxies, browser history and ``Referer`` headers keep URLs).
"""

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, status
from pydantic import ConfigDict
from sqlalchemy.orm import registry
from sqlmodel import Field, Session, SQLModel, create_engine, select

import piiguard.fastapi
from piiguard import Guard, LocalKMS, MaskingPolicy
from piiguard.pydantic import Email, NationalId, Phone, optional
from piiguard.sqlalchemy import (
    EncryptedEmail,
    EncryptedNationalId,
    EncryptedPhone,
    EncryptedString,
)

HERE = Path(__file__).parent
#: Demo bearer tokens and the role each one carries.
TOKENS = {"admin-token": "admin", "support-token": "support", "analyst-token": "analyst"}


# --------------------------------------------------------------------------- input models

class CustomerCreate(SQLModel):
    model_config = ConfigDict(hide_input_in_errors=True, extra="forbid")
    name: str = Field(min_length=1, max_length=200, repr=False)
    national_id: NationalId
    phone: Phone
    email: optional(Email) = None


class CustomerUpdate(SQLModel):
    model_config = ConfigDict(hide_input_in_errors=True, extra="forbid")
    name: str | None = Field(None, min_length=1, max_length=200, repr=False)
    phone: optional(Phone) = None
    email: optional(Email) = None


class CustomerSearch(SQLModel):
    model_config = ConfigDict(hide_input_in_errors=True, extra="forbid")
    national_id: NationalId


# --------------------------------------------------------------------------- the app

def _table_model(guard: Guard) -> tuple[Any, Any]:
    # (a registry of its own, so that tests can build several apps in one process; an
    # application declares its table models once, at module level, on SQLModel itself)
    class Base(SQLModel, registry=registry()):
        pass

    class Customer(Base, table=True):
        __tablename__ = "customers"
        id: int | None = Field(default=None, primary_key=True)
        name: str = Field(sa_type=EncryptedString(guard, kind="name"))
        national_id: str = Field(sa_type=EncryptedNationalId(guard, searchable=True))
        phone: str = Field(sa_type=EncryptedPhone(guard))
        email: str | None = Field(default=None, sa_type=EncryptedEmail(guard))

    return Base.metadata, Customer


def create_app(*, data_dir: str | os.PathLike[str] | None = None,
               database_url: str | None = None,
               policy: MaskingPolicy | None = None) -> FastAPI:
    """Build the service; tests pass their own directory, database or policy."""
    data = Path(data_dir or os.environ.get("PIIGUARD_EXAMPLE_DIR")
                or tempfile.mkdtemp(prefix="piiguard-sqlmodel-"))
    data.mkdir(parents=True, exist_ok=True)
    guard = Guard(kms=LocalKMS.from_file(data / "master.key", create=True))
    guard.policy = policy or MaskingPolicy.from_toml(HERE / "policy.toml")
    metadata, Customer = _table_model(guard)
    engine = create_engine(database_url or f"sqlite:///{data / 'customers.db'}",
                           hide_parameters=True)
    metadata.create_all(engine)
    guard.bind(engine)

    def caller_role(authorization: Annotated[str | None, Header()] = None) -> str | None:
        if authorization is None:
            return None                      # no role: the policy's default (redact)
        scheme, _, token = authorization.partition(" ")
        role = TOKENS.get(token.strip()) if scheme.lower() == "bearer" else None
        if role is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "unknown bearer token")
        return role

    def db() -> Iterator[Session]:
        with Session(engine) as session:
            yield session

    DB = Annotated[Session, Depends(db)]

    app = FastAPI(title="piiguard SQLModel example")
    piiguard.fastapi.install(app, guard, role=caller_role)
    app.state.guard, app.state.engine, app.state.Customer = guard, engine, Customer

    def found(session: Session, customer_id: int) -> Any:
        customer = session.get(Customer, customer_id)
        if customer is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such customer")
        return customer

    @app.post("/customers", status_code=201, response_model=Customer)
    def create_customer(body: CustomerCreate, session: DB) -> Any:
        # context={"piiguard": None}: the values as given; inside a request, a plain
        # model_dump() gives the caller's masked view, which the columns refuse to store
        customer = Customer.model_validate(body.model_dump(context={"piiguard": None}))
        session.add(customer)
        session.commit()
        session.refresh(customer)
        return customer

    @app.get("/customers", response_model=list[Customer])
    def list_customers(session: DB, limit: int = 100) -> Any:
        return session.exec(select(Customer).order_by(Customer.id)
                            .limit(max(1, min(limit, 1000)))).all()

    @app.get("/customers/{customer_id}", response_model=Customer)
    def get_customer(customer_id: int, session: DB) -> Any:
        return found(session, customer_id)

    @app.post("/customers/search", response_model=list[Customer])
    def search_customers(body: CustomerSearch, session: DB) -> Any:
        return session.exec(select(Customer).where(
            Customer.national_id == body.national_id)).all()   # blind index

    @app.patch("/customers/{customer_id}", response_model=Customer)
    def update_customer(customer_id: int, body: CustomerUpdate, session: DB) -> Any:
        customer = found(session, customer_id)
        customer.sqlmodel_update(body.model_dump(exclude_unset=True,
                                                 context={"piiguard": None}))
        session.add(customer)
        session.commit()
        session.refresh(customer)
        return customer

    return app


def __getattr__(name: str) -> Any:
    # `uvicorn examples.sqlmodel_app.app:app` builds the app on first access
    if name == "app":
        app = create_app()
        globals()["app"] = app
        return app
    raise AttributeError(name)
