"""piiguard.fastapi.install: role scoping for sync and async endpoints alike, from a sync
or async role dependency; masked responses; policy refusals as 403/429/422."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
import httpx  # noqa: E402
from fastapi import Depends, FastAPI, Header  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from pydantic import BaseModel  # noqa: E402

import piiguard.fastapi  # noqa: E402
from piiguard import MaskingPolicy, acting_as  # noqa: E402
from piiguard.errors import (  # noqa: E402
    AccessDeniedError,
    ConfigurationError,
    MaskedValueError,
    SearchLimitError,
)
from piiguard.masking import current_principal, current_purpose, current_role  # noqa: E402
from piiguard.pydantic import NationalId  # noqa: E402

NID = "10000000146"


class Out(BaseModel):
    role: str | None
    national_id: NationalId


def sync_role(x_role: Annotated[str | None, Header()] = None) -> str | None:
    return x_role


async def async_role(x_role: Annotated[str | None, Header()] = None) -> str | None:
    await asyncio.sleep(0)
    return x_role


def token() -> str:
    return "verified"


def role_with_subdependency(who: Annotated[str, Depends(token)],
                            x_role: Annotated[str | None, Header()] = None
                            ) -> acting_as | None:
    return None if x_role is None else acting_as(x_role, purpose=f"by-{who}",
                                                 principal="user-1")


def make_app(guard, role):
    app = FastAPI()
    piiguard.fastapi.install(app, guard, role=role)

    @app.get("/sync", response_model=Out)
    def sync_endpoint():
        return Out(role=current_role(), national_id=NID)

    @app.get("/async", response_model=Out)
    async def async_endpoint():
        await asyncio.sleep(0)
        return Out(role=current_role(), national_id=NID)

    @app.get("/who")
    def who():
        return {"role": current_role(), "purpose": current_purpose(),
                "principal": current_principal()}

    @app.get("/denied")
    def denied():
        raise AccessDeniedError("search", role=current_role(), column="c.national_id")

    @app.get("/limited")
    async def limited():
        raise SearchLimitError("search_limit", role=current_role(), column="c.national_id",
                               detail="3 candidate values would exceed the limit")

    @app.get("/masked")
    def masked():
        raise MaskedValueError("masked", column="c.name", detail="a masked view")

    return app


@pytest.fixture
def guard(guard):
    guard.policy = MaskingPolicy.from_dict({
        "default": "redact", "national_id": {"admin": "reveal", "support": "partial:1:2"}})
    return guard


@pytest.mark.parametrize("role_dep", [sync_role, async_role], ids=["sync-dep", "async-dep"])
@pytest.mark.parametrize("path", ["/sync", "/async"])
def test_role_in_effect_for_sync_and_async_endpoints(guard, role_dep, path):
    with TestClient(make_app(guard, role_dep)) as client:
        for role, shown in (("admin", NID), ("support", "1********46"),
                            ("intern", "[REDACTED]"), (None, "[REDACTED]")):
            headers = {"X-Role": role} if role else {}
            body = client.get(path, headers=headers).json()
            assert body == {"role": role, "national_id": shown}, (path, role)


def test_dependency_with_subdependencies_may_return_acting_as(guard):
    with TestClient(make_app(guard, role_with_subdependency)) as client:
        assert client.get("/who", headers={"X-Role": "ops"}).json() == {
            "role": "ops", "purpose": "by-verified", "principal": "user-1"}
        assert client.get("/who").json() == {"role": None, "purpose": None,
                                             "principal": None}


async def test_concurrent_requests_keep_their_own_roles(guard):
    app = make_app(guard, async_role)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        roles = ["admin", "support", None, "intern"] * 10
        paths = ["/sync", "/async"] * 20
        replies = await asyncio.gather(*(
            client.get(p, headers={"X-Role": r} if r else {})
            for p, r in zip(paths, roles, strict=True)))
    for r, reply in zip(roles, replies, strict=True):
        assert reply.json()["role"] == r
    assert current_role() is None


def test_the_role_ends_with_the_request(guard):
    with TestClient(make_app(guard, sync_role)) as client:
        assert client.get("/sync", headers={"X-Role": "admin"}).json()["role"] == "admin"
        for _ in range(5):
            assert client.get("/sync").json() == {"role": None,
                                                   "national_id": "[REDACTED]"}


def test_policy_refusals_become_responses_without_values(guard):
    with TestClient(make_app(guard, sync_role)) as client:
        r = client.get("/denied", headers={"X-Role": "intern"})
        assert r.status_code == 403 and "policy rule: search" in r.json()["detail"]
        r = client.get("/limited", headers={"X-Role": "support"})
        assert r.status_code == 429 and r.headers["Retry-After"]
        r = client.get("/masked")
        assert r.status_code == 422 and r.json()["detail"][0]["type"] == "piiguard_masked"


def test_install_checks_its_arguments_and_the_order(guard):
    app = FastAPI()

    @app.get("/early")
    def early():
        return {}

    with pytest.raises(ConfigurationError, match="before routes are declared.*/early"):
        piiguard.fastapi.install(app, guard, role=sync_role)
    with pytest.raises(ConfigurationError, match="Guard"):
        piiguard.fastapi.install(FastAPI(), object(), role=sync_role)
    with pytest.raises(ConfigurationError, match="callable"):
        piiguard.fastapi.install(FastAPI(), guard, role="admin")
    app = FastAPI()
    piiguard.fastapi.install(app, guard, role=sync_role)
    with pytest.raises(ConfigurationError, match="already"):
        piiguard.fastapi.install(app, guard, role=sync_role)


def test_a_bad_role_value_is_a_configuration_error(guard, caplog):
    app = make_app(guard, lambda: 42)
    with TestClient(app, raise_server_exceptions=True) as client, \
            caplog.at_level(logging.ERROR, logger="piiguard.fastapi"):
        r = client.get("/who")
    assert r.status_code == 500 and r.json() == {"detail": "internal error"}
    assert "ConfigurationError: the role dependency returned a int" in caplog.text
