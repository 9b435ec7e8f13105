"""``keys status`` stays readable at 80 columns: master key ids are never cut (a legend
gives them in full), and thousands of per-subject keys are summarised by kind, scope
family and state instead of drawing a table of empty boxes."""

from __future__ import annotations

import io
from datetime import UTC, datetime

from rich.console import Console

from piiguard._console import KEYS_LISTED, print_status
from piiguard.rotation.status import ColumnUsage, KeyStatus, StatusReport
from test_cli_commands import App

ARN = "arn:aws:kms:eu-central-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
ARN2 = "arn:aws:kms:eu-central-1:111122223333:key/9999ffff-12ab-34cd-56ef-1234567890ab"


def render(report: StatusReport, width: int = 80) -> str:
    buf = io.StringIO()
    print_status(Console(file=buf, width=width, no_color=True, highlight=False), report)
    return buf.getvalue()


def key(i: int, scope: str, state: str = "active", master: str = ARN, kind: str = "dek",
        rows: int = 0) -> KeyStatus:
    return KeyStatus(i, kind, scope, state, master, datetime(2026, 1, 1, tzinfo=UTC),
                     3600.0, 5, {"customers.phone": rows} if rows else {})


def test_long_master_key_ids_are_never_cut_at_80_columns():
    report = StatusReport([key(1, "customers", "decrypt_only", ARN, rows=3),
                           key(2, "customers", "active", ARN2, rows=7),
                           key(3, "customers", "active", ARN2, kind="index")],
                          [ColumnUsage("customers.phone", "ciphertext", {1: 3, 2: 7},
                                       total=10)])
    out = render(report)
    assert "…" not in out
    assert f"M1 = master key {ARN}" in out and f"M2 = master key {ARN2}" in out
    assert all(len(line) <= 80 for line in out.splitlines() if "master key" not in line)
    assert "key 1" in out and "key 2" in out        # by key id: few keys


def test_one_master_key_is_named_once_in_full():
    out = render(StatusReport([key(1, "customers"), key(2, "orders")], []))
    assert f"master key: {ARN}" in out and "M1" not in out and "…" not in out


def test_thousands_of_per_subject_keys_are_summarised_per_scope():
    keys = [key(i, f"customers:{i}", rows=3) for i in range(1, 2001)]
    keys += [key(2000 + i, f"customers:{i}", "destroyed") for i in range(1, 51)]
    keys += [key(3000, "orders", "active", ARN2)]
    usage = [ColumnUsage("customers.phone", "ciphertext",
                         {i: 3 for i in range(1, 2001)} | {99999: 1}, total=6001)]
    out = render(StatusReport(keys, usage))
    lines = out.splitlines()
    assert len(lines) < 40, out
    rows = [line for line in lines if "customers:*" in line]
    assert len(rows) == 2 and "2,000" in rows[0] and "1-2000" in rows[0]
    assert "destroyed" in rows[1] and "2001-2050" in rows[1]
    assert "2,051 keys summarised" in out and "--json lists every key" in out
    # usage by key state (2,000 key id columns would not fit): 6,000 under active keys,
    # 1 under an unknown key id
    assert "stored values by column and key state" in out
    row = next(line for line in lines if line.startswith("│ customers.phone"))
    assert "6,000" in row and row.rstrip("│ ").endswith("1")
    assert "…" not in out.replace("99999 …", "")
    assert all(len(line) <= 80 for line in lines if "master key" not in line)


def test_listed_one_by_one_up_to_the_limit():
    out = render(StatusReport([key(i, f"customers:{i}") for i in range(1, KEYS_LISTED + 1)],
                              []))
    assert "summarised" not in out and f"customers:{KEYS_LISTED}" in out


def test_cli_keys_status_at_80_columns(tmp_path, monkeypatch):
    a = App(tmp_path, monkeypatch, f"sqlite:///{tmp_path / 'app.db'}", scope="tenant")
    a.run("keys", "rotate-master", "--to", "new")
    res = a.run("keys", "status", env={"COLUMNS": "80"})
    assert res.exit_code == 0, res.output
    assert "…" not in res.stdout
    masters = {k.master_key_id for k in a.module.guard.keys.keys()}
    for m in masters:
        assert m in res.stdout
