"""How the ``piiguard`` CLI and the demo show results: rich tables, progress bars, one JSON
document (``--json``), value-free error lines and the exit codes.

Nothing here parses options or runs a job (that is :mod:`piiguard.cli`); everything here
turns a report of :mod:`piiguard.rotation` into text. No function prints a value or key
material: reports carry counts, key ids, ``table.column`` labels and row keys only.

Exit codes: :data:`EXIT_OK` (0), :data:`EXIT_FAILURE` (1: an error, a failed value, work
left) and :data:`EXIT_USAGE` (2: raised by click for :func:`usage_error`).

>>> age(59), age(61), age(3 * 3600 + 120), age(None)
('59s', '1m 1s', '3h 2m', '-')
>>> failed().exit_code
1
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import typer
from typer.core import TyperGroup
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress
from rich.table import Table
from rich.text import Text

from piiguard.errors import PIIGuardError

if TYPE_CHECKING:  # the reports' types only: `piiguard --help` does not load the jobs
    from piiguard.rotation.batches import Failure, TableReport
    from piiguard.rotation.migrate import MigrateReport
    from piiguard.rotation.reencrypt import ReencryptReport
    from piiguard.rotation.rewrap import RewrapReport
    from piiguard.rotation.shred import ShredReport
    from piiguard.rotation.status import KeyStatus, StatusReport
    from piiguard.rotation.verify import VerifyReport

__all__ = [
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_USAGE",
    "JsonGroup",
    "Output",
    "ProgressBar",
    "age",
    "db_error_text",
    "failed",
    "is_db_error",
    "reporting",
    "print_status",
    "usage_error",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

#: How many failures a human-readable report lists (``--json`` lists them all).
FAILURES_SHOWN = 20

#: How many JSON documents the running command printed (``--json`` prints exactly one).
_EMITTED: ContextVar[int] = ContextVar("piiguard_cli_emitted", default=0)


# -- exit codes ----------------------------------------------------------------------------
def usage_error(message: str, hint: str) -> typer.BadParameter:
    """A usage error about option ``hint``: click prints it and exits with
    :data:`EXIT_USAGE`."""
    return typer.BadParameter(message, param_hint=hint)


def failed() -> typer.Exit:
    """Exit with :data:`EXIT_FAILURE` (the report was already printed)."""
    return typer.Exit(EXIT_FAILURE)


def db_error_text(exc: BaseException) -> str:
    """A database error named by its classes and code only: SQLAlchemy's message lists
    the statement's parameters and a driver's message may quote a value.

    >>> class OperationalError(Exception):
    ...     orig = ConnectionRefusedError(111, "refused")
    >>> db_error_text(OperationalError("(psycopg) connection to ... [parameters: ...]"))
    'OperationalError (ConnectionRefusedError 111)'
    """
    orig = getattr(exc, "orig", None)
    if orig is None:
        return type(exc).__name__
    code = getattr(orig, "sqlstate", None) or (getattr(orig, "args", None) or [None])[0]
    code_text = f" {code}" if isinstance(code, (int, str)) and code and len(str(code)) < 12 \
        else ""
    return f"{type(exc).__name__} ({type(orig).__name__}{code_text})"


def is_db_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a SQLAlchemy error (its message may list a statement's
    parameters: report it with :func:`db_error_text`)."""
    from sqlalchemy.exc import SQLAlchemyError

    return isinstance(exc, SQLAlchemyError)


def reporting(st: Output, operation: str, call: Callable[[], None]) -> None:
    """Run a command's body: a piiguard error, or a database error named by class and
    code only, is reported on ``st`` (one JSON document with ``--json``) and becomes
    exit code 1."""
    try:
        call()
    except PIIGuardError as exc:
        st.error(exc)
        raise failed() from None
    except Exception as exc:
        if not is_db_error(exc):
            raise
        st.error(PIIGuardError(f"database error: {db_error_text(exc)}",
                               operation=operation))
        raise failed() from None


def _json_argv(args: Sequence[str]) -> tuple[list[str], bool]:
    """``args`` with every ``--json`` (before a ``--``) moved to the front, so that it
    is accepted anywhere on the command line, and whether there was one.

    >>> _json_argv(["keys", "status", "--json"])
    (['--json', 'keys', 'status'], True)
    >>> _json_argv(["keys", "status", "--", "--json"])
    (['keys', 'status', '--', '--json'], False)
    """
    args = list(args)
    end = args.index("--") if "--" in args else len(args)
    found = "--json" in args[:end]
    if not found:
        return args, False
    rest = [a for a in args[:end] if a != "--json"] + args[end:]
    return ["--json", *rest], True


