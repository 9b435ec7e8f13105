"""Audit trail: batched reveal events with exact counts, flush points, no plaintext."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
import threading

import pytest
from sqlalchemy import select

from piiguard import Guard, MaskingPolicy, acting_as
from piiguard.errors import ConfigurationError
from piiguard.masking.audit import ALLOWED_FIELDS, AuditTrail, flush_all
from piiguard.masking.view import render

VALUES = {
    "national_id": "10000000146",
    "phone": "+905321234567",
    "email": "şükrü.öztürk@örnek.com.tr",
    "address": "ŞİŞLİ MAH. ÇINAR SK. NO:3 D:5, 34394 ŞİŞLİ/İSTANBUL",
    "tax_id": "1234567890",
}
POLICY = {"default": "redact", **{k: {"admin": "reveal", "support": "partial:1:1"}
                                  for k in VALUES}}


def _read_all(guard, n):
    """Render every test value n times (as the current role)."""
    for i in range(n):
        for kind, value in VALUES.items():
            render(guard, kind=kind, column=f"customers.{kind}", plaintext_fn=lambda v=value: v,
                   row_key=i, key_id=1)


def _assert_no_plaintext(text):
    for value in VALUES.values():
        assert value not in text
        for part in value.replace("@", " ").replace(",", " ").split():
            if len(part) >= 3:
                assert part not in text, part


def test_events_are_exact_in_count_and_free_of_plaintext(guard, caplog, sqlite_engine):
    guard.audit = AuditTrail(table=True, batch_size=1000)
    guard.audit.bind(sqlite_engine)
    guard.policy = MaskingPolicy.from_dict(POLICY)
    caplog.set_level(logging.DEBUG)
    with acting_as("admin", purpose="kvkk-request-1"):
        _read_all(guard, 777)             # 3885 reveals: some flushed by batch_size
    with acting_as("support"):
        _read_all(guard, 50)              # partial: no reveals
    _read_all(guard, 10)                  # no role: redact
    assert guard.audit.pending() == 0

    records = [r for r in caplog.records if r.name == "piiguard.audit"]
    events = [r.piiguard_event for r in records]
    assert all(json.loads(r.getMessage()) == json.loads(json.dumps(r.piiguard_event,
                                                                   default=str))
               for r in records)
    reveals = [e for e in events if e["action"] == "reveal"]
    assert {e["role"] for e in reveals} == {"admin"}
    assert {e["purpose"] for e in reveals} == {"kvkk-request-1"}
    per_column = {}
    for e in reveals:
        per_column[e["column"]] = per_column.get(e["column"], 0) + e["count"]
    assert per_column == {f"customers.{k}": 777 for k in VALUES}
    assert len(reveals) < 40              # batched, not one event per value

    _assert_no_plaintext(caplog.text)
    with sqlite_engine.connect() as conn:
        rows = conn.execute(select(guard.audit.table)).all()
    assert sum(r.count for r in rows if r.action == "reveal") == 777 * len(VALUES)
    _assert_no_plaintext(repr(rows))
    assert {r.role for r in rows} == {"admin"}


def test_batch_size_flushes_exactly(guard):
    guard.audit = AuditTrail(batch_size=100)
    guard.policy = MaskingPolicy.from_dict(POLICY)
    events = []
    guard.audit.sinks.append(events.append)
    acting = acting_as("admin")
    acting.__enter__()
    try:
        for _ in range(250):
            render(guard, kind="phone", column="c.phone", plaintext_fn=lambda: "+905321234567")
        assert [e["count"] for e in events] == [100, 100]
        assert guard.audit.pending() == 50
    finally:
        acting.__exit__(None, None, None)
    assert [e["count"] for e in events] == [100, 100, 50]


def test_max_delay_flushes_at_the_next_reveal():
    now = [0.0]
    trail = AuditTrail(max_delay=5, monotonic=lambda: now[0])
    trail.record_reveal("c.phone", 1, None, "admin", None)
    now[0] = 4.9
    trail.record_reveal("c.phone", 1, None, "admin", None)
    assert trail.pending() == 2 and not trail.last_events
    now[0] = 5.0
    trail.record_reveal("c.phone", 1, None, "admin", None)
    assert trail.pending() == 0 and trail.last_events[-1]["count"] == 3


def test_flush_all_and_explicit_flush(guard):
    guard.policy = MaskingPolicy.from_dict(POLICY)
    guard.audit.record_reveal("c.phone", 1, None, "admin", None)
    assert guard.audit.pending() == 1
    flush_all()                                           # what atexit runs
    assert guard.audit.pending() == 0
    assert guard.audit.last_events[-1]["count"] == 1
    assert guard.audit.flush() == []


def test_guard_close_writes_pending_reveals(guard):
    guard.policy = MaskingPolicy.from_dict(POLICY)
    for _ in range(4):
        guard.audit.record_reveal("c.phone", 1, None, "admin", None)
    guard.close()
    assert guard.audit.pending() == 0
    assert guard.audit.last_events[-1]["count"] == 4


def test_pending_reveals_are_written_at_interpreter_exit(tmp_path):
    script = textwrap.dedent("""
        import logging, sys
        logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
        from piiguard.masking.audit import AuditTrail
        trail = AuditTrail()
        for i in range(5):
            trail.record_reveal("customers.phone", 2, i, "admin", None)
        print("pending", trail.pending())
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    lines = out.strip().splitlines()
    assert lines[0] == "pending 5"
    event = json.loads(lines[-1])
    assert event["count"] == 5 and event["action"] == "reveal"
    assert event["row_keys"] == [0, 1, 2, 3, 4]


