"""The audit trail of reveals through the ORM, Core and pydantic: exact, never silently
lost, never double-counted.

- ORM reveals audited with exact counts, row keys and key ids, no plaintext in the log;
  one event per reveal (the same loaded value read again, or serialised by a pydantic
  response model, is not counted again);
- durable mode: the record is written before the value is returned, one write per query
  result (per ``yield_per`` chunk); a failing sink or audit table makes the read fail;
  a worker killed with SIGKILL inside ``acting_as`` has every reveal on record (a real
  child process; the batched trail loses them, which shows the test can fail);
- batched mode: pending reveals are written by the timer within ``max_delay`` + 1 s
  while the process is idle;
- a Guard bound with nowhere to write its events warns once, naming the fix.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from masking_world import CANON, RAW, make_model, models, raw_rows
from pydantic import BaseModel, ConfigDict
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.orm import Session

from piiguard import Guard, LocalKMS, MaskingPolicy, acting_as
from piiguard.errors import AuditError
from piiguard.masking.audit import AuditTrail, AuditWarning
from piiguard.masking.view import RevealedStr
from piiguard.pydantic import NationalId, Phone, masking, optional

TESTS = Path(__file__).resolve().parent
POLICY = {"default": "redact",
          "national_id": {"admin": "reveal", "support": "partial:1:2"},
          "phone": {"admin": "reveal"}, "address": {"admin": "reveal"},
          "email": {"admin": "reveal"}}


class Sink:
    """Records what each write got; fails while ``broken``."""

    def __init__(self) -> None:
        self.writes: list[list[dict]] = []
        self.broken = False

    def write_batch(self, events):
        if self.broken:
            raise OSError("audit store unreachable")
        self.writes.append(list(events))

    def __call__(self, event):          # pragma: no cover - write_batch is used
        self.write_batch([event])

    def reveals(self):
        return [e for w in self.writes for e in w if e["action"] == "reveal"]

    def count(self, column):
        return sum(e["count"] for e in self.reveals() if e["column"] == column)


def _customers(engine, guard, n):
    Base, C = models(guard)
    Base.metadata.create_all(engine)
    guard.bind(engine)
    with Session(engine) as s:
        s.add_all([C(id=i, national_id="10000000146", phone="0532 123 45 67")
                   for i in range(1, n + 1)])
        s.commit()
    return C


@pytest.fixture
def durable(sqlite_engine, local_kms):
    sink = Sink()
    guard = Guard(kms=local_kms, audit=AuditTrail(durable=True, sinks=[sink]))
    C = _customers(sqlite_engine, guard, 250)
    guard.policy = MaskingPolicy.from_dict(POLICY)
    sink.writes.clear()
    return guard, C, sqlite_engine, sink


# ----------------------------------------------------------------------------- batched

def test_orm_reveals_audited_exactly_without_plaintext(sqlite_engine, local_kms, caplog):
    # (from test_masking_sqlalchemy.py; a value read twice is one reveal now: 0 double
    # counts, so rows[0].address counts 1, not 2)
    guard = Guard(kms=local_kms)
    Base, Customer = make_model(guard)
    Base.metadata.create_all(sqlite_engine)
    guard.bind(sqlite_engine)
    with Session(sqlite_engine) as s:
        s.add_all([Customer(**RAW), Customer(**{**RAW, "national_id": "10000000078"})])
        s.add_all([Customer(**{**RAW, "national_id": "10000000146"}) for _ in range(148)])
        s.commit()
    guard.policy = MaskingPolicy.from_dict({
        "default": "redact",
        "national_id": {"admin": "reveal", "support": "partial:1:2"},
        "email": {"admin": "reveal"}, "address": {"admin": "reveal"},
        "name": {"admin": "reveal"},
    })
    caplog.set_level(logging.INFO, logger="piiguard.audit")
    with Session(sqlite_engine) as s:
        with acting_as("admin", purpose="kvkk-42"):
            rows = s.scalars(select(Customer).order_by(Customer.id)).all()
            assert len(rows) == 150
            for c in rows:
                _ = c.national_id, c.email, c.name
            _ = rows[0].address
            _ = rows[0].address                  # the same value again: not a new reveal
        with acting_as("admin", purpose="kvkk-43"):
            _ = rows[0].address                  # another purpose: a new reveal
        with acting_as("support"):
            for c in rows:
                _ = c.national_id                # partial: not a reveal
    events = [r.piiguard_event for r in caplog.records
              if r.name == "piiguard.audit" and r.piiguard_event["action"] == "reveal"]
    counts: dict[tuple[str, str], int] = {}
    for e in events:
        k = (e["column"], e["purpose"])
        counts[k] = counts.get(k, 0) + e["count"]
        assert (e["role"], e["outcome"]) == ("admin", "ok")
    assert counts == {("customers.national_id", "kvkk-42"): 150,
                      ("customers.email", "kvkk-42"): 150,
                      ("customers.name", "kvkk-42"): 150,
                      ("customers.address", "kvkk-42"): 1,
                      ("customers.address", "kvkk-43"): 1}
    nid = next(e for e in events if e["column"] == "customers.national_id")
    dek = guard.field("customers", "national_id").key_id_of(raw_rows(sqlite_engine)[0][2])
    assert nid["key_id"] == dek
    assert nid["row_keys"][:3] == ["1", "2", "3"] and nid["row_keys_omitted"] == 50
    for value in CANON.values():
        assert value not in caplog.text
    for word in ("Şükrü", "Öztürk", "örnek", "ÇİÇEK", "İğdır", "10000000146", "0532"):
        assert word not in caplog.text


def test_a_pydantic_response_does_not_count_an_orm_reveal_twice(sqlite_engine, local_kms):
    sink = Sink()
    guard = Guard(kms=local_kms, audit=AuditTrail(sinks=[sink]))
    C = _customers(sqlite_engine, guard, 3)
    guard.policy = MaskingPolicy.from_dict(POLICY)

    class Out(BaseModel):
        model_config = ConfigDict(from_attributes=True)
        id: int
        national_id: optional(NationalId)
        phone: optional(Phone)

    with masking(guard), acting_as("admin"), Session(sqlite_engine) as s:
        objs = s.scalars(select(C).order_by(C.id)).all()
        out = [Out.model_validate(o) for o in objs]
        assert all(type(o.national_id) is RevealedStr for o in out)
        dumped = [o.model_dump_json() for o in out] + [o.model_dump_json() for o in out]
        # a plain str revealed by pydantic alone is still counted, once per dump
        Out(id=9, national_id="10000000078", phone=None).model_dump()
    assert all("10000000146" in d for d in dumped)
    assert sink.count("customers.national_id") == 3 and sink.count("customers.phone") == 3
    assert sink.count("Out.national_id") == 1 and sink.count("Out.phone") == 0
    orm = [e for e in sink.reveals() if e["column"] == "customers.national_id"]
    assert orm[0]["key_id"] is not None and orm[0]["row_keys"] == ["1", "2", "3"]


def test_pending_reveals_are_written_within_max_delay_while_idle():
    sink = Sink()
    trail = AuditTrail(max_delay=1, sinks=[sink])
    t0 = time.monotonic()
    for row in range(5):
        trail.record_reveal("customers.phone", 1, row, "admin", None)
    assert trail.pending() == 5 and not sink.writes
    while not sink.writes and time.monotonic() - t0 < 5:
        time.sleep(0.02)
    elapsed = time.monotonic() - t0
    assert sink.count("customers.phone") == 5 and trail.pending() == 0
    assert 0.9 <= elapsed <= 2.0, elapsed            # within max_delay + 1 s


def test_a_failed_batched_write_keeps_the_counts():
    sink = Sink()
    trail = AuditTrail(sinks=[sink])
    trail.record_reveal("c.phone", 1, 1, "admin", None)
    sink.broken = True
    with pytest.raises(AuditError, match="sink"):
        trail.flush()
    assert trail.pending() == 1
    sink.broken = False
    trail.record_reveal("c.phone", 1, 2, "admin", None)
    trail.flush()
    assert sink.count("c.phone") == 2 and sink.reveals()[0]["row_keys"] == [1, 2]


# ----------------------------------------------------------------------------- durable

def test_durable_needs_a_destination_that_can_fail():
    with pytest.raises(Exception, match="durable"):
        AuditTrail(durable=True)


def test_durable_writes_one_record_per_query_result_before_the_first_value(durable):
    guard, C, engine, sink = durable
    with acting_as("admin", purpose="export"), Session(engine) as s:
        rows = s.scalars(select(C).order_by(C.id)).all()
        assert sink.writes == []                      # nothing read yet, nothing written
        first = rows[0].national_id
        # the whole result is on record before the first value came back
        assert len(sink.writes) == 1
        assert sink.count("customers.national_id") == 250
        assert sink.count("customers.phone") == 250
        assert first == "10000000146"
        seen = [(c.national_id, c.phone) for c in rows for _ in range(2)]
    assert len(seen) == 500 and len(sink.writes) == 1
    ev = next(e for e in sink.reveals() if e["column"] == "customers.national_id")
    assert ev["role"] == "admin" and ev["purpose"] == "export" and ev["key_id"] == 2
    assert ev["row_keys"][:2] == ["1", "2"] and ev["row_keys_omitted"] == 150


def test_a_trail_made_durable_after_the_models_batches_too(sqlite_engine, local_kms):
    guard = Guard(kms=local_kms)                      # batched: ORM loads pay nothing
    C = _customers(sqlite_engine, guard, 40)
    guard.policy = MaskingPolicy.from_dict(POLICY)
    sink = Sink()
    guard.audit = AuditTrail(durable=True, sinks=[sink])
    with acting_as("admin"), Session(sqlite_engine) as s:
        assert {c.national_id for c in s.scalars(select(C))} == {"10000000146"}
    assert len(sink.writes) == 1 and sink.count("customers.national_id") == 40
    with pytest.raises(Exception, match="AuditTrail"):
        guard.audit = object()


def test_durable_yield_per_writes_once_per_chunk(durable):
    guard, C, engine, sink = durable
    with acting_as("admin"), Session(engine) as s:
        n = 0
        for c in s.scalars(select(C).order_by(C.id).execution_options(yield_per=100)):
            assert c.national_id == "10000000146"
            n += 1
    assert n == 250 and len(sink.writes) == 3
    assert sink.count("customers.national_id") == 250


def test_durable_audit_table_while_a_result_is_streamed(tmp_path, local_kms):
    """SQLite (rollback journal): the audit table in the file being streamed from cannot
    be written until the read ends, so the reveal fails closed; an audit database of its
    own (AuditTrail(engine=...)) works, one write per chunk."""
    data = create_engine(f"sqlite:///{tmp_path / 'data.db'}",
                         connect_args={"timeout": 0.2})
    audit_db = create_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    for trail, ok in ((AuditTrail(durable=True, table=True), False),
                      (AuditTrail(durable=True, table=True, engine=audit_db), True)):
        guard = Guard(kms=local_kms, audit=trail)
        C = _customers(data, guard, 250) if ok is False else models(guard)[1]
        if ok:
            guard.bind(data)
        guard.policy = MaskingPolicy.from_dict(POLICY)
        with acting_as("admin"), Session(data) as s:
            result = s.scalars(select(C).order_by(C.id).execution_options(yield_per=100))
            if not ok:
                first = next(iter(result))
                with pytest.raises(AuditError, match="piiguard_audit") as info:
                    _ = first.national_id
                assert "10000000146" not in str(info.value)
                continue
            assert all(c.national_id == "10000000146" for c in result)
        table = trail.table
        with audit_db.connect() as conn:
            rows = conn.execute(select(table.c.count).where(
                table.c.column == "customers.national_id")).scalars().all()
        assert rows == [100, 100, 50]
    data.dispose()
    audit_db.dispose()


def test_durable_reads_one_at_a_time_and_core_rows(durable):
    guard, C, engine, sink = durable
    with acting_as("admin"), Session(engine) as s:
        for i in (1, 2, 3):
            assert s.get(C, i).phone == "+905321234567"
        row = s.execute(select(C.__table__).where(C.id == 4)).one()
        assert str(row.national_id) == "10000000146"
    # each s.get() is its own result: its batch records every value of the row the role
    # may see whole (national_id and phone), written when the first is read; a Core row
    # is written value by value
    assert sink.count("customers.phone") == 3 and sink.count("customers.national_id") == 4
    assert len(sink.writes) == 4


def test_a_failing_sink_makes_the_reveal_fail(durable):
    guard, C, engine, sink = durable
    sink.broken = True
    with acting_as("admin"), Session(engine) as s:
        c = s.get(C, 1)
        with pytest.raises(AuditError) as info:
            _ = c.national_id
        assert "10000000146" not in str(info.value) and info.value.__cause__ is None
        with pytest.raises(AuditError):
            _ = c.phone
        with acting_as("support"):
            assert c.national_id == "1********46"        # masked views need no record
        sink.broken = False
        assert c.national_id == "10000000146"            # recorded now, then shown
    assert sink.count("customers.national_id") == 1 and len(sink.writes) == 1


def test_a_failing_audit_table_makes_the_reveal_fail(sqlite_engine, local_kms):
    guard = Guard(kms=local_kms, audit=AuditTrail(durable=True, table=True))
    C = _customers(sqlite_engine, guard, 2)
    guard.policy = MaskingPolicy.from_dict(POLICY)
    with sqlite_engine.begin() as conn:
        conn.execute(text("DROP TABLE piiguard_audit"))
    with acting_as("admin"), Session(sqlite_engine) as s:
        with pytest.raises(AuditError, match="piiguard_audit"):
            _ = s.get(C, 1).national_id
    guard.audit.table.create(sqlite_engine)
    with acting_as("admin"), Session(sqlite_engine) as s:
        assert s.get(C, 1).national_id == "10000000146"
    table = guard.audit.table
    with sqlite_engine.connect() as conn:
        assert conn.execute(select(func.sum(table.c.count)).where(
            table.c.column == "customers.national_id")).scalar() == 1


_WORKER = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from masking_world import models
    from sqlalchemy import create_engine, select
    from sqlalchemy.orm import Session
    from piiguard import Guard, LocalKMS, MaskingPolicy, acting_as
    from piiguard.masking.audit import AuditTrail

    url, keyfile, durable, mode, n = sys.argv[1:6]
    n = int(n)
    guard = Guard(kms=LocalKMS.from_file(keyfile),
                  audit=AuditTrail(durable=durable == "1", table=True))
    Base, C = models(guard)
    guard.bind(create_engine(url))
    guard.policy = MaskingPolicy.from_dict({{"national_id": {{"admin": "reveal"}}}})
    with acting_as("admin", purpose="nightly-job"), Session(guard.engine) as s:
        if mode == "one-query":
            rows = s.scalars(select(C).order_by(C.id).limit(n)).all()
        else:
            rows = [s.get(C, i) for i in range(1, n + 1)]
        for c in rows:
            assert c.national_id == "10000000146"
        print("revealed", len(rows), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)     # dies inside acting_as: no exit hook
""")