class JsonGroup(TyperGroup):
    """The root command group: ``--json`` anywhere on the command line, and under
    ``--json`` every outcome (success, failure, usage error, an unexpected crash) is
    exactly one JSON document on stdout with the documented exit code."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             windows_expand_args: bool = True, **extra: Any) -> Any:
        argv, json_mode = _json_argv(sys.argv[1:] if args is None else args)
        if not json_mode:
            return super().main(argv, prog_name, complete_var, standalone_mode,
                                windows_expand_args, **extra)
        _no_help_when_empty(self)
        token = _EMITTED.set(0)
        try:
            code = self._json_main(argv, prog_name, complete_var, **extra)
        finally:
            _EMITTED.reset(token)
        if standalone_mode:
            sys.exit(code)
        return code

    def _json_main(self, argv: list[str], prog_name: str | None,
                   complete_var: str | None, **extra: Any) -> int:
        try:
            rv = super().main(argv, prog_name, complete_var, standalone_mode=False,
                              **extra)
        except typer.Abort:
            return _json_failure("Aborted", "aborted", EXIT_FAILURE)
        except Exception as exc:  # noqa: BLE001 - one JSON document, never a traceback
            usage = _click_error(exc)
            if usage is not None:
                return _json_failure(*usage)
            # Only the class: an unknown error's message may quote a value.
            return _json_failure(type(exc).__name__, "unexpected error (run without "
                                 "--json for details)", EXIT_FAILURE)
        code = rv if isinstance(rv, int) else EXIT_OK
        if code != EXIT_OK and not _EMITTED.get():
            _json_failure("Failed", "failed", code)
        return code


def _no_help_when_empty(group: Any) -> None:
    """Under ``--json`` a group called without a command is a usage error like any
    other (``no_args_is_help`` would print the help text first, on stdout)."""
    group.no_args_is_help = False
    for sub in getattr(group, "commands", {}).values():
        if hasattr(sub, "commands"):
            _no_help_when_empty(sub)


def _click_error(exc: Exception) -> tuple[str, str, int] | None:
    """``(type, message, exit code)`` of a usage error raised by click (typer's own
    click, or click itself in older typer releases: matched by shape), else None."""
    code = getattr(exc, "exit_code", None)
    if not isinstance(code, int) or not callable(getattr(exc, "format_message", None)):
        return None
    names = {c.__name__ for c in type(exc).__mro__}
    if "NoArgsIsHelpError" in names:
        return "UsageError", "no command given (see --help)", EXIT_USAGE
    kind = "UsageError" if "UsageError" in names else type(exc).__name__
    return kind, str(exc.format_message()), code  # type: ignore[attr-defined]


def _json_failure(kind: str, message: str, code: int) -> int:
    if not _EMITTED.get():
        Output.emit_doc({"ok": False, "error": {"type": kind, "message": message},
                         "exit_code": code})
    return code


# -- output channels -------------------------------------------------------------------------
class ProgressBar:
    """A rich progress bar behind the :class:`~piiguard.rotation.progress.Progress`
    protocol: one task per phase (table, pass)."""

    def __init__(self, console: Console, *, enabled: bool) -> None:
        self._p = RichProgress(TextColumn("{task.description}"), BarColumn(),
                               MofNCompleteColumn(), _RowsPerSecond(),
                               TimeElapsedColumn(), TextColumn("ETA"),
                               TimeRemainingColumn(), console=console,
                               disable=not enabled, transient=False)
        self._task: TaskID | None = None

    def __enter__(self) -> ProgressBar:
        self._p.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._close_task()
        self._p.stop()

    def _close_task(self) -> None:
        # A phase that ended early (nothing left, a stop) shows as complete at its count.
        if self._task is not None:
            task = self._p.tasks[-1]
            if task.total is not None and task.completed < task.total:
                self._p.update(self._task, total=task.completed)

    def start(self, description: str, total: int | None) -> None:
        self._close_task()
        self._task = self._p.add_task(description, total=total)

    def advance(self, n: int = 1) -> None:
        if self._task is not None:
            self._p.advance(self._task, n)


class _RowsPerSecond(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f} rows/s", style="cyan")


class Output:
    """Where a command's results go: tables on stdout and progress bars and errors on
    stderr, or (``json_out``) one JSON document on stdout and no progress bar."""

    def __init__(self, json_out: bool) -> None:
        self.json = json_out
        self.out = Console(highlight=False, soft_wrap=False)
        self.err = Console(stderr=True, highlight=False)

    def progress(self) -> ProgressBar:
        """A progress bar on stderr, shown only when stderr is a terminal."""
        return ProgressBar(self.err, enabled=not self.json and self.err.is_terminal)

    def emit(self, doc: dict[str, Any]) -> None:
        """Print ``doc`` as JSON on stdout (``--json``)."""
        self.emit_doc(doc)

    @staticmethod
    def emit_doc(doc: dict[str, Any]) -> None:
        """Print ``doc`` as one JSON document on stdout, once per command: a second
        document (an error after a report) is dropped, so ``--json`` output always
        parses."""
        if _EMITTED.get():
            return
        _EMITTED.set(_EMITTED.get() + 1)
        typer.echo(json.dumps(doc, default=str, sort_keys=False))

    def error(self, exc: PIIGuardError) -> None:
        """Report ``exc`` by class and message (piiguard messages carry no values)."""
        if self.json:
            self.emit({"ok": False, "error": {"type": type(exc).__name__,
                                              "message": str(exc)}})
        else:
            self.err.print(f"[red]error:[/red] {type(exc).__name__}: {exc}", markup=True,
                           highlight=False)

    def confirm(self, yes: bool, question: str) -> None:
        """Ask before destroying keys; ``--yes`` (needed without a terminal) skips it."""
        if yes:
            return
        if self.json or not sys.stdin.isatty():
            raise usage_error("this destroys keys for good: pass --yes to confirm", "--yes")
        typer.confirm(question, abort=True)


# -- keys ------------------------------------------------------------------------------------
def age(seconds: float | None) -> str:
    """A key's age for a table column: the two largest units."""
    if seconds is None:
        return "-"
    td = timedelta(seconds=int(seconds))
    if td.days:
        return f"{td.days}d {td.seconds // 3600}h"
    if seconds >= 3600:
        return f"{int(seconds // 3600)}h {int(seconds % 3600 // 60)}m"
    if seconds >= 60:
        return f"{int(seconds // 60)}m {int(seconds % 60)}s"
    return f"{int(seconds)}s"


