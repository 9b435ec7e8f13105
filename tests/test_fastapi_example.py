"""The FastAPI example (examples/fastapi_app): roles from a header or a bearer token,
responses masked per policy, 422 without echo, reveals audited without values."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from examples.fastapi_app.app import create_app  # noqa: E402 - needs ROOT on sys.path

AYSE = {"name": "Ayşe Yılmaz", "national_id": "100 000 001 46",
        "phone": "0532 123 45 67", "email": "ayşe.yılmaz@örnek.com.tr",
        "address": "Moda Cad. No:5, 34710 Kadıköy/İstanbul"}
CANON = {"name": "Ayşe Yılmaz", "national_id": "10000000146", "phone": "+905321234567",
         "email": "ayşe.yılmaz@örnek.com.tr",
         "address": "Moda Cad. No:5, 34710 Kadıköy/İstanbul"}
SUPPORT = {"name": "A**********", "national_id": "1********46", "phone": "+90********67",
           "email": "a***@örnek.com.tr", "address": "KADIKÖY/İSTANBUL"}
REDACTED = dict.fromkeys(CANON, "[REDACTED]")


@pytest.fixture
def client(tmp_path):
    app = create_app(data_dir=tmp_path, demo_role_header=True)
    with TestClient(app) as c:
        c.app_ = app
        yield c


def create(client, body=None, **headers):
    r = client.post("/customers", json=body or AYSE, headers={"X-Role": "admin", **headers})
    assert r.status_code == 201, r.text
    return r.json()


def without_id(d):
    return {k: v for k, v in d.items() if k != "id"}


def test_create_and_read_by_role(client):
    created = create(client)
    assert without_id(created) == CANON                    # admin sees the values
    cid = created["id"]
    assert without_id(client.get(f"/customers/{cid}", headers={"X-Role": "admin"}).json()) \
        == CANON
    assert without_id(client.get(f"/customers/{cid}",
                                 headers={"X-Role": "support"}).json()) == SUPPORT
    assert without_id(client.get(f"/customers/{cid}").json()) == REDACTED       # no role
    assert without_id(client.get(f"/customers/{cid}",
                                 headers={"X-Role": "janitor"}).json()) == REDACTED


def test_bearer_tokens(client):
    cid = create(client)["id"]
    r = client.get(f"/customers/{cid}", headers={"Authorization": "Bearer support-token"})
    assert without_id(r.json()) == SUPPORT
    r = client.get(f"/customers/{cid}", headers={"Authorization": "Bearer analyst-token"})
    body = r.json()
    assert body["national_id"].startswith("psn_") and body["phone"].startswith("psn_")
    assert body["address"] == "İSTANBUL" and body["email"] == "[REDACTED]"
    # the token wins over a header that claims more
    r = client.get(f"/customers/{cid}", headers={"Authorization": "Bearer support-token",
                                                 "X-Role": "admin"})
    assert without_id(r.json()) == SUPPORT
    r = client.get(f"/customers/{cid}", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401


def test_pseudonyms_are_stable_across_requests_and_rows(client):
    a = create(client)["id"]
    b = create(client)["id"]
    h = {"Authorization": "Bearer analyst-token"}
    ta = client.get(f"/customers/{a}", headers=h).json()["national_id"]
    tb = client.get(f"/customers/{b}", headers=h).json()["national_id"]
    assert ta == tb and ta.startswith("psn_")


def test_role_header_is_ignored_without_the_demo_flag(tmp_path, monkeypatch):
    monkeypatch.delenv("PIIGUARD_EXAMPLE_DEMO_ROLES", raising=False)
    with TestClient(create_app(data_dir=tmp_path)) as c:
        cid = c.post("/customers", json=AYSE,
                     headers={"Authorization": "Bearer admin-token"}).json()["id"]
        r = c.get(f"/customers/{cid}", headers={"X-Role": "admin"})
        assert without_id(r.json()) == REDACTED


def test_list_search_update_delete(client):
    cid = create(client)["id"]
    create(client, {**AYSE, "national_id": "10000000078"})
    h = {"X-Role": "support"}
    listed = client.get("/customers", headers=h).json()
    assert [c["national_id"] for c in listed] == ["1********46", "1********78"]
    found = client.post("/customers/search", json={"national_id": "100 000 001 46"},
                        headers=h).json()
    assert [c["id"] for c in found] == [cid]
    # support changes the phone; the view it gets back is masked
    r = client.patch(f"/customers/{cid}", json={"phone": "+90 533 765 43 21"}, headers=h)
    assert r.status_code == 200 and r.json()["phone"] == "+90********21"
    assert client.get(f"/customers/{cid}", headers={"X-Role": "admin"}).json()["phone"] \
        == "+905337654321"
    # the other fields were not touched
    assert without_id(client.get(f"/customers/{cid}", headers={"X-Role": "admin"}).json()) \
        == {**CANON, "phone": "+905337654321"}
    assert client.delete(f"/customers/{cid}", headers=h).status_code == 403
    assert client.delete(f"/customers/{cid}", headers={"X-Role": "admin"}).status_code == 204
    assert client.get(f"/customers/{cid}", headers={"X-Role": "admin"}).status_code == 404


@pytest.mark.parametrize("field, value, error_type", [
    ("national_id", "10000000147", "tckn_checksum"),
    ("national_id", "1000000014", "tckn_length"),
    ("phone", "+90 599 123 45 67", "phone_number_range"),
    ("phone", "0532 123 45", "phone_length"),
])
def test_invalid_input_is_422_without_echo(client, field, value, error_type):
    r = client.post("/customers", json={**AYSE, field: value}, headers={"X-Role": "admin"})
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert [d["type"] for d in detail] == [error_type]
    assert detail[0]["loc"] == ["body", field]
    assert detail[0]["rule"] == error_type.split("_", 1)[1]
    assert value not in r.text and value.replace(" ", "") not in r.text
    assert "input" not in detail[0]
    # and nothing was stored
    assert client.get("/customers", headers={"X-Role": "admin"}).json() == []


@pytest.mark.parametrize("value", ["12345678901", "1234", "SECRET\ud800", "１０００００００１４６"])
def test_invalid_search_value_is_422_without_echo(client, value):
    # (raw JSON: a lone surrogate travels as the escape \ud800, as JSON allows)
    body = json.dumps({"national_id": value})
    r = client.post("/customers/search", content=body,
                    headers={"X-Role": "admin", "content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert value.encode("utf-8", "surrogatepass").decode("utf-8", "replace") \
        not in r.text and body[17:-2] not in r.text and "SECRET" not in r.text
    # refused by the column (the search), or by pydantic's str (no lone surrogates)
    kind = r.json()["detail"][0]["type"]
    assert (kind.startswith("piiguard_") and "customers.national_id" in r.text) \
        or kind == "string_unicode"


def test_search_is_not_offered_in_the_url(client):
    create(client)
    r = client.get("/customers", params={"national_id": "10000000146"},
                   headers={"X-Role": "admin"})
    # the query parameter is not a filter: every customer is listed
    assert r.status_code == 200 and len(r.json()) == 1
    assert "national_id" not in {p["name"] for p in
                                 client.get("/openapi.json").json()["paths"]["/customers"]
                                 ["get"].get("parameters", [])}


def test_invalid_patch_is_422_without_echo(client):
    cid = create(client)["id"]
    r = client.patch(f"/customers/{cid}", json={"national_id": "19999999999"},
                     headers={"X-Role": "admin"})
    assert r.status_code == 422 and "19999999999" not in r.text


def test_reveals_are_audited_without_values(client, caplog):
    caplog.set_level(logging.INFO, logger="piiguard.audit")
    cid = create(client)["id"]
    caplog.clear()
    for _ in range(3):
        client.get(f"/customers/{cid}", headers={"X-Role": "admin", "X-Purpose": "kyc"})
    client.get(f"/customers/{cid}", headers={"X-Role": "support"})
    events = [r.piiguard_event for r in caplog.records
              if r.name == "piiguard.audit" and r.piiguard_event["action"] == "reveal"]
    # each admin request is flushed when its role scope ends; a reveal is counted once,
    # by the data layer (customers.*, with key id and row key): the response model
    # (CustomerOut.*) serialises the same values without counting them again
    per_column: dict[str, int] = {}
    for e in events:
        assert (e["role"], e["purpose"]) == ("admin", "kyc")
        per_column[e["column"]] = per_column.get(e["column"], 0) + e["count"]
    for f in ("national_id", "phone", "email", "address", "name"):
        assert per_column[f"customers.{f}"] == 3
    for f in ("national_id", "phone", "email", "address"):
        assert f"CustomerOut.{f}" not in per_column
    text = caplog.text + json.dumps(events, default=str)
    for value in (*CANON.values(), "Ayşe", "Yılmaz", "MODA", "0532"):
        assert value not in text


def test_openapi_schema(client):
    schema = client.get("/openapi.json").json()
    props = schema["components"]["schemas"]["CustomerIn"]["properties"]
    assert props["national_id"]["format"] == "tckn"
    assert props["phone"]["format"] == "phone"


# ----------------------------------------------------------------------------- issue 14

def stored(client):
    """Every stored byte of the customers table (what a write-back would change)."""
    engine = client.app_.state.engine
    from sqlalchemy import text
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text("SELECT * FROM customers ORDER BY id"))]


@pytest.mark.parametrize("auth", [{"Authorization": "Bearer support-token"},
                                  {"X-Role": "support"}, {"X-Role": "analyst"}, {}])
def test_get_then_patch_back_keeps_the_real_values(client, auth):
    """A client GETs a customer under a role that sees masked views and PATCHes the body
    back, whole and field by field: nothing stored changes."""
    cid = create(client)["id"]
    before = stored(client)
    body = without_id(client.get(f"/customers/{cid}", headers=auth).json())
    statuses = [client.patch(f"/customers/{cid}", json=body, headers=auth).status_code]
    for field, value in body.items():
        r = client.patch(f"/customers/{cid}", json={field: value}, headers=auth)
        statuses.append(r.status_code)
        assert value is None or str(value) not in CANON.values()
    assert all(code in (403, 422) for code in statuses), statuses
    assert stored(client) == before
    admin = client.get(f"/customers/{cid}", headers={"X-Role": "admin"}).json()
    assert without_id(admin) == CANON


def test_without_a_role_nothing_is_written(client):
    cid = create(client)["id"]
    before = stored(client)
    r = client.post("/customers", json=AYSE)
    assert r.status_code == 403 and "policy rule: write" in r.json()["detail"]
    r = client.patch(f"/customers/{cid}", json={"phone": "+90 533 765 43 21"})
    assert r.status_code == 403
    r = client.patch(f"/customers/{cid}", json={"phone": "+90 533 765 43 21"},
                     headers={"X-Role": "analyst"})
    assert r.status_code == 403
    assert stored(client) == before


def test_support_cannot_remove_what_it_cannot_see_unless_allowed(client):
    cid = create(client)["id"]
    h = {"Authorization": "Bearer support-token"}
    # [clear] lets support remove an e-mail; nothing lets it remove... a phone is
    # required anyway, and the analyst role may not write at all
    assert client.patch(f"/customers/{cid}", json={"email": None},
                        headers=h).status_code == 200
    admin = client.get(f"/customers/{cid}", headers={"X-Role": "admin"}).json()
    assert admin["email"] is None and admin["address"] == CANON["address"]


def test_unauthenticated_role_header_is_off_by_default(tmp_path, monkeypatch):
    monkeypatch.delenv("PIIGUARD_EXAMPLE_DEMO_ROLES", raising=False)
    with TestClient(create_app(data_dir=tmp_path)) as c:
        r = c.post("/customers", json=AYSE, headers={"X-Role": "admin"})
        assert r.status_code == 403                           # no role: may not write
        cid = c.post("/customers", json=AYSE,
                     headers={"Authorization": "Bearer admin-token"}).json()["id"]
        assert without_id(c.get(f"/customers/{cid}", headers={"X-Role": "admin"})
                          .json()) == REDACTED
    monkeypatch.setenv("PIIGUARD_EXAMPLE_DEMO_ROLES", "1")
    with TestClient(create_app(data_dir=tmp_path / "demo")) as c:
        assert c.post("/customers", json=AYSE,
                      headers={"X-Role": "admin"}).status_code == 201


def test_one_audit_event_per_reveal_with_key_id_and_row_keys(client, caplog):
    cid = create(client)["id"]
    caplog.clear()
    caplog.set_level(logging.INFO, logger="piiguard.audit")
    client.get(f"/customers/{cid}", headers={"Authorization": "Bearer admin-token"})
    reveals = [r.piiguard_event for r in caplog.records
               if getattr(r, "piiguard_event", {}).get("action") == "reveal"]
    columns = sorted(e["column"] for e in reveals)
    assert columns == ["customers.address", "customers.email", "customers.name",
                       "customers.national_id", "customers.phone"]
    assert all(e["count"] == 1 and e["key_id"] and e["row_keys"] == [str(cid)]
               for e in reveals)


def test_support_search_is_rate_limited_per_token(client):
    create(client)
    h = {"Authorization": "Bearer support-token"}
    codes = [client.post("/customers/search", json={"national_id": "100 000 001 46"},
                         headers=h).status_code for _ in range(61)]
    assert codes[:60] == [200] * 60 and codes[60] == 429
    # another principal (the admin token) has its own bucket
    assert client.post("/customers/search", json={"national_id": "10000000146"},
                       headers={"Authorization": "Bearer admin-token"}).status_code == 200
