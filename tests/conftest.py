"""Shared fixtures: database engines for SQLite, PostgreSQL and MariaDB, and KMS.

PostgreSQL and MariaDB are the real servers on this machine. Under CI (``CI=true``) a
missing server fails the run; elsewhere the tests that need it skip with the reason.
"""

from __future__ import annotations

import logging
import os
import uuid

import pytest
from sqlalchemy import create_engine, text

pytest_plugins = ["piiguard.testing"]

PG_URL = os.environ.get("PIIGUARD_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MARIADB_URL = os.environ.get("PIIGUARD_TEST_MARIADB",
                             "mysql+pymysql://root@127.0.0.1:3306/test?charset=utf8mb4")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# pytest's capture handlers sit on the root logger; at INFO the audit events reach them,
# so a Guard bound in a test has somewhere to write them (else it warns at bind: see
# test_audit_durable.py for that warning).
logging.getLogger("piiguard.audit").setLevel(logging.INFO)


@pytest.fixture(autouse=True)
def _audit_logger_as_it_was():
    """Put the ``piiguard.audit`` logger back after each test: a test that imports an
    application module (which may quiet the logger for its own processes) must not make
    a later test's audit events disappear from caplog."""
    log = logging.getLogger("piiguard.audit")
    saved = (log.level, log.propagate, log.handlers[:], log.disabled)
    yield
    log.level, log.propagate, log.handlers[:], log.disabled = saved


#: Fixtures that need a database server, and the marker each gives a test that uses it.
_SERVER_FIXTURES = {
    "pg_server_engine": "postgresql", "pg_engine": "postgresql",
    "mariadb_server_engine": "mariadb", "mariadb_engine": "mariadb",
}


def pytest_collection_modifyitems(config, items):
    """Mark every test by the database servers its fixtures reach, so that
    ``-m postgresql`` / ``-m "not mariadb"`` select exactly those tests (``any_engine``
    marks each parameter by its own database)."""
    for item in items:
        needed = {m for f, m in _SERVER_FIXTURES.items() if f in item.fixturenames}
        callspec = getattr(item, "callspec", None)
        if callspec is not None and "any_engine" in item.fixturenames:
            param = callspec.params.get("any_engine")
            if param in ("postgresql", "mariadb"):
                needed.add(param)
        for name in sorted(needed):
            item.add_marker(getattr(pytest.mark, name))


def _server_engine(url: str, name: str):
    engine = create_engine(url, pool_pre_ping=True)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure means "no server here"
        engine.dispose()
        msg = f"{name} server not reachable at {url.split('@')[-1]}: {type(exc).__name__}"
        if IN_CI:
            pytest.fail(msg + " (CI=true: a missing server is an error)")
        pytest.skip(msg)
    return engine


@pytest.fixture(scope="session")
def pg_server_engine():
    engine = _server_engine(PG_URL, "PostgreSQL")
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def mariadb_server_engine():
    engine = _server_engine(MARIADB_URL, "MariaDB")
    yield engine
    engine.dispose()


def _isolated(engine, dialect: str):
    """A fresh schema/database per test so tests never see each other's tables."""
    name = f"piiguard_t_{uuid.uuid4().hex[:10]}"
    if dialect == "postgresql":
        with engine.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{name}"'))
        eng = create_engine(PG_URL, connect_args={"options": f"-csearch_path={name}"})
    else:
        with engine.begin() as conn:
            conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
        eng = create_engine(MARIADB_URL.replace("/test?", f"/{name}?"))
    return name, eng


def _drop(engine, dialect: str, name: str) -> None:
    with engine.begin() as conn:
        if dialect == "postgresql":
            conn.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
        else:
            conn.execute(text(f"DROP DATABASE `{name}`"))


@pytest.fixture
def sqlite_engine(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'test.db'}")
    yield engine
    engine.dispose()


@pytest.fixture
def pg_engine(pg_server_engine):
    name, eng = _isolated(pg_server_engine, "postgresql")
    yield eng
    eng.dispose()
    _drop(pg_server_engine, "postgresql", name)


@pytest.fixture
def mariadb_engine(mariadb_server_engine):
    name, eng = _isolated(mariadb_server_engine, "mysql")
    yield eng
    eng.dispose()
    _drop(mariadb_server_engine, "mysql", name)


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def any_engine(request):
    """The same test on SQLite (file), PostgreSQL and MariaDB."""
    return request.getfixturevalue({"sqlite": "sqlite_engine", "postgresql": "pg_engine",
                                    "mariadb": "mariadb_engine"}[request.param])


@pytest.fixture
def guard(sqlite_engine, local_kms):
    from piiguard import Guard

    return Guard(kms=local_kms).bind(sqlite_engine)
