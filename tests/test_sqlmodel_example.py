"""The SQLModel example (examples/sqlmodel_app): one table model as storage and as
response model, masked per policy.toml for each token's role; 422s without values;
search by POST."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("sqlmodel")
pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from examples.sqlmodel_app.app import create_app  # noqa: E402 - needs ROOT on sys.path

AYSE = {"name": "Ayşe Yılmaz", "national_id": "100 000 001 46",
        "phone": "0532 123 45 67", "email": "ayse@example.com"}
ADMIN = {"Authorization": "Bearer admin-token"}
SUPPORT = {"Authorization": "Bearer support-token"}
ANALYST = {"Authorization": "Bearer analyst-token"}


@pytest.fixture
def client(tmp_path):
    with TestClient(create_app(data_dir=tmp_path)) as c:
        yield c


def test_the_table_model_answers_each_role_with_its_view(client):
    r = client.post("/customers", json=AYSE, headers=ADMIN)
    assert r.status_code == 201, r.text
    cid = r.json()["id"]
    admin = client.get(f"/customers/{cid}", headers=ADMIN).json()
    support = client.get(f"/customers/{cid}", headers=SUPPORT).json()
    analyst = client.get(f"/customers/{cid}", headers=ANALYST).json()
    nobody = client.get(f"/customers/{cid}").json()
    assert admin == {"id": cid, "name": "Ayşe Yılmaz", "national_id": "10000000146",
                     "phone": "+905321234567", "email": "ayse@example.com"}
    assert support == {"id": cid, "name": "A**********", "national_id": "1********46",
                       "phone": "+90********67", "email": "a***@example.com"}
    assert analyst["national_id"].startswith("psn_") and analyst["name"] == "[REDACTED]"
    assert set(nobody.values()) == {cid, "[REDACTED]"}
    assert client.get("/customers", headers=SUPPORT).json() == [support]


def test_search_by_post_update_and_422s(client):
    cid = client.post("/customers", json=AYSE, headers=ADMIN).json()["id"]
    found = client.post("/customers/search", json={"national_id": "10000000146"},
                        headers=SUPPORT).json()
    assert [c["id"] for c in found] == [cid]
    r = client.post("/customers/search", json={"national_id": "10000000147"},
                    headers=SUPPORT)
    assert r.status_code == 422 and "10000000147" not in r.text
    assert r.json()["detail"][0]["type"] == "tckn_checksum"
    r = client.post("/customers", json={**AYSE, "phone": "0532 12"}, headers=ADMIN)
    assert r.status_code == 422 and "0532 12" not in r.text
    r = client.patch(f"/customers/{cid}", json={"phone": "0533 765 43 21"}, headers=SUPPORT)
    assert r.status_code == 200 and r.json()["phone"] == "+90********21"
    assert client.get(f"/customers/{cid}", headers=ADMIN).json()["phone"] == "+905337654321"
    # no role: no writes (policy.toml [write])
    assert client.patch(f"/customers/{cid}", json={"phone": "0533 765 43 21"}
                        ).status_code == 403
