"""``verify``: decrypt every encrypted value and check every blind index, streaming.

Reads each table in primary-key order, ``batch_size`` rows at a time (keyset paging, so
memory stays flat on any table size), decrypts every stored value and recomputes every
blind index value with the key it names. Failures are reported by ``table.column``,
row key and reason (``DecryptionError``, ``not an envelope`` …), never by value:

- a value that is not an envelope is a failure (``plaintext``), also in a column mid
  ``encrypt-existing``: "nothing plaintext is left" is what verify confirms;
- a value under a destroyed key is counted as ``shredded`` (erased on purpose), not as a
  failure;
- an index value that does not match its ciphertext is a failure (``index mismatch``);
- a value of a row-bound column (``key_scope=``, ``bound_to=``) is opened with its own
  row's binding: one moved to another subject's row, copied from another row, replayed
  after a bound version changed, or left behind by a scope change behind piiguard's
  back is a failure (``not this row's value``), as is a key-scoped value under another
  scope's key; an envelope written before row binding is counted as ``unbound`` (a
  failure with ``strict_binding=True``) until ``reencrypt`` upgrades it.

A KMS that cannot unwrap a key stops the run (:class:`~piiguard.errors.KMSError`): every
row under that key would fail the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from piiguard.crypto.blind_index import index_key_bytes_of
from piiguard.crypto.envelope import is_bound
from piiguard.errors import (
    ConfigurationError,
    DecryptionError,
    KeyDestroyedError,
    KMSError,
    PIIGuardError,
    UnknownKeyError,
)
from piiguard.rotation.batches import Failure, KeyRange, describe, split
from piiguard.rotation.progress import NullProgress, Progress
from piiguard.rotation.sql import Lite
from piiguard.rotation.targets import EncryptedColumn, discover, row_key, to_blob

__all__ = ["ColumnCheck", "VerifyReport", "VerifyRunner", "verify", "verify_range"]

#: How many failures a report lists (all are counted).
MAX_LISTED = 1000


_NUMBERS = ("checked", "ok", "failed", "plaintext", "shredded", "unbound", "index_checked",
            "index_failed")


@dataclass
class ColumnCheck:
    label: str
    checked: int = 0
    ok: int = 0
    failed: int = 0
    plaintext: int = 0
    shredded: int = 0
    unbound: int = 0        # read fine, but not bound to their row yet (reencrypt them)
    index_checked: int = 0
    index_failed: int = 0

    def add(self, other: ColumnCheck) -> None:
        for name in _NUMBERS:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def to_dict(self) -> dict[str, Any]:
        return dict(column=self.label, checked=self.checked, ok=self.ok, failed=self.failed,
                    plaintext=self.plaintext, shredded=self.shredded, unbound=self.unbound,
                    index_checked=self.index_checked, index_failed=self.index_failed)


@dataclass(frozen=True)
class _Layout:
    """Where one column's values are in a selected row, and its counters."""

    column: EncryptedColumn
    value_at: int
    index_at: int | None
    check: ColumnCheck
    pk: tuple[str, ...]
    binding_at: tuple[int, ...] = ()   # positions of the row's binding values


@dataclass
class VerifyReport:
    columns: list[ColumnCheck]
    failures: list[Failure] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def failed(self) -> int:
        return sum(c.failed + c.plaintext + c.index_failed for c in self.columns)

    @property
    def checked(self) -> int:
        return sum(c.checked for c in self.columns)

    @property
    def shredded(self) -> int:
        return sum(c.shredded for c in self.columns)

    @property
    def ok(self) -> bool:
        return self.failed == 0

    def merge(self, other: VerifyReport) -> None:
        """Add a partial report (another range, another table) to this one."""
        mine = {c.label: c for c in self.columns}
        for c in other.columns:
            if c.label in mine:
                mine[c.label].add(c)
            else:
                self.columns.append(c)
                mine[c.label] = c
        room = MAX_LISTED - len(self.failures)
        self.failures.extend(other.failures[:max(0, room)])

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VerifyReport:
        """The report :meth:`to_dict` gave (what a worker process or queued task sends)."""
        cols = []
        for c in d["columns"]:
            c = dict(c)
            cols.append(ColumnCheck(c.pop("column"), **c))
        return cls(cols, [Failure(**f) for f in d["failures"]], d.get("elapsed", 0.0))

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checked": self.checked, "failed": self.failed,
                "shredded": self.shredded, "elapsed": round(self.elapsed, 3),
                "columns": [c.to_dict() for c in self.columns],
                "failures": [f.to_dict() for f in self.failures]}


#: Runs one table's primary key ranges and returns their merged partial report (ranges
#: one after another by default; :mod:`piiguard.rotation.workers` passes one that sends
#: them to worker processes).
VerifyRunner = Callable[[str, list[KeyRange]], "VerifyReport"]


