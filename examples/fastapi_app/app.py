"""Customers CRUD with encrypted PII, masked by the caller's role.

Run it::

    PIIGUARD_EXAMPLE_DIR=/tmp/pg-example uvicorn examples.fastapi_app.app:app

- storage: SQLite (``$PIIGUARD_EXAMPLE_DIR/customers.db``) with encrypted columns; keys
  from a local key file (``$PIIGUARD_EXAMPLE_DIR/master.key``, created on first run);
  without ``PIIGUARD_EXAMPLE_DIR`` a fresh temporary directory is used;
- the role: ``Authorization: Bearer <token>`` (tokens in :data:`DEMO_TOKENS`; each token
  is also the principal the search rate limit counts). An ``X-Role`` header is honoured
  **only** with the explicit demo flag (``create_app(demo_role_header=True)`` or
  ``PIIGUARD_EXAMPLE_DEMO_ROLES=1``): an unauthenticated header must never grant a role.
  ``X-Purpose`` is recorded in the audit trail. :func:`piiguard.fastapi.install` puts
  the role in effect for sync and async endpoints alike;
- responses are masked per ``policy.toml`` for the role in effect; every full reveal is
  an audit event (logger ``piiguard.audit``, configured at INFO when the app is built);
- writes need a role the policy lets write (``[write]``: admin, support); a masked view
  sent back (a GET's body PATCHed back) is refused with a 422 and stores nothing; a
  value the caller cannot see cannot be removed unless ``[clear]`` allows it;
- invalid T.C. numbers, phones, e-mails or addresses get a 422 that names the field and
  the rule that failed, never the value (``piiguard.fastapi.install`` answers every
  validation error without its input, and piiguard's own errors without a value);
- search by T.C. number is a ``POST /customers/search`` with the number in the JSON
  body, never in the URL: URLs are written to access logs, proxy and CDN logs, browser
  history and ``Referer`` headers, none of which piiguard can reach.
"""

import hashlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Request, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Integer, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Session, mapped_column, sessionmaker

import piiguard.fastapi
from piiguard import Guard, LocalKMS, MaskingPolicy, acting_as
from piiguard.pydantic import Address, Email, NationalId, Phone, optional
from piiguard.sqlalchemy import (
    EncryptedAddress,
    EncryptedEmail,
    EncryptedNationalId,
    EncryptedPhone,
    EncryptedString,
)

HERE = Path(__file__).parent
POLICY_FILE = HERE / "policy.toml"
#: Demo bearer tokens and the role each one carries.
DEMO_TOKENS = {"admin-token": "admin", "support-token": "support",
               "analyst-token": "analyst"}
#: Set to 1 to honour ``X-Role`` headers without authentication (a local demo only).
DEMO_ROLES_ENV = "PIIGUARD_EXAMPLE_DEMO_ROLES"


# ----------------------------------------------------------------------------- API models

class CustomerIn(BaseModel):
    """What a client sends to create a customer (validated and canonicalised)."""

    model_config = ConfigDict(hide_input_in_errors=True, extra="forbid")
    name: str = Field(min_length=1, max_length=200, repr=False)
    national_id: NationalId
    phone: Phone
    email: optional(Email) = None
    address: optional(Address) = None


class CustomerPatch(BaseModel):
    """Fields to change; the ones not sent stay as they are."""

    model_config = ConfigDict(hide_input_in_errors=True, extra="forbid")
    name: str | None = Field(None, min_length=1, max_length=200, repr=False)
    national_id: optional(NationalId) = None
    phone: optional(Phone) = None
    email: optional(Email) = None
    address: optional(Address) = None


class CustomerSearch(BaseModel):
    """A search by T.C. number: in the body of a POST, never in the URL."""

    model_config = ConfigDict(hide_input_in_errors=True, extra="forbid")
    # A plain str: the column validates and canonicalises it ("100 000 001 46" finds
    # 10000000146); an invalid number is a 422 naming the rule, never the value.
    national_id: str = Field(min_length=1, max_length=64, repr=False)
    limit: int = Field(100, ge=1, le=1000)


class CustomerOut(BaseModel):
    """What a client gets back: each PII field as the caller's role may see it."""

    model_config = ConfigDict(from_attributes=True, hide_input_in_errors=True)
    id: int
    name: str | None = Field(repr=False)
    national_id: optional(NationalId)
    phone: optional(Phone)
    email: optional(Email)
    address: optional(Address)


# ----------------------------------------------------------------------------- the app

def _models(guard: Guard):
    class Base(DeclarativeBase):
        pass

    class Customer(Base):
        __tablename__ = "customers"
        id = mapped_column(Integer, primary_key=True)
        name = mapped_column(EncryptedString(guard, kind="name"))
        national_id = mapped_column(EncryptedNationalId(guard, searchable=True))
        phone = mapped_column(EncryptedPhone(guard))
        email = mapped_column(EncryptedEmail(guard), nullable=True)
        address = mapped_column(EncryptedAddress(guard), nullable=True)

    return Base, Customer


