"""An application process for test_keys_notify_processes.py (run as its own OS process).

Importable as the CLI's app (``PIIGUARD_APP=notify_app:guard``) and runnable as a
worker (``python notify_app.py ROLE``). The database and key file come from the
environment: ``NOTIFY_URL``, ``NOTIFY_SCHEMA`` (PostgreSQL search path, optional),
``NOTIFY_KEY``. Workers talk over stdin/stdout, one line at a time.

Roles:

- ``search N``: prints ``ready`` after a first search, then searches ``Customer.national_id
  == x`` for random existing rows until it did N searches and ``stop`` was sent; prints
  ``searches misses``.
- ``write``: inserts new rows until ``stop`` arrives; prints ``written``.
- ``hold``: per line ``SCOPE HEX`` decrypts the blob (key now cached), prints ``ready``,
  then reads it every few milliseconds until refused and prints ``refused WALLTIME
  KEYID`` (KEYID: the key a write in that scope made right after, or the error's name).
"""

from __future__ import annotations

import os
import random
import sys
import threading
import time

from sqlalchemy import Integer, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from piiguard import Guard, LocalKMS
from piiguard.errors import KeyDestroyedError, PIIGuardError
from piiguard.sqlalchemy import EncryptedNationalId, EncryptedPhone
from piiguard.validators import tckn

guard = Guard(kms=LocalKMS.from_file(os.environ["NOTIFY_KEY"]))


class Base(DeclarativeBase):
    pass


class Customer(Base):
    __tablename__ = "customers"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    national_id: Mapped[str] = mapped_column(EncryptedNationalId(guard, searchable=True))
    phone: Mapped[str] = mapped_column(EncryptedPhone(guard))


def make_engine():
    schema = os.environ.get("NOTIFY_SCHEMA")
    args = {"options": f"-csearch_path={schema}"} if schema else {}
    return create_engine(os.environ["NOTIFY_URL"], connect_args=args)


engine = make_engine()
Base.metadata.create_all(engine)
guard.bind(engine)


def tc(n: int) -> str:
    base = str(600000000 + n)
    return base + tckn.calc_check_digits(base)


def person(i: int) -> Customer:
    return Customer(id=i, national_id=tc(i), phone=f"+90536{i % 10_000_000:07d}")


def _stopper() -> threading.Event:
    stop = threading.Event()

    def wait() -> None:
        for line in sys.stdin:
            if line.strip() == "stop":
                break
        stop.set()
    threading.Thread(target=wait, daemon=True).start()
    return stop


def search(n: int) -> None:
    with Session(engine) as s:
        rows = s.scalar(select(Customer.id).order_by(Customer.id.desc()).limit(1))
    rng = random.Random(os.getpid())
    searches = misses = 0

    def one() -> None:
        nonlocal searches, misses
        i = rng.randint(1, rows)
        with Session(engine) as s:
            found = s.scalars(select(Customer.id).where(Customer.national_id == tc(i))).all()
        searches += 1
        misses += found != [i]
    one()
    print("ready", flush=True)
    stop = _stopper()
    while searches < n or not stop.is_set():
        one()
    print(searches, misses, flush=True)


def write() -> None:
    stop = _stopper()
    i = 10_000_000 + os.getpid() * 1000
    written = 0
    with Session(engine) as s:
        s.add(person(i))
        s.commit()
    print("ready", flush=True)
    while not stop.is_set():
        i += 1
        with Session(engine) as s:
            s.add(person(i))
            s.commit()
        written += 1
        time.sleep(0.002)
    print(written, flush=True)


def hold() -> None:
    cipher = guard.field("customers", "phone")
    for line in sys.stdin:
        scope, hexblob = line.split()
        blob = bytes.fromhex(hexblob)
        cipher.decrypt(blob)
        print("ready", flush=True)
        while True:
            try:
                cipher.decrypt(blob)
            except KeyDestroyedError:
                refused = time.time()
                break
            time.sleep(0.002)
        try:
            after = str(cipher.key_id_of(cipher.encrypt(b"+905361234567", scope=scope)))
        except PIIGuardError as exc:
            after = type(exc).__name__
        print("refused", refused, after, flush=True)


if __name__ == "__main__":
    role = sys.argv[1]
    if role == "search":
        search(int(sys.argv[2]))
    elif role == "write":
        write()
    elif role == "hold":
        hold()
