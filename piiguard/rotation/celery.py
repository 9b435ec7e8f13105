"""Queued jobs on Celery: reencrypt / verify / encrypt-existing across machines.

The only module that imports Celery (``pip install 'piiguard[celery]'``). A job is split
into primary key ranges (:func:`~piiguard.rotation.queued.plan`); each pass is one Celery
**chord**: a group of range tasks, any worker on any machine takes any range, and a
``finish`` task that runs once all of them are done and either sends the next pass (rows
a concurrent write got to first) or writes the report to the job row
(:mod:`~piiguard.rotation.jobstore`). Celery schedules; piiguard adds no scheduler.

Every task is idempotent and safe to retry: a range's writes are the batch engine's
compare-and-swap and the rows are the checkpoint, so a range run twice, or run again
after its worker was killed half-way, finds only what is left; its counts are added in
each batch's own transaction, so nothing is counted twice. Tasks are ``acks_late`` with
``reject_on_worker_lost``: a message is acknowledged only once its task has finished,
and a worker killed mid-range (``SIGKILL``, OOM, a lost machine) leaves it to be
delivered again to another worker.

Broker and result backend: RabbitMQ as the broker (a consumer that dies or loses its
connection has its unacknowledged messages redelivered at once; with Redis as the
broker they wait for the visibility timeout, an hour by default) and Redis as the result
backend (the chord's counter: Celery's native chord support). Both from the
environment, or the defaults of this project's machines::

    PIIGUARD_CELERY_BROKER=amqp://guest:guest@127.0.0.1:5672//
    PIIGUARD_CELERY_BACKEND=redis://127.0.0.1:6379/0

Workers (one a machine, or several) load the application's Guard from **their own**
``PIIGUARD_APP`` (and ``PIIGUARD_DATABASE_URL`` if the module does not bind it); a task
for another app is refused, so a message cannot make a worker import another module, and
no database URL or key ever travels through the broker::

    PIIGUARD_APP=myapp.models:guard celery -A piiguard.rotation.celery worker -Q piiguard

and the operator submits and follows the job from anywhere that reaches the database
and the broker (``piiguard reencrypt --queue``, ``piiguard jobs status ID``)::

    job_id = submit(JobSpec("reencrypt", app="myapp.models:guard"), guard)
    status = wait(guard, job_id)             # status["report"]: the job's report

An application with its own Celery app registers the tasks on it with
:func:`register`.
"""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery, chord, group

from piiguard.errors import ConfigurationError, KMSUnavailableError
from piiguard.rotation.jobs import JobSpec, load_guard
from piiguard.rotation.jobstore import JobStore
from piiguard.rotation.progress import NullProgress, Progress
from piiguard.rotation.queued import RangeTask, finish_pass, plan, run_range

__all__ = ["QUEUE", "app", "make_app", "register", "submit", "wait"]

#: The queue piiguard's tasks go to (start workers with ``-Q piiguard``).
QUEUE = "piiguard"
DEFAULT_BROKER = "amqp://guest:guest@127.0.0.1:5672//"
DEFAULT_BACKEND = "redis://127.0.0.1:6379/0"

#: This worker process's Guard by (app, database URL): built once, so its key cache
#: (one KMS call a key) serves every range the process runs.
_GUARDS: dict[tuple[str, str | None], Any] = {}


def make_app(broker: str | None = None, backend: str | None = None,
             queue: str | None = None) -> Celery:
    """A Celery app for piiguard's tasks (broker, backend and queue from the arguments,
    the environment — ``PIIGUARD_CELERY_BROKER``, ``PIIGUARD_CELERY_BACKEND``,
    ``PIIGUARD_CELERY_QUEUE`` — or the defaults above)."""
    queue = queue or os.environ.get("PIIGUARD_CELERY_QUEUE", QUEUE)
    capp = Celery("piiguard",
                  broker=broker or os.environ.get("PIIGUARD_CELERY_BROKER", DEFAULT_BROKER),
                  backend=backend or os.environ.get("PIIGUARD_CELERY_BACKEND",
                                                    DEFAULT_BACKEND))
    capp.conf.update(
        task_default_queue=queue,
        task_serializer="json", result_serializer="json", accept_content=["json"],
        # one range at a time a worker process: a killed process loses one range
        worker_prefetch_multiplier=1,
        result_expires=7 * 24 * 3600,
        broker_connection_retry_on_startup=True,
    )
    register(capp, queue)
    return capp


