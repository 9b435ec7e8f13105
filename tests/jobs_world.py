"""A throwaway application for the multi-process and queued job tests: a module file
that worker processes import by name (``--app``), with a KMS that logs every call to a
file (one line per call and process: counts across processes).
"""

from __future__ import annotations

import os
import textwrap
import uuid
from pathlib import Path

from sqlalchemy import create_engine, insert, text

from piiguard.validators import tckn

APP = textwrap.dedent('''
    import os

    from sqlalchemy import Integer, String, create_engine
    from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

    from piiguard import Guard, LocalKMS
    from piiguard.sqlalchemy import EncryptedNationalId, EncryptedPhone


    class LoggingKMS:
        """LocalKMS that appends one line per call to a file: `pid kind`."""

        def __init__(self, inner, log):
            self.inner, self.log = inner, log

        @property
        def master_key_id(self):
            return self.inner.master_key_id

        def _note(self, kind):
            with open(self.log, "a") as f:
                f.write(f"{{os.getpid()}} {{kind}}\\n")

        def generate_data_key(self, context):
            self._note("generate")
            return self.inner.generate_data_key(context)

        def decrypt_data_key(self, wrapped, master_key_id, context):
            self._note("decrypt")
            return self.inner.decrypt_data_key(wrapped, master_key_id, context)

        def rewrap(self, wrapped, source, dest, context):
            self._note("rewrap")
            return self.inner.rewrap(wrapped, source, dest, context)


    guard = Guard(kms=LoggingKMS(LocalKMS.from_file({key!r}, create=True), {log!r}))


    class Base(DeclarativeBase):
        pass


    class Customer(Base):
        __tablename__ = "customers"
        id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
        national_id: Mapped[str] = mapped_column(EncryptedNationalId(guard, searchable=True))
        phone: Mapped[str] = mapped_column(EncryptedPhone(guard, text=True, allow_plaintext=True))
        note: Mapped[str] = mapped_column(String(40), default="")


    engine = create_engine({url!r})
    Base.metadata.create_all(engine)
    guard.bind(engine)
''')


def tc(n: int) -> str:
    base = str(600000000 + n)
    return base + tckn.calc_check_digits(base)


def pg_url_of(engine) -> str:
    """A URL for the test's own PostgreSQL schema (workers connect by URL)."""
    with engine.connect() as conn:
        schema = conn.execute(text("SELECT current_schema()")).scalar_one()
    url = engine.url.render_as_string(hide_password=False)
    return f"{url}?options=-csearch_path%3D{schema}"


class JobsApp:
    """The application module in ``directory`` (importable from there), its Guard and
    ``rows`` customers (plaintext phones when ``plain_phones``)."""

    def __init__(self, directory: Path, url: str, rows: int, *,
                 plain_phones: bool = False) -> None:
        self.dir = directory
        self.name = f"jobs_app_{uuid.uuid4().hex[:8]}"
        self.key = str(directory / "master.key")
        self.kms_log = directory / "kms.log"
        self.url = url
        (directory / f"{self.name}.py").write_text(
            APP.format(key=self.key, url=url, log=str(self.kms_log)))
        import sys
        sys.path.insert(0, str(directory))
        self.module = __import__(self.name)
        self.guard = self.module.guard
        self.engine = self.guard.engine
        self.table = self.module.Customer.__table__
        self.spec = f"{self.name}:guard"
        self.rows = rows
        # plaintext phones go in as raw SQL (the column type would encrypt them)
        with self.engine.begin() as conn:
            conn.execute(insert(self.table), [
                dict(id=i, national_id=tc(i), phone=f"+90538{i:07d}") for i in
                range(1, rows + 1)])
            if plain_phones:
                conn.execute(text("UPDATE customers SET phone = '+90538' || "
                                  "LPAD(CAST(id AS TEXT), 7, '0')"
                                  if self.engine.dialect.name == "postgresql" else
                                  "UPDATE customers SET phone = '+90538' || "
                                  "substr('0000000' || id, -7, 7)"))

    def kms_calls(self) -> dict[int, int]:
        """KMS calls by process id (since the log was last cleared)."""
        out: dict[int, int] = {}
        if self.kms_log.exists():
            for line in self.kms_log.read_text().splitlines():
                pid = int(line.split()[0])
                out[pid] = out.get(pid, 0) + 1
        return out

    def clear_kms_log(self) -> None:
        if self.kms_log.exists():
            os.unlink(self.kms_log)

    def fresh_engine(self):
        return create_engine(self.url)