def verify(guard: Any, *, table: str | None = None, batch_size: int = 1000,
           progress: Progress | None = None, workers: int = 1,
           runner: VerifyRunner | None = None) -> VerifyReport:
    """Decrypt every encrypted value the guard knows about; see the module docstring.

    With ``workers`` > 1 (and an integer primary key) each table is split into that many
    primary key ranges, run by ``runner`` (default: threads of this process)."""
    if guard.engine is None:
        raise ConfigurationError("the Guard is not bound to a database", operation="verify")
    if batch_size < 1 or workers < 1:
        raise ConfigurationError("batch_size and workers must be at least 1",
                                 operation="verify")
    progress = progress or NullProgress()
    engine = guard.engine
    started = time.perf_counter()
    report = VerifyReport([])
    for target in discover(guard, table=table):
        lite = Lite(target, engine)
        with engine.connect() as conn:
            total = conn.execute(lite.count(None)).scalar_one()
            bounds = conn.execute(lite.pk_bounds(None)).one() if target.int_pk else None
        progress.start(f"verify {target.name}", total)
        parts = split(bounds, workers)
        if runner is not None:
            part = runner(target.name, parts)
        elif len(parts) == 1:
            part = verify_range(guard, target.name, None, None, batch_size=batch_size,
                                progress=progress)
        else:
            with ThreadPoolExecutor(max_workers=len(parts),
                                    thread_name_prefix="piiguard-verify") as pool:
                part = VerifyReport([])
                futures = [pool.submit(verify_range, guard, target.name, k.lo, k.hi,
                                       batch_size=batch_size, progress=progress)
                           for k in parts]
                for fut in futures:
                    part.merge(fut.result())
        report.merge(part)
    report.elapsed = time.perf_counter() - started
    failed = report.failed
    guard.audit.emit("verify", outcome="error" if failed else "ok", count=report.checked,
                     table=table, error=f"{failed} value(s) failed" if failed else None)
    return report


def verify_range(guard: Any, table: str, lo: Any, hi: Any, *, batch_size: int,
                 progress: Progress) -> VerifyReport:
    """Check the rows of ``table`` with ``lo <= pk <= hi`` (``None``: unbounded): one
    partial report (no audit event; :func:`verify` emits it for the whole run)."""
    target = discover(guard, table=table)[0]
    engine = guard.engine
    lite = Lite(target, engine)
    npk = len(target.pk)
    names: list[str] = []
    layout: list[_Layout] = []
    report = VerifyReport([])
    for ec in target.columns:
        names.append(ec.name)
        ci = npk + len(names) - 1
        ii = None
        if ec.index_name:
            names.append(ec.index_name)
            ii = npk + len(names) - 1
        bat = []
        for n in ec.binding_names:
            names.append(n)
            bat.append(npk + len(names) - 1)
        check = ColumnCheck(ec.label)
        report.columns.append(check)
        layout.append(_Layout(ec, ci, ii, check, target.pk, tuple(bat)))
    last = None if lo is None else (lo - 1,)
    while True:
        with engine.connect() as conn:
            rows = conn.execute(lite.page(names, None, last=last, upto=hi,
                                          limit=batch_size)).all()
        if not rows:
            break
        last = tuple(rows[-1][:npk])
        for row in rows:
            for col in layout:
                _check(col, row, report)
        progress.advance(len(rows))
    return report


def _fail(report: VerifyReport, col: _Layout, row: Any, why: str) -> None:
    if len(report.failures) < MAX_LISTED:
        pk = col.pk
        report.failures.append(Failure(col.column.label, row_key(pk, row[:len(pk)]), why))


def _open_in_row(col: _Layout, row: Any, blob: bytes) -> bytes:
    """Plaintext of a row-bound value, opened with its own row's binding."""
    ec = col.column
    try:
        bound = ec.bound_row([row[i] for i in col.binding_at])
    except ConfigurationError:
        raise DecryptionError("decryption failed: the row's binding values are unreadable",
                              column=ec.label, operation="decrypt") from None
    plaintext = ec.cipher.decrypt_bound(blob, bound.binding, scope=bound.scope,
                                        strict=ec.strict_binding)
    if not is_bound(blob):
        col.check.unbound += 1
    return plaintext


def _check(col: _Layout, row: Any, report: VerifyReport) -> None:
    ec, ii, check = col.column, col.index_at, col.check
    stored = row[col.value_at]
    if stored is None:
        if ii is not None and row[ii] is not None:
            check.index_failed += 1
            _fail(report, col, row, "index set on a NULL value")
        return
    check.checked += 1
    blob = to_blob(stored)
    if blob is None:
        check.plaintext += 1
        _fail(report, col, row, "plaintext (not an envelope)")
        return
    try:
        if col.binding_at:
            plaintext = _open_in_row(col, row, blob)
        else:
            plaintext = ec.cipher.decrypt(blob)
    except KeyDestroyedError:
        check.shredded += 1
        return
    except KMSError:
        raise
    except DecryptionError as exc:
        check.failed += 1
        why = describe(exc)
        if col.binding_at:
            why += " (not this row's value: moved, copied or replayed, or tampered with)"
        _fail(report, col, row, why)
        return
    except PIIGuardError as exc:
        check.failed += 1
        _fail(report, col, row, describe(exc))
        return
    check.ok += 1
    if ii is None:
        return
    index = ec.index
    assert index is not None  # a column with a blind index column has a FieldIndex
    iv = row[ii]
    check.index_checked += 1
    if iv is None:
        check.index_failed += 1
        _fail(report, col, row, "index missing")
        return
    iv = bytes(iv)
    kid = int.from_bytes(index_key_bytes_of(iv), "big")
    try:
        expected = index.with_key(kid, plaintext.decode("utf-8"))
    except KMSError:
        raise
    except (UnknownKeyError, KeyDestroyedError, PIIGuardError) as exc:
        check.index_failed += 1
        _fail(report, col, row, "index: " + describe(exc))
        return
    if expected != iv:
        check.index_failed += 1
        _fail(report, col, row, "index mismatch")
