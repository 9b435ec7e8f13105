"""The ``piiguard`` ops CLI: keys, rotation, re-encryption, erasure, verification, demo.

It finds the application's Guard (and, through it, the encrypted columns of the models the
module imports) the way uvicorn and celery find an app::

    piiguard --app myapp.models:guard keys status
    PIIGUARD_APP=myapp.models:guard piiguard reencrypt --batch-size 2000 --workers 2

and the database from the engine the Guard is bound to, or ``--database-url``. Without
``--app`` the key commands still work on a local key file (``--key-file``) and
``--database-url``. ``--json`` prints one JSON document on stdout (no progress bar);
otherwise tables, and rich progress bars with rows/s and ETA on long work when stderr is
a terminal. Exit codes: 0 ok, 1 failure (an error, a failed value, work left), 2 usage.

The CLI is thin: it parses, calls :mod:`piiguard.rotation`, and prints through
:mod:`piiguard._console` (tables, progress bars, JSON, exit codes). It never prints a
value or key material: errors name the rule, column, key id and operation.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from piiguard._console import (
    JsonGroup,
    Output,
    ProgressBar,
    db_error_text,
    failed,
    is_db_error,
    print_migrate,
    print_reencrypt,
    print_rewrap,
    print_shred,
    print_status,
    print_verify,
    reporting,
    usage_error,
)
from piiguard.cli_jobs import jobs_app, run_queued
from piiguard.cli_keys import add_key_commands
from piiguard.errors import ConfigurationError, PIIGuardError

__all__ = ["ProgressBar", "app", "load_app", "main", "print_status"]

DEFAULT_KEY_FILE = ".piiguard/master.key"

app = typer.Typer(
    name="piiguard", cls=JsonGroup, no_args_is_help=True, add_completion=False,
    pretty_exceptions_enable=False,
    help="Operate piiguard: keys, rotation, re-encryption, erasure, verification.")
keys_app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False,
                       help="Inspect, rotate, retire and destroy keys.")
app.add_typer(keys_app, name="keys")
app.add_typer(jobs_app, name="jobs")


# ---------------------------------------------------------------------------------------
# finding the Guard
# ---------------------------------------------------------------------------------------
def load_app(spec: str) -> Any:
    """The Guard named by ``package.module:attr`` (``attr`` may be dotted, or a function
    returning a Guard). The current directory is importable, as with uvicorn.

    >>> try:
    ...     load_app("piiguard")
    ... except typer.BadParameter as exc:
    ...     print(exc.format_message())
    Invalid value for --app: must look like package.module:attribute (got 'piiguard')
    """
    from piiguard.guard import Guard

    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise usage_error(f"must look like package.module:attribute (got {spec!r})", "--app")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise usage_error(f"cannot import {module_name!r} ({type(exc).__name__}: {exc})",
                          "--app") from None
    except PIIGuardError as exc:
        raise usage_error(f"cannot import {module_name!r}: {type(exc).__name__}: {exc}",
                          "--app") from None
    except Exception as exc:  # noqa: BLE001 - named by class: its message may hold values
        what = "the database is unreachable or refused: " if is_db_error(exc) else ""
        raise usage_error(f"cannot import {module_name!r}: {what}{db_error_text(exc)}",
                          "--app") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise usage_error(f"{module_name!r} has no attribute {attr!r}", "--app") from None
    if not isinstance(obj, Guard) and callable(obj):
        obj = obj()
    if not isinstance(obj, Guard):
        raise usage_error(f"{spec!r} is not a piiguard Guard (got {type(obj).__name__})",
                          "--app")
    return obj


class State(Output):
    """Options shared by every command, where their output goes (:class:`Output`), and
    the Guard they resolve to (loaded once)."""

    def __init__(self, app_spec: str | None, database_url: str | None,
                 key_file: str | None, json_out: bool) -> None:
        super().__init__(json_out)
        self.app_spec = app_spec
        self.database_url = database_url
        self.key_file = key_file
        self._guard: Any = None

    def guard(self) -> Any:
        if self._guard is not None:
            return self._guard
        from sqlalchemy import create_engine

        if self.app_spec:
            guard = load_app(self.app_spec)
        else:
            from piiguard.guard import Guard
            from piiguard.kms.local import LocalKMS

            path = self.key_file or DEFAULT_KEY_FILE
            if not Path(path).exists():
                raise usage_error(f"no --app and no key file at {path!r}: pass --app "
                                  "module:guard, or --key-file (run `piiguard init`)", "--app")
            guard = Guard(kms=LocalKMS.from_file(path))
        try:
            if self.database_url:
                guard.bind(create_engine(self.database_url))
            elif guard.engine is None:
                raise usage_error("no database: pass --database-url (or "
                                  "PIIGUARD_DATABASE_URL), or bind the Guard in the --app "
                                  "module", "--database-url")
            with guard.engine.connect():
                pass
        except Exception as exc:
            if not is_db_error(exc):
                raise
            raise usage_error(f"the database is unreachable or refused: "
                              f"{db_error_text(exc)}", "--database-url") from None
        self._guard = guard
        return guard


def _state(ctx: typer.Context) -> State:
    return ctx.find_root().obj


def command(fn: Callable[..., None]) -> Callable[..., None]:
    """Turn piiguard errors into exit code 1 with a value-free message (every command
    takes ``ctx`` as its first parameter)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        ctx = kwargs.get("ctx") or args[0]
        reporting(_state(ctx), ctx.command.name, lambda: fn(*args, **kwargs))

    return wrapper


