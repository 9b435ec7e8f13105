"""What a queued job does, without the queue: plan the ranges, run one range, finish a
pass. :mod:`piiguard.rotation.celery` runs these as Celery tasks; nothing here imports
Celery, so the logic is the same whichever engine carries the messages.

- :func:`plan` (on the machine that submits): every table's primary key ranges for the
  first pass and its rows to do;
- :func:`run_range` (on a worker): one range, through the job's own code (the batch
  engine's compare-and-swap for reencrypt / encrypt-existing, :func:`verify_range` for
  verify). Idempotent: a range run twice, or cut short by a killed worker and run again,
  finds only the rows still left (the rows are the checkpoint), and its counts go into
  the job table inside each batch's transaction (:mod:`~piiguard.rotation.jobstore`);
- :func:`finish_pass` (on a worker, once every range of a pass is done): either the
  next pass's ranges (rows a concurrent write got to first, or rows locked at the time)
  or the final report, written to the job row once.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any, NamedTuple

from piiguard.rotation.batches import Counts, KeyRange, TableReport, split
from piiguard.rotation.jobs import JobSpec, batch_job
from piiguard.rotation.jobstore import ADDED, JobStore
from piiguard.rotation.progress import Progress
from piiguard.rotation.reencrypt import ReencryptReport
from piiguard.rotation.sql import Lite
from piiguard.rotation.targets import discover
from piiguard.rotation.verify import VerifyReport, verify_range

__all__ = ["RangeTask", "finish_pass", "plan", "run_range"]

#: Rows a range holds by default: small enough that a killed worker's range is redone
#: in seconds and that ranges spread evenly over the workers.
RANGE_ROWS = 50_000


class RangeTask(NamedTuple):
    """One range of one table (what a task message carries besides the job)."""

    table: str
    lo: Any
    hi: Any


def _ranges(bounds: Any, todo: int, ranges: int | None) -> list[KeyRange]:
    n = ranges or max(1, min(1000, -(-todo // RANGE_ROWS)))
    return split(bounds, n)


def plan(guard: Any, spec: JobSpec, *, ranges: int | None = None
         ) -> tuple[dict[str, int], list[RangeTask]]:
    """Rows to do by table, and the ranges of the first pass (``ranges`` a table, by
    default one per :data:`RANGE_ROWS` rows)."""
    todo: dict[str, int] = {}
    tasks: list[RangeTask] = []
    if spec.kind == "verify":
        for target in discover(guard, table=spec.table):
            lite = Lite(target, guard.engine)
            with guard.engine.connect() as conn:
                n = conn.execute(lite.count(None)).scalar_one()
                bounds = conn.execute(lite.pk_bounds(None)).one() if target.int_pk \
                    else None
            todo[target.name] = n
            tasks += [RangeTask(target.name, k.lo, k.hi) for k in _ranges(bounds, n, ranges)]
        return todo, tasks
    tables = [spec.table] if spec.kind == "encrypt-existing" else \
        [t.name for t in discover(guard, table=spec.table)]
    for table in tables:
        assert table is not None
        job = batch_job(guard, spec, table)
        n = job.todo()
        todo[table] = n
        if n == 0:
            continue
        bounds = None
        if job.target.int_pk:
            with guard.engine.connect() as conn:
                bounds = conn.execute(job.lite.pk_bounds(job.where)).one()
        tasks += [RangeTask(table, k.lo, k.hi) for k in _ranges(bounds, n, ranges)]
    return todo, tasks


class _JobProgress:
    """verify's progress in the job table (it writes nothing else)."""

    def __init__(self, store: JobStore, job_id: str, table: str) -> None:
        self.store, self.job_id, self.table = store, job_id, table

    def start(self, description: str, total: int | None) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        self.store.advance(self.job_id, self.table, n)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_range(guard: Any, spec: JobSpec, job_id: str, task: RangeTask) -> dict[str, Any]:
    """Run one range of a queued job on this worker's Guard; the range's counts that a
    retry recounts (failures, values left alone) come back as the task's result."""
    store = JobStore(guard.engine)
    if spec.kind == "verify":
        progress: Progress = _JobProgress(store, job_id, task.table)
        rep = verify_range(guard, task.table, task.lo, task.hi,
                           batch_size=spec.batch_size or 1000, progress=progress)
        return {"table": task.table, "verify": rep.to_dict(), "worker": worker_name()}
    job = batch_job(guard, spec, task.table)
    table = task.table

    def on_batch(conn: Any, counts: Counts) -> None:
        store.add(conn, job_id, table, counts.candidates, counts)

    job.on_batch = on_batch
    try:
        counts = job.run_range(task.lo, task.hi)
    finally:
        guard.keys.flush()
    return {"table": task.table, "counts": counts.to_dict(), "worker": worker_name()}


