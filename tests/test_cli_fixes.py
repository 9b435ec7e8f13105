"""CLI messages and counts that were wrong: ``rotate-master --to <current>
--disable-old`` (disabled nothing, silently), ``reencrypt``'s ``shredded`` count when it
skips erased values, and ``encrypt-existing --dry-run`` on a column too narrow for the
envelope or without its blind index column."""

from __future__ import annotations

from piiguard.kms.local import LocalKMS
from test_cli_commands import App, N


def sqlite(tmp_path, monkeypatch, **kw) -> App:
    return App(tmp_path, monkeypatch, f"sqlite:///{tmp_path / 'app.db'}", **kw)


def test_disable_old_with_the_current_master_key_disables_the_unused_ones(tmp_path,
                                                                          monkeypatch):
    a = sqlite(tmp_path, monkeypatch)
    first = a.module.guard.kms.master_key_id
    moved = a.json("keys", "rotate-master", "--to", "new")     # no --disable-old
    assert moved["rewrapped"] == 2 and moved["disabled"] == []
    # later, as the runbook says: --to the (now current) master key --disable-old
    doc = a.json("keys", "rotate-master", "--to", moved["destination"], "--disable-old")
    assert doc["rewrapped"] == 0 and doc["disabled"] == [first]
    assert first in LocalKMS.from_file(a.key).disabled
    assert a.json("verify")["ok"]
    # again: nothing left to disable, and it says so
    again = a.json("keys", "rotate-master", "--to", moved["destination"], "--disable-old")
    assert again["disabled"] == [] and any("nothing to disable" in n for n in again["notes"])
    res = a.run("keys", "rotate-master", "--to", moved["destination"], "--disable-old")
    assert "nothing to disable" in res.stdout


def test_disable_old_keeps_a_master_key_that_a_key_row_still_names(tmp_path, monkeypatch):
    a = sqlite(tmp_path, monkeypatch)
    first = a.module.guard.kms.master_key_id
    kms = LocalKMS.from_file(a.key)
    spare = kms.add_master_key()                    # in the file, named by no key row
    kms.set_current(first)
    doc = a.json("keys", "rotate-master", "--to", first, "--disable-old")
    assert doc["disabled"] == [spare]
    assert first not in LocalKMS.from_file(a.key).disabled


def test_reencrypt_counts_the_shredded_values_it_skips(tmp_path, monkeypatch):
    a = sqlite(tmp_path, monkeypatch, scope="tenant")
    shred = a.json("shred", "--scope", "customers:t1", "--yes")
    assert shred["total_values"] == 60          # 20 rows x 3 columns
    a.json("keys", "rotate")
    doc = a.json("reencrypt")
    assert doc["shredded"] == 60, doc
    assert doc["updated"] == N - 20
    dry = a.json("reencrypt", "--dry-run")
    assert dry["shredded"] == 60 and dry["updated"] == 0
    res = a.run("reencrypt", env={"COLUMNS": "80"})
    assert res.exit_code == 0 and "…" not in res.stdout
    head = next(line for line in res.stdout.splitlines() if "shredded" in line)
    row = next(line for line in res.stdout.splitlines() if "customers" in line)
    cells = [c.strip() for c in row.strip("│ ").split("│")]
    assert cells[[c.strip() for c in head.strip("┃ ").split("┃")].index("shredded")] == "60"