def _need_columns(guard: Any, operation: str) -> None:
    """Jobs over rows need the models: without them "0 rows" would be a lie."""
    if not guard.columns:
        raise ConfigurationError("no encrypted column registered: pass --app pointing at "
                                 "a module that imports the models", operation=operation)


# ---------------------------------------------------------------------------------------
# global options
# ---------------------------------------------------------------------------------------
@app.callback()
def _main(
    ctx: typer.Context,
    app_spec: Annotated[str | None, typer.Option(
        "--app", envvar="PIIGUARD_APP", metavar="MODULE:ATTR",
        help="The application's Guard, e.g. myapp.models:guard (import your models "
             "there, so their encrypted columns are known).")] = None,
    database_url: Annotated[str | None, typer.Option(
        "--database-url", envvar="PIIGUARD_DATABASE_URL",
        help="SQLAlchemy URL of the database (default: the engine the Guard is bound "
             "to).")] = None,
    key_file: Annotated[str | None, typer.Option(
        "--key-file", envvar="PIIGUARD_KEY_FILE",
        help=f"Local master key file, used without --app (default {DEFAULT_KEY_FILE}).")
    ] = None,
    json_out: Annotated[bool, typer.Option(
        "--json", help="Print one JSON document on stdout, no progress bars.")] = False,
) -> None:
    """Operate piiguard: keys, rotation, re-encryption, erasure, verification."""
    ctx.obj = State(app_spec, database_url, key_file, json_out)


# ---------------------------------------------------------------------------------------
# init / demo
# ---------------------------------------------------------------------------------------
@app.command()
@command
def init(ctx: typer.Context) -> None:
    """Create the local master key file (mode 0600) and the key table."""
    from sqlalchemy import create_engine

    from piiguard.guard import Guard
    from piiguard.kms.local import LocalKMS

    st = _state(ctx)
    path = Path(st.key_file or DEFAULT_KEY_FILE)
    created = not path.exists()
    kms = LocalKMS.from_file(path, create=True)
    doc: dict[str, Any] = {"ok": True, "key_file": str(path), "created": created,
                           "master_key_id": kms.master_key_id, "key_table": None}
    guard = None
    if st.app_spec:
        guard = st.guard()
    elif st.database_url:
        guard = Guard(kms=kms).bind(create_engine(st.database_url))
    if guard is not None:
        doc["key_table"] = guard.keys.table.name
        doc["database"] = guard.engine.url.render_as_string(hide_password=True)
        doc["keys"] = len(guard.keys.keys())
    if st.json:
        st.emit(doc)
        return
    st.out.print(f"{'created' if created else 'kept existing'} key file {path} (mode 0600), "
                 f"master key {kms.master_key_id}")
    if guard is not None:
        st.out.print(f"key table {doc['key_table']} ready in {doc['database']} "
                     f"({doc['keys']} keys)")
    else:
        st.out.print("no --database-url / --app: key table not created")