@pytest.mark.parametrize("durable_mode, mode, recorded", [
    ("1", "one-query", 300), ("1", "one-by-one", 300), ("0", "one-query", 0)])
def test_a_worker_killed_inside_acting_as_has_every_reveal_on_record(
        tmp_path, durable_mode, mode, recorded):
    db = tmp_path / "worker.db"
    keyfile = tmp_path / "master.key"
    engine = create_engine(f"sqlite:///{db}")
    guard = Guard(kms=LocalKMS.from_file(keyfile, create=True),
                  audit=AuditTrail(table=True))
    _customers(engine, guard, 300)
    out = subprocess.run(
        [sys.executable, "-c", _WORKER.format(tests=str(TESTS)), f"sqlite:///{db}",
         str(keyfile), durable_mode, mode, "300"],
        capture_output=True, text=True, timeout=120)
    assert out.returncode == -signal.SIGKILL, out.stderr
    assert out.stdout.strip() == "revealed 300"
    table = guard.audit.table
    with engine.connect() as conn:
        got = conn.execute(select(func.coalesce(func.sum(table.c.count), 0)).where(
            table.c.action == "reveal", table.c.role == "admin",
            table.c.purpose == "nightly-job",
            table.c.column == "customers.national_id")).scalar()
    # batched (durable off): the 300 counts died with the process; durable: all 300
    assert got == recorded
    engine.dispose()


