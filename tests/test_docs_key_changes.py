"""What docs/operations.md and the CLI say about key changes reaching running processes
is what the code does (the behaviour itself: test_keys_notify*.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from typer.testing import CliRunner

from piiguard import CacheLimits
from piiguard.cli import app
from piiguard.keys import notify

ROOT = Path(__file__).resolve().parents[1]
OPS = (ROOT / "docs" / "operations.md").read_text()
SOURCE = (ROOT / "piiguard" / "keys" / "notify.py").read_text()


def test_the_runbook_has_no_waiting_step():
    assert "soft TTL" not in OPS and "soft_ttl" not in OPS
    assert not re.search(r"(?i)wait (for|one) the (key cache|soft)", OPS)
    assert "restart processes" not in OPS


def test_the_runbook_states_the_bounds_the_code_has():
    rows = {m.group(1): float(m.group(2)) for m in re.finditer(
        r"^\| (PostgreSQL|MariaDB / MySQL, SQLite) \|.*\| (\d+(?:\.\d+)?) s \|$", OPS, re.M)}
    assert rows == {"PostgreSQL": notify.PUSH_BOUND, "MariaDB / MySQL, SQLite":
                    notify.POLL_BOUND}
    assert f"at most every {notify.CHECK_SHARE} of the bound" in OPS
    assert "`CacheLimits(change_bound=…)`" in OPS and CacheLimits().change_bound is None
    assert f"({CacheLimits().flush_interval:.0f} s by default)" in OPS
    assert f"`NOTIFY {notify.CHANNEL}`" in OPS
    assert f"closed after {notify.IDLE_CLOSE:.0f} s without key use" in OPS
    assert "from its third check period" in OPS and notify.LISTEN_AFTER == 3


def test_the_log_lines_the_runbook_quotes_exist():
    for quoted in ("key-change listener lost its PostgreSQL connection",
                   "cannot\nread the key table's generation"):
        assert quoted in OPS
        assert quoted.replace("\n", " ") in SOURCE


def test_the_cli_says_the_same(tmp_path, monkeypatch):
    from piiguard import LocalKMS
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    help_text = runner.invoke(app, ["keys", "rotate", "--help"]).output
    assert "change bound" in help_text and "no need to wait" in help_text
    key = tmp_path / "master.key"
    LocalKMS.from_file(key, create=True)
    url = f"sqlite:///{tmp_path / 'k.db'}"
    base = ["--json", "--key-file", str(key), "--database-url", url]
    res = runner.invoke(app, [*base, "keys", "rotate-master", "--to", "new"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["created"] and not any("restart" in n for n in doc.get("notes", []))