@app.command()
@command
def demo(ctx: typer.Context,
         directory: Annotated[Path, typer.Option(
             "--dir", help="Where the demo's key file and SQLite database go.")] =
         Path(".piiguard/demo"),
         rows: Annotated[int, typer.Option(
             "--rows", min=0, help="Extra synthetic customers for the rotation part.")] =
         5000) -> None:
    """A tour on synthetic data: ciphertext in the database beside what the application
    reads, masking by role, and a key rotation with re-encryption."""
    from piiguard.demo import run

    st = _state(ctx)
    try:
        run(directory, console=st.out, progress_console=st.err, json_out=st.json,
            extra_rows=rows)
    except OSError as exc:
        # e.g. --dir under a regular file: a message, not a traceback
        raise ConfigurationError(f"cannot use --dir {str(directory)!r} "
                                 f"({type(exc).__name__})", operation="demo") from None


# ---------------------------------------------------------------------------------------
# keys
# ---------------------------------------------------------------------------------------
@keys_app.command("status")
@command
def keys_status(ctx: typer.Context,
                table: Annotated[str | None, typer.Option(
                    "--table", help="Count rows of this table only.")] = None) -> None:
    """Every key: scope, state, master key, age, use count, and the rows that still use
    it (one GROUP BY per encrypted column: rotation progress as a query)."""
    from piiguard.rotation.status import key_status

    st = _state(ctx)
    guard = st.guard()
    report = key_status(guard, table=table)
    if st.json:
        st.emit({"ok": True, **report.to_dict()})
        return
    print_status(st.out, report)
    if not guard.columns:
        st.out.print("[dim]no encrypted column registered: pass --app to count rows[/dim]")


@keys_app.command("rotate")
@command
def keys_rotate(ctx: typer.Context,
                scope: Annotated[str | None, typer.Option(
                    "--scope", help="Rotate this scope only (default: every scope with "
                                    "an active key of this kind).")] = None,
                kind: Annotated[str, typer.Option(
                    "--kind", help="dek (data keys) or index (blind-index keys).")] = "dek",
                ) -> None:
    """Create a new active key; the previous one becomes decrypt-only. New writes use
    the new key at once (other processes within the change bound: 1 s on PostgreSQL,
    2 s elsewhere). Run reencrypt right after: no need to wait."""
    if kind not in ("dek", "index"):
        raise usage_error("must be dek or index", "--kind")
    st = _state(ctx)
    guard = st.guard()
    active = {k.scope: k.id for k in guard.keys.keys(kind=kind, states=["active"])}
    if scope is not None and scope not in active and not guard.keys.keys(kind=kind,
                                                                         scope=scope):
        # A typo must not create a key for a scope nothing uses.
        raise ConfigurationError(f"no {kind} key in scope {scope!r} (see keys status)",
                                 operation="rotate")
    scopes = [scope] if scope else sorted(active)
    if not scopes:
        raise ConfigurationError(f"no active {kind} key to rotate", operation="rotate")
    done = []
    for s in scopes:
        new_id = guard.keys.rotate(kind, s)
        done.append({"kind": kind, "scope": s, "previous_key_id": active.get(s),
                     "key_id": new_id})
    if st.json:
        st.emit({"ok": True, "rotated": done})
        return
    for d in done:
        prev = d["previous_key_id"]
        st.out.print(f"{kind} key for scope {d['scope']!r}: new key {d['key_id']}"
                     + (f", key {prev} is now decrypt-only" if prev else ""))
    st.out.print("next: `piiguard reencrypt` moves the rows (now: it waits itself until every "
                 "process heard of the rotation), then `piiguard keys retire ID`")


@keys_app.command("rotate-master")
@command
def keys_rotate_master(ctx: typer.Context,
                       to: Annotated[str, typer.Option(
                           "--to", help="Destination master key id / ARN / alias; 'new' "
                                        "creates one in the local key file.")],
                       disable_old: Annotated[bool, typer.Option(
                           "--disable-old", help="Local key file: disable the previous "
                                                 "master keys once nothing uses them.")]
                       = False) -> None:
    """Rewrap every stored key under another master key; no data row is touched.
    Resumable: run it again after an interruption."""
    from piiguard.rotation.rewrap import rotate_master

    st = _state(ctx)
    guard = st.guard()
    with st.progress() as bar:
        report = rotate_master(guard, to, disable_old=disable_old, progress=bar)
    if st.json:
        st.emit(report.to_dict())
    else:
        print_rewrap(st.out, report)
    if not report.ok:
        raise failed()


