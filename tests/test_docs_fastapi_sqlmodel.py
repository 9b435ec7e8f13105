"""The first code blocks of docs/fastapi.md and docs/sqlmodel.md, run as they are written
(only the key file and database paths swapped for temporary ones; the key file is created
beforehand, as the deployment would): an application built from the docs alone answers
each role with its view, 422s without values, and runs again on the same files."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from piiguard import LocalKMS  # noqa: E402

DOCS = Path(__file__).resolve().parents[1] / "docs"


def first_block(page: str, tmp_path: Path) -> str:
    code = re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), re.S)[0]
    key = tmp_path / "master.key"
    if not key.exists():
        LocalKMS.from_file(key, create=True)
    return (code.replace("/var/lib/myapp/master.key", str(key))
            .replace("sqlite:///app.db", f"sqlite:///{tmp_path / 'app.db'}"))


def run(code: str) -> dict:
    # a module of its own, as an application's would be (pydantic resolves names there)
    module = types.ModuleType("docs_snippet")
    sys.modules["docs_snippet"] = module
    try:
        exec(compile(code, "docs-snippet", "exec"), module.__dict__)  # noqa: S102
    finally:
        del sys.modules["docs_snippet"]
    return module.__dict__


def test_the_fastapi_page_builds_a_working_app(tmp_path):
    code = first_block("fastapi.md", tmp_path)
    for attempt in range(2):               # the same files, a second start
        app = run(code)["app"]
        with TestClient(app) as client:
            admin = {"Authorization": "Bearer admin-token"}
            support = {"Authorization": "Bearer support-token"}
            r = client.post("/customers", json={"national_id": "100 000 001 46",
                                                "phone": "0532 123 45 67"}, headers=admin)
            assert r.status_code == 201, r.text
            cid = r.json()["id"]
            assert client.get(f"/customers/{cid}", headers=admin).json() == {
                "id": cid, "national_id": "10000000146", "phone": "+905321234567"}
            assert client.get(f"/customers/{cid}", headers=support).json() == {
                "id": cid, "national_id": "1********46", "phone": "+90********67"}
            assert client.get(f"/customers/{cid}").json()["national_id"] == "[REDACTED]"
            found = client.post("/customers/search", json={"national_id": "10000000146"},
                                headers=support).json()
            assert len(found) == attempt + 1
            r = client.post("/customers/search", json={"national_id": "12345678901"},
                            headers=support)
            assert r.status_code == 422 and "12345678901" not in r.text
            r = client.post("/customers", json={"national_id": "10000000147",
                                                "phone": "0532"}, headers=admin)
            assert r.status_code == 422 and "10000000147" not in r.text
            assert "0532" not in r.text


def test_the_sqlmodel_page_runs_twice(tmp_path):
    """Run as a script, twice, in fresh processes (what a reader does)."""
    pytest.importorskip("sqlmodel")
    script = tmp_path / "page.py"
    script.write_text(first_block("sqlmodel.md", tmp_path) + textwrap.dedent("""
        with acting_as("support"):
            print(json.dumps(customer.model_dump(exclude={"id"}), sort_keys=True))
        print(repr(customer))
        """).replace("json.dumps", "__import__('json').dumps"))
    for _ in range(2):
        out = subprocess.run([sys.executable, "-W", "ignore", str(script)], check=True,
                             capture_output=True, text=True, timeout=120).stdout
        assert out.splitlines() == [
            '{"email": null, "name": "A**********", "national_id": "1********46", '
            '"phone": "+90********67"}', "Customer(id=1)"]