_STATE_STYLE = {"active": "green", "decrypt_only": "yellow", "retired": "dim",
                "destroyed": "red"}
_STATES = ("active", "decrypt_only", "retired", "destroyed")

#: ``keys status`` lists keys one by one up to this many, then summarises them by kind,
#: scope family (``customers:*``), state and master key (``--json`` lists every key).
KEYS_LISTED = 40
#: The usage table has one column per key id up to this many key ids (it stays within
#: 80 columns), then one per key state.
KEY_ID_COLUMNS = 4


def _master_labels(report: StatusReport) -> dict[str, str]:
    """Short labels (``M1``, ``M2`` …) for master key ids, which are long (an AWS ARN is
    about 75 characters): the key table shows the label, a legend the full id."""
    masters = sorted({k.master_key_id for k in report.keys})
    return {m: f"M{i}" for i, m in enumerate(masters, 1)}


def _scope_family(scope: str) -> str:
    """``customers:42`` -> ``customers:*`` (a key_scope column's per-subject scopes)."""
    head, sep, _ = scope.partition(":")
    return f"{head}:*" if sep else scope


def _key_table(report: StatusReport, masters: dict[str, str],
               title: str | None) -> Table:
    t = Table(title=title, title_justify="left")
    t.add_column("id", justify="right", no_wrap=True)
    t.add_column("kind", no_wrap=True)
    t.add_column("scope", overflow="fold")
    t.add_column("state", no_wrap=True)
    if len(masters) > 1:
        t.add_column("master", no_wrap=True)
    t.add_column("age", justify="right", no_wrap=True)
    t.add_column("uses", justify="right", no_wrap=True)
    t.add_column("values", justify="right", no_wrap=True)
    for k in report.keys:
        cells: list[Any] = [str(k.id), k.kind, k.scope,
                            Text(k.state, style=_STATE_STYLE.get(k.state, ""))]
        if len(masters) > 1:
            cells.append(masters[k.master_key_id])
        cells += [age(k.age_seconds), f"{k.uses:,}", f"{k.total_rows:,}"]
        t.add_row(*cells)
    return t


