"""Scenario 7: re-encryption throughput (rows/s) by batch size and workers.

The piiguard table (three PII columns) holds ``--rows`` rows under one DEK; the DEK is
rotated (``guard.keys.rotate``: the old one becomes decrypt-only) and
:func:`piiguard.rotation.reencrypt` moves every row to the new DEK — compare-and-swap
``UPDATE``\\ s in batches, one or several worker threads (on PostgreSQL ``FOR UPDATE SKIP
LOCKED``). The clock covers the ``reencrypt`` call only. Before every sample the table
is refilled with the same envelopes under the first (now decrypt-only) DEK, written
straight as bytes so that refilling costs no validation.

Configurations: batch sizes 100 / 1,000 / 5,000 with one worker, and 2 and 4 workers
with batches of 1,000 (on SQLite several writers queue on the database lock, so more
workers cannot help there; ``--db postgresql`` shows the scaling). Every run is checked:
all rows updated, nothing remaining, no failure.
"""

from __future__ import annotations

import time

from sqlalchemy import Column, Integer, LargeBinary, MetaData, String, Table, delete, insert

from benchmarks.data import make_rows
from benchmarks.harness import Context, find, target, timing
from benchmarks.scenarios import schema

NAME = "reencrypt"
TITLE = "Re-encryption throughput (rows/s) by batch size and workers"
BASELINES = ()
DEFAULT = (1000, 1)
CONFIGS = ((100, 1), (1000, 1), (5000, 1), (1000, 2), (1000, 4))


def available() -> str | None:
    reason = schema.piiguard_available()
    if reason:
        return reason
    try:
        from piiguard.rotation import reencrypt  # noqa: F401
    except ImportError as exc:
        return f"piiguard.rotation.reencrypt not importable yet: {exc}"
    return None


def _raw_table(name: str) -> Table:
    """The same table seen without piiguard (what the database holds)."""
    return Table(name, MetaData(), Column("id", Integer, primary_key=True),
                 Column("segment", String(16)), Column("score", Integer),
                 *(Column(c, LargeBinary) for c in schema.PII))


def run(ctx: Context) -> list[dict]:
    from piiguard import Guard, LocalKMS
    from piiguard.rotation import reencrypt

    n = ctx.rows
    rows = make_rows(n, seed=8, input="canonical")  # values compared as stored
    engine = ctx.engine("reenc")
    guard = Guard(kms=LocalKMS.generate())
    model = schema.piiguard_model(guard, "customers_re")
    guard.bind(engine)
    table = model.__table__
    table.create(engine)
    raw = _raw_table(table.name)
    # Envelopes under the first DEK, made once (the data is already canonical, so the
    # column's cipher gives exactly what an INSERT through the column would store).
    ciphers = {c: table.c[c].type.cipher for c in schema.PII}
    stored = [{"id": r["id"], "segment": r["segment"], "score": r["score"],
               **{c: ciphers[c].encrypt_str(r[c]) for c in schema.PII}} for r in rows]
    scope = ciphers["national_id"].scope
    first_key = int.from_bytes(stored[0]["national_id"][1:5], "big")
    check_col = schema.column_type(model, "national_id")

    def refill() -> None:
        with engine.begin() as conn:
            conn.execute(delete(raw))
            for i in range(0, n, 10_000):
                conn.execute(insert(raw), stored[i:i + 10_000])

    def case(batch: int, workers: int):
        def go() -> float:
            refill()
            guard.keys.rotate("dek", scope)
            t0 = time.perf_counter()
            rep = reencrypt(guard, table=table.name, batch_size=batch, workers=workers)
            elapsed = time.perf_counter() - t0
            if rep.failures or rep.remaining or rep.updated != n:
                raise AssertionError(f"reencrypt batch={batch} workers={workers}: updated "
                                     f"{rep.updated}/{n}, remaining {rep.remaining}, "
                                     f"{len(rep.failures)} failures")
            with engine.connect() as conn:
                blob = conn.execute(raw.select().where(raw.c.id == rows[-1]["id"])).one()
            if check_col.stored_key_id(blob.national_id) == first_key or \
                    check_col.decrypt_stored(blob.national_id) != rows[-1]["national_id"]:
                raise AssertionError("row not moved to the new key, or changed")
            return elapsed
        return go

    repeat = min(ctx.repeat, 3)
    samples = ctx.interleave({f"batch={b} workers={w}": case(b, w) for b, w in CONFIGS},
                             repeat=repeat)
    table.drop(engine)
    return [timing(NAME, label, "piiguard", rows=n, samples=s, db=ctx.db,
                   batch_size=b, workers=w)
            for (label, s), (b, w) in zip(samples.items(), CONFIGS, strict=True)]


def targets(records: list[dict], ctx: Context) -> list[dict]:
    if ctx.db != "sqlite":
        return []
    d = find(records, batch_size=DEFAULT[0], workers=DEFAULT[1])
    if d is None:
        return []
    best = max(records, key=lambda r: r["rows_per_second"])
    return [target(NAME, f"re-encryption on SQLite, {d['rows']:,} rows × 3 PII columns, "
                         "default batch 1,000, 1 worker", expected=">= 20,000 rows/s",
                   measured=d["rows_per_second"], unit=" rows/s",
                   met=d["rows_per_second"] >= 20_000,
                   detail=f"best: {best['case']} at {best['rows_per_second']:,.0f} rows/s")]