add_key_commands(keys_app, _state, command)


@keys_app.command("retire")
@command
def keys_retire(ctx: typer.Context,
                key_id: Annotated[int, typer.Argument(help="Key id (see keys status).")]
                ) -> None:
    """Retire a decrypt-only key; refused (exit 1) while any row still uses it."""
    from piiguard.rotation.shred import retire_key

    st = _state(ctx)
    retire_key(st.guard(), key_id)
    if st.json:
        st.emit({"ok": True, "retired": key_id})
    else:
        st.out.print(f"key {key_id} retired")


@keys_app.command("destroy")
@command
def keys_destroy(ctx: typer.Context,
                 key_id: Annotated[int, typer.Argument(help="Key id (see keys status).")],
                 yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False
                 ) -> None:
    """Crypto-shred one key: every value under it becomes unreadable, for good."""
    from piiguard.rotation.shred import destroy_key

    st = _state(ctx)
    guard = st.guard()
    st.confirm(yes, f"Destroy key {key_id}? Data under it can never be read again.")
    report = destroy_key(guard, key_id)
    if st.json:
        st.emit({"ok": True, **report.to_dict()})
    else:
        st.out.print(f"key {key_id} destroyed; {report.total_values:,} stored value(s) are "
                     "now unreadable")


@app.command()
@command
def shred(ctx: typer.Context,
          scope: Annotated[str, typer.Option(
              "--scope", help="Key scope to erase, e.g. customers:42 for a key_scope "
                              "column (see keys status).")],
          yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False) -> None:
    """Crypto-shredding for an erasure request: destroy every key of a scope."""
    from piiguard.rotation.shred import shred_scope

    st = _state(ctx)
    guard = st.guard()
    st.confirm(yes, f"Destroy every key of scope {scope!r}? Its data can never be "
                       "read again.")
    report = shred_scope(guard, scope)
    if st.json:
        st.emit({"ok": True, **report.to_dict()})
        return
    print_shred(st.out, scope, report)


# ---------------------------------------------------------------------------------------
# jobs
# ---------------------------------------------------------------------------------------
BatchSize = Annotated[int | None, typer.Option(
    "--batch-size", min=1, help="Rows per batch, one transaction each (default 5000 on "
                                "SQLite, 1000 elsewhere).")]