def register(capp: Celery, queue: str = QUEUE) -> dict[str, Any]:
    """Register piiguard's tasks on ``capp``, sent to ``queue`` (idempotent, acks_late,
    reject_on_worker_lost); returns them by name."""
    routes = capp.conf.task_routes
    if routes is None or isinstance(routes, dict):
        capp.conf.task_routes = {**(routes or {}), "piiguard.*": {"queue": queue}}
    opts: dict[str, Any] = dict(bind=True, shared=False, acks_late=True,
                                reject_on_worker_lost=True)

    @capp.task(name="piiguard.range", autoretry_for=(KMSUnavailableError,),
               retry_backoff=True, max_retries=5, **opts)
    def range_task(self: Any, spec: dict[str, Any], job_id: str, table: str, lo: Any,
                   hi: Any) -> dict[str, Any]:
        s = JobSpec.from_dict(spec)
        return run_range(worker_guard(s), s, job_id, RangeTask(table, lo, hi))

    @capp.task(name="piiguard.finish", **opts)
    def finish_task(self: Any, results: list[dict[str, Any]], spec: dict[str, Any],
                    job_id: str, pass_no: int, ranges: int | None) -> str:
        s = JobSpec.from_dict(spec)
        nxt = finish_pass(worker_guard(s), s, job_id, pass_no, results, ranges=ranges)
        if nxt:
            _launch(capp, spec, job_id, pass_no + 1, nxt, ranges)
            return f"pass {pass_no + 1}"
        return "done"

    @capp.task(name="piiguard.failed", **opts)
    def failed_task(self: Any, request: Any, exc: BaseException, traceback: Any,
                    spec: dict[str, Any], job_id: str) -> None:
        s = JobSpec.from_dict(spec)
        JobStore(worker_guard(s).engine).fail(job_id, f"{type(exc).__name__}: {exc}")

    return {"range": range_task, "finish": finish_task, "failed": failed_task}


def worker_guard(spec: JobSpec) -> Any:
    """This worker's Guard for ``spec``: from the worker's own ``PIIGUARD_APP`` (which
    must name the same app as the job) and ``PIIGUARD_DATABASE_URL``."""
    own = os.environ.get("PIIGUARD_APP")
    if not own:
        raise ConfigurationError("start the worker with PIIGUARD_APP=module:guard (the "
                                 "application whose jobs it runs)", operation=spec.kind)
    if own != spec.app:
        raise ConfigurationError(f"this worker runs {own}'s jobs, not {spec.app}'s",
                                 operation=spec.kind)
    url = os.environ.get("PIIGUARD_DATABASE_URL") or None
    guard = _GUARDS.get((own, url))
    if guard is None:
        guard = _GUARDS[(own, url)] = load_guard(own, url)
        if guard.engine is None:
            raise ConfigurationError(f"{own} is not bound to a database: bind it in the "
                                     "module, or set PIIGUARD_DATABASE_URL",
                                     operation=spec.kind)
    return guard


def _launch(capp: Celery, spec: dict[str, Any], job_id: str, pass_no: int,
            tasks: list[RangeTask], ranges: int | None) -> None:
    t = capp.tasks
    header = group(t["piiguard.range"].s(spec, job_id, r.table, r.lo, r.hi) for r in tasks)
    body = t["piiguard.finish"].s(spec, job_id, pass_no, ranges).on_error(
        t["piiguard.failed"].s(spec, job_id))
    chord(header, body).apply_async()


def submit(spec: JobSpec, guard: Any, *, capp: Celery | None = None,
           ranges: int | None = None) -> str:
    """Plan ``spec`` on ``guard``'s database, record the job and send its first pass;
    returns the job id (``ranges``: ranges a table, default one per 50,000 rows; ``capp``:
    default, an app configured from the environment now)."""
    capp = capp or make_app()
    public = spec.public()
    todo, tasks = plan(guard, public, ranges=ranges)
    job_id = JobStore(guard.engine).create(spec.kind, public.to_dict(), todo)
    if not tasks:
        finish_pass(guard, public, job_id, 1, [])
    else:
        _launch(capp, public.to_dict(), job_id, 1, tasks, ranges)
    return job_id


def wait(guard: Any, job_id: str, *, progress: Progress | None = None,
         poll: float = 0.5, timeout: float | None = None) -> dict[str, Any]:
    """Follow a job until it is done or failed (progress from the job table: one bar
    for all workers); returns its status with the report. ``TimeoutError`` after
    ``timeout`` seconds (the job goes on)."""
    store = JobStore(guard.engine)
    progress = progress or NullProgress()
    deadline = None if timeout is None else time.monotonic() + timeout
    total, done = -1, 0
    while True:
        st = store.get(job_id)
        if st["todo"] != total:
            total = st["todo"]
            progress.start(f"{st['kind']} job {job_id[:8]} (pass {st['pass']})", total)
            progress.advance(min(done, total))
        if st["done"] > done:
            progress.advance(st["done"] - done)
            done = st["done"]
        if st["state"] != "running":
            return st
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still running after {timeout} s")
        time.sleep(poll)


#: The app ``celery -A piiguard.rotation.celery worker`` runs.
app = make_app()