def finish_pass(guard: Any, spec: JobSpec, job_id: str, pass_no: int,
                results: list[dict[str, Any]], *, ranges: int | None = None
                ) -> list[RangeTask] | None:
    """After every range of ``pass_no``: the ranges of the next pass, or ``None`` when
    the job is finished (its report written to the job row). Safe to run twice: the
    job row's pass number is compared and swapped, so one finisher acts."""
    store = JobStore(guard.engine)
    status = store.get(job_id)
    if status["state"] != "running" or status["pass"] != pass_no:
        return None   # another delivery of this finish already acted
    workers = sorted({r["worker"] for r in results})
    if spec.kind == "verify":
        rep = VerifyReport([])
        for r in results:
            rep.merge(VerifyReport.from_dict(r["verify"]))
        doc = rep.to_dict()
        doc.update(job=job_id, workers=len(workers))
        store.finish(job_id, pass_no, _timed(doc, status))
        guard.audit.emit("verify", outcome="error" if rep.failed else "ok",
                         count=rep.checked, table=spec.table,
                         error=f"{rep.failed} value(s) failed" if rep.failed else None)
        return None
    last: dict[str, Counts] = {}
    for r in results:
        last.setdefault(r["table"], Counts()).add(Counts.from_dict(r["counts"]))
    nxt: list[RangeTask] = []
    todo: dict[str, int] = {}
    if not spec.dry_run and pass_no < spec.max_passes:
        for table, c in last.items():
            job = batch_job(guard, spec, table)
            n = job.todo()
            if n > len(c.stuck):
                todo[table] = n
                bounds = None
                if job.target.int_pk:
                    with guard.engine.connect() as conn:
                        bounds = conn.execute(job.lite.pk_bounds(job.where)).one()
                nxt += [RangeTask(table, k.lo, k.hi) for k in _ranges(bounds, n, ranges)]
    lasts = {t: c.to_dict() for t, c in last.items()}
    if nxt:
        return nxt if store.next_pass(job_id, pass_no, todo, lasts) else None
    doc = _report(guard, spec, store.get(job_id), lasts)
    doc.update(job=job_id, workers=len(workers))
    store.finish(job_id, pass_no, _timed(doc, status))
    return None


def _timed(doc: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    elapsed = time.time() - status["created"]
    doc["elapsed"] = round(elapsed, 3)
    if "updated" in doc:
        doc["rows_per_second"] = round(doc["updated"] / elapsed, 1) if elapsed > 0 else 0.0
    return doc


def _report(guard: Any, spec: JobSpec, status: dict[str, Any],
            lasts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The job's report, in the shape the in-process job gives (``to_dict``)."""
    reports = []
    for t in status["tables"]:
        table = t["table_name"]
        last = Counts.from_dict(lasts.get(table) or t["last"] or {})
        rep = TableReport(table)
        for name in ADDED:
            setattr(rep, name, t[name])
        rep.candidates, rep.passes = t["done"], t["passes"]
        rep.shredded, rep.plaintext, rep.failures = last.shredded, last.plaintext, \
            last.failures
        job = batch_job(guard, spec, table)
        if not spec.dry_run:
            rep.remaining = max(0, job.todo() - len(last.stuck))
        if spec.kind == "reencrypt":
            rep.shredded = job.shredded_values()   # type: ignore[attr-defined]
            guard.audit.emit("reencrypt", outcome="error" if rep.failures else "ok",
                             table=table, count=rep.updated, rows=rep.candidates,
                             reason="dry-run" if spec.dry_run else None)
        else:
            guard.audit.emit("encrypt_existing", outcome="error" if rep.failures else "ok",
                             column=f"{table}.{spec.column}", count=rep.updated,
                             rows=rep.candidates)
        reports.append(rep)
    if spec.kind == "reencrypt":
        return ReencryptReport(reports, spec.dry_run, 0.0, 0).to_dict()
    rep = reports[0]
    d = rep.to_dict()
    d.update(ok=not rep.failures and rep.remaining == 0, column=f"{rep.table}.{spec.column}",
             dry_run=spec.dry_run)
    return d
