"""The ``piiguard`` CLI through typer's CliRunner (the same app the console script runs):
--app / PIIGUARD_APP loading, --database-url, --json, exit codes (0 ok, 1 failure,
2 usage), and every command end to end on SQLite (and reencrypt on PostgreSQL).
"""

from __future__ import annotations

import json
import os
import stat
import textwrap
import uuid

import pytest
from sqlalchemy import column, create_engine, insert, inspect, select, table, update
from typer.testing import CliRunner

from jobs_world import pg_url_of
from piiguard.cli import app
from piiguard.validators import tckn

APP = textwrap.dedent('''
    from sqlalchemy import Integer, String, create_engine
    from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

    from piiguard import Guard, LocalKMS
    from piiguard.sqlalchemy import EncryptedAddress, EncryptedNationalId, EncryptedPhone

    guard = Guard(kms=LocalKMS.from_file({key!r}, create=True))
    SCOPE = {scope!r}


    class Base(DeclarativeBase):
        pass


    class Customer(Base):
        __tablename__ = "customers"
        id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
        tenant: Mapped[str] = mapped_column(String(32))
        national_id: Mapped[str] = mapped_column(
            EncryptedNationalId(guard, searchable=True, key_scope=SCOPE))
        phone: Mapped[str] = mapped_column(EncryptedPhone(guard, key_scope=SCOPE))
        address: Mapped[str] = mapped_column(EncryptedAddress(guard, key_scope=SCOPE))


    def make_guard():
        return guard


    if {url!r}:
        engine = create_engine({url!r})
        Base.metadata.create_all(engine)
        guard.bind(engine)
''')


def tc(n: int) -> str:
    base = str(800000000 + n)
    return base + tckn.calc_check_digits(base)


N = 60


class App:
    """A throwaway application module in tmp_path, importable from the cwd."""

    def __init__(self, tmp_path, monkeypatch, url: str, *, bind=True, scope=None,
                 engine=None):
        self.name = f"cli_app_{uuid.uuid4().hex[:8]}"
        self.key = str(tmp_path / "master.key")
        self.url = url
        (tmp_path / f"{self.name}.py").write_text(
            APP.format(key=self.key, url=url if bind else "", scope=scope))
        monkeypatch.chdir(tmp_path)
        monkeypatch.syspath_prepend(str(tmp_path))
        self.module = __import__(self.name)
        if not bind:
            engine = engine if engine is not None else create_engine(url)
            self.module.Base.metadata.create_all(engine)
            self.module.guard.bind(engine)
        self.engine = self.module.guard.engine
        with self.engine.begin() as conn:
            conn.execute(insert(self.module.Customer.__table__), [
                dict(id=i, tenant=f"t{i % 3}", national_id=tc(i), phone=f"+90539{i:07d}",
                     address=f"Moda Cad. No:{i}, 34710 Kadıköy/İstanbul")
                for i in range(1, N + 1)])
        self.spec = f"{self.name}:guard"
        self.runner = CliRunner()

    def run(self, *args, app_spec=True, env=None):
        argv = (["--app", self.spec] if app_spec else []) + list(args)
        return self.runner.invoke(app, argv, env=env, catch_exceptions=False)

    def json(self, *args, code=0, **kw):
        res = self.run("--json", *args, **kw)
        assert res.exit_code == code, res.output
        return json.loads(res.stdout)


@pytest.fixture
def sqlite_app(tmp_path, monkeypatch):
    return App(tmp_path, monkeypatch, f"sqlite:///{tmp_path / 'app.db'}")


def test_usage_errors_exit_2(sqlite_app, tmp_path):
    r = sqlite_app.runner
    for argv in (["--app", "nocolon", "keys", "status"],
                 ["--app", "no_such_module_xyz:guard", "keys", "status"],
                 ["--app", f"{sqlite_app.name}:nope", "keys", "status"],
                 ["--app", f"{sqlite_app.name}:Customer", "keys", "status"],
                 ["--app", sqlite_app.spec, "keys", "rotate", "--kind", "pseudo"],
                 ["--app", sqlite_app.spec, "reencrypt", "--batch-size", "0"],
                 ["--app", sqlite_app.spec, "no-such-command"],
                 ["--key-file", str(tmp_path / "missing.key"), "keys", "status"]):
        res = r.invoke(app, argv)
        assert res.exit_code == 2, (argv, res.output)
    res = r.invoke(app, ["--key-file", sqlite_app.key, "keys", "status"])
    assert res.exit_code == 2 and "--database-url" in res.output


def test_app_as_a_factory_and_from_the_environment(sqlite_app):
    doc = sqlite_app.json("keys", "status", app_spec=False,
                          env={"PIIGUARD_APP": f"{sqlite_app.name}:make_guard"})
    assert {k["kind"] for k in doc["keys"]} == {"dek", "index"}


