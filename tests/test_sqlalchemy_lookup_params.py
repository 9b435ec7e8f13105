"""Blind-index lookups with a warm key cache compile to a fixed IN list of plain
parameters (cached by SQLAlchemy, no per-execution re-rendering), with one spare slot per
value so an index-key rotation between building and running a statement still finds
every row; more changes than that fail instead of missing rows. A cold cache, or a long
in_() list, keeps the expanding IN."""

from __future__ import annotations

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, insert, select

from piiguard import Guard, errors
from piiguard.sqlalchemy import EncryptedNationalId
from piiguard.sqlalchemy.comparator import MAX_INDEX_SLOTS
from piiguard.validators import tckn


def tc(n: int) -> str:
    base = str(100000000 + n)
    return base + tckn.calc_check_digits(base)


@pytest.fixture
def table(guard, sqlite_engine):
    md = MetaData()
    t = Table("people", md, Column("id", Integer, primary_key=True),
              Column("nid", EncryptedNationalId(guard, searchable=True)))
    md.create_all(sqlite_engine)
    with sqlite_engine.begin() as conn:
        conn.execute(insert(t), [{"id": i, "nid": tc(i)} for i in range(1, 21)])
    return t


def ids(engine, stmt):
    with engine.connect() as conn:
        return sorted(conn.execute(stmt).scalars())


def test_warm_cache_compiles_a_fixed_in_list(table, sqlite_engine):
    assert ids(sqlite_engine, select(table.c.id).where(table.c.nid == tc(3))) == [3]  # warms
    stmt = select(table.c.id).where(table.c.nid == tc(4))
    sql = str(stmt.compile(sqlite_engine))
    assert "POSTCOMPILE" not in sql and sql.count("?") == 2        # one key + one spare
    assert ids(sqlite_engine, stmt) == [4]
    assert ids(sqlite_engine, select(table.c.id).where(table.c.nid != tc(4))) == \
        [i for i in range(1, 21) if i != 4]
    assert ids(sqlite_engine, select(table.c.id).where(table.c.nid.in_([tc(1), tc(9)]))) \
        == [1, 9]
    assert ids(sqlite_engine, select(table.c.id).where(
        table.c.nid.not_in([tc(i) for i in range(2, 21)]))) == [1]


def test_cold_cache_and_long_lists_use_an_expanding_in(table, sqlite_engine, local_kms):
    cold = Guard(kms=local_kms).bind(sqlite_engine)
    md = MetaData()
    t2 = Table("people", md, Column("id", Integer, primary_key=True),
               Column("nid", EncryptedNationalId(cold, searchable=True)))
    stmt = select(t2.c.id).where(t2.c.nid == tc(5))
    assert "POSTCOMPILE" in str(stmt.compile(sqlite_engine))
    assert ids(sqlite_engine, stmt) == [5]
    many = [tc(i) for i in range(1, 21)]
    assert len(many) * 2 > MAX_INDEX_SLOTS
    stmt = select(t2.c.id).where(t2.c.nid.in_(many))
    assert "POSTCOMPILE" in str(stmt.compile(sqlite_engine))
    assert ids(sqlite_engine, stmt) == list(range(1, 21))


def test_a_rotation_between_building_and_running_still_finds_every_row(
        guard, table, sqlite_engine):
    ids(sqlite_engine, select(table.c.id).where(table.c.nid == tc(1)))       # warm cache
    stmt = select(table.c.id).where(table.c.nid == tc(7))
    assert "POSTCOMPILE" not in str(stmt.compile(sqlite_engine))
    guard.keys.rotate("index", "people")
    with sqlite_engine.begin() as conn:       # a second row with the same value, new key
        conn.execute(insert(table).values(id=100, nid=tc(7)))
    assert ids(sqlite_engine, stmt) == [7, 100]
    # the statement stays correct when run again, and so does a new one
    assert ids(sqlite_engine, stmt) == [7, 100]
    assert ids(sqlite_engine, select(table.c.id).where(table.c.nid == tc(7))) == [7, 100]


def test_two_rotations_between_building_and_running_fail_instead_of_missing_rows(
        guard, table, sqlite_engine):
    ids(sqlite_engine, select(table.c.id).where(table.c.nid == tc(1)))       # warm cache
    stmt = select(table.c.id).where(table.c.nid == tc(8))
    guard.keys.rotate("index", "people")
    guard.keys.rotate("index", "people")
    with pytest.raises(errors.ConfigurationError) as info:
        ids(sqlite_engine, stmt)
    text = str(info.value)
    assert "build the query again" in text and "people.nid" in text and tc(8) not in text
    assert ids(sqlite_engine, select(table.c.id).where(table.c.nid == tc(8))) == [8]
