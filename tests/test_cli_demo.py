"""``piiguard demo`` runs end to end with no network and no setup, shows ciphertext beside
plaintext, masking by role and a rotation; re-running it recreates the database."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from piiguard.cli import app


def test_demo_shows_ciphertext_beside_plaintext_masking_and_rotation(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    res = runner.invoke(app, ["demo", "--rows", "300"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    out = res.output
    # 1. the database side (hex of a binary envelope: format byte, DEK id; a text one)
    assert "10 00000002 " in out and "pg1:" in out   # key 1 is the KEK
    # ... and the application side
    assert "10000000146" in out and "+905321234567" in out and "Ayşe Yılmaz" in out
    # 2. masking by role
    assert "1********46" in out and "+90********67" in out and "[REDACTED]" in out
    # 3. rotation: status before/after, refused retire, reencrypt, verify
    assert "keys before the rotation" in out and "keys after reencrypt" in out
    assert "refused" in out and "decrypt_only" in out and "retired" in out
    assert "re-encrypted 1,525 values in 305 rows" in out
    assert "verify   -> ok" in out
    key = tmp_path / ".piiguard" / "demo" / "master.key"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    db = tmp_path / ".piiguard" / "demo" / "demo.db"
    with sqlite3.connect(db) as conn:
        (n,) = conn.execute("SELECT count(*) FROM customers").fetchone()
        (phone,) = conn.execute("SELECT phone FROM customers WHERE id = 1").fetchone()
    assert n == 305 and isinstance(phone, bytes) and b"905321234567" not in phone

    again = runner.invoke(app, ["demo", "--rows", "50"], catch_exceptions=False)
    assert again.exit_code == 0, again.output
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM customers").fetchone() == (55,)


def test_demo_json(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["--json", "demo", "--dir", str(tmp_path / "d"), "--rows", "20"],
                        catch_exceptions=False)
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    first = {r["column"]: r for r in doc["rows"] if r["id"] == 1}
    assert first["national_id"]["read"] == "10000000146"
    assert first["national_id"]["stored"].startswith("10 00000002")
    assert first["email"]["stored"].startswith("pg1:")
    assert doc["masking"]["support"]["national_id"] == "1********46"
    assert doc["masking"]["intern"]["phone"] == "[REDACTED]"
    assert doc["rotation"]["retire_refused"] is True
    assert doc["rotation"]["reencrypt"]["updated"] == 25
    assert doc["rotation"]["verify"] == {"ok": True, "checked": 125}
    assert doc["audit"]["key.rotate"] == 1 and doc["audit"]["reencrypt"] == 1


@pytest.mark.slow
def test_demo_console_script_in_a_fresh_directory(tmp_path):
    """What `make demo` runs: the installed console script, in a directory with nothing."""
    exe = os.path.join(os.path.dirname(sys.executable), "piiguard")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIIGUARD_")}
    res = subprocess.run([exe, "demo", "--rows", "200"], cwd=tmp_path, env=env,
                         capture_output=True, timeout=300)
    assert res.returncode == 0, res.stderr.decode()
    out = res.stdout.decode()
    assert "pg1:" in out and "10000000146" in out and "keys after reencrypt" in out