def test_durable_search_whose_event_cannot_be_written_does_not_run(durable):
    guard, C, engine, sink = durable
    with acting_as("admin"), Session(engine) as s:
        sink.broken = True
        with pytest.raises(AuditError):
            s.scalars(select(C).where(C.national_id == "10000000146")).all()
        sink.broken = False
        assert len(s.scalars(select(C).where(C.national_id == "10000000146")).all()) == 250


# ----------------------------------------------------------------------------- bind warning

@pytest.fixture
def silent_audit_logger():
    """The 'piiguard.audit' logger as a plain `uvicorn` run leaves it: no handler."""
    log = logging.getLogger("piiguard.audit")
    saved = (log.handlers[:], log.propagate, log.level)
    log.handlers.clear()
    log.propagate = False
    log.setLevel(logging.NOTSET)
    yield log
    log.handlers[:], log.propagate, _ = saved
    log.setLevel(saved[2])


def test_a_guard_whose_events_go_nowhere_warns_once_at_bind(silent_audit_logger,
                                                            local_kms, tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'w.db'}")
    guard = Guard(kms=local_kms)
    with pytest.warns(AuditWarning) as warned:
        guard.bind(engine)
        guard.bind(engine)
    assert len(warned) == 1
    message = str(warned[0].message)
    assert "piiguard.audit" in message and "AuditTrail(table=True)" in message
    assert "logging.basicConfig(level=logging.INFO)" in message
    assert warned[0].filename == __file__                 # points at the bind() call
    # any of the fixes silences it
    for audit in (AuditTrail(table=True), AuditTrail(sinks=[print])):
        with _no_warning():
            Guard(kms=local_kms, audit=audit).bind(engine)
    silent_audit_logger.addHandler(logging.NullHandler())
    silent_audit_logger.setLevel(logging.INFO)
    with _no_warning():
        Guard(kms=local_kms).bind(engine)
    engine.dispose()


class _no_warning:
    def __enter__(self):
        import warnings
        self._cm = warnings.catch_warnings()
        self._cm.__enter__()
        warnings.simplefilter("error", AuditWarning)

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc)


def test_durable_trail_survives_fork_free_of_thread_state():
    """The timer thread is restarted in a forked child (no lock held by a dead thread)."""
    if not hasattr(os, "fork"):
        pytest.skip("no fork on this platform")
    sink = Sink()
    trail = AuditTrail(max_delay=0.2, sinks=[sink])
    trail.record_reveal("c.phone", 1, 1, "admin", None)
    pid = os.fork()
    if pid == 0:                                          # child
        try:
            deadline = time.monotonic() + 3
            while trail.pending() and time.monotonic() < deadline:
                time.sleep(0.02)
            os._exit(0 if trail.pending() == 0 else 1)
        except BaseException:                             # pragma: no cover
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    deadline = time.monotonic() + 3
    while trail.pending() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sink.count("c.phone") == 1
