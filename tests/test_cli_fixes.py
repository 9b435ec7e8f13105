"""CLI messages and counts that were wrong: ``rotate-master --to <current>
--disable-old`` (disabled nothing, silently), ``reencrypt``'s ``shredded`` count when it
skips erased values, and ``encrypt-existing --dry-run`` on a column too narrow for the
envelope or without its blind index column."""

from __future__ import annotations

from sqlalchemy import Integer
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from piiguard import Guard
from piiguard.kms.local import LocalKMS
from piiguard.sqlalchemy import EncryptedNationalId, EncryptedPhone
from test_cli_commands import App, N


def sqlite(tmp_path, monkeypatch, **kw) -> App:
    return App(tmp_path, monkeypatch, f"sqlite:///{tmp_path / 'app.db'}", **kw)


def test_disable_old_with_the_current_master_key_disables_the_unused_ones(tmp_path,
                                                                          monkeypatch):
    a = sqlite(tmp_path, monkeypatch)
    first = a.module.guard.kms.master_key_id
    moved = a.json("keys", "rotate-master", "--to", "new")     # no --disable-old
    # only the key-encryption key is wrapped by the master key (the key hierarchy)
    assert moved["rewrapped"] == 1 and moved["disabled"] == []
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


# -- encrypt-existing --dry-run: widths and the blind index column -----------------------
def _legacy(engine, phone_type: str, with_index: bool):
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE legacy (id INTEGER PRIMARY KEY, phone "
                             f"{phone_type}, national_id VARCHAR(400)"
                             + (", national_id_bidx BYTEA" if with_index else "") + ")")
        conn.exec_driver_sql("INSERT INTO legacy VALUES (1, '0532 111 22 33', "
                             "'10000000146'" + (", NULL" if with_index else "") + ")")
    guard = Guard(kms=LocalKMS.generate())

    class Base(DeclarativeBase):
        pass

    class Legacy(Base):
        __tablename__ = "legacy"
        id: Mapped[int] = mapped_column(Integer, primary_key=True)
        phone: Mapped[str] = mapped_column(EncryptedPhone(guard, text=True,
                                                          allow_plaintext=True))
        national_id: Mapped[str] = mapped_column(EncryptedNationalId(
            guard, text=True, searchable=True, allow_plaintext=True))

    guard.bind(engine)
    return guard


def test_dry_run_refuses_a_column_too_narrow_for_the_envelope(pg_engine):
    from piiguard.rotation.migrate import encrypt_existing

    guard = _legacy(pg_engine, "VARCHAR(20)", with_index=True)
    dry = encrypt_existing(guard, "legacy", "phone", dry_run=True)
    assert dry.updated == 0 and len(dry.failures) == 1
    why = dry.failures[0].error
    assert "legacy.phone holds 20" in why and "widen the column" in why
    assert "0532" not in why
    # the real run does not write it either (no database error, the row is reported)
    real = encrypt_existing(guard, "legacy", "phone")
    assert real.updated == 0 and len(real.failures) == 1
    # wide enough: both pass
    assert not encrypt_existing(guard, "legacy", "national_id", dry_run=True).failures
    guard.close()          # stops its key-change listener (a connection on PostgreSQL)


def test_a_missing_blind_index_column_gets_the_advice_to_add_it(pg_engine):
    from piiguard.errors import ConfigurationError
    from piiguard.rotation.migrate import encrypt_existing

    guard = _legacy(pg_engine, "VARCHAR(400)", with_index=False)
    for dry_run in (True, False):
        try:
            encrypt_existing(guard, "legacy", "national_id", dry_run=dry_run)
        except ConfigurationError as exc:
            msg = str(exc)
        else:
            raise AssertionError("a missing _bidx column must be refused")
        assert "legacy.national_id_bidx" in msg and "op.add_column" in msg
        assert "BlindIndex(256)" in msg and "run the job again" not in msg
    # the phone column has no index: it migrates
    assert encrypt_existing(guard, "legacy", "phone").updated == 1
    guard.close()
