"""piiguard's tables made by an Alembic migration, so that production needs no DDL
rights: a real Alembic environment in a tmp dir, ``alembic upgrade head`` run as a
command on PostgreSQL and MariaDB; ``guard.bind(engine, create_tables=False)`` then
works (on PostgreSQL as a role that cannot create tables), refuses a database without
the tables, and autogenerate neither proposes dropping them nor logs that they were
removed."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from piiguard import Guard, LocalKMS
from piiguard.errors import ConfigurationError
from piiguard.masking.audit import AuditTrail
from piiguard.sqlalchemy import EncryptedNationalId

ALEMBIC = str(Path(sys.executable).with_name("alembic"))

ENV = '''
import json, os
from alembic import context
from sqlalchemy import create_engine

engine = create_engine(os.environ["APP_DB_URL"],
                       connect_args=json.loads(os.environ.get("APP_DB_ARGS", "{}")))
if context.is_offline_mode():
    context.configure(url=engine.url, literal_binds=True, dialect_name=engine.dialect.name)
    with context.begin_transaction():
        context.run_migrations()
else:
    with engine.begin() as connection:
        context.configure(connection=connection, target_metadata=None)
        with context.begin_transaction():
            context.run_migrations()
'''

MIGRATION = '''
"""piiguard tables and customers"""
from alembic import op
import sqlalchemy as sa
import piiguard.sqlalchemy
from piiguard.sqlalchemy.alembic import create_piiguard_tables, drop_piiguard_tables

revision = "0001"
down_revision = None


def upgrade():
    create_piiguard_tables(op, audit_table=True)
    op.create_table(
        "customers",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("national_id", piiguard.sqlalchemy.Ciphertext(max_bytes=44)),
        sa.Column("national_id_bidx", piiguard.sqlalchemy.BlindIndex(bits=256)),
    )


def downgrade():
    op.drop_table("customers")
    drop_piiguard_tables(op, audit_table=True)
'''

UPGRADE = '''
"""a later piiguard release: create what it added"""
from alembic import op
from piiguard.sqlalchemy.alembic import create_piiguard_tables

revision = "0002"
down_revision = "0001"


def upgrade():
    print("created:", create_piiguard_tables(op, audit_table=True))


def downgrade():
    pass
'''


def alembic_env(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    (root / "migrations" / "versions").mkdir(parents=True)
    (root / "alembic.ini").write_text("[alembic]\nscript_location = migrations\n")
    (root / "migrations" / "env.py").write_text(ENV)
    (root / "migrations" / "script.py.mako").write_text("")
    (root / "migrations" / "versions" / "0001_piiguard.py").write_text(MIGRATION)
    return root


def alembic(root: Path, url: str, args: dict, *cmd: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, APP_DB_URL=url, APP_DB_ARGS=json.dumps(args))
    res = subprocess.run([ALEMBIC, *cmd], cwd=root, env=env, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    return res


def url_of(engine) -> tuple[str, dict]:
    url = engine.url.render_as_string(hide_password=False)
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            schema = conn.execute(text("select current_schema()")).scalar_one()
        return url, {"options": f"-csearch_path={schema}"}
    return url, {}


def make_models(guard):
    class Base(DeclarativeBase):
        pass

    class Customer(Base):
        __tablename__ = "customers"
        id: Mapped[int] = mapped_column(primary_key=True)
        national_id: Mapped[str] = mapped_column(EncryptedNationalId(guard,
                                                                     searchable=True))
    return Customer


@pytest.fixture(params=["postgresql", "mariadb"])
def server_engine(request):
    return request.getfixturevalue({"postgresql": "pg_engine",
                                    "mariadb": "mariadb_engine"}[request.param])


def test_alembic_upgrade_head_creates_the_key_table(server_engine, tmp_path):
    engine = server_engine
    root = alembic_env(tmp_path)
    url, args = url_of(engine)
    # without the tables, create_tables=False refuses and names the migration helper
    with pytest.raises(ConfigurationError) as err:
        Guard(kms=LocalKMS.generate()).bind(engine, create_tables=False)
    assert "create_piiguard_tables" in str(err.value)
    assert "piiguard_data_keys" in str(err.value)

    alembic(root, url, args, "upgrade", "head")
    names = set(inspect(engine).get_table_names())
    assert {"piiguard_data_keys", "piiguard_data_keys_generation", "piiguard_audit",
            "customers"} <= names
    assert "ix_piiguard_data_keys_kind_scope" in {
        ix["name"] for ix in inspect(engine).get_indexes("piiguard_data_keys")}

    kms = LocalKMS.generate()
    guard = Guard(kms=kms, audit=AuditTrail(table=True))
    Customer = make_models(guard)
    guard.bind(engine, create_tables=False)
    with Session(engine) as s:
        s.add(Customer(id=1, national_id="10000000146"))
        s.commit()
    reader = Guard(kms=kms)
    make_models(reader)
    reader.bind(engine, create_tables=False)
    with Session(engine) as s:
        assert s.get(Customer, 1).national_id == "10000000146"
    guard.keys.rotate("dek", "customers")          # the generation row is there
    with engine.connect() as conn:
        assert conn.execute(text("select generation from piiguard_data_keys_generation"
                                 )).scalar_one() >= 1

    guard.close()          # stops its key-change listener (a connection on PostgreSQL)
    reader.close()

    # an install made before the generation table: the next migration adds only it
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE piiguard_data_keys_generation"))
    (root / "migrations" / "versions" / "0002_upgrade.py").write_text(UPGRADE)
    res = alembic(root, url, args, "upgrade", "head")
    assert "created: ['piiguard_data_keys_generation']" in res.stdout
    alembic(root, url, args, "downgrade", "base")
    assert not {"piiguard_data_keys", "piiguard_audit"} & set(
        inspect(engine).get_table_names())


def test_offline_sql_creates_every_table(tmp_path, pg_engine):
    root = alembic_env(tmp_path)
    url, args = url_of(pg_engine)
    res = alembic(root, url, args, "upgrade", "0001", "--sql")
    sql = res.stdout
    for name in ("piiguard_data_keys", "piiguard_data_keys_generation",
                 "piiguard_audit"):
        assert f"CREATE TABLE {name} (" in sql
    assert "CREATE INDEX ix_piiguard_data_keys_kind_scope" in sql
    assert "INSERT INTO piiguard_data_keys_generation (id, generation) VALUES (1, 0)" in sql


def test_the_application_role_needs_no_ddl_rights_on_postgresql(pg_engine, tmp_path):
    root = alembic_env(tmp_path)
    url, args = url_of(pg_engine)
    alembic(root, url, args, "upgrade", "head")
    schema = args["options"].split("=", 1)[1]
    role = f"piiguard_app_{uuid.uuid4().hex[:8]}"
    with pg_engine.begin() as conn:
        conn.execute(text(f'CREATE ROLE "{role}" LOGIN'))
        conn.execute(text(f'REVOKE CREATE ON SCHEMA "{schema}" FROM PUBLIC'))
        conn.execute(text(f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"'))
        conn.execute(text(f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA '
                          f'"{schema}" TO "{role}"'))
        conn.execute(text(f'GRANT USAGE ON ALL SEQUENCES IN SCHEMA "{schema}" TO '
                          f'"{role}"'))
    app_engine = create_engine(pg_engine.url.set(username=role), connect_args=args)
    try:
        with app_engine.connect() as conn:   # the role really cannot create a table
            with pytest.raises(Exception, match="permission denied"):
                conn.execute(text("CREATE TABLE t_probe (id int)"))
        kms = LocalKMS.generate()
        guard = Guard(kms=kms)
        Customer = make_models(guard)
        guard.bind(app_engine, create_tables=False)
        with Session(app_engine) as s:
            s.add(Customer(id=7, national_id="10000000146"))
            s.commit()
            assert s.get(Customer, 7).national_id == "10000000146"
        guard.close()
    finally:
        app_engine.dispose()
        with pg_engine.begin() as conn:
            conn.execute(text(f'DROP OWNED BY "{role}"'))
            conn.execute(text(f'DROP ROLE "{role}"'))


def test_autogenerate_is_quiet_about_piiguard_tables(sqlite_engine, caplog):
    from alembic.autogenerate import produce_migrations
    from alembic.migration import MigrationContext

    guard = Guard(kms=LocalKMS.generate(), audit=AuditTrail(table=True))
    Customer = make_models(guard)
    guard.bind(sqlite_engine)
    Customer.metadata.create_all(sqlite_engine)
    caplog.set_level(logging.INFO)
    with sqlite_engine.connect() as conn:
        diff = produce_migrations(MigrationContext.configure(conn), Customer.metadata)
    assert diff.upgrade_ops.is_empty(), diff.upgrade_ops.as_diffs()
    assert "Detected removed table" not in caplog.text
    # another table that really was removed is still reported
    with sqlite_engine.begin() as conn:
        conn.execute(text("CREATE TABLE legacy_thing (id int)"))
    with sqlite_engine.connect() as conn:
        diff = produce_migrations(MigrationContext.configure(conn), Customer.metadata)
    removed = [r.getMessage() for r in caplog.records
               if r.getMessage().startswith("Detected removed table")]
    assert removed == ["Detected removed table 'legacy_thing'"]


def test_docs_migration_block_matches():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "alembic.md").read_text()
    assert "create_piiguard_tables(op" in doc and "create_tables=False" in doc
    assert textwrap.dedent(MIGRATION).split("def upgrade():")[1].split("def downgrade")[0] \
        .strip().splitlines()[0] in doc
