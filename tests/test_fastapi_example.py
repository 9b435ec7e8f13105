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
         "address": "MODA CAD. NO:5, 34710 KADIKÖY/İSTANBUL"}
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
    found = client.get("/customers", params={"national_id": "100 000 001 46"},
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


def test_invalid_search_value_is_422_without_echo(client):
    r = client.get("/customers", params={"national_id": "12345678901"},
                   headers={"X-Role": "admin"})
    assert r.status_code == 422
    assert "12345678901" not in r.text and "customers.national_id" in r.text


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
    # each admin request is flushed when its role scope ends; the data layer
    # (customers.*) and the response (CustomerOut.*) are both accounted for
    per_column: dict[str, int] = {}
    for e in events:
        assert (e["role"], e["purpose"]) == ("admin", "kyc")
        per_column[e["column"]] = per_column.get(e["column"], 0) + e["count"]
    for f in ("national_id", "phone", "email", "address", "name"):
        assert per_column[f"customers.{f}"] == 3
    for f in ("national_id", "phone", "email", "address"):
        assert per_column[f"CustomerOut.{f}"] == 3
    text = caplog.text + json.dumps(events, default=str)
    for value in (*CANON.values(), "Ayşe", "Yılmaz", "MODA", "0532"):
        assert value not in text


def test_openapi_schema(client):
    schema = client.get("/openapi.json").json()
    props = schema["components"]["schemas"]["CustomerIn"]["properties"]
    assert props["national_id"]["format"] == "tckn"
    assert props["phone"]["format"] == "phone"
