"""``piiguard demo``: a tour of piiguard on synthetic data, with no network and no setup.

It makes a local master key file and a SQLite database under ``.piiguard/demo/`` (the
database is recreated on every run; the key file is kept), declares a ``customers``
model with encrypted columns, stores a few synthetic customers, and shows:

1. what the database holds (envelopes: binary, and one column in the ``pg1:`` text
   form) beside what the application reads, and a lookup through the blind index;
2. the same customer as ``admin``, ``support`` and a role the policy does not know;
3. a DEK rotation: the key status table before, ``retire`` refused while rows use the
   old key, ``reencrypt`` with its progress bar, the status after, ``retire`` accepted,
   and ``verify``.

Every value is synthetic: T.C. Kimlik numbers are built with the checksum, phones are
``+90532…`` numbers, addresses are made up.

>>> first = demo_customers()[0]
>>> first["national_id"], first["phone"]
('10000000146', '+905321234567')
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from rich.console import Console
from rich.table import Table
from sqlalchemy.orm import Mapped

from piiguard._console import Output, ProgressBar, print_status

__all__ = ["POLICY", "DemoModels", "demo_customers", "make_models", "run"]

#: The masking policy the demo uses.
POLICY = {
    "default": "redact",
    "national_id": {"admin": "reveal", "support": "partial:1:2"},
    "phone": {"admin": "reveal", "support": "partial:3:2"},
    "email": {"admin": "reveal", "support": "email"},
    "address": {"admin": "reveal", "support": "city"},
    "name": {"admin": "reveal", "support": "partial:2:0"},
}


class _Person(NamedTuple):
    """A synthetic customer (the national id is made from its position)."""

    name: str
    phone: str
    email: str
    address: str


_PEOPLE = [
    _Person("Ayşe Yılmaz", "+905321234567", "ayse.yilmaz@example.com.tr",
            "Caferağa Mah. Moda Cad. No:12 D:4, 34710 Kadıköy/İstanbul"),
    _Person("Mehmet Demir", "+905339876543", "mehmet.demir@example.com.tr",
            "Kızılay Mah. Atatürk Blv. No:1, 06420 Çankaya/Ankara"),
    _Person("Zeynep Kaya", "+905421112233", "zeynep.kaya@example.org",
            "Alsancak Mah. Kıbrıs Şehitleri Cad. No:20, 35220 Konak/İzmir"),
    _Person("Emre Çelik", "+905057654321", "emre.celik@example.net",
            "Kültür Mah. Cumhuriyet Blv. No:7, 35220 Konak/İzmir"),
    _Person("Elif Şahin", "+905551230099", "elif.sahin@example.com",
            "Bağdat Cad. No:300, 34728 Kadıköy/İstanbul"),
]


def _tckn(i: int) -> str:
    from piiguard.validators import tckn

    first9 = str(100000001 + i * 7919)
    return first9 + tckn.calc_check_digits(first9)


def demo_customers() -> list[dict[str, str]]:
    """The five synthetic customers the demo shows."""
    return [dict(name=p.name, national_id=_tckn(i), phone=p.phone, email=p.email,
                 address=p.address) for i, p in enumerate(_PEOPLE)]


def _bulk_customer(i: int) -> dict[str, str]:
    return dict(name=f"Müşteri {i}", national_id=_tckn(1000 + i),
                phone=f"+90532{2000000 + i:07d}", email=f"musteri{i}@example.com.tr",
                address=f"Atatürk Mah. Cumhuriyet Cad. No:{i % 200 + 1}, 34710 "
                        "Kadıköy/İstanbul")


class DemoModels(NamedTuple):
    """The demo's declarative base and its ``customers`` model."""

    base: Any
    customer: Any


def make_models(guard: Any) -> DemoModels:
    """``(Base, Customer)``: the demo's model, declared against ``guard``."""
    from sqlalchemy import Integer
    from sqlalchemy.orm import DeclarativeBase, mapped_column

    from piiguard.sqlalchemy import (
        EncryptedAddress,
        EncryptedEmail,
        EncryptedNationalId,
        EncryptedPhone,
        EncryptedString,
    )

    class Base(DeclarativeBase):
        pass

    class Customer(Base):
        __tablename__ = "customers"
        id: Mapped[int] = mapped_column(Integer, primary_key=True)
        name: Mapped[str] = mapped_column(EncryptedString(guard, kind="name"))
        national_id: Mapped[str] = mapped_column(EncryptedNationalId(guard, searchable=True))
        phone: Mapped[str] = mapped_column(EncryptedPhone(guard))
        email: Mapped[str] = mapped_column(EncryptedEmail(guard, text=True))
        address: Mapped[str] = mapped_column(EncryptedAddress(guard))

    return DemoModels(Base, Customer)


