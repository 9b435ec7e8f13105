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
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import typer
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
    from piiguard.rotation.status import StatusReport
    from piiguard.rotation.verify import VerifyReport

__all__ = [
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_USAGE",
    "Output",
    "ProgressBar",
    "age",
    "failed",
    "print_status",
    "usage_error",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

#: How many failures a human-readable report lists (``--json`` lists them all).
FAILURES_SHOWN = 20


# -- exit codes ----------------------------------------------------------------------------
def usage_error(message: str, hint: str) -> typer.BadParameter:
    """A usage error about option ``hint``: click prints it and exits with
    :data:`EXIT_USAGE`."""
    return typer.BadParameter(message, param_hint=hint)


def failed() -> typer.Exit:
    """Exit with :data:`EXIT_FAILURE` (the report was already printed)."""
    return typer.Exit(EXIT_FAILURE)


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


def _short(key_id: str, n: int = 28) -> str:
    return key_id if len(key_id) <= n else "…" + key_id[-(n - 1):]


_STATE_STYLE = {"active": "green", "decrypt_only": "yellow", "retired": "dim",
                "destroyed": "red"}


def _status_table(report: StatusReport, title: str | None = None) -> Table:
    t = Table(title=title, title_justify="left")
    t.add_column("id", justify="right", no_wrap=True)
    t.add_column("kind", no_wrap=True)
    t.add_column("scope", overflow="fold")
    t.add_column("state", no_wrap=True)
    t.add_column("master key", overflow="ellipsis", max_width=16)
    t.add_column("age", justify="right", no_wrap=True)
    t.add_column("uses", justify="right", no_wrap=True)
    t.add_column("values using it", justify="right", no_wrap=True)
    for k in report.keys:
        t.add_row(str(k.id), k.kind, k.scope,
                  Text(k.state, style=_STATE_STYLE.get(k.state, "")),
                  _short(k.master_key_id, 16), age(k.age_seconds), f"{k.uses:,}",
                  f"{k.total_rows:,}")
    return t


def _usage_table(report: StatusReport) -> Table | None:
    """Stored values by column (rows) and key id (columns): rotation progress."""
    key_ids = sorted({kid for c in report.columns for kid in c.by_key})
    if not report.columns:
        return None
    t = Table(title="stored values by column and key id", title_justify="left")
    t.add_column("column", overflow="fold")
    for kid in key_ids:
        t.add_column(f"key {kid}", justify="right", no_wrap=True)
    plaintext = any(c.plaintext for c in report.columns)
    if plaintext:
        t.add_column("plaintext", justify="right", no_wrap=True)
    for c in report.columns:
        cells = [f"{c.by_key[k]:,}" if c.by_key.get(k) else "·" for k in key_ids]
        if plaintext:
            cells.append(f"{c.plaintext:,}")
        t.add_row(c.label, *cells)
    return t


def print_status(console: Console, report: StatusReport, title: str | None = None) -> None:
    """Print a :class:`~piiguard.rotation.status.StatusReport` as tables."""
    console.print(_status_table(report, title))
    usage = _usage_table(report)
    if usage is not None:
        console.print(usage)
    for c in report.columns:
        if c.plaintext and c.role == "ciphertext":
            console.print(f"[yellow]{c.label}: {c.plaintext:,} value(s) not encrypted yet "
                          "(run encrypt-existing)[/yellow]")
    for label, ids in report.unknown_keys().items():
        console.print(f"[red]{label}: values under unknown key id(s) "
                      f"{', '.join(map(str, ids))}[/red]")


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
    t = Table()
    t.add_column("table")
    for name in ("would update" if dry_run else "updated", "values", "indexes", "conflicts",
                 "shredded", "failed", "remaining", "passes"):
        t.add_column(name, justify="right")
    for r in tables:
        t.add_row(r.table, f"{r.updated:,}", f"{r.values:,}", f"{r.indexes:,}",
                  f"{r.conflicts:,}", f"{r.shredded:,}", f"{len(r.failures):,}",
                  "-" if dry_run else f"{r.remaining:,}", str(r.passes))
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
    t = Table()
    t.add_column("column")
    for name in ("checked", "ok", "failed", "plaintext", "shredded", "index checked",
                 "index failed"):
        t.add_column(name, justify="right")
    for c in report.columns:
        t.add_row(c.label, f"{c.checked:,}", f"{c.ok:,}", f"{c.failed:,}",
                  f"{c.plaintext:,}", f"{c.shredded:,}", f"{c.index_checked:,}",
                  f"{c.index_failed:,}")
    console.print(t)
    _print_failures(console, report.failures)
    console.print(("[green]ok[/green]" if report.ok else "[red]FAILED[/red]")
                  + f": {report.checked:,} value(s) checked in {report.elapsed:.2f} s")
