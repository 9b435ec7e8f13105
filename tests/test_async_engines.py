"""The column types with async engines: aiosqlite, psycopg (async) and asyncpg.

Statement execution, bind and result processing run inside SQLAlchemy's greenlet, so key
lookups from there work with either kind of engine bound to the Guard. Code that runs
outside SQLAlchemy (a Sealed value rendered later under a masking policy) may need a key
too: the robust set-up binds the Guard to a sync engine on the same database, and these
tests use both set-ups.
"""

import asyncio

import pytest
from sqlalchemy import create_engine, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from piiguard import Guard, MaskingPolicy, acting_as, errors
from piiguard.sqlalchemy import (
    EncryptedAddress,
    EncryptedNationalId,
    EncryptedPhone,
    lookup,
)
from piiguard.validators import tckn

pytest.importorskip("greenlet")


def tc(n: int) -> str:
    base = str(100000000 + n)
    return base + tckn.calc_check_digits(base)


def models(guard):
    class Base(DeclarativeBase):
        pass

    class Customer(Base):
        __tablename__ = "customers"
        id: Mapped[int] = mapped_column(primary_key=True)
        tenant_id: Mapped[int] = mapped_column(default=1)
        national_id: Mapped[str] = mapped_column(EncryptedNationalId(guard, searchable=True))
        phone: Mapped[str | None] = mapped_column(EncryptedPhone(guard, key_scope="tenant_id"))
        address: Mapped[str | None] = mapped_column(EncryptedAddress(guard))

    return Base, Customer


async def exercise(engine, Customer, Base):
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    async with AsyncSession(engine, expire_on_commit=False) as s:
        s.add_all([Customer(id=i, tenant_id=i % 3, national_id=tc(i),
                            phone=f"0532 123 45 {i:02d}", address="Bağdat Cad. No:1, İstanbul")
                   for i in range(1, 21)])
        await s.commit()
        got = (await s.scalars(select(Customer).where(
            Customer.national_id == "100 000 007 " + tc(7)[-2:]))).one()
        assert (got.id, got.phone, got.address) == (7, "+905321234507",
                                                    "Bağdat Cad. No:1, İstanbul")
        await s.execute(update(Customer).where(Customer.id == 8).values(national_id=tc(108),
                                                                        phone="05329999999",
                                                                        tenant_id=2))
        await s.commit()
        assert (await s.scalars(select(Customer.id).where(
            Customer.national_id == tc(108)))).all() == [8]
        n = await s.scalar(select(func.count()).where(Customer.national_id.in_([tc(1), tc(2)])))
        assert n == 2
        found = await s.run_sync(lambda sync: lookup(sync, Customer.national_id, tc(3)))
        assert [c.id for c in found] == [3]
        with pytest.raises(errors.InvalidChecksumError, match=r"customers\.national_id"):
            s.add(Customer(id=99, national_id="10000000147"))
            await s.commit()
        await s.rollback()
    return got


def test_aiosqlite_with_the_guard_bound_to_the_async_engine(tmp_path, local_kms):
    guard = Guard(kms=local_kms)
    Base, Customer = models(guard)
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")
    # plain sync call: the key table is reached through a sync engine derived from the
    # async URL (sqlite+aiosqlite -> sqlite), on the same database file
    guard.bind(engine)
    assert guard.engine.url.drivername == "sqlite+pysqlite"
    assert guard.engine.url.database == engine.url.database

    async def main():
        await exercise(engine, Customer, Base)
        await engine.dispose()

    asyncio.run(main())
    # a fresh Guard bound the same way, with a policy: values rendered after the query
    # returned (outside SQLAlchemy's greenlet) still find their keys
    reader = Guard(kms=local_kms, policy=MaskingPolicy.from_dict({"default": "reveal"}))
    _, Customer2 = models(reader)
    reader.bind(engine)

    async def read():
        async with AsyncSession(engine) as s:
            rows = (await s.scalars(select(Customer2).order_by(Customer2.id))).all()
        with acting_as("admin"):
            return [r.national_id for r in rows]

    got = asyncio.run(read())
    assert got and all(v and v.isdigit() for v in got)


def test_bind_refuses_an_async_driver_it_cannot_mirror(local_kms):
    engine = create_async_engine("postgresql+asyncpg://u@127.0.0.1:1/x")
    fake = type("E", (), {"sync_engine": engine.sync_engine,
                          "url": engine.url.set(drivername="oracle+oracledb_async")})()
    with pytest.raises(errors.ConfigurationError, match="key_engine"):
        Guard(kms=local_kms).bind(fake)


def test_aiosqlite_with_a_sync_key_engine_and_masking_across_tasks(tmp_path, local_kms):
    guard = Guard(kms=local_kms)
    Base, Customer = models(guard)
    path = tmp_path / "b.db"
    guard.bind(create_engine(f"sqlite:///{path}"))    # keys are created here, at startup
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}")

    async def main():
        got = await exercise(engine, Customer, Base)
        guard.policy = MaskingPolicy.from_dict({
            "default": "redact", "national_id": {"admin": "reveal", "support": "partial:1:2"}})

        async def read_as(role):
            with acting_as(role):
                await asyncio.sleep(0)              # interleave the tasks
                first = got.national_id
                await asyncio.sleep(0)
                return first, got.national_id

        async with AsyncSession(engine) as s:
            got = (await s.scalars(select(Customer).where(Customer.id == 7))).one()
            results = await asyncio.gather(read_as("admin"), read_as("support"),
                                           read_as("intern"))
        await engine.dispose()
        return results

    results = asyncio.run(main())
    assert results == [(tc(7), tc(7)), ("1********" + tc(7)[-2:],) * 2,
                       ("[REDACTED]", "[REDACTED]")]


@pytest.mark.parametrize("driver", ["psycopg", "asyncpg"])
def test_postgresql_async_drivers(pg_engine, local_kms, driver):
    with pg_engine.connect() as conn:
        schema = conn.execute(text("SHOW search_path")).scalar()
    url = pg_engine.url.set(drivername=f"postgresql+{driver}")
    connect_args = ({"options": f"-csearch_path={schema}"} if driver == "psycopg"
                    else {"server_settings": {"search_path": schema}})
    guard = Guard(kms=local_kms)
    Base, Customer = models(guard)
    guard.bind(pg_engine)                 # sync engine, same database and schema
    engine = create_async_engine(url, connect_args=connect_args)

    async def main():
        await exercise(engine, Customer, Base)
        async with engine.connect() as conn:
            raw = (await conn.execute(text("SELECT national_id FROM customers WHERE id = 7"))
                   ).scalar()
        await engine.dispose()
        return raw

    raw = asyncio.run(main())
    assert isinstance(raw, bytes) and tc(7).encode() not in raw
    with pg_engine.connect() as conn:
        assert conn.execute(select(Customer.phone).where(Customer.id == 7)).scalar() == \
            "+905321234507"