def _show_stored(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, str):
        return (value[:24] + "…" if len(value) > 24 else value) + f" ({len(value)} ch)"
    raw = bytes(value)
    hexed = raw.hex()
    return f"{hexed[:2]} {hexed[2:10]} {hexed[10:22]}… ({len(raw)} B)"


FIELDS = ("name", "national_id", "phone", "email", "address")


#: How the demo prints a line or a table (a no-op with ``--json``).
Say = Callable[..., None]


def run(directory: str | Path = ".piiguard/demo", *, console: Console | None = None,
        progress_console: Console | None = None, json_out: bool = False,
        extra_rows: int = 5000) -> dict[str, Any]:
    """Run the demo in ``directory``; prints with rich (or one JSON document) and
    returns what it showed as a dict."""
    from sqlalchemy import column, create_engine, select
    from sqlalchemy import table as table_clause
    from sqlalchemy.orm import Session

    from piiguard.guard import Guard
    from piiguard.kms.local import LocalKMS
    from piiguard.masking.audit import AuditTrail

    out = console or Console()
    say: Say = (lambda *a, **k: None) if json_out else out.print
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    key_file = directory / "master.key"
    db = directory / "demo.db"
    for p in (db, db.with_name(db.name + "-journal"), db.with_name(db.name + "-wal")):
        p.unlink(missing_ok=True)
    events: list[dict] = []
    kms = LocalKMS.from_file(key_file, create=True)
    guard = Guard(kms=kms, audit=AuditTrail(sinks=[events.append]))
    Base, Customer = make_models(guard)
    engine = create_engine(f"sqlite:///{db}")
    Base.metadata.create_all(engine)
    guard.bind(engine)
    doc: dict[str, Any] = {"ok": True, "directory": str(directory), "key_file": str(key_file),
                           "database": str(db)}
    say(f"[bold]piiguard demo[/bold]  key file {key_file} (mode 0600), database {db}\n")

    # 1. ciphertext in the database, plaintext in the application ------------------------
    people = demo_customers()
    with Session(engine) as session:
        session.add_all([Customer(**p) for p in people])
        session.commit()
    # The raw view: an untyped table clause, so nothing is decrypted on the way out.
    raw = table_clause("customers", column("id"), *[column(n) for n in FIELDS])
    with engine.connect() as conn:
        stored_rows = conn.execute(select(raw).order_by(raw.c.id).limit(3)).all()
    with Session(engine) as session:
        read = {c.id: c for c in session.scalars(select(Customer).order_by(Customer.id))}
        table = Table(title="1. What the database holds, and what the application reads",
                      title_justify="left")
        table.add_column("id", justify="right")
        table.add_column("column")
        table.add_column("stored in the database (ciphertext)", overflow="fold")
        table.add_column("the application reads")
        shown = []
        for row in stored_rows:
            for i, name in enumerate(FIELDS, start=1):
                value = getattr(read[row.id], name)
                table.add_row(str(row.id), name, _show_stored(row[i]), str(value))
                shown.append({"id": row.id, "column": name,
                              "stored": _show_stored(row[i]), "read": value})
            table.add_section()
        say(table)
        doc["rows"] = shown
        nid = people[1]["national_id"]
        found = session.scalars(select(Customer).where(Customer.national_id == nid)).one()
        say(f"lookup by national_id through the blind index (customers.national_id_bidx): "
            f"customer {found.id}\n")
        doc["lookup"] = {"national_id": nid, "found_id": found.id}

    # 2. masking by role -----------------------------------------------------------------
    try:
        doc["masking"] = _masking(guard, engine, Customer, say)
    except ImportError as exc:  # masking not installed: the rest of the demo still runs
        say(f"[dim](masking by role skipped: {exc})[/dim]\n")
    finally:
        guard.policy = None

    # 3. rotation ------------------------------------------------------------------------
    doc["rotation"] = _rotation(guard, engine, Customer, say, out, progress_console,
                                json_out, extra_rows)
    counts: dict[str, int] = {}
    for e in events:
        counts[e["action"]] = counts.get(e["action"], 0) + 1
    doc["audit"] = counts
    say("audit trail: " + ", ".join(f"{k} x{v}" for k, v in sorted(counts.items())))
    if json_out:
        Output.emit_doc(doc)
    guard.close()
    engine.dispose()
    return doc


