"""The CLI of queued jobs: ``reencrypt --queue`` (and ``verify`` / ``encrypt-existing``)
and ``piiguard jobs list | status ID | wait ID``.

A queued job runs on Celery workers (:mod:`piiguard.rotation.celery`, ``pip install
'piiguard[celery]'``); its state, progress and report live in the application's
database, so any machine that reaches the database follows it::

    piiguard --app myapp.models:guard reencrypt --queue            # submit and follow
    piiguard --app myapp.models:guard reencrypt --queue --no-wait  # print the job id
    piiguard --app myapp.models:guard jobs wait 3f2a…               # one progress bar
    piiguard --app myapp.models:guard --json jobs status 3f2a…

Exit codes as for the in-process commands: 0 done and ok, 1 failed / failures / work
left, 2 usage.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Annotated, Any

import typer

from piiguard._console import Output, failed, reporting, usage_error

__all__ = ["jobs_app", "print_job", "run_queued"]

jobs_app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False,
                       help="Queued jobs (reencrypt/verify/encrypt-existing --queue).")


def _celery() -> Any:
    try:
        from piiguard.rotation import celery
    except ImportError as exc:
        raise usage_error(f"queued jobs need Celery: pip install 'piiguard[celery]' "
                          f"({type(exc).__name__}: {exc})", "--queue") from None
    return celery


def print_job(st: Output, status: dict[str, Any]) -> None:
    """A job's status and report: JSON with ``--json``, lines otherwise; exit 1 unless
    the job is done and its report ok."""
    rep = status.get("report") or {}
    ok = status["state"] == "done" and bool(rep.get("ok"))
    if st.json:
        doc = {"ok": ok, **status}
        if status["state"] != "running" and not ok:
            doc["error"] = {"type": "JobFailed", "message": rep.get("error") or
                            f"job {status['id']} {status['state']} with failures or "
                            "work left"}
        st.emit(doc)
    else:
        st.out.print(f"job {status['id']} ({status['kind']}): {status['state']}, pass "
                     f"{status['pass']}, {status['done']:,} of {status['todo']:,} row(s)",
                     highlight=False)
        for t in status["tables"]:
            st.out.print(f"  {t['table_name']}: done {t['done']:,}, updated "
                         f"{t['updated']:,}, conflicts {t['conflicts']:,}", highlight=False)
        if rep:
            keys = ("updated", "checked", "failed", "remaining", "elapsed", "workers",
                    "rows_per_second", "error")
            st.out.print("  report: " + ", ".join(f"{k} {rep[k]}" for k in keys if k in rep),
                         highlight=False)
            for f in rep.get("failures", [])[:20]:
                st.out.print(f"  failed {f['column']} {f['row']}: {f['error']}",
                             highlight=False)
    if status["state"] != "running" and not ok:
        raise failed()


def run_queued(st: Any, guard: Any, spec: Any, *, ranges: int | None, wait: bool) -> None:
    """Submit ``spec`` to the workers; follow it to its end with ``wait``."""
    celery = _celery()
    job_id = celery.submit(spec, guard, ranges=ranges)
    if not wait:
        if st.json:
            st.emit({"ok": True, "id": job_id, "state": "running"})
        else:
            st.out.print(f"job {job_id} queued: piiguard jobs wait {job_id}")
        return
    with st.progress() as bar:
        status = celery.wait(guard, job_id, progress=bar)
    print_job(st, status)


def _command(fn: Callable[..., None]) -> Callable[..., None]:
    """piiguard and database errors: exit code 1 with a value-free message (as every
    command)."""

    @functools.wraps(fn)
    def wrapper(ctx: typer.Context, *args: Any, **kwargs: Any) -> None:
        reporting(ctx.find_root().obj, f"jobs {ctx.command.name}",
                  lambda: fn(ctx, *args, **kwargs))

    return wrapper


def _guard(ctx: typer.Context) -> tuple[Any, Any]:
    st = ctx.find_root().obj
    return st, st.guard()


@jobs_app.command("list")
@_command
def jobs_list(ctx: typer.Context,
              limit: Annotated[int, typer.Option("--limit", min=1)] = 20,
              kind: Annotated[str | None, typer.Option(
                  "--kind", help="reencrypt, verify or encrypt-existing.")] = None) -> None:
    """The latest queued jobs, newest first."""
    from piiguard.rotation.jobstore import JobStore

    st, guard = _guard(ctx)
    jobs = JobStore(guard.engine).list(limit, kind)
    if st.json:
        st.emit({"ok": True, "jobs": jobs})
        return
    for j in jobs:
        st.out.print(f"{j['id']}  {j['kind']:<16} {j['state']:<8} pass {j['pass']}",
                     highlight=False)


@jobs_app.command("status")
@_command
def jobs_status(ctx: typer.Context,
                job_id: Annotated[str, typer.Argument(help="Job id.")]) -> None:
    """One job's state, progress, counts and (when finished) report."""
    from piiguard.rotation.jobstore import JobStore

    st, guard = _guard(ctx)
    print_job(st, JobStore(guard.engine).get(job_id))


@jobs_app.command("wait")
@_command
def jobs_wait(ctx: typer.Context,
              job_id: Annotated[str, typer.Argument(help="Job id.")],
              timeout: Annotated[float | None, typer.Option("--timeout", min=0)] = None
              ) -> None:
    """Follow a job to its end (one progress bar, whichever workers run it)."""
    from piiguard.rotation.jobstore import JobStore

    st, guard = _guard(ctx)
    store = JobStore(guard.engine)
    store.get(job_id)   # an unknown id fails before waiting
    with st.progress() as bar:
        try:
            status = _celery().wait(guard, job_id, progress=bar, timeout=timeout)
        except TimeoutError:
            status = store.get(job_id)
    print_job(st, status)