Workers = Annotated[int, typer.Option(
    "--workers", min=1, help="Worker processes, each with its own connections and key "
                             "cache, on primary key ranges (needs --app).")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Count, write nothing.")]
MaxRate = Annotated[float | None, typer.Option(
    "--max-rate", min=1, help="At most this many rows a second.")]
Queue = Annotated[bool, typer.Option(
    "--queue", help="Run on Celery workers (piiguard[celery], docs/workers.md).")]
Ranges = Annotated[int | None, typer.Option(
    "--ranges", min=1, help="With --queue: ranges a table (default: one per 50,000 rows).")]
Wait = Annotated[bool, typer.Option(
    "--wait/--no-wait", help="With --queue: follow the job to its end, or print its id.")]


def _job_args(kind: str, **options: Any) -> dict[str, Any]:
    """A job's options as the CLI collected them (the app and database are added by
    :func:`_spec`)."""
    return {"kind": kind, **options}


def _spec(st: State, args: dict[str, Any]) -> Any:
    """The job as plain data for workers: ``--app`` and ``--database-url`` (workers load
    the Guard themselves)."""
    from piiguard.rotation.jobs import JobSpec

    if not st.app_spec:
        raise usage_error("worker processes and queued jobs load the Guard themselves: "
                          "pass --app (or PIIGUARD_APP)", "--app")
    return JobSpec(app=st.app_spec, database_url=st.database_url, **args)


def _in_processes(st: State, guard: Any, workers: int, bar: Any,
                  args: dict[str, Any]) -> Any:
    from piiguard.rotation.workers import run_job

    return run_job(_spec(st, args), workers=workers, progress=bar, guard=guard)


@app.command()
@command
def reencrypt(ctx: typer.Context,
              table: Annotated[str | None, typer.Option("--table",
                                                           help="Only this table.")] = None,
              batch_size: BatchSize = None, dry_run: DryRun = False, workers: Workers = 1,
              max_passes: Annotated[int, typer.Option("--max-passes", min=1)] = 5,
              max_rate: MaxRate = None, queue: Queue = False, ranges: Ranges = None,
              wait: Wait = True) -> None:
    """Move rows from decrypt-only keys to the active ones (compare-and-swap, resumable)
    and recompute blind indexes made with an old index key."""
    from piiguard.rotation.reencrypt import reencrypt as run

    st = _state(ctx)
    guard = st.guard()
    _need_columns(guard, "reencrypt")
    if queue:
        return run_queued(st, guard, _spec(st, _job_args(
            "reencrypt", table=table, batch_size=batch_size, dry_run=dry_run,
            max_passes=max_passes, max_rate=max_rate)), ranges=ranges, wait=wait)
    with st.progress() as bar:
        if workers > 1:
            report = _in_processes(st, guard, workers, bar, _job_args(
                "reencrypt", table=table, batch_size=batch_size, dry_run=dry_run,
                max_passes=max_passes, max_rate=max_rate))
        else:
            report = run(guard, table=table, batch_size=batch_size, dry_run=dry_run,
                         progress=bar, max_passes=max_passes, max_rate=max_rate)
    if st.json:
        st.emit(report.to_dict())
    else:
        print_reencrypt(st.out, report)
    if report.failures or (not dry_run and report.remaining):
        raise failed()


@app.command("encrypt-existing")
@command
def encrypt_existing(ctx: typer.Context,
                     table: Annotated[str, typer.Option("--table", help="Table name.")],
                     column: Annotated[str, typer.Option("--column", help="Column name.")],
                     batch_size: BatchSize = None, dry_run: DryRun = False,
                     workers: Workers = 1, max_rate: MaxRate = None, queue: Queue = False,
                     ranges: Ranges = None, wait: Wait = True) -> None:
    """Encrypt the plaintext values of a column declared with allow_plaintext=True
    (compare-and-swap, resumable); then run verify."""
    from piiguard.rotation.migrate import encrypt_existing as run

    st = _state(ctx)
    guard = st.guard()
    _need_columns(guard, "encrypt-existing")
    if queue:
        return run_queued(st, guard, _spec(st, _job_args(
            "encrypt-existing", table=table, column=column, batch_size=batch_size,
            dry_run=dry_run, max_rate=max_rate)), ranges=ranges, wait=wait)
    with st.progress() as bar:
        if workers > 1:
            report = _in_processes(st, guard, workers, bar, _job_args(
                "encrypt-existing", table=table, column=column, batch_size=batch_size,
                dry_run=dry_run, max_rate=max_rate))
        else:
            report = run(guard, table, column, batch_size=batch_size, dry_run=dry_run,
                         progress=bar, max_rate=max_rate)
    if st.json:
        st.emit(report.to_dict())
    else:
        print_migrate(st.out, report)
    if report.failures or (not dry_run and report.remaining):
        raise failed()


@app.command()
@command
def verify(ctx: typer.Context,
           table: Annotated[str | None, typer.Option("--table",
                                                        help="Only this table.")] = None,
           batch_size: BatchSize = None, workers: Workers = 1, queue: Queue = False,
           ranges: Ranges = None, wait: Wait = True) -> None:
    """Decrypt every encrypted value (streaming) and check every blind index; report
    failures by table.column and row key; exit 1 on any failure."""
    from piiguard.rotation.verify import verify as run

    st = _state(ctx)
    guard = st.guard()
    _need_columns(guard, "verify")
    if queue:
        return run_queued(st, guard, _spec(st, _job_args(
            "verify", table=table, batch_size=batch_size)), ranges=ranges, wait=wait)
    with st.progress() as bar:
        if workers > 1:
            report = _in_processes(st, guard, workers, bar, _job_args(
                "verify", table=table, batch_size=batch_size))
        else:
            report = run(guard, table=table, batch_size=batch_size or 1000, progress=bar)
    if st.json:
        st.emit(report.to_dict())
    else:
        print_verify(st.out, report)
    if not report.ok:
        raise failed()


def main() -> None:
    """Console script entry point (``piiguard``)."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