def test_concurrent_reveals_are_counted_exactly():
    trail = AuditTrail(batch_size=997)     # flushes interleave with the writers
    total = []
    trail.sinks.append(lambda e: total.append(e["count"]))

    def worker():
        for _ in range(20_000):
            trail.record_reveal("c.national_id", 1, None, "admin", None)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    trail.flush()
    assert sum(total) == 80_000


def test_flush_all_races_with_writers():
    trails = [AuditTrail(batch_size=10**9) for _ in range(3)]
    totals = []
    for t in trails:
        t.sinks.append(lambda e: totals.append(e["count"]))
    stop = threading.Event()

    def flusher():
        while not stop.is_set():
            flush_all()

    def writer(trail):
        for _ in range(5_000):
            trail.record_reveal("c.phone", 1, None, "admin", None)

    f = threading.Thread(target=flusher)
    f.start()
    writers = [threading.Thread(target=writer, args=(t,)) for t in trails for _ in range(2)]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    stop.set()
    f.join()
    flush_all()
    assert sum(totals) == 30_000


def test_emit_refuses_unknown_fields():
    trail = AuditTrail()
    with pytest.raises(TypeError, match="value"):
        trail.emit("reveal", value="10000000146")
    with pytest.raises(TypeError, match="plaintext"):
        trail.emit("reveal", column="c.x", plaintext="y")
    assert "value" not in ALLOWED_FIELDS and "plaintext" not in ALLOWED_FIELDS


def test_key_events_still_carry_role(guard):
    events = []
    guard.audit.sinks.append(events.append)
    with acting_as("ops", purpose="setup"):
        guard.keys.pseudonym_key("fresh-scope")
    created = [e for e in events if e["action"] == "key.create"]
    assert created and created[-1]["role"] == "ops" and created[-1]["purpose"] == "setup"
    assert created[-1]["kind"] == "pseudonym"


@pytest.mark.parametrize("kwargs", [{"batch_size": 0}, {"batch_size": 1.5},
                                    {"max_delay": -1}, {"max_row_keys": -1}])
def test_audit_configuration_checked(kwargs):
    with pytest.raises(ConfigurationError):
        AuditTrail(**kwargs)


def test_repr_shows_no_values():
    trail = AuditTrail()
    trail.record_reveal("c.x", 1, "10000000146", "admin", None)
    assert "10000000146" not in repr(trail) and "pending=1" in repr(trail)
    trail.flush()


def test_guard_uses_its_own_trail(local_kms, sqlite_engine):
    g1 = Guard(kms=local_kms).bind(sqlite_engine)
    g2 = Guard(kms=local_kms).bind(sqlite_engine)
    g1.policy = g2.policy = MaskingPolicy.from_dict(POLICY)
    with acting_as("admin"):
        render(g1, kind="phone", column="c.phone", plaintext_fn=lambda: "+905321234567")
        assert g1.audit.pending() == 1 and g2.audit.pending() == 0