def _summary_table(report: StatusReport, masters: dict[str, str],
                   title: str | None) -> Table:
    """Keys grouped by kind, scope family, state and master key."""
    groups: dict[tuple[str, str, str, str], list[KeyStatus]] = {}
    for k in report.keys:
        groups.setdefault((k.kind, _scope_family(k.scope), k.state, k.master_key_id),
                          []).append(k)
    t = Table(title=title, title_justify="left")
    t.add_column("kind", no_wrap=True)
    t.add_column("scope", no_wrap=True)
    t.add_column("state", no_wrap=True)
    if len(masters) > 1:
        t.add_column("mk", no_wrap=True)   # 80 columns: "M1" needs no wider header
    for name in ("keys", "ids", "uses", "values"):
        t.add_column(name, justify="right", no_wrap=True)
    order = {s: i for i, s in enumerate(_STATES)}
    for (kind, family, state, master), ks in sorted(
            groups.items(), key=lambda g: (g[0][0], g[0][1], order.get(g[0][2], 9),
                                           g[0][3])):
        ids = [k.id for k in ks]
        cells: list[Any] = [kind, family, Text(state, style=_STATE_STYLE.get(state, ""))]
        if len(masters) > 1:
            cells.append(masters[master])
        cells += [f"{len(ks):,}", f"{min(ids)}-{max(ids)}" if len(ids) > 1 else str(ids[0]),
                  f"{sum(k.uses for k in ks):,}", f"{sum(k.total_rows for k in ks):,}"]
        t.add_row(*cells)
    return t


def _usage_table(report: StatusReport) -> Table | None:
    """Stored values by column (rows) and key id (columns: rotation progress), or by key
    state when there are more key ids than fit."""
    if not report.columns:
        return None
    key_ids = sorted({kid for c in report.columns for kid in c.by_key})
    by_state = len(key_ids) > KEY_ID_COLUMNS
    state_of = {k.id: k.state for k in report.keys}
    heads: list[Any] = list(_STATES) + ["unknown"] if by_state else key_ids
    t = Table(title="stored values by column and key " + ("state" if by_state else "id"),
              title_justify="left")
    t.add_column("column", overflow="fold")
    for h in heads:
        t.add_column(h.replace("_", "-") if by_state else f"key {h}", justify="right",
                     no_wrap=True)
    plaintext = any(c.plaintext for c in report.columns)
    if plaintext:
        t.add_column("plaintext", justify="right", no_wrap=True)
    for c in report.columns:
        counts: dict[Any, int] = {}
        for kid, n in c.by_key.items():
            h = state_of.get(kid, "unknown") if by_state else kid
            counts[h] = counts.get(h, 0) + n
        cells = [f"{counts[h]:,}" if counts.get(h) else "·" for h in heads]
        if plaintext:
            cells.append(f"{c.plaintext:,}")
        t.add_row(c.label, *cells)
    return t


def print_status(console: Console, report: StatusReport, title: str | None = None) -> None:
    """Print a :class:`~piiguard.rotation.status.StatusReport` as tables that stay
    readable at 80 columns: master key ids in a legend below the key table (never cut),
    and beyond :data:`KEYS_LISTED` keys a summary by kind, scope family and state."""
    masters = _master_labels(report)
    many = len(report.keys) > KEYS_LISTED
    console.print(_summary_table(report, masters, title) if many
                  else _key_table(report, masters, title))
    if len(masters) == 1:
        console.print(f"master key: {next(iter(masters))}", soft_wrap=True)
    for master, label in masters.items() if len(masters) > 1 else ():
        console.print(f"{label} = master key {master}", soft_wrap=True)
    if many:
        console.print(f"{len(report.keys):,} keys summarised by kind, scope and state "
                      "(--json lists every key)")
    usage = _usage_table(report)
    if usage is not None:
        console.print(usage)
    for c in report.columns:
        if c.plaintext and c.role == "ciphertext":
            console.print(f"[yellow]{c.label}: {c.plaintext:,} value(s) not encrypted yet "
                          "(run encrypt-existing)[/yellow]")
    for label, ids in report.unknown_keys().items():
        shown = ", ".join(map(str, sorted(ids)[:10])) + (" …" if len(ids) > 10 else "")
        console.print(f"[red]{label}: values under unknown key id(s) {shown}[/red]")


def print_rewrap(console: Console, report: RewrapReport) -> None:
    console.print(f"rewrapped {report.rewrapped} key(s) under master key "
                  f"{report.destination}" + (" (new)" if report.created else "")
                  + f"; {report.remaining} left")
    if report.disabled:
        console.print(f"disabled master key(s): {', '.join(report.disabled)}")
    for note in report.notes:
        console.print(f"[yellow]note:[/yellow] {note}")


