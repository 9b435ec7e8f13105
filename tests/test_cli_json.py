"""``--json`` anywhere on the command line: every CLI command, with ``--json`` before and
after the subcommand, prints exactly one JSON document on stdout for success, failure and
usage error, with the exit codes of docs/operations.md (0 ok, 1 failure, 2 usage); and
so does an application module whose database is down when it loads.
"""

from __future__ import annotations

import json
import textwrap
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from sqlalchemy import column, select, table, update
from typer.main import get_command
from typer.testing import CliRunner

from piiguard.cli import app
from test_cli_commands import App, N


def one_document(res) -> dict:
    """The run's stdout is exactly one JSON document (an object)."""
    doc = json.loads(res.stdout)   # raises on two documents or on any extra text
    assert isinstance(doc, dict), res.stdout
    return doc


def tamper(a: App, row_id: int = 3) -> None:
    raw = table("customers", column("id"), column("phone"))
    with a.engine.connect() as conn:
        blob = bytearray(conn.execute(select(raw.c.phone).where(raw.c.id == row_id))
                         .scalar_one())
    blob[-3] ^= 0x01
    with a.engine.begin() as conn:
        conn.execute(update(raw).where(raw.c.id == row_id).values(phone=bytes(blob)))


def key_ids(a: App, **match) -> list[int]:
    res = a.run("--json", "keys", "status")
    return [k["id"] for k in one_document(res)["keys"]
            if all(k[f] == v for f, v in match.items())]


