"""Scenario 3: equality lookup through the blind index vs a plaintext indexed lookup.

The table holds ``--rows`` rows. ``plaintext``: ``national_id`` is a ``String`` column
with an ordinary B-tree index. ``piiguard``: ``EncryptedNationalId(searchable=True)``:
the lookup value is canonicalised, its HMAC computed under the index key, and the
indexed sibling column searched; the row's encrypted columns are then decrypted.

Cases (latency per lookup of an existing, random national ID; one session / connection
reused for all lookups of a sample):

- ``orm_lookup``: ``session.scalars(select(Model).where(Model.national_id == v)).one()``
  and read every attribute (index + decryption of the three PII columns);
- ``core_lookup_id``: ``conn.execute(select(table.c.id).where(table.c.national_id == v))``
  (the index path only, nothing decrypted);
- ``core_insert``: inserting the rows with the index maintained (plaintext B-tree vs
  HMAC + B-tree on the sibling column), µs per row.
"""

from __future__ import annotations

import random
import time

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from benchmarks.data import make_rows
from benchmarks.harness import Context, timing
from benchmarks.scenarios import schema

NAME = "blind_index"
TITLE = "Blind-index equality lookup vs plaintext indexed lookup"
BASELINES = ("plaintext",)


def available() -> str | None:
    return schema.piiguard_available()


def run(ctx: Context) -> list[dict]:
    from piiguard import Guard, LocalKMS

    n = ctx.rows
    rows = make_rows(n, seed=3, input="canonical")  # values compared as stored
    lookups = 50 if ctx.quick else 2000
    rng = random.Random(11)
    probes = [rows[rng.randrange(n)] for _ in range(lookups)]
    engine = ctx.engine("bidx")
    guard = Guard(kms=LocalKMS.generate())
    models = {"plaintext": schema.plaintext_model("customers_bi_plain", index=True),
              "piiguard": schema.piiguard_model(guard, "customers_bi_pg", searchable=True)}
    guard.bind(engine)

    def fill(model) -> float:
        model.__table__.drop(engine, checkfirst=True)
        model.__table__.create(engine)
        t0 = time.perf_counter()
        with engine.begin() as conn:
            for i in range(0, n, 10_000):
                conn.execute(insert(model.__table__), rows[i:i + 10_000])
        return time.perf_counter() - t0

    def orm_lookup(model) -> float:
        with Session(engine) as session:
            t0 = time.perf_counter()
            for p in probes:
                obj = session.scalars(select(model).where(model.national_id ==
                                                          p["national_id"])).one()
                got = (obj.id, obj.national_id, obj.phone, obj.address)
                session.expunge(obj)
            elapsed = time.perf_counter() - t0
        if got != (p["id"], p["national_id"], p["phone"], p["address"]):
            raise AssertionError("lookup found another row")
        return elapsed

    def core_lookup(model) -> float:
        t = model.__table__
        with engine.connect() as conn:
            t0 = time.perf_counter()
            for p in probes:
                got = conn.execute(select(t.c.id).where(t.c.national_id ==
                                                        p["national_id"])).scalar_one()
            elapsed = time.perf_counter() - t0
        if got != p["id"]:
            raise AssertionError("lookup found another row")
        return elapsed

    inserts: dict[str, list[float]] = {k: [] for k in models}
    for name, model in models.items():  # fill once and warm up
        inserts[name].append(fill(model))
        orm_lookup(model)
    orm = ctx.interleave({k: (lambda m=m: orm_lookup(m)) for k, m in models.items()})
    core = ctx.interleave({k: (lambda m=m: core_lookup(m)) for k, m in models.items()})
    more = ctx.interleave({k: (lambda m=m: fill(m)) for k, m in models.items()},
                          repeat=max(1, ctx.repeat - 1) if ctx.repeat > 1 else 1)
    for k in models:
        inserts[k].extend(more[k])
        models[k].__table__.drop(engine, checkfirst=True)
    records = []
    for k in models:
        records.append(timing(NAME, "orm_lookup", k, rows=lookups, samples=orm[k],
                              db=ctx.db, table_rows=n))
    for k in models:
        records.append(timing(NAME, "core_lookup_id", k, rows=lookups, samples=core[k],
                              db=ctx.db, table_rows=n))
    for k in models:
        records.append(timing(NAME, "core_insert", k, rows=n, samples=inserts[k],
                              db=ctx.db, table_rows=n))
    return records


def targets(records: list[dict], ctx: Context) -> list[dict]:
    # The issue sets no ratio for lookups: the table reports latency next to plaintext.
    return []
