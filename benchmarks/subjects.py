"""Per-subject keys at scale (issue 12): PostgreSQL + AwsKMS on a real moto server.

    .venv/bin/python -m benchmarks.subjects [--rows 10000]

Measured side by side in one run, on a schema of its own in the test database:

- inserting ``rows`` rows for ``rows`` new subjects (``key_scope=``) vs the same table
  with one key (rows/s, and the ratio; target >= 0.5);
- KMS calls for the whole per-subject insert, bind included (boto3 event hook; target
  <= 2);
- ``reencrypt`` of the per-subject table after every subject's DEK was made
  decrypt-only (a new key per subject, created as it goes; target >= 2,460 rows/s);
- KMS calls of ``verify`` in a fresh process (target <= 2).
"""

from __future__ import annotations

import argparse
import json
import time
import uuid

from sqlalchemy import Integer, String, create_engine, insert, text, update
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from piiguard import AuditTrail, Guard
from piiguard.kms.aws import AwsKMS
from piiguard.rotation import reencrypt, verify
from piiguard.sqlalchemy import EncryptedNationalId, EncryptedPhone
from piiguard.testing import KMSCallCounter, MotoServer
from piiguard.validators import tckn

PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def tc(n: int) -> str:
    base = str(600000000 + n)
    return base + tckn.calc_check_digits(base)


def model(guard: Guard, name: str, scoped: bool):
    class Base(DeclarativeBase):
        pass

    kw = {"key_scope": "subject"} if scoped else {}

    class C(Base):
        __tablename__ = name
        id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
        subject: Mapped[str] = mapped_column(String(32))
        national_id: Mapped[str] = mapped_column(EncryptedNationalId(guard, searchable=True,
                                                                     **kw))
        phone: Mapped[str] = mapped_column(EncryptedPhone(guard, **kw))
    return Base, C


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000)
    n = ap.parse_args().rows
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    engine = create_engine(PG, connect_args={"options": f"-csearch_path={schema}"})
    server = MotoServer().start()
    out: dict[str, object] = {"rows": n}
    try:
        client = server.client()
        counter = KMSCallCounter(client)
        arn = client.create_key()["KeyMetadata"]["Arn"]
        counter.reset()
        guard = Guard(kms=AwsKMS(arn, client=client), audit=AuditTrail(sinks=[]))
        b1, one = model(guard, "one_key", False)
        b2, per = model(guard, "per_subject", True)
        b1.metadata.create_all(engine)
        b2.metadata.create_all(engine)
        guard.bind(engine)
        data = [dict(id=i, subject=f"S-{i}", national_id=tc(i), phone=f"+90534{i:07d}")
                for i in range(1, n + 1)]
        t0 = time.perf_counter()
        with engine.begin() as conn:
            conn.execute(insert(one.__table__), data)
        t1 = time.perf_counter()
        with engine.begin() as conn:
            conn.execute(insert(per.__table__), data)
        t2 = time.perf_counter()
        out["insert_one_key_rows_s"] = round(n / (t1 - t0))
        out["insert_per_subject_rows_s"] = round(n / (t2 - t1))
        out["insert_ratio"] = round((t1 - t0) / (t2 - t1), 2)
        out["kms_calls_insert_incl_bind"] = dict(counter.calls)
        guard.close()
        # every subject's DEK decrypt-only: reencrypt makes a new key per subject
        keys = guard.keys.table
        with engine.begin() as conn:
            conn.execute(update(keys).where(keys.c.scope.like("per_subject:%"),
                                            keys.c.kind == "dek", keys.c.state == "active")
                         .values(state="decrypt_only", active_slot=None))
        counter.reset()
        job = Guard(kms=AwsKMS(arn, client=client), audit=AuditTrail(sinks=[]))
        model(job, "per_subject", True)
        job.bind(engine)
        t3 = time.perf_counter()
        try:
            rep = reencrypt(job, table="per_subject")
        except Exception as exc:  # noqa: BLE001 - reported: see the issue 12 closing note
            # Known limit: reencrypt names every decrypt-only DEK in one IN list (4 key
            # prefixes each); 10,000 subjects exceed PostgreSQL's 65,535 parameters.
            out["reencrypt_error"] = type(exc).__name__
        else:
            t4 = time.perf_counter()
            out["reencrypt_rows_s"] = round(rep.updated / (t4 - t3))
            out["reencrypt_updated"] = rep.updated
        out["kms_calls_reencrypt"] = dict(counter.calls)
        job.close()
        counter.reset()
        fresh = Guard(kms=AwsKMS(arn, client=client), audit=AuditTrail(sinks=[]))
        model(fresh, "per_subject", True)
        model(fresh, "one_key", False)
        fresh.bind(engine)
        vr = verify(fresh)
        out["verify_ok"] = vr.ok
        out["kms_calls_verify_fresh_process"] = dict(counter.calls)
        fresh.close()
    finally:
        server.stop()
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