def test_init_creates_a_0600_key_file_and_the_key_table(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    runner = CliRunner()
    res = runner.invoke(app, ["--json", "--key-file", "keys/master.key", "--database-url",
                              url, "init"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["created"] and doc["key_table"] == "piiguard_data_keys"
    mode = stat.S_IMODE(os.stat(tmp_path / "keys" / "master.key").st_mode)
    assert mode == 0o600
    assert "piiguard_data_keys" in inspect(create_engine(url)).get_table_names()
    again = json.loads(runner.invoke(app, ["--json", "--key-file", "keys/master.key",
                                           "--database-url", url, "init"]).stdout)
    assert not again["created"] and again["master_key_id"] == doc["master_key_id"]
    human = runner.invoke(app, ["--key-file", "keys/other.key", "init"])
    assert human.exit_code == 0 and "key table not created" in human.output


def test_rotate_reencrypt_retire_round_trip(sqlite_app):
    status = sqlite_app.json("keys", "status")
    old = next(k["id"] for k in status["keys"] if k["kind"] == "dek")
    assert next(k for k in status["keys"] if k["id"] == old)["total_rows"] == 3 * N

    rotated = sqlite_app.json("keys", "rotate", "--scope", "customers")
    new = rotated["rotated"][0]["key_id"]
    assert rotated["rotated"][0]["previous_key_id"] == old

    refused = sqlite_app.json("keys", "retire", str(old), code=1)
    assert refused["error"]["type"] == "KeyInUseError"
    assert "customers." in refused["error"]["message"]

    dry = sqlite_app.json("reencrypt", "--dry-run", "--batch-size", "7")
    real = sqlite_app.json("reencrypt", "--batch-size", "7")
    assert dry["updated"] == real["updated"] == N and dry["values"] == real["values"] == 3 * N
    assert real["ok"] and real["remaining"] == 0
    assert sqlite_app.json("reencrypt")["updated"] == 0

    after = {k["id"]: k for k in sqlite_app.json("keys", "status")["keys"]}
    assert after[old]["total_rows"] == 0 and after[new]["total_rows"] == 3 * N
    assert sqlite_app.json("keys", "retire", str(old)) == {"ok": True, "retired": old}
    human = sqlite_app.run("keys", "status")
    assert human.exit_code == 0 and "retired" in human.output and "decrypt_only" not in human.output


def test_index_key_rotation_through_the_cli(sqlite_app):
    doc = sqlite_app.json("keys", "rotate", "--kind", "index")
    old_idx = doc["rotated"][0]["previous_key_id"]
    assert sqlite_app.json("keys", "retire", str(old_idx), code=1)["error"]["type"] == \
        "KeyInUseError"
    report = sqlite_app.json("reencrypt")
    assert report["tables"][0]["indexes"] == N and report["values"] == 0
    sqlite_app.json("keys", "retire", str(old_idx))
    assert sqlite_app.json("verify")["ok"]


def test_human_output_and_progress_free_runs(sqlite_app):
    sqlite_app.run("keys", "rotate")
    res = sqlite_app.run("reencrypt", "--workers", "2")
    assert res.exit_code == 0, res.output
    assert "updated 60 row(s)" in res.output and "rows/s" in res.output
    res = sqlite_app.run("verify")
    assert res.exit_code == 0 and "ok: 180 value(s) checked" in res.output


def test_verify_and_reencrypt_fail_with_exit_1_and_no_values(sqlite_app):
    raw = table("customers", column("id"), column("phone"))
    with sqlite_app.engine.connect() as conn:
        blob = bytearray(conn.execute(select(raw.c.phone).where(raw.c.id == 3)).scalar_one())
    blob[-3] ^= 0x01
    with sqlite_app.engine.begin() as conn:
        conn.execute(update(raw).where(raw.c.id == 3).values(phone=bytes(blob)))
    res = sqlite_app.run("verify")
    assert res.exit_code == 1
    assert "customers.phone id=3" in res.output and "DecryptionError" in res.output
    assert "+9053" not in res.output and tc(3) not in res.output
    doc = sqlite_app.json("verify", code=1)
    assert doc["failures"] == [{"column": "customers.phone", "row": "id=3",
                                "error": doc["failures"][0]["error"]}]
    sqlite_app.run("keys", "rotate")
    res = sqlite_app.run("reencrypt")
    assert res.exit_code == 1 and "+9053" not in res.output
    assert "failed customers.phone id=3" in res.output


def test_destroy_needs_yes_and_shred_a_tenant_scope(tmp_path, monkeypatch):
    a = App(tmp_path, monkeypatch, f"sqlite:///{tmp_path / 'app.db'}", scope="tenant")
    res = a.run("shred", "--scope", "customers:t1")     # not a terminal, no --yes
    assert res.exit_code == 2 and "--yes" in res.output
    doc = a.json("shred", "--scope", "customers:t1", "--yes")
    assert doc["ok"] and len(doc["keys"]) == 1 and doc["total_values"] == 60
    assert doc["indexes_cleared"] == 20
    check = a.json("verify")
    assert check["ok"] and sum(c["shredded"] for c in check["columns"]) == 60
    status = {k["id"]: k for k in a.json("keys", "status")["keys"]}
    assert status[doc["keys"][0]]["state"] == "destroyed"
    t0 = next(k for k in status.values() if k["scope"] == "customers:t0")
    destroyed = a.json("keys", "destroy", str(t0["id"]), "--yes")
    assert destroyed["total_values"] == 60
    assert a.json("keys", "destroy", "424242", "--yes", code=1)["error"]["type"] == \
        "UnknownKeyError"


def test_rotate_master_through_the_cli(sqlite_app):
    doc = sqlite_app.json("keys", "rotate-master", "--to", "new", "--disable-old")
    # the KMS wraps the KEK only: one key rewrapped, however many data keys there are
    assert doc["ok"] and doc["created"] and doc["rewrapped"] == 1 and doc["disabled"]
    keys = sqlite_app.json("keys", "status")["keys"]
    assert len(keys) == 2 and {k["master_key_id"] for k in keys} == {"kek:1"}
    assert sqlite_app.json("verify")["ok"]
    # without --app: the key file and the database are enough
    res = sqlite_app.runner.invoke(app, ["--json", "--key-file", sqlite_app.key,
                                         "--database-url", sqlite_app.url, "keys",
                                         "rotate-master", "--to", doc["destination"]])
    assert res.exit_code == 0 and json.loads(res.stdout)["rewrapped"] == 0
    bad = sqlite_app.json("keys", "rotate-master", "--to", "mk-unknown", code=1)
    assert bad["error"]["type"] == "UnknownKeyError"
    # jobs over rows need the models: without --app they refuse instead of "0 rows"
    res = sqlite_app.runner.invoke(app, ["--json", "--key-file", sqlite_app.key,
                                         "--database-url", sqlite_app.url, "reencrypt"])
    assert res.exit_code == 1 and "pass --app" in res.stdout


def test_rotating_an_unknown_scope_is_refused(sqlite_app):
    doc = sqlite_app.json("keys", "rotate", "--scope", "custmers", code=1)
    assert doc["error"]["type"] == "ConfigurationError"
    assert {k["scope"] for k in sqlite_app.json("keys", "status")["keys"]} == {"customers"}


def test_database_url_binds_an_unbound_guard(tmp_path, monkeypatch):
    a = App(tmp_path, monkeypatch, f"sqlite:///{tmp_path / 'other.db'}", bind=False)
    a.module.guard.keys.engine = None                # as if the app never bound it
    res = a.run("--json", "keys", "status")
    assert res.exit_code == 2 and "--database-url" in res.output
    doc = a.json("--database-url", a.url, "keys", "status")
    assert any(k["total_rows"] == 3 * N for k in doc["keys"])


def test_encrypt_existing_through_the_cli(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'legacy.db'}"
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE customers (id INTEGER PRIMARY KEY, "
                             "phone VARCHAR(200))")
        conn.exec_driver_sql("INSERT INTO customers VALUES (1, '0532 111 22 33'), "
                             "(2, '0532 444 55 66'), (3, NULL)")
    name = f"legacy_app_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(f'''
        from sqlalchemy import Integer, create_engine
        from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
        from piiguard import Guard, LocalKMS
        from piiguard.sqlalchemy import EncryptedPhone
        guard = Guard(kms=LocalKMS.from_file({str(tmp_path / "k.key")!r}, create=True))
        class Base(DeclarativeBase):
            pass
        class Customer(Base):
            __tablename__ = "customers"
            id: Mapped[int] = mapped_column(Integer, primary_key=True)
            phone: Mapped[str] = mapped_column(EncryptedPhone(guard, text=True,
                                                              allow_plaintext=True))
        guard.bind(create_engine({url!r}))
    '''))
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    base = ["--json", "--app", f"{name}:guard"]
    res = runner.invoke(app, [*base, "verify"])
    assert res.exit_code == 1 and json.loads(res.stdout)["failed"] == 2
    res = runner.invoke(app, [*base, "encrypt-existing", "--table", "customers",
                              "--column", "phone"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["updated"] == 2
    assert runner.invoke(app, [*base, "verify"]).exit_code == 0
    res = runner.invoke(app, [*base, "encrypt-existing", "--table", "customers",
                              "--column", "nope"])
    assert res.exit_code == 1


def test_reencrypt_on_postgresql_with_workers(pg_engine, tmp_path, monkeypatch):
    # The app module binds the test's schema by URL: worker processes import it.
    a = App(tmp_path, monkeypatch, pg_url_of(pg_engine))
    a.run("keys", "rotate")
    doc = a.json("reencrypt", "--workers", "3", "--batch-size", "10")
    assert doc["updated"] == N and doc["workers"] == 3 and doc["ok"]
    assert a.json("reencrypt")["updated"] == 0
    assert a.json("verify")["checked"] == 3 * N
