"""No value in any error, at any seam: hypothesis-generated invalid and unencodable
values on Core ``executemany``, ORM flush and pydantic validation.

Every example writes a batch whose other rows hold valid plaintext (each with an ASCII
marker: a T.C. number, ``mk…`` in names and e-mails) and one bad value. Whatever is
raised must be a piiguard error naming the rule and ``table.column``, and no marker may
show in its message, ``repr``, attributes, ``args``, chained exceptions, the log records
of the attempt, or (once the transaction is over) the local variables of the piiguard,
SQLAlchemy and SQLModel frames its traceback keeps. ``TALLY`` counts the examples tried
and refused per path (printed with ``-s``; asserted below).
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from leakcheck import leaks
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError
from sqlalchemy import Integer, insert
from sqlalchemy.orm import DeclarativeBase, Session, mapped_column

from piiguard import Guard
from piiguard.errors import InvalidInputError, PIIGuardError
from piiguard.pydantic import Address, Email, NationalId, Phone, TaxId, optional
from piiguard.sqlalchemy import (
    EncryptedAddress,
    EncryptedEmail,
    EncryptedNationalId,
    EncryptedPhone,
    EncryptedString,
)
from piiguard.validators.tckn import calc_check_digits

TALLY: Counter[str] = Counter()
SETTINGS = settings(max_examples=150, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


# --------------------------------------------------------------------------- values

def tckn(n: int) -> str:
    first = f"{100000000 + n % 800000000:09d}"
    return first + calc_check_digits(first)


@st.composite
def valid_rows(draw: Any) -> list[dict[str, Any]]:
    """1-4 valid rows, each with markers (distinct T.C. numbers, mk… names)."""
    ids = draw(st.lists(st.integers(0, 10**8), min_size=1, max_size=4, unique=True))
    return [{"national_id": tckn(i), "name": f"Ayşe mk{i:08d}x",
             "email": f"mk{i:08d}y@example.com", "phone": "+905321234567",
             "address": None} for i in ids]


MARK = "mkBAD"
surrogate = st.integers(0xD800, 0xDFFF).map(chr)
#: text with a lone surrogate, as bytes decoded with errors="surrogateescape" give
lone_surrogate = st.tuples(st.text(max_size=20), surrogate, st.text(max_size=5)).map(
    lambda t: f"{MARK}{t[0]}{t[1]}{t[2]}")
surrogateescaped = st.binary(min_size=1, max_size=30).map(
    lambda b: (MARK.encode() + b + b"\xff").decode("utf-8", "surrogateescape"))
odd = st.one_of(
    st.binary(max_size=30).map(lambda b: MARK.encode() + b),          # bytes for text
    st.integers(10**10, 10**11 - 1),                                     # an int T.C.
    st.floats(allow_nan=True),
    st.just(MARK + "\x00" + "10000000146"),                              # NUL
    st.just(MARK + "\U0001F600"),                                        # non-BMP
    st.just(MARK + "x" * 200_000),                                       # huge
    st.builds(lambda: object()),
)
#: bad values for each column: (strategy, must the column refuse it?)
BAD = {
    "national_id": st.one_of(lone_surrogate, surrogateescaped, odd,
                             st.integers(0, 10**9).map(lambda n: tckn(n)[:10] + "0"
                                                       if tckn(n)[10] != "0"
                                                       else tckn(n)[:10] + "1"),
                             st.text(min_size=1, max_size=15).map(lambda s: MARK + s)),
    "name": st.one_of(lone_surrogate, surrogateescaped, odd),
    "email": st.one_of(lone_surrogate, surrogateescaped, odd,
                       st.text(max_size=10).map(lambda s: f"{MARK}{s}@@x")),
    "phone": st.one_of(lone_surrogate, surrogateescaped, odd,
                       st.just("+90 599 123 45 67")),
}


def markers_of(rows: list[dict[str, Any]], bad: Any) -> list[str]:
    out = [MARK]
    for r in rows:
        out += [r["national_id"], r["name"][-11:-1], r["email"].split("@")[0]]
    if isinstance(bad, int) and not isinstance(bad, bool):
        out.append(str(bad))
    return out


def the_name_is_refused(bad: Any) -> bool:
    """Free text refuses only what it cannot store (not a str, or no UTF-8 form)."""
    if not isinstance(bad, str):
        return True
    try:
        bad.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


# --------------------------------------------------------------------------- models

def declare(guard: Guard) -> Any:
    class Base(DeclarativeBase):
        pass

    class Customer(Base):
        __tablename__ = "customers"
        id = mapped_column(Integer, primary_key=True)
        national_id = mapped_column(EncryptedNationalId(guard, searchable=True),
                                    nullable=False)
        name = mapped_column(EncryptedString(guard, kind="name"), nullable=False)
        email = mapped_column(EncryptedEmail(guard))
        phone = mapped_column(EncryptedPhone(guard))
        address = mapped_column(EncryptedAddress(guard))

    return Base, Customer


@pytest.fixture
def world(sqlite_engine, local_kms):
    guard = Guard(kms=local_kms)
    Base, Customer = declare(guard)
    Base.metadata.create_all(sqlite_engine)
    guard.bind(sqlite_engine)
    return sqlite_engine, Customer


class Logs(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def logs():
    """Every log line written (SQLAlchemy's engine log included, at DEBUG)."""
    handler = Logs()
    root, engine_log = logging.getLogger(), logging.getLogger("sqlalchemy.engine")
    old = root.level, engine_log.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    engine_log.setLevel(logging.DEBUG)      # (SQLAlchemy's loggers default to WARN)
    yield handler
    root.removeHandler(handler)
    root.setLevel(old[0])
    engine_log.setLevel(old[1])


def attempt(fn: Any, *args: Any) -> BaseException | None:
    try:
        fn(*args)
    except Exception as exc:  # noqa: BLE001 - what is raised is what is checked
        return exc
    return None


def core_insert(engine: Any, table: Any, rows: list[dict[str, Any]]) -> None:
    with engine.begin() as conn:
        conn.execute(insert(table), rows)


def orm_flush(engine: Any, model: Any, rows: list[dict[str, Any]]) -> None:
    with Session(engine) as session:
        session.add_all([model(**r) for r in rows])
        session.commit()


def check(path: str, exc: BaseException | None, refused: bool, markers: list[str],
          logs: Logs) -> None:
    TALLY[f"{path} tried"] += 1
    if exc is None:
        assert not refused, f"{path}: a value that must be refused was stored"
        return
    TALLY[f"{path} refused"] += 1
    assert isinstance(exc, PIIGuardError), f"{path}: {type(exc).__name__} escaped"
    assert isinstance(exc, InvalidInputError) and exc.column and exc.rule, str(exc)
    found = leaks(exc, markers) + [f"log: {line[:80]}" for line in logs.lines
                                   if any(m in line for m in markers)]
    assert not found, f"{path}: values in the error: {found}"
    TALLY[f"{path} checked leak-free"] += 1


# --------------------------------------------------------------------------- Core and ORM

@pytest.mark.parametrize("path", ["core", "orm"])
@pytest.mark.parametrize("column", sorted(BAD))
@SETTINGS
@given(data=st.data())
def test_no_value_in_statement_errors(world, logs, path, column, data):
    engine, Customer = world
    rows = data.draw(valid_rows())
    bad = data.draw(BAD[column])
    at = data.draw(st.integers(0, len(rows)))
    batch = [dict(r) for r in rows]
    batch.insert(at, {**rows[0], "national_id": tckn(10**8 + at), column: bad})
    markers = markers_of(rows, bad)
    logs.lines.clear()
    if path == "core":
        exc = attempt(core_insert, engine, Customer.__table__, batch)
    else:
        exc = attempt(orm_flush, engine, Customer, batch)
    refused = column != "name" or the_name_is_refused(bad)
    check(f"{path}:{column}", exc, refused, markers, logs)


FIXED_BAD = [("name", "mkBAD\udcff"), ("name", None), ("name", b"mkBAD"),
             ("national_id", "mkBAD\ud800"), ("national_id", 10000000146),
             ("email", "mkBAD\x00@example.com"), ("phone", "mkBAD\U0001F600"),
             ("national_id", "10000000147")]


@pytest.mark.parametrize("path", ["core", "orm"])
def test_seams_on_every_database(any_engine, local_kms, logs, path):
    """The same refusals on SQLite, PostgreSQL and MariaDB (their drivers, their
    statement caches, their executemany paths), and a unique violation whose error keeps
    its class without the parameters."""
    from sqlalchemy import Index
    from sqlalchemy.exc import IntegrityError

    guard = Guard(kms=local_kms)
    Base, Customer = declare(guard)
    Index("uq_customers_nid", Customer.__table__.c.national_id_bidx, unique=True)
    Base.metadata.create_all(any_engine)
    guard.bind(any_engine)
    rows = [{"national_id": tckn(i), "name": f"Ayşe mk{i:08d}x",
             "email": f"mk{i:08d}y@example.com", "phone": None, "address": None}
            for i in (1, 2, 3)]
    markers = markers_of(rows, None) + ["10000000146", "10000000147"]
    fn = core_insert if path == "core" else orm_flush
    target = Customer.__table__ if path == "core" else Customer
    for column, bad in FIXED_BAD:
        logs.lines.clear()
        batch = [*rows[:2], {**rows[2], column: bad}]
        exc = attempt(fn, any_engine, target, batch)
        check(f"{path}:{any_engine.dialect.name}", exc, True, markers, logs)
    fn(any_engine, target, rows[:1])
    logs.lines.clear()
    exc = attempt(fn, any_engine, target, rows)         # rows[0] again: unique index
    assert isinstance(exc, IntegrityError) and exc.params is None, exc
    assert not leaks(exc, markers)
    assert any("INSERT INTO customers" in line for line in logs.lines)   # logged: at DEBUG
    assert not [line for line in logs.lines if any(m in line for m in markers)]


@pytest.mark.parametrize("path", ["core", "orm"])
def test_none_for_a_not_null_encrypted_column_is_a_piiguard_error(world, logs, path):
    engine, Customer = world
    rows = [{"national_id": "10000000146", "name": "mk00000001 Ayşe",
             "email": "mk00000001y@example.com", "phone": None, "address": None},
            {"national_id": "10000000078", "name": None, "email": None, "phone": None,
             "address": None}]
    fn = core_insert if path == "core" else orm_flush
    exc = attempt(fn, engine, Customer.__table__ if path == "core" else Customer, rows)
    assert isinstance(exc, InvalidInputError) and exc.rule == "required"
    assert exc.column == "customers.name" and "NOT NULL" in str(exc)
    assert not leaks(exc, ["10000000146", "mk00000001", "10000000078"])


def test_other_statement_errors_keep_their_class_without_parameters(world, logs):
    from sqlalchemy import Index
    from sqlalchemy.exc import IntegrityError

    engine, Customer = world
    Index("uq_nid", Customer.__table__.c.national_id_bidx, unique=True).create(engine)
    row = {"national_id": "10000000146", "name": "mk00000001 Ayşe",
           "email": "mk00000001y@example.com", "phone": None, "address": None}
    core_insert(engine, Customer.__table__, [row])
    for fn, target in ((core_insert, Customer.__table__), (orm_flush, Customer)):
        exc = attempt(fn, engine, target, [row])
        assert isinstance(exc, IntegrityError)       # the class an application catches
        assert exc.params is None and "hidden by piiguard" in str(exc)
        assert not leaks(exc, ["10000000146", "mk00000001"])
        # the envelope and the blind index are not listed either
        assert "x00" not in str(exc).split("[SQL:")[0]


def test_frames_are_cleared_when_the_transaction_ends(world):
    """Inside the transaction SQLAlchemy's frames still hold the statement's parameters
    (the application's own list); the rollback clears them."""
    engine, Customer = world
    rows = [{"national_id": "10000000146", "name": "mk00000001 Ayşe", "email": None,
             "phone": None, "address": None},
            {"national_id": "10000000078", "name": "mk00000002\udcff", "email": None,
             "phone": None, "address": None}]
    markers = ["10000000146", "mk00000001", "mk00000002"]
    conn = engine.connect()
    trans = conn.begin()
    exc = attempt(conn.execute, insert(Customer.__table__), rows)
    assert isinstance(exc, InvalidInputError) and exc.rule == "encoding"
    assert leaks(exc, markers), "expected SQLAlchemy's running frames to hold them"
    # piiguard's own frames never do
    assert not leaks(exc, markers, libraries=("piiguard",))
    trans.rollback()
    conn.close()
    assert not leaks(exc, markers)


def test_a_search_value_error_keeps_no_piiguard_frame_with_the_value(world):
    from sqlalchemy import select

    engine, Customer = world
    exc = attempt(lambda: select(Customer).where(Customer.national_id == "mk12345678"))
    assert isinstance(exc, InvalidInputError) and exc.column == "customers.national_id"
    # (SQLAlchemy's operator frames hold the caller's argument until the next rollback
    # or connection check-in; piiguard's own are clean at once)
    assert not leaks(exc, ["mk12345678"], libraries=("piiguard",))
    with engine.connect():
        pass                                          # a check-in: scrubbed
    assert not leaks(exc, ["mk12345678"])


# --------------------------------------------------------------------------- pydantic

class Customer(BaseModel):
    model_config = ConfigDict(hide_input_in_errors=True)
    national_id: NationalId
    tax_id: optional(TaxId) = None
    phone: Phone
    email: optional(Email) = None
    address: optional(Address) = None
    name: str


PYDANTIC_BAD = {
    "national_id": BAD["national_id"], "phone": BAD["phone"], "email": BAD["email"],
    "address": st.one_of(lone_surrogate, surrogateescaped, odd),
    "tax_id": st.one_of(lone_surrogate, surrogateescaped, odd),
}


@pytest.mark.parametrize("column", sorted(PYDANTIC_BAD))
@SETTINGS
@given(data=st.data())
def test_no_value_in_pydantic_errors(column, data):
    rows = data.draw(valid_rows())
    bad = data.draw(PYDANTIC_BAD[column])
    given_ = {**rows[0], column: bad}
    markers = markers_of(rows, bad)
    for how, fn in (("model_validate", Customer.model_validate),
                    ("init", lambda d: Customer(**d)),
                    ("json", lambda d: Customer.model_validate_json(_json(d)))):
        if how == "json" and _json(given_) is None:
            continue
        exc = attempt(fn, given_)
        TALLY[f"pydantic:{how} tried"] += 1
        if exc is None:
            continue
        TALLY[f"pydantic:{how} refused"] += 1
        assert isinstance(exc, ValidationError)
        # messages, repr, chain; and no piiguard frame (pydantic's own __init__ /
        # model_validate frame holds the caller's arguments: see docs/errors.md)
        found = leaks(exc, markers, libraries=("piiguard",))
        assert not found, found
        TALLY[f"pydantic:{how} checked leak-free"] += 1


def _json(d: dict[str, Any]) -> str | None:
    import json
    try:
        return json.dumps(d)
    except (TypeError, ValueError):
        return None


@pytest.mark.parametrize("kind", ["AddressValue", "EmailValue"])
def test_unencodable_text_is_refused_by_the_pydantic_types(kind):
    import piiguard.pydantic

    ta = TypeAdapter(getattr(piiguard.pydantic, kind),
                     config=ConfigDict(hide_input_in_errors=True))
    value = ("Moda Cad. mkBAD\udcff No:5, 34710 Kadıköy/İstanbul" if kind == "AddressValue"
             else "mkBAD\udcff@example.com")
    with pytest.raises(ValidationError) as ei:
        ta.validate_python(value)
    assert ei.value.errors()[0]["ctx"]["rule"]      # the rule, named (not the value)
    assert "mkBAD" not in str(ei.value)


def test_tally_figures():
    """Printed with -s: how many examples each path tried and refused."""
    for k in sorted(TALLY):
        print(f"{k}: {TALLY[k]}")


async def test_async_engines_too(tmp_path, local_kms):
    """AsyncEngine / AsyncSession: the same errors, the same cleared frames (the
    statement runs in SQLAlchemy's greenlet; the listeners are the sync engine's)."""
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")
    guard = Guard(kms=local_kms)
    Base, Customer = declare(guard)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    guard.bind(engine)
    rows = [{"national_id": "10000000146", "name": "mk00000001 Ayşe", "email": None,
             "phone": None, "address": None},
            {"national_id": "10000000078", "name": "mk00000002\udcff", "email": None,
             "phone": None, "address": None}]
    markers = ["10000000146", "mk00000001", "mk00000002"]
    try:
        async with engine.begin() as conn:
            await conn.execute(insert(Customer.__table__), rows)
    except Exception as exc:  # noqa: BLE001
        core_exc = exc
    try:
        async with AsyncSession(engine) as session:
            session.add_all([Customer(**r) for r in rows])
            await session.commit()
    except Exception as exc:  # noqa: BLE001
        orm_exc = exc
    await engine.dispose()
    for exc in (core_exc, orm_exc):
        assert isinstance(exc, InvalidInputError) and exc.rule == "encoding"
        assert exc.column == "customers.name"
        assert not leaks(exc, markers), leaks(exc, markers)


def test_scrub_frames_never_closes_a_suspended_generator_or_coroutine():
    from piiguard.errors import scrub_frames

    caught = []

    def worker():
        secret = "mkGEN"  # noqa: F841 - a local the frame holds
        try:
            raise InvalidInputError("format")
        except InvalidInputError as exc:
            caught.append(exc)
            yield "suspended while the error is around"   # the head frame, suspended
        yield "still alive"

    gen = worker()
    next(gen)
    assert scrub_frames(caught[0]) is True
    assert next(gen) == "still alive"                     # not closed

    async def task(event):
        try:
            raise InvalidInputError("format")
        except InvalidInputError as exc:
            caught.append(exc)
            await event.wait()                            # suspended at an await
        return "finished normally"

    async def main():
        import asyncio
        event = asyncio.Event()
        t = asyncio.ensure_future(task(event))
        await asyncio.sleep(0)
        scrub_frames(caught[1])
        event.set()
        return await t

    import asyncio
    assert asyncio.run(main()) == "finished normally"

    def finished(value):
        raise InvalidInputError("format")

    def call():
        try:
            finished("mkDONE")
        except InvalidInputError as exc:
            return exc

    exc = call()
    assert leaks(exc, ["mkDONE"], libraries=("test_error_seams",))
    scrub_frames(exc)
    assert not leaks(exc, ["mkDONE"], libraries=("test_error_seams",))
