"""piiguard.fastapi.install, written as docs/fastapi.md shows it: 422 responses without
inputs, piiguard errors as responses (an invalid search value is a 422, never a 500),
frames cleared before anything reads them, and a lifespan that flushes the audit trail
and closes the Guard after the application's own lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Annotated

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi import FastAPI, Header, Query, Request  # noqa: E402
from fastapi.exceptions import RequestValidationError  # noqa: E402
from fastapi.responses import JSONResponse  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from leakcheck import leaks  # noqa: E402
from pydantic import BaseModel, Field  # noqa: E402
from sqlalchemy import Integer, select  # noqa: E402
from sqlalchemy.orm import DeclarativeBase, Session, mapped_column  # noqa: E402

import piiguard.fastapi  # noqa: E402
from piiguard import AuditTrail, Guard, MaskingPolicy  # noqa: E402
from piiguard.errors import DecryptionError, KMSUnavailableError  # noqa: E402
from piiguard.pydantic import Email, NationalId, Phone, optional  # noqa: E402
from piiguard.sqlalchemy import EncryptedNationalId, EncryptedPhone  # noqa: E402

POLICY = {"default": "redact", "national_id": {"admin": "reveal", "support": "partial:1:2"},
          "search": {"national_id": ["admin", "support"]}}


def role(x_role: Annotated[str | None, Header()] = None) -> str | None:
    return x_role


class Signup(BaseModel):
    # no hide_input_in_errors: install() keeps inputs out of the 422 anyway
    name: str = Field(min_length=2)
    age: int
    national_id: NationalId
    phone: Phone
    email: optional(Email) = None


class Search(BaseModel):
    national_id: str


def build(sqlite_engine, local_kms, *, lifespan=None, audit=None):
    guard = Guard(kms=local_kms, audit=audit) if audit else Guard(kms=local_kms)

    class Base(DeclarativeBase):
        pass

    class Customer(Base):
        __tablename__ = "customers"
        id = mapped_column(Integer, primary_key=True)
        national_id = mapped_column(EncryptedNationalId(guard, searchable=True))
        phone = mapped_column(EncryptedPhone(guard))

    Base.metadata.create_all(sqlite_engine)
    guard.bind(sqlite_engine)
    guard.policy = MaskingPolicy.from_dict(POLICY)
    app = FastAPI(lifespan=lifespan) if lifespan else FastAPI()
    piiguard.fastapi.install(app, guard, role=role)

    @app.post("/signup")
    def signup(body: Signup):
        return {"ok": True}

    @app.get("/by-query")
    def by_query(national_id: Annotated[NationalId, Query()]):
        return {"ok": True}

    @app.post("/search")
    def search(body: Search):
        with Session(sqlite_engine) as session:
            found = session.scalars(select(Customer).where(
                Customer.national_id == body.national_id)).all()
            return {"ids": [c.id for c in found]}

    @app.post("/search-async")
    async def search_async(body: Search):
        await asyncio.sleep(0)
        with Session(sqlite_engine) as session:
            found = session.scalars(select(Customer).where(
                Customer.national_id == body.national_id)).all()
            return {"ids": [c.id for c in found]}

    @app.post("/validate-inside")
    def validate_inside(payload: dict):
        Signup.model_validate(payload)      # a ValidationError raised by the endpoint
        return {"ok": True}

    @app.get("/decrypt-fails")
    def decrypt_fails():
        secret = "mk10000000146"              # a local the error's frame holds  # noqa
        raise DecryptionError("decryption failed", column="customers.phone", key_id=3)

    @app.get("/kms-down")
    async def kms_down():
        raise KMSUnavailableError("KMS unreachable", key_id="alias/app")

    @app.get("/bad-response", response_model=Signup)
    def bad_response():
        return {"name": "mkRESPONSE", "age": "mk-not-a-number", "national_id": "1",
                "phone": "x"}

    app.state.Customer = Customer
    return app, guard


@pytest.fixture
def world(sqlite_engine, local_kms):
    return build(sqlite_engine, local_kms)


def post_json(client, path, body, **headers):
    # raw JSON, so that lone surrogates travel as \\ud800 escapes
    return client.post(path, content=json.dumps(body),
                       headers={"content-type": "application/json", **headers})


BAD_SIGNUP = {"name": "m", "age": "mkAGE", "national_id": "mk10000000147",
              "phone": "mkPHONE 0532", "email": "mkMAIL@@x"}


def test_422_has_no_inputs_for_any_field_of_any_model(world):
    app, _ = world
    with TestClient(app) as client:
        r = post_json(client, "/signup", BAD_SIGNUP)
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert {tuple(d["loc"]) for d in detail} == {
        ("body", "name"), ("body", "age"), ("body", "national_id"), ("body", "phone"),
        ("body", "email")}
    assert all(set(d) <= {"loc", "msg", "type", "rule"} for d in detail)
    assert "mk" not in r.text and '"m"' not in r.text
    nid = next(d for d in detail if d["loc"][-1] == "national_id")
    assert nid["type"] == "tckn_format" and nid["rule"] == "format"


def test_422_for_query_parameters_and_malformed_bodies_too(world):
    app, _ = world
    with TestClient(app) as client:
        r = client.get("/by-query", params={"national_id": "mk10000000147"})
        assert r.status_code == 422 and "mk1" not in r.text
        r = client.post("/signup", content=b'{"national_id": "mk1000', headers={
            "content-type": "application/json"})
        assert r.status_code == 422 and "mk1000" not in r.text


def test_a_validation_error_raised_in_an_endpoint_is_a_422_without_inputs(world):
    app, _ = world
    with TestClient(app) as client:
        r = post_json(client, "/validate-inside", BAD_SIGNUP)
    assert r.status_code == 422 and "mk" not in r.text
    assert {d["loc"][-1] for d in r.json()["detail"]} >= {"national_id", "age"}


@pytest.mark.parametrize("path", ["/search", "/search-async"])
@pytest.mark.parametrize("value", ["mk10000000147", "12345678901", "mk\ud800",
                                   "１０００００００１４６"])
def test_an_invalid_search_value_is_a_422(world, path, value):
    app, _ = world
    with TestClient(app) as client:
        r = post_json(client, path, {"national_id": value}, **{"X-Role": "support"})
        assert r.status_code == 422, r.text
        assert r.json()["detail"][0]["type"].startswith("piiguard_")
        assert "customers.national_id" in r.text
        assert "mk" not in r.text and "12345678901" not in r.text \
            and "１０" not in r.text
        ok = post_json(client, path, {"national_id": "100 000 001 46"},
                       **{"X-Role": "support"})
        assert ok.status_code == 200 and ok.json() == {"ids": []}
        # a role the policy does not let search: 403, not 500
        assert post_json(client, path, {"national_id": "10000000146"},
                         **{"X-Role": "intern"}).status_code == 403


def test_other_piiguard_errors_are_500_or_503_logged_without_values(world, caplog):
    app, _ = world
    with TestClient(app) as client, caplog.at_level(logging.ERROR, "piiguard.fastapi"):
        r = client.get("/decrypt-fails")
        assert r.status_code == 500 and r.json() == {"detail": "internal error"}
        r = client.get("/kms-down")
        assert r.status_code == 503 and r.headers["Retry-After"]
        r = client.get("/bad-response")
        assert r.status_code == 500 and "mk" not in r.text
    assert "DecryptionError: decryption failed column=customers.phone key_id=3" \
        in caplog.text
    assert "/bad-response failed its response_model" in caplog.text
    assert "mk" not in caplog.text


def test_handlers_clear_the_frames_the_error_kept(world, monkeypatch):
    app, _ = world
    seen = []
    real = piiguard.fastapi.scrub_frames

    def spy(exc, **kw):
        seen.append(exc)
        return real(exc, **kw)

    monkeypatch.setattr(piiguard.fastapi, "scrub_frames", spy)
    with TestClient(app) as client:
        assert client.get("/decrypt-fails").status_code == 500
        assert post_json(client, "/search", {"national_id": "mk10000000147"},
                         **{"X-Role": "support"}).status_code == 422
        assert post_json(client, "/signup", BAD_SIGNUP).status_code == 422
    assert len(seen) == 3
    # every finished frame, the endpoint's own included (this module's)
    for exc in seen:
        assert not leaks(exc, ["mk10000000146", "mk10000000147", "mkAGE", "mkPHONE"],
                         libraries=("piiguard", "sqlalchemy", "fastapi", "starlette",
                                    "pydantic", __name__.rpartition(".")[2])), exc


def test_the_applications_own_422_handler_is_kept(sqlite_engine, local_kms):
    guard = Guard(kms=local_kms).bind(sqlite_engine)
    app = FastAPI()

    @app.exception_handler(RequestValidationError)
    async def mine(request: Request, exc: RequestValidationError):
        return JSONResponse(status_code=400, content={"mine": True})

    piiguard.fastapi.install(app, guard, role=role)

    @app.post("/signup")
    def signup(body: Signup):
        return {}

    with TestClient(app) as client:
        assert post_json(client, "/signup", BAD_SIGNUP).json() == {"mine": True}


def test_lifespan_flushes_the_audit_and_closes_the_guard_after_the_apps(
        sqlite_engine, local_kms, caplog):
    order = []

    @contextlib.asynccontextmanager
    async def lifespan(app):
        order.append("app startup")
        # a reveal recorded outside any request: pending in the batched trail
        app.state.guard.audit.record_reveal("customers.national_id", 1, "7", "admin",
                                            None)
        yield {"answer": 42}
        order.append("app shutdown")
        assert app.state.guard.audit.pending() == 1     # still usable here

    trail = AuditTrail(batch_size=1000, max_delay=3600)
    app, guard = build(sqlite_engine, local_kms, lifespan=lifespan, audit=trail)
    app.state.guard = guard

    @app.get("/state")
    def state(request: Request):
        return {"answer": request.state.answer}

    real_close = guard.close

    def close():
        order.append("guard closed")
        real_close()

    guard.close = close
    caplog.set_level(logging.INFO, logger="piiguard.audit")
    with TestClient(app) as client:
        assert client.get("/state").json() == {"answer": 42}   # the app's state passes
        assert trail.pending() == 1
        assert len(guard.keys.cache) > 0
    assert order == ["app startup", "app shutdown", "guard closed"]
    assert trail.pending() == 0
    reveals = [r.piiguard_event for r in caplog.records
               if getattr(r, "piiguard_event", {}).get("action") == "reveal"]
    assert [(e["column"], e["count"], e["row_keys"]) for e in reveals] == [
        ("customers.national_id", 1, ["7"])]
    assert len(guard.keys.cache) == 0                   # plaintext keys dropped


def test_lifespan_closes_the_guard_when_the_apps_startup_fails(sqlite_engine, local_kms):
    closed = []

    @contextlib.asynccontextmanager
    async def lifespan(app):
        raise RuntimeError("startup failed")
        yield  # pragma: no cover

    app, guard = build(sqlite_engine, local_kms, lifespan=lifespan)
    real_close = guard.close
    guard.close = lambda: (closed.append(True), real_close())
    with pytest.raises(RuntimeError, match="startup failed"), TestClient(app):
        pass
    assert closed == [True]
