"""Run ``reencrypt`` / ``verify`` / ``encrypt-existing`` in worker processes on one
machine (``piiguard reencrypt --workers N``).

One process is the ceiling of a thread pool (decrypting and sealing hold the GIL): this
module starts ``N`` processes (``spawn``: nothing of the parent, no key, is copied),
each of which builds its own Guard, engine and key cache from the job's
:class:`~piiguard.rotation.jobs.JobSpec` (``--app``), and sends them the table's
primary key ranges. Everything else is the job's own code, unchanged: the parent plans
the passes and the ranges, every write is the batch engine's compare-and-swap (so
correctness never depends on the split), rows are the checkpoint (a killed run resumes),
and the workers' progress comes back to the parent's one progress bar (rows/s, ETA)::

    spec = JobSpec("reencrypt", app="myapp.models:guard", batch_size=1000)
    report = run_job(spec, workers=2)          # a ReencryptReport, as reencrypt() gives

KMS calls: each process unwraps each key it uses once (its own key cache), so a job
costs at most one ``Decrypt`` per worker and key, whatever the number of rows.
"""

from __future__ import annotations

import multiprocessing
import queue as queue_mod
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

from piiguard.errors import ConfigurationError, PIIGuardError
from piiguard.rotation.batches import BatchJob, Counts, KeyRange
from piiguard.rotation.jobs import JobSpec, batch_job, load_guard
from piiguard.rotation.migrate import encrypt_existing
from piiguard.rotation.progress import NullProgress, Progress
from piiguard.rotation.reencrypt import reencrypt
from piiguard.rotation.verify import VerifyReport, verify, verify_range

__all__ = ["WorkerPool", "run_job"]

#: The worker process's own Guard, spec and progress queue, set once by the pool's
#: initializer (a ProcessPoolExecutor task can reach per-process state only this way).
_CHILD: dict[str, Any] = {}


class _QueueProgress:
    """A worker process's progress: rows done go to the parent through a queue."""

    def __init__(self, q: Any) -> None:
        self.q = q

    def start(self, description: str, total: int | None) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        self.q.put(n)


def _init(spec: dict[str, Any], q: Any, barrier: Any) -> None:
    """Load the worker's Guard; an error is kept for the first task to raise (an
    initializer's exception would only break the pool, without a word of why)."""
    _CHILD.update(barrier=barrier, progress=_QueueProgress(q))
    s = JobSpec.from_dict(spec)
    try:
        guard = load_guard(s.app, s.database_url)
        if guard.engine is None:
            raise ConfigurationError(f"{s.app} is not bound to a database in a worker "
                                     "process: bind it in the module, or pass "
                                     "--database-url", operation=s.kind)
    except PIIGuardError as exc:
        _CHILD["error"] = exc
        return
    _CHILD.update(spec=s, guard=guard)


def _ready() -> None:
    _CHILD["barrier"].wait(timeout=120)
    if "error" in _CHILD:
        raise _CHILD["error"]


def _batch_range(table: str, lo: Any, hi: Any, workers: int) -> dict[str, Any]:
    guard = _CHILD["guard"]
    job = batch_job(guard, _CHILD["spec"], table, progress=_CHILD["progress"],
                    workers=workers)
    try:
        return job.run_range(lo, hi).to_dict()
    finally:
        guard.keys.flush()  # this process's key use counts


def _verify_range(table: str, lo: Any, hi: Any) -> dict[str, Any]:
    spec: JobSpec = _CHILD["spec"]
    return verify_range(_CHILD["guard"], table, lo, hi, batch_size=spec.batch_size or 1000,
                        progress=_CHILD["progress"]).to_dict()


class WorkerPool:
    """``workers`` processes that run ranges of one job, and the thread that forwards
    their progress to ``progress``; a context manager (the processes stop at exit)."""

    def __init__(self, spec: JobSpec, workers: int, progress: Progress) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.workers = workers
        self.progress = progress
        self._q: Any = ctx.Queue()
        self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx,
                                         initializer=_init,
                                         initargs=(spec.to_dict(), self._q,
                                                   ctx.Barrier(workers)))
        # Start every process now (an executor starts them on demand, and one fast
        # process could take every range): each holds a barrier until all have loaded.
        try:
            for f in [self._pool.submit(_ready) for _ in range(workers)]:
                f.result()
        except BaseException:
            self._pool.shutdown(wait=True, cancel_futures=True)
            raise
        self._pump = threading.Thread(target=self._forward, name="piiguard-progress",
                                      daemon=True)
        self._pump.start()

    def _forward(self) -> None:
        while True:
            try:
                n = self._q.get(timeout=0.5)
            except queue_mod.Empty:
                continue
            except (EOFError, OSError):
                return
            if n is None:
                return
            self.progress.advance(n)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._q.put(None)
        self._pump.join(timeout=5)
        self._q.close()

    def _gather(self, futures: list[Future[dict[str, Any]]]) -> list[dict[str, Any]]:
        try:
            return [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()
            raise

    def batch_runner(self, job: BatchJob, parts: list[KeyRange]) -> Counts:
        """A :data:`~piiguard.rotation.batches.RangeRunner`: the ranges in the workers."""
        futures = [self._pool.submit(_batch_range, job.target.name, p.lo, p.hi,
                                     self.workers) for p in parts]
        out = Counts()
        for d in self._gather(futures):
            out.add(Counts.from_dict(d))
        return out

    def verify_runner(self, table: str, parts: list[KeyRange]) -> VerifyReport:
        """A :data:`~piiguard.rotation.verify.VerifyRunner`: the ranges in the workers."""
        futures = [self._pool.submit(_verify_range, table, p.lo, p.hi) for p in parts]
        out = VerifyReport([])
        for d in self._gather(futures):
            out.merge(VerifyReport.from_dict(d))
        return out


def run_job(spec: JobSpec, *, workers: int, progress: Progress | None = None,
            guard: Any = None) -> Any:
    """Run ``spec`` with ``workers`` processes; the report is the one the job's function
    gives (:class:`~piiguard.rotation.reencrypt.ReencryptReport`,
    :class:`~piiguard.rotation.verify.VerifyReport`,
    :class:`~piiguard.rotation.migrate.MigrateReport`). ``guard`` is the parent's Guard
    (loaded from the spec when not given): it plans, counts and audits; the workers
    load their own."""
    if workers < 1:
        raise ConfigurationError("workers must be at least 1", operation=spec.kind)
    guard = guard if guard is not None else load_guard(spec.app, spec.database_url)
    progress = progress or NullProgress()
    with WorkerPool(spec, workers, progress) as pool:
        if spec.kind == "verify":
            return verify(guard, table=spec.table, batch_size=spec.batch_size or 1000,
                          progress=progress, workers=workers, runner=pool.verify_runner)
        kw: dict[str, Any] = dict(batch_size=spec.batch_size, dry_run=spec.dry_run,
                                  workers=workers, progress=progress,
                                  max_passes=spec.max_passes, max_rate=spec.max_rate,
                                  runner=pool.batch_runner)
        if spec.kind == "reencrypt":
            return reencrypt(guard, table=spec.table, **kw)
        assert spec.table is not None and spec.column is not None
        return encrypt_existing(guard, spec.table, spec.column, **kw)
