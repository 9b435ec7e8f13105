"""``encrypt-existing``: bring a plaintext column under encryption on a live table.

The steps (``docs/operations.md`` has the runbook):

1. Declare the column with its encrypted type and ``allow_plaintext=True``: reads then
   accept both plaintext and envelopes, writes always encrypt. (Widen the column first
   if needed: an envelope is longer than the value.)
2. Run this job: it selects the rows whose value is not an envelope, validates and
   canonicalises each value with the column type's rules, encrypts it (and computes its
   blind index), and writes it back with the same compare-and-swap as ``reencrypt``
   (``WHERE pk = :pk AND col = :plaintext_read``): a concurrent application write wins,
   a killed run resumes, a second run changes nothing.
3. ``verify`` confirms that no plaintext is left; then drop ``allow_plaintext``.

A value that fails validation is not written: it is reported by ``table.column``, row
key and the rule that failed (never the value), for someone to fix by hand.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, fields
from typing import Any

from piiguard.errors import ConfigurationError, KMSError, PIIGuardError
from piiguard.rotation.batches import (
    BatchJob,
    Counts,
    RangeRunner,
    RowUpdate,
    TableReport,
    default_batch_size,
    describe,
    run_passes,
)
from piiguard.rotation.progress import NullProgress, Progress
from piiguard.rotation.targets import EncryptedColumn, TableTarget, discover, to_blob

__all__ = ["MigrateReport", "encrypt_existing", "migrate_job"]


@dataclass
class MigrateReport(TableReport):
    """A :class:`~piiguard.rotation.batches.TableReport` for one column, with timing."""

    column: str = ""
    elapsed: float = 0.0
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return not self.failures and self.remaining == 0

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d.update(ok=self.ok, column=self.column, elapsed=round(self.elapsed, 3),
                 dry_run=self.dry_run)
        return d


class _MigrateJob(BatchJob):
    verb = "encrypt"

    def _too_wide(self, new: Any, idx: Any) -> str | None:
        """Why a new value would not fit its column (checked in ``--dry-run`` too)."""
        for name, value in ((self.ec.name, new), (self.ec.index_name, idx)):
            width = self.widths.get(name) if name else None
            if width is not None and value is not None and len(value) > width:
                return (f"the envelope needs {len(value)} "
                        f"{'characters' if isinstance(value, str) else 'bytes'} but "
                        f"{self.target.table.name}.{name} holds {width}: widen the "
                        "column first")
        return None

    def __init__(self, guard: Any, target: TableTarget, ec: EncryptedColumn,
                 **kw: Any) -> None:
        super().__init__(guard, target, **kw)
        self.ec = ec
        self.ci = self.select(ec.name)
        self.ii = self.select(ec.index_name) if ec.index_name else None
        self.si = self.select(ec.scope_name) if ec.scope_name else None
        # a row-bound column's new envelopes are bound to their row's values
        self.bat = tuple(self.select(n) for n in ec.binding_names)
        self.where = self.lite.is_plaintext(ec)
        self.widths = _declared_widths(guard.engine, target, ec)

    def work(self, row: Any, counts: Counts) -> RowUpdate | None:
        ec = self.ec
        stored = row[self.ci]
        if stored is None or to_blob(stored) is not None:
            return None  # NULL, or encrypted since it was selected
        try:
            plaintext = stored if isinstance(stored, str) else bytes(stored).decode("utf-8")
        except UnicodeDecodeError:
            self.fail(counts, ec, row, "plaintext is not UTF-8")
            return None
        entry = ec.entry
        try:
            if self.bat:
                new = entry.encrypt_value(plaintext, row=dict(zip(
                    ec.binding_names, (row[i] for i in self.bat), strict=True)))
            elif self.si is not None:
                new = entry.encrypt_value(plaintext, scope_value=row[self.si])
            else:
                new = entry.encrypt_value(plaintext)
            idx = None
            if self.ii is not None:
                canonical = entry.canonical(plaintext) if hasattr(entry, "canonical") \
                    else entry.decrypt_stored(new)
                idx = ec.compute_index(canonical)
        except KMSError:
            raise
        except (PIIGuardError, ValueError) as exc:
            self.fail(counts, ec, row, describe(exc))
            return None
        too_wide = self._too_wide(new, idx)
        if too_wide:
            self.fail(counts, ec, row, too_wide)
            return None
        counts.values += 1
        if idx is None or ec.index_name is None:
            return RowUpdate([ec.name], [new], [ec.name], [stored])
        counts.indexes += 1
        return RowUpdate([ec.name, ec.index_name], [new, idx], [ec.name], [stored])


def _target(guard: Any, table: str, column: str) -> tuple[TableTarget, EncryptedColumn]:
    target = discover(guard, table=table, column=column)[0]
    ec = target.columns[0]
    if not ec.allow_plaintext:
        raise ConfigurationError("declare the column with allow_plaintext=True while it is "
                                 "migrated (so the application reads the mix)",
                                 column=ec.label, operation="encrypt-existing")
    return TableTarget(target.table, target.pk, [ec]), ec


def migrate_job(guard: Any, table: str, column: str, *, batch_size: int, dry_run: bool,
                progress: Progress, max_rate: float | None,
                stop: threading.Event) -> BatchJob:
    """The encrypt-existing job of ``table.column`` (what a worker process or a queued
    task runs a range of)."""
    target, ec = _target(guard, table, column)
    return _MigrateJob(guard, target, ec, batch_size=batch_size, dry_run=dry_run,
                       progress=progress, max_rate=max_rate, stop=stop)


def _declared_widths(engine: Any, target: TableTarget,
                     ec: EncryptedColumn) -> dict[str, int]:
    """The database's declared width of the ciphertext and index columns, where the
    database enforces one (not SQLite, which stores any length); refuses a missing
    column with the advice to add it (the SELECT would fail with a database error)."""
    from sqlalchemy import inspect

    table = target.table
    with engine.connect() as conn:
        cols = {c["name"]: c for c in inspect(conn).get_columns(table.name,
                                                                schema=table.schema)}
    for name in (ec.name, ec.index_name):
        if name is not None and name not in cols:
            raise ConfigurationError(_missing_advice(target, ec, name), column=ec.label,
                                     operation="encrypt-existing")
    if engine.dialect.name == "sqlite":
        return {}
    widths = {}
    for name in (ec.name, ec.index_name):
        length = getattr(cols[name]["type"], "length", None) if name else None
        if name and isinstance(length, int) and length > 0:
            widths[name] = length
    return widths


def _missing_advice(target: TableTarget, ec: EncryptedColumn, name: str) -> str:
    t = target.table.name
    if name == ec.index_name:
        bits = getattr(target.table.c[name].type, "bits", 256) \
            if name in target.table.c else 256
        return (f"the blind index column {t}.{name} of the searchable column is missing: "
                f"add it first, e.g. in an Alembic migration op.add_column({t!r}, "
                f"sa.Column({name!r}, piiguard.sqlalchemy.BlindIndex({bits}), "
                "nullable=True)) and op.create_index(...) on it; encrypt-existing fills it")
    return f"the column {t}.{name} is missing from the database"


def encrypt_existing(guard: Any, table: str, column: str, *, batch_size: int | None = None,
                     dry_run: bool = False, workers: int = 1,
                     progress: Progress | None = None, max_passes: int = 5,
                     max_rate: float | None = None,
                     runner: RangeRunner | None = None) -> MigrateReport:
    """Encrypt the plaintext values left in ``table.column`` (see the module docstring).

    The column type must be declared with ``allow_plaintext=True`` (so the application
    reads the mix while the job runs); otherwise
    :class:`~piiguard.errors.ConfigurationError`. Emits an ``encrypt_existing`` audit
    event."""
    if guard.engine is None:
        raise ConfigurationError("the Guard is not bound to a database",
                                 operation="encrypt-existing")
    if batch_size is None:
        batch_size = default_batch_size(guard.engine)
    if batch_size < 1 or workers < 1 or max_passes < 1:
        raise ConfigurationError("batch_size, workers and max_passes must be at least 1",
                                 operation="encrypt-existing")
    target, ec = _target(guard, table, column)
    progress = progress or NullProgress()
    started = time.perf_counter()
    job = _MigrateJob(guard, target, ec, batch_size=batch_size, dry_run=dry_run,
                      progress=progress, max_rate=max_rate and max_rate / workers,
                      stop=threading.Event())
    rep = run_passes(job, workers=workers, max_passes=max_passes, progress=progress,
                     runner=runner)
    out = MigrateReport(**{f.name: getattr(rep, f.name) for f in fields(rep)})
    out.column, out.dry_run = ec.label, dry_run
    out.elapsed = time.perf_counter() - started
    guard.audit.emit("encrypt_existing", outcome="error" if rep.failures else "ok",
                     column=ec.label, count=rep.updated, rows=rep.candidates,
                     reason="dry-run" if dry_run else None,
                     error=f"{len(rep.failures)} value(s) failed" if rep.failures else None)
    if not dry_run:
        guard.keys.flush()
    return out