def create_app(*, data_dir: str | os.PathLike[str] | None = None,
               database_url: str | None = None, policy: MaskingPolicy | None = None,
               tokens: dict[str, str] | None = None, demo_role_header: bool | None = None,
               guard: Guard | None = None) -> FastAPI:
    """Build the service. Everything has a safe default; tests pass their own.

    ``demo_role_header``: honour an unauthenticated ``X-Role`` header (default: only if
    ``$PIIGUARD_EXAMPLE_DEMO_ROLES`` is ``1``). Never in production.
    """
    if demo_role_header is None:
        demo_role_header = os.environ.get(DEMO_ROLES_ENV) == "1"
    # Reveals are audit events on the 'piiguard.audit' logger: give it somewhere to go
    # (a plain `uvicorn` run configures no handler for it).
    audit_log = logging.getLogger("piiguard.audit")
    if not audit_log.hasHandlers():
        audit_log.addHandler(logging.StreamHandler())
    if not audit_log.isEnabledFor(logging.INFO):
        audit_log.setLevel(logging.INFO)
    data = Path(data_dir or os.environ.get("PIIGUARD_EXAMPLE_DIR")
                or tempfile.mkdtemp(prefix="piiguard-example-"))
    data.mkdir(parents=True, exist_ok=True)
    if guard is None:
        guard = Guard(kms=LocalKMS.from_file(data / "master.key", create=True))
    guard.policy = policy if policy is not None else MaskingPolicy.from_toml(POLICY_FILE)
    engine = create_engine(database_url or f"sqlite:///{data / 'customers.db'}")
    Base, Customer = _models(guard)
    Base.metadata.create_all(engine)
    guard.bind(engine)
    sessions = sessionmaker(engine, expire_on_commit=True)
    tokens = dict(DEMO_TOKENS if tokens is None else tokens)

    def caller(request: Request,
               authorization: Annotated[str | None, Header()] = None,
               x_role: Annotated[str | None, Header()] = None,
               x_purpose: Annotated[str | None, Header()] = None) -> acting_as | None:
        """Who is calling: a role from a verified bearer token (the token names the
        principal), else from ``X-Role`` only in demo mode, else no role (the policy's
        defaults: every field redacted, no writes). piiguard.fastapi enters it for the
        request, for sync and async endpoints alike."""
        role = principal = None
        if authorization is not None:
            scheme, _, token = authorization.partition(" ")
            role = tokens.get(token.strip()) if scheme.lower() == "bearer" else None
            if role is None:
                raise HTTPException(status.HTTP_401_UNAUTHORIZED, "unknown bearer token",
                                    headers={"WWW-Authenticate": "Bearer"})
            # the principal the search rate limit counts: the token, hashed (not a secret)
            principal = hashlib.sha256(token.strip().encode()).hexdigest()[:16]
        elif x_role and demo_role_header:
            role = x_role.strip() or None
        request.state.role = role
        return None if role is None else acting_as(role, purpose=x_purpose,
                                                   principal=principal)

    def db() -> Iterator[Session]:
        with sessions() as session:
            yield session

    DB = Annotated[Session, Depends(db)]

    app = FastAPI(title="piiguard example: customers")
    piiguard.fastapi.install(app, guard, role=caller)
    app.state.guard = guard
    app.state.engine = engine
    app.state.Customer = Customer

    def found(session: Session, customer_id: int):
        obj = session.get(Customer, customer_id)
        if obj is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such customer")
        return obj

    @app.post("/customers", status_code=201, response_model=CustomerOut)
    def create_customer(body: CustomerIn, session: DB):
        obj = Customer(**body.model_dump(context={"piiguard": None}))
        session.add(obj)
        session.commit()
        return CustomerOut.model_validate(obj)

    @app.get("/customers", response_model=list[CustomerOut])
    def list_customers(session: DB, limit: int = 100):
        q = select(Customer).order_by(Customer.id).limit(max(1, min(limit, 1000)))
        return [CustomerOut.model_validate(c) for c in session.scalars(q)]

    @app.post("/customers/search", response_model=list[CustomerOut])
    def search_customers(body: CustomerSearch, session: DB):
        # blind index; the policy's [search] rule and rate limit apply (403 / 429)
        q = (select(Customer).where(Customer.national_id == body.national_id)
             .order_by(Customer.id).limit(body.limit))
        return [CustomerOut.model_validate(c) for c in session.scalars(q)]

    @app.get("/customers/{customer_id}", response_model=CustomerOut)
    def get_customer(customer_id: int, session: DB):
        return CustomerOut.model_validate(found(session, customer_id))

    @app.patch("/customers/{customer_id}", response_model=CustomerOut)
    def update_customer(customer_id: int, body: CustomerPatch, session: DB):
        obj = found(session, customer_id)
        for field, value in body.model_dump(exclude_unset=True,
                                            context={"piiguard": None}).items():
            if value is None and field in ("name", "national_id", "phone"):
                raise HTTPException(422, f"{field} cannot be removed")
            setattr(obj, field, value)
        session.commit()
        return CustomerOut.model_validate(obj)

    @app.delete("/customers/{customer_id}", status_code=204)
    def delete_customer(request: Request, customer_id: int, session: DB):
        if request.state.role != "admin":
            raise HTTPException(status.HTTP_403_FORBIDDEN, "only admin deletes customers")
        session.delete(found(session, customer_id))
        session.commit()

    return app


def __getattr__(name: str) -> Any:
    # `uvicorn examples.fastapi_app.app:app` builds the app on first access, so that
    # importing this module (tests, docs) creates no files.
    if name == "app":
        app = create_app()
        globals()["app"] = app
        return app
    raise AttributeError(name)
