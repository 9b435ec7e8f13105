"""Alembic autogenerate with encrypted columns, in-process (alembic's command API, no
subprocess): the migration renders guard-free storage types, runs without the Guard or
any key, creates the same schema on SQLite, PostgreSQL and MariaDB, a second
autogenerate finds nothing to change, and the key table is never proposed for dropping.
"""

import re

import pytest
from alembic import command
from alembic.autogenerate import produce_migrations
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from piiguard import Guard
from piiguard.sqlalchemy import (
    EncryptedAddress,
    EncryptedNationalId,
    EncryptedPhone,
    EncryptedString,
)

ENV_PY = '''
from alembic import context

config = context.config
connection = config.attributes["connection"]
context.configure(connection=connection,
                  target_metadata=config.attributes.get("target_metadata"))
with context.begin_transaction():
    context.run_migrations()
'''


def models(guard):
    class Base(DeclarativeBase):
        pass

    class Customer(Base):
        __tablename__ = "customers"
        id: Mapped[int] = mapped_column(primary_key=True)
        national_id: Mapped[str] = mapped_column(EncryptedNationalId(guard, searchable=True))
        phone: Mapped[str | None] = mapped_column(EncryptedPhone(guard))
        address: Mapped[str | None] = mapped_column(EncryptedAddress(guard))
        notes: Mapped[str | None] = mapped_column(EncryptedString(guard, text=True))

    return Base, Customer


@pytest.fixture
def alembic_cfg(tmp_path):
    cfg = Config(str(tmp_path / "alembic.ini"))
    cfg.set_main_option("script_location", str(tmp_path / "migrations"))
    command.init(cfg, str(tmp_path / "migrations"))
    cfg = Config(str(tmp_path / "alembic.ini"))
    cfg.set_main_option("script_location", str(tmp_path / "migrations"))
    (tmp_path / "migrations" / "env.py").write_text(ENV_PY)
    return cfg, tmp_path / "migrations" / "versions"


def test_autogenerate_renders_a_migration_that_runs_without_the_guard(alembic_cfg, any_engine,
                                                                      local_kms):
    cfg, versions = alembic_cfg
    guard = Guard(kms=local_kms)
    Base, Customer = models(guard)
    guard.bind(any_engine)          # the key table lives in the same database
    with any_engine.connect() as conn:
        cfg.attributes.update(connection=conn, target_metadata=Base.metadata)
        command.revision(cfg, message="customers", autogenerate=True)
    (script,) = versions.glob("*.py")
    source = script.read_text()
    assert "import piiguard.sqlalchemy" in source
    assert "piiguard.sqlalchemy.Ciphertext(max_bytes=44)" in source
    assert "piiguard.sqlalchemy.BlindIndex(bits=256)" in source
    assert "piiguard.sqlalchemy.Ciphertext(text=True)" in source
    assert re.search(r"create_index\(.*ix_customers_national_id_bidx", source)
    assert "Encrypted" not in source and "Guard" not in source
    assert "piiguard_data_keys" not in source           # never dropped, never touched

    # the migration runs with no Guard and no target metadata (what a deploy does)
    with any_engine.begin() as conn:
        cfg.attributes.update(connection=conn, target_metadata=None)
        command.upgrade(cfg, "head")
    insp = inspect(any_engine)
    cols = {c["name"]: c["type"] for c in insp.get_columns("customers")}
    assert set(cols) == {"id", "national_id", "national_id_bidx", "phone", "address", "notes"}
    name = any_engine.dialect.name
    expected = {"sqlite": ("BLOB", "BLOB"), "postgresql": ("BYTEA", "BYTEA"),
                "mysql": ("VARBINARY(44)", "VARBINARY(36)")}[name]
    compiled = (cols["national_id"].compile(any_engine.dialect),
                cols["national_id_bidx"].compile(any_engine.dialect))
    assert compiled == expected
    indexes = inspect(any_engine).get_indexes("customers")
    assert [ix["column_names"] for ix in indexes] == [["national_id_bidx"]]

    # a second autogenerate sees nothing to do
    with any_engine.connect() as conn:
        diff = produce_migrations(MigrationContext.configure(conn), Base.metadata)
    assert diff.upgrade_ops.is_empty(), diff.upgrade_ops.as_diffs()

    # and the application works on the migrated schema
    with Session(any_engine) as s:
        s.add(Customer(id=1, national_id="100 000 001 46", phone="0532 123 45 67",
                       notes="İyi günler"))
        s.commit()
        c = s.scalars(select(Customer).where(Customer.national_id == "10000000146")).one()
        assert (c.phone, c.notes) == ("+905321234567", "İyi günler")