def legacy_app(tmp_path, monkeypatch) -> App:
    """An App whose phone column is mid-migration (allow_plaintext=True) with 2 plaintext
    values left."""
    a = App(tmp_path, monkeypatch, f"sqlite:///{tmp_path / 'legacy.db'}")
    name = f"legacy_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(f'''
        from sqlalchemy import Integer, create_engine
        from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
        from piiguard import Guard, LocalKMS
        from piiguard.sqlalchemy import EncryptedPhone
        guard = Guard(kms=LocalKMS.from_file({str(tmp_path / "k.key")!r}, create=True))
        class Base(DeclarativeBase):
            pass
        class Legacy(Base):
            __tablename__ = "legacy"
            id: Mapped[int] = mapped_column(Integer, primary_key=True)
            phone: Mapped[str] = mapped_column(EncryptedPhone(guard, text=True,
                                                              allow_plaintext=True))
        engine = create_engine({a.url.replace("legacy.db", "legacy_app.db")!r})
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS legacy "
                                 "(id INTEGER PRIMARY KEY, phone VARCHAR(200))")
            conn.exec_driver_sql("INSERT OR IGNORE INTO legacy VALUES "
                                 "(1, '0532 111 22 33'), (2, '0532 444 55 66')")
        guard.bind(engine)
    '''))
    a.spec = f"{name}:guard"
    return a


def sqlite_app(tmp_path, monkeypatch) -> App:
    return App(tmp_path, monkeypatch, f"sqlite:///{tmp_path / 'app.db'}")


@dataclass
class Case:
    """One command: how to make it succeed, fail (exit 1) and misuse it (exit 2).
    ``prepare`` runs first (on a fresh App) and returns the argv of the three runs."""

    prepare: Callable[[App], tuple[list[str], list[str], list[str]]]
    app: Callable[..., App] = sqlite_app


def _init(a: App):
    bad = a.url.replace("app.db", "bad.key")
    with open(bad.removeprefix("sqlite:///"), "w") as f:
        f.write("not a key file")
    base = ["--database-url", a.url]
    fresh = ["--database-url", a.url.replace("app.db", "fresh.db")]
    return ([*fresh, "--key-file", "fresh/master.key", "init"],
            [*base, "--key-file", bad.removeprefix("sqlite:///"), "init"],
            [*base, "init", "--no-such-option"])


def _demo(a: App):
    with open("corrupt-demo-dir", "w") as f:
        f.write("a file where the demo wants a directory")
    return (["demo", "--rows", "0", "--dir", "demo-ok"],
            ["demo", "--rows", "0", "--dir", "corrupt-demo-dir/sub"],
            ["demo", "--rows", "-1"])


def _retire(a: App):
    old = key_ids(a, kind="dek")[0]
    a.run("keys", "rotate")
    a.run("reencrypt")
    active = key_ids(a, kind="dek", state="active")[0]
    return (["keys", "retire", str(old)], ["keys", "retire", str(active)],
            ["keys", "retire", "not-a-number"])


def _destroy(a: App):
    kid = key_ids(a, kind="dek")[0]
    return (["keys", "destroy", str(kid), "--yes"], ["keys", "destroy", "999999", "--yes"],
            ["keys", "destroy", str(kid)])        # no terminal, no --yes


def _reencrypt(a: App):
    a.run("keys", "rotate")
    return (["reencrypt", "--table", "customers"], ["reencrypt", "--table", "nosuch"],
            ["reencrypt", "--batch-size", "0"])


def _verify(a: App):
    return (["verify", "--table", "customers"], ["verify", "--table", "nosuch"],
            ["verify", "--batch-size", "0"])


def _finished_job(a: App, ok: bool = True) -> str:
    from piiguard.rotation.jobstore import JobStore

    store = JobStore(a.engine)
    job = store.create("verify", {}, {"customers": N})
    store.finish(job, 1, {"ok": ok, "checked": 3 * N})
    return job


def _broken_job_tables(a: App) -> None:
    """A piiguard_jobs table of another shape: reading it is a database error."""
    from sqlalchemy import text

    with a.engine.begin() as conn:
        conn.execute(text("CREATE TABLE piiguard_jobs (other_column INTEGER)"))


def _jobs_list(a: App):
    return (["jobs", "list"], ["jobs", "list"], ["jobs", "list", "--limit", "0"])


def _broken_job_tables_after_success(a: App) -> None:
    from sqlalchemy import text

    with a.engine.begin() as conn:     # the success run created the real tables
        conn.execute(text("DROP TABLE piiguard_job_tables"))
        conn.execute(text("DROP TABLE piiguard_jobs"))
    _broken_job_tables(a)


def _jobs_status(a: App):
    job = _finished_job(a)
    return (["jobs", "status", job], ["jobs", "status", "nope"], ["jobs", "status"])


def _jobs_wait(a: App):
    job = _finished_job(a)
    return (["jobs", "wait", job, "--timeout", "5"], ["jobs", "wait", "nope"],
            ["jobs", "wait", job, "--timeout", "-1"])


def _kms_outage(a: App, monkeypatch) -> None:
    """The KMS stops answering (injected: the local key file cannot fail this way) and the
    process's cached keys are dropped, so the next KEK load needs it."""
    from piiguard.errors import KMSUnavailableError

    guard = a.module.guard

    def down(*args, **kwargs):
        raise KMSUnavailableError("injected outage", operation="decrypt")

    guard.keys.clear_cache()
    monkeypatch.setattr(guard.kms, "decrypt_data_key", down)
    monkeypatch.setattr(guard.kms, "generate_data_key", down)


def _reopen(a: App):
    a.run("shred", "--scope", "customers", "--yes")
    return (["keys", "reopen", "--scope", "customers", "--yes"],
            ["keys", "reopen", "--scope", "not-erased", "--yes"],
            ["keys", "reopen", "--yes"])


#: Runs before a case's failure run, for commands whose failure needs a broken world.
BEFORE_FAILURE: dict[str, Callable[..., None]] = {
    "keys adopt-kek": _kms_outage,
}


CASES: dict[str, Case] = {
    "init": Case(_init),
    "demo": Case(_demo),
    "keys status": Case(lambda a: (["keys", "status"], ["keys", "status", "--table", "nosuch"],
                                   ["keys", "status", "--table"])),
    "keys rotate": Case(lambda a: (["keys", "rotate"], ["keys", "rotate", "--scope", "nope"],
                                   ["keys", "rotate", "--kind", "pseudo"])),
    "keys rotate-master": Case(lambda a: (
        ["keys", "rotate-master", "--to", "new"],
        ["keys", "rotate-master", "--to", "mk-unknown"],
        ["keys", "rotate-master"])),
    "keys retire": Case(_retire),
    "keys destroy": Case(_destroy),
    "shred": Case(lambda a: (["shred", "--scope", "customers", "--yes"],
                             ["shred", "--scope", "nope", "--yes"],
                             ["shred", "--yes"])),
    "reencrypt": Case(_reencrypt),
    "encrypt-existing": Case(lambda a: (
        ["encrypt-existing", "--table", "legacy", "--column", "phone"],
        ["encrypt-existing", "--table", "legacy", "--column", "nope"],
        ["encrypt-existing", "--table", "legacy"]), app=legacy_app),
    "verify": Case(_verify),
    "jobs list": Case(_jobs_list),
    "jobs status": Case(_jobs_status),
    "jobs wait": Case(_jobs_wait),
    "keys adopt-kek": Case(lambda a: (["keys", "adopt-kek"], ["keys", "adopt-kek"],
                                      ["keys", "adopt-kek", "--bogus"])),
    "keys epoch": Case(lambda a: (["keys", "epoch", "--yes"],
                                  ["keys", "epoch", "--new-master-key", "mk-x", "--yes"],
                                  ["keys", "epoch"])),          # no terminal, no --yes
    "keys reopen": Case(_reopen),
}


def all_commands() -> list[str]:
    out = []

    def walk(group, prefix):
        for name, cmd in sorted(group.commands.items()):
            if getattr(cmd, "commands", None) is not None:
                walk(cmd, f"{prefix}{name} ")
            else:
                out.append(prefix + name)
    walk(get_command(app), "")
    return out


def test_every_command_has_a_case():
    missing = sorted(set(all_commands()) - set(CASES))
    assert not missing, f"add success/failure/usage cases to CASES for {missing}"


def _json_at(argv: list[str], where: str) -> list[str]:
    return ["--json", *argv] if where == "before" else [*argv, "--json"]


@pytest.mark.parametrize("where", ["before", "after"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_one_json_document_and_the_exit_code(name, where, tmp_path, monkeypatch):
    case = CASES[name]
    a = case.app(tmp_path, monkeypatch)
    ok, fail, usage = case.prepare(a)
    for argv, code in ((ok, 0), (fail, 1), (usage, 2)):
        if name == "jobs list" and code == 1:
            _broken_job_tables_after_success(a)
        if code == 1 and name in BEFORE_FAILURE:
            BEFORE_FAILURE[name](a, monkeypatch)
        full = ["--app", a.spec, *argv] if name not in ("init", "demo") else argv
        res = a.runner.invoke(app, _json_at(full, where))
        assert res.exit_code == code, (argv, code, res.stdout, res.stderr)
        doc = one_document(res)
        assert doc.get("ok", code == 0) is (code == 0), (argv, doc)
        if code:
            assert doc["error"]["type"] and doc["error"]["message"], doc
            assert "unexpected error" not in doc["error"]["message"], (argv, doc)


def test_usage_errors_anywhere_are_json():
    runner = CliRunner()
    for argv in (["--json"], ["keys", "--json"], ["--json", "no-such-command"],
                 ["keys", "status", "--json", "--bogus"], ["keys", "destroy", "--json"]):
        res = runner.invoke(app, argv)
        assert res.exit_code == 2, argv
        assert one_document(res)["error"]["type"] == "UsageError"


def test_without_json_usage_errors_stay_text(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["keys", "destroy"])
    assert res.exit_code == 2 and "Missing argument" in res.output
    with pytest.raises(json.JSONDecodeError):
        json.loads(res.stdout or "x")


def test_destroy_of_an_unknown_key_names_the_destroy_operation(tmp_path, monkeypatch):
    a = App(tmp_path, monkeypatch, f"sqlite:///{tmp_path / 'app.db'}")
    doc = a.json("keys", "destroy", "999999", "--yes", code=1)
    assert doc["error"]["type"] == "UnknownKeyError"
    assert "operation=destroy" in doc["error"]["message"]
    assert "retire" not in doc["error"]["message"]


DOWN = textwrap.dedent('''
    from sqlalchemy import create_engine
    from piiguard import Guard, LocalKMS
    guard = Guard(kms=LocalKMS.from_file({key!r}, create=True))
    # a database that is down when the module loads (nothing listens on port 1)
    guard.bind(create_engine("postgresql+psycopg://u:secret@127.0.0.1:1/db",
                             connect_args={{"connect_timeout": 2}}))
''')


@pytest.mark.parametrize("where", ["before", "after"])
def test_a_database_down_when_the_app_loads_is_exit_2_and_json(where, tmp_path,
                                                                monkeypatch):
    name = f"down_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(DOWN.format(key=str(tmp_path / "m.key")))
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, _json_at(["--app", f"{name}:guard", "keys", "status"],
                                           where))
    assert res.exit_code == 2, res.output
    doc = one_document(res)
    assert "unreachable" in doc["error"]["message"] and "OperationalError" in \
        doc["error"]["message"]
    assert "secret" not in res.output
    # and without --json: a message, not a traceback
    res = CliRunner().invoke(app, ["--app", f"{name}:guard", "keys", "status"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "unreachable" in res.output


def test_a_database_url_that_is_down_is_exit_2(tmp_path, monkeypatch):
    a = App(tmp_path, monkeypatch, f"sqlite:///{tmp_path / 'app.db'}")
    res = a.run("--database-url",
                "postgresql+psycopg://u:secret@127.0.0.1:1/db?connect_timeout=2",
                "keys", "status", "--json")
    assert res.exit_code == 2
    assert "unreachable" in one_document(res)["error"]["message"]
    assert "secret" not in res.output
