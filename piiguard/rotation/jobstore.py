"""The job table of queued jobs: one report whichever workers ran the job.

A queued job (:mod:`~piiguard.rotation.celery`) keeps its state in the application's
own database, beside the rows it works on, in two tables created on first use:

- ``piiguard_jobs``: one row a job: kind, options (the public
  :class:`~piiguard.rotation.jobs.JobSpec`, no database URL), state (``running``,
  ``done``, ``failed``), the pass it is in, and at the end the report (JSON);
- ``piiguard_job_tables``: one row a job and table: rows to do, rows done, and the
  counts that add up (``updated``, ``values``, ``indexes``, ``conflicts``,
  ``upgraded``).

A re-encryption or encrypt-existing batch adds its counts to its table row **inside
the batch's own transaction** (:meth:`JobStore.add`, called by the batch engine's
``on_batch`` hook): a batch that commits is counted once, a batch lost with a killed
worker is neither written nor counted, and a retried range counts only what it does.
So the counts are exact whichever workers ran which ranges, how often they died, and on
which machines. Progress is ``done`` / ``todo`` of the same rows, readable from any
machine that reaches the database (``piiguard jobs status``).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    insert,
    select,
    update,
)

from piiguard.errors import ConfigurationError
from piiguard.rotation.batches import Counts

__all__ = ["ADDED", "JobStore"]

#: The counts a batch adds to its table row (exactly once: in the batch's transaction).
ADDED = ("updated", "values", "indexes", "conflicts", "upgraded")

_meta = MetaData()
JOBS = Table(
    "piiguard_jobs", _meta,
    Column("id", String(32), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("spec", Text, nullable=False),
    Column("state", String(16), nullable=False),
    Column("pass_no", Integer, nullable=False),
    Column("created", Float, nullable=False),
    Column("finished", Float),
    Column("report", Text),
)
JOB_TABLES = Table(
    "piiguard_job_tables", _meta,
    Column("job_id", String(32), primary_key=True),
    Column("table_name", String(128), primary_key=True),
    Column("todo", BigInteger, nullable=False, default=0),
    Column("done", BigInteger, nullable=False, default=0),
    Column("passes", Integer, nullable=False, default=0),
    Column("last", Text),       # the last pass's counts that are recounted by a retry
    *[Column(name, BigInteger, nullable=False, default=0) for name in ADDED],
)


class JobStore:
    """The job tables of one database (created on first use)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        _meta.create_all(engine, checkfirst=True)

    def create(self, kind: str, spec: dict[str, Any], tables: dict[str, int]) -> str:
        """A new running job in pass 1 over ``tables`` (name: rows to do)."""
        job_id = uuid.uuid4().hex
        with self.engine.begin() as conn:
            conn.execute(insert(JOBS).values(id=job_id, kind=kind, spec=json.dumps(spec),
                                             state="running", pass_no=1,
                                             created=time.time()))
            conn.execute(insert(JOB_TABLES), [
                dict(job_id=job_id, table_name=t, todo=n, done=0, passes=1,
                     **dict.fromkeys(ADDED, 0)) for t, n in tables.items()])
        return job_id

    def add(self, conn: Any, job_id: str, table: str, rows: int, counts: Counts) -> None:
        """Add one batch's rows and counts to its table row, on the batch's connection
        (inside its transaction)."""
        t = JOB_TABLES.c
        conn.execute(update(JOB_TABLES)
                     .where(t.job_id == job_id, t.table_name == table)
                     .values(done=t.done + rows,
                             **{n: t[n] + getattr(counts, n) for n in ADDED}))

    def advance(self, job_id: str, table: str, rows: int) -> None:
        """Progress of a job that writes nothing (verify): its own small transaction."""
        t = JOB_TABLES.c
        with self.engine.begin() as conn:
            conn.execute(update(JOB_TABLES)
                         .where(t.job_id == job_id, t.table_name == table)
                         .values(done=t.done + rows))

    def next_pass(self, job_id: str, pass_no: int, todo: dict[str, int],
                  last: dict[str, Any]) -> bool:
        """Move the job from ``pass_no`` to the next pass (compare-and-swap on the pass
        number: of two finishers of one pass, one wins) and record each table's last
        counts; ``todo`` adds the rows of the new pass."""
        t = JOB_TABLES.c
        with self.engine.begin() as conn:
            won = conn.execute(update(JOBS).where(JOBS.c.id == job_id,
                                                  JOBS.c.pass_no == pass_no,
                                                  JOBS.c.state == "running")
                               .values(pass_no=pass_no + 1)).rowcount
            if not won:
                return False
            for table, d in last.items():
                conn.execute(update(JOB_TABLES).where(t.job_id == job_id,
                                                      t.table_name == table)
                             .values(last=json.dumps(d)))
            for table, n in todo.items():
                conn.execute(update(JOB_TABLES).where(t.job_id == job_id,
                                                      t.table_name == table)
                             .values(todo=t.todo + n, passes=t.passes + 1))
        return True

    def finish(self, job_id: str, pass_no: int, report: dict[str, Any],
               state: str = "done") -> bool:
        """Record the report and the final state (once: compare-and-swap on the pass)."""
        with self.engine.begin() as conn:
            return bool(conn.execute(
                update(JOBS).where(JOBS.c.id == job_id, JOBS.c.pass_no == pass_no,
                                   JOBS.c.state == "running")
                .values(state=state, finished=time.time(),
                        report=json.dumps(report, default=str))).rowcount)

    def fail(self, job_id: str, error: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(JOBS).where(JOBS.c.id == job_id, JOBS.c.state == "running")
                         .values(state="failed", finished=time.time(),
                                 report=json.dumps({"ok": False, "error": error})))

    def get(self, job_id: str) -> dict[str, Any]:
        """The job's status: state, pass, progress and counts by table, report."""
        with self.engine.connect() as conn:
            row = conn.execute(select(JOBS).where(JOBS.c.id == job_id)).mappings().first()
            if row is None:
                raise ConfigurationError(f"no job {job_id!r} in this database "
                                         "(piiguard jobs list)", operation="jobs")
            tables = conn.execute(select(JOB_TABLES).where(JOB_TABLES.c.job_id == job_id)
                                  .order_by(JOB_TABLES.c.table_name)).mappings().all()
        out: dict[str, Any] = {
            "id": row["id"], "kind": row["kind"], "state": row["state"],
            "pass": row["pass_no"], "spec": json.loads(row["spec"]),
            "created": row["created"], "finished": row["finished"],
            "todo": sum(t["todo"] for t in tables), "done": sum(t["done"] for t in tables),
            "tables": [{k: t[k] for k in ("table_name", "todo", "done", "passes", *ADDED)}
                       | {"last": json.loads(t["last"]) if t["last"] else None}
                       for t in tables],
            "report": json.loads(row["report"]) if row["report"] else None,
        }
        return out

    def list(self, limit: int = 20, kind: str | None = None) -> list[dict[str, Any]]:
        """The latest jobs (of ``kind``), newest first (id, kind, state, pass, created,
        finished)."""
        from piiguard.rotation.jobs import KINDS

        if kind is not None and kind not in KINDS:
            raise ConfigurationError(f"unknown job kind {kind!r} (one of "
                                     f"{', '.join(KINDS)})", operation="jobs")
        q = select(JOBS.c.id, JOBS.c.kind, JOBS.c.state, JOBS.c.pass_no, JOBS.c.created,
                   JOBS.c.finished).order_by(JOBS.c.created.desc()).limit(limit)
        if kind is not None:
            q = q.where(JOBS.c.kind == kind)
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        return [dict(id=r[0], kind=r[1], state=r[2], **{"pass": r[3]}, created=r[4],
                     finished=r[5]) for r in rows]