def print_shred(console: Console, scope: str, report: ShredReport) -> None:
    console.print(f"scope {scope!r}: destroyed key(s) {', '.join(map(str, report.keys))}")
    for label, n in report.values.items():
        console.print(f"  {label}: {n:,} value(s) now unreadable")
    if report.epoch is not None:
        console.print(f"  copies taken before now still decrypt it until epoch "
                      f"{report.epoch} is closed: piiguard keys epoch")


# -- jobs ------------------------------------------------------------------------------------
def _job_table(tables: list[TableReport], dry_run: bool) -> Table:
    """Counts per table; a count that is 0 in every row (conflicts, shredded, failed …)
    is left out, so that the table fits 80 columns without cutting its headers."""
    cols: list[tuple[str, Callable[[TableReport], int]]] = [
        ("would update" if dry_run else "updated", lambda r: r.updated),
        ("values", lambda r: r.values),
        ("indexes", lambda r: r.indexes),
        ("conflicts", lambda r: r.conflicts),
        ("shredded", lambda r: r.shredded),
        ("failed", lambda r: len(r.failures)),
    ]
    always = {"would update", "updated", "values"}
    shown = [(name, get) for name, get in cols
             if name in always or any(get(r) for r in tables)]
    t = Table()
    t.add_column("table", no_wrap=True)
    for name, _ in shown:
        t.add_column(name, justify="right", no_wrap=True)
    if not dry_run:
        t.add_column("remaining", justify="right", no_wrap=True)
    passes = any(r.passes > 1 for r in tables)
    if passes:
        t.add_column("passes", justify="right", no_wrap=True)
    for r in tables:
        cells = [r.table] + [f"{get(r):,}" for _, get in shown]
        if not dry_run:
            cells.append(f"{r.remaining:,}")
        if passes:
            cells.append(str(r.passes))
        t.add_row(*cells)
    return t


def _print_failures(console: Console, failures: list[Failure],
                    limit: int = FAILURES_SHOWN) -> None:
    for f in failures[:limit]:
        console.print(f"[red]failed[/red] {f.column} {f.row}: {f.error}", markup=True,
                      highlight=False)
    if len(failures) > limit:
        console.print(f"… and {len(failures) - limit} more (use --json for all)")


def print_reencrypt(console: Console, report: ReencryptReport) -> None:
    dry_run = report.dry_run
    console.print(_job_table(report.tables, dry_run))
    console.print(f"{'would update' if dry_run else 'updated'} {report.updated:,} row(s) "
                  f"in {report.elapsed:.2f} s ({report.rows_per_second:,.0f} rows/s)")
    _print_failures(console, report.failures)
    if report.remaining:
        console.print(f"[yellow]{report.remaining:,} row(s) still under an old key "
                      "(concurrent writes): run reencrypt again[/yellow]")


def print_migrate(console: Console, report: MigrateReport) -> None:
    dry_run = report.dry_run
    console.print(_job_table([report], dry_run))
    console.print(f"{'would encrypt' if dry_run else 'encrypted'} {report.updated:,} "
                  f"value(s) of {report.column} in {report.elapsed:.2f} s")
    _print_failures(console, report.failures)
    if not dry_run and report.ok:
        console.print("next: `piiguard verify` confirms nothing plaintext is left")


def print_verify(console: Console, report: VerifyReport) -> None:
    # A count that is 0 on every column is left out: the table fits 80 columns.
    cols = [("checked", "checked"), ("ok", "ok"), ("failed", "failed"),
            ("plaintext", "plaintext"), ("shredded", "shredded"),
            ("index checked", "index_checked"), ("index failed", "index_failed")]
    always = {"checked", "ok", "failed"}
    shown = [(name, attr) for name, attr in cols
             if name in always or any(getattr(c, attr) for c in report.columns)]
    t = Table()
    t.add_column("column", overflow="fold")
    for name, _ in shown:
        t.add_column(name, justify="right", no_wrap=True)
    for c in report.columns:
        t.add_row(c.label, *(f"{getattr(c, attr):,}" for _, attr in shown))
    console.print(t)
    _print_failures(console, report.failures)
    console.print(("[green]ok[/green]" if report.ok else "[red]FAILED[/red]")
                  + f": {report.checked:,} value(s) checked in {report.elapsed:.2f} s")