def _masking(guard: Any, engine: Any, Customer: Any, say: Say) -> dict[str, Any]:
    from sqlalchemy.orm import Session

    from piiguard.masking.context import acting_as
    from piiguard.masking.policy import MaskingPolicy

    guard.policy = MaskingPolicy.from_dict(POLICY)
    roles = ("admin", "support", "intern")
    views: dict[str, dict[str, Any]] = {r: {} for r in roles}
    with Session(engine) as session:
        customer = session.get(Customer, 1)
        for role in roles:
            with acting_as(role, purpose="demo"):
                for name in FIELDS:
                    v = getattr(customer, name)
                    views[role][name] = None if v is None else str(v)
    table = Table(title="2. The same customer as admin, support and a role the policy "
                        "does not name (intern)", title_justify="left")
    table.add_column("column")
    for r in roles:
        table.add_column(r)
    for name in FIELDS:
        table.add_row(name, *[str(views[r][name]) for r in roles])
    say(table)
    say("policy: " + json.dumps(POLICY, ensure_ascii=False) + "\n")
    return views


def _rotation(guard: Any, engine: Any, Customer: Any, say: Say, out: Console,
              progress_console: Console | None, json_out: bool, extra_rows: int) -> dict[str, Any]:
    from sqlalchemy import insert

    from piiguard.errors import KeyInUseError
    from piiguard.rotation.reencrypt import reencrypt
    from piiguard.rotation.shred import retire_key
    from piiguard.rotation.status import key_status
    from piiguard.rotation.verify import verify

    doc: dict[str, Any] = {}
    if extra_rows:
        started = time.perf_counter()
        rows = [_bulk_customer(i) for i in range(extra_rows)]
        with engine.begin() as conn:
            conn.execute(insert(Customer.__table__), rows)
        say(f"3. Key rotation. {extra_rows:,} more synthetic customers stored encrypted in "
            f"{time.perf_counter() - started:.2f} s.\n")
    guard.keys.flush()  # record use counts so the table shows them
    before = key_status(guard)
    doc["before"] = before.to_dict()
    if not json_out:
        print_status(out, before, "keys before the rotation")
    old = next(k.id for k in before.keys if k.kind == "dek" and k.state == "active")
    new = guard.keys.rotate("dek", "customers")
    say(f"\n$ piiguard keys rotate --scope customers   -> new DEK {new}; "
        f"DEK {old} is now decrypt-only (it still decrypts)")
    try:
        retire_key(guard, old)
        doc["retire_refused"] = False
    except KeyInUseError as exc:
        doc["retire_refused"] = True
        say(f"$ piiguard keys retire {old}   -> refused: {exc}")
    say("$ piiguard reencrypt --batch-size 250")
    pc = progress_console or out
    with ProgressBar(pc, enabled=not json_out and pc.is_terminal) as bar:
        report = reencrypt(guard, batch_size=250, progress=bar)
    doc["reencrypt"] = report.to_dict()
    say(f"re-encrypted {report.values:,} values in {report.updated:,} rows in "
        f"{report.elapsed:.2f} s ({report.rows_per_second:,.0f} rows/s); "
        f"every write was a compare-and-swap\n")
    after = key_status(guard)
    doc["after"] = after.to_dict()
    if not json_out:
        print_status(out, after, "keys after reencrypt")
    retire_key(guard, old)
    say(f"\n$ piiguard keys retire {old}   -> retired (no row uses it)")
    check = verify(guard)
    doc["verify"] = {"ok": check.ok, "checked": check.checked}
    say(f"$ piiguard verify   -> {'ok' if check.ok else 'FAILED'}: {check.checked:,} "
        "values decrypted\n")
    return doc
