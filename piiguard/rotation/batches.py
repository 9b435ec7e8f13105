"""The batch engine the row-rewriting jobs share (``reencrypt``, ``encrypt-existing``).

A job says which rows need work (a SQL predicate) and what the new values of one row are
(:meth:`BatchJob.work`); the engine does the rest, the same way for every job:

1. ``SELECT pk, columns … WHERE <needs work> AND pk > :last [AND pk <= :upto]
   ORDER BY pk LIMIT n`` (keyset paging; ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so
   workers on one or several hosts never wait on, or redo, each other's rows);
2. compute the new values in Python;
3. one ``UPDATE … SET col = :new WHERE pk = :pk AND col = :old`` per row, sent as one
   executemany in the batch's transaction: a compare-and-swap. A row the application
   wrote since step 1 does not match, is left as the application wrote it, and is
   counted as a conflict; the next pass picks it up if it still needs work.

No checkpoint is stored anywhere: the rows are the checkpoint, so a killed run starts
again and finds only what is left, and a run with nothing left changes nothing. Passes
repeat while the previous pass changed something or lost a swap (``max_passes``).
Several workers split an integer primary key into ranges; correctness never depends on
the split (every write is a compare-and-swap).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any, NamedTuple

from sqlalchemy.exc import DataError, DBAPIError, OperationalError

from piiguard.errors import ConfigurationError, PIIGuardError
from piiguard.rotation.progress import Progress
from piiguard.rotation.sql import Lite
from piiguard.rotation.targets import EncryptedColumn, TableTarget, row_key

__all__ = [
    "BatchJob",
    "Counts",
    "Failure",
    "KeyRange",
    "RangeRunner",
    "RowUpdate",
    "TableReport",
    "default_batch_size",
    "describe",
    "run_in_threads",
    "run_passes",
    "split",
]


def default_batch_size(engine: Any) -> int:
    """Rows per batch when none is given: 5,000 on SQLite (every commit is a disk sync
    and there are no row locks to hold), 1,000 elsewhere (shorter row locks).

    >>> from sqlalchemy import create_engine
    >>> default_batch_size(create_engine("sqlite://"))
    5000
    """
    return 5000 if engine.dialect.name == "sqlite" else 1000


@dataclass(frozen=True)
class Failure:
    """A value a job could not handle: where it is and why, never what it is."""

    column: str
    row: str
    error: str

    def to_dict(self) -> dict[str, str]:
        return {"column": self.column, "row": self.row, "error": self.error}


def describe(exc: BaseException) -> str:
    """``ErrorClass: message`` (piiguard messages carry no values; others are named by
    class only, since a driver's message may quote a value)."""
    return f"{type(exc).__name__}: {exc}" if isinstance(exc, PIIGuardError) \
        else type(exc).__name__


@dataclass
class TableReport:
    """What a job did to one table (or would do, with ``dry_run``)."""

    table: str
    candidates: int = 0     # rows selected as needing work (every pass)
    updated: int = 0        # rows rewritten: the compare-and-swap matched
    values: int = 0         # ciphertexts written (re-encrypted or newly encrypted)
    indexes: int = 0        # blind index values (re)computed
    conflicts: int = 0      # rows a concurrent write got to first (left as written)
    shredded: int = 0       # values under a destroyed key, left as they are
    plaintext: int = 0      # values not encrypted yet (reencrypt leaves them)
    upgraded: int = 0       # values resealed bound to their row (reencrypt)
    passes: int = 0
    remaining: int = 0      # rows that still need work when the job stopped
    failures: list[Failure] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"table": self.table, "candidates": self.candidates,
                "updated": self.updated, "values": self.values, "indexes": self.indexes,
                "conflicts": self.conflicts, "shredded": self.shredded,
                "plaintext": self.plaintext, "upgraded": self.upgraded,
                "passes": self.passes,
                "remaining": self.remaining,
                "failures": [f.to_dict() for f in self.failures]}


class RowUpdate(NamedTuple):
    """The new values of one row (what :meth:`BatchJob.work` returns): the columns to
    set and their new values, and the columns whose stored values were read with those
    values (compared in the UPDATE's WHERE: the compare-and-swap)."""

    sets: list[str]
    values: list[Any]
    checks: list[str]
    olds: list[Any]


class _CasShape(NamedTuple):
    """Which columns a compare-and-swap UPDATE sets and checks: rows of one shape share
    one statement (one executemany)."""

    sets: tuple[str, ...]
    checks: tuple[str, ...]


class KeyRange(NamedTuple):
    """Primary key bounds of one worker, both inclusive (``None``: unbounded)."""

    lo: Any
    hi: Any


class _Page(NamedTuple):
    """What one batch saw: how many rows, and the primary key of the last one (where
    the next batch starts)."""

    rows: int
    last: Any


class Counts:
    """Counters of one batch, range or pass (merged with :meth:`add`)."""

    __slots__ = (
        "candidates",
        "conflicts",
        "failures",
        "indexes",
        "plaintext",
        "shredded",
        "stuck",
        "updated",
        "upgraded",
        "values",
    )

    _NUMBERS = ("candidates", "updated", "values", "indexes", "conflicts", "shredded",
                "plaintext", "upgraded")

    def __init__(self) -> None:
        self.candidates = self.updated = self.values = self.indexes = 0
        self.conflicts = self.shredded = self.plaintext = self.upgraded = 0
        self.failures: list[Failure] = []
        self.stuck: set[str] = set()  # rows selected that no pass can change

    def add(self, other: Counts) -> None:
        for name in self._NUMBERS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.failures.extend(other.failures)
        self.stuck |= other.stuck

    def to_dict(self) -> dict[str, Any]:
        """Plain data (what a worker process or a queued task sends back).

        >>> c = Counts(); c.updated = 3; Counts.from_dict(c.to_dict()).updated
        3
        """
        d: dict[str, Any] = {name: getattr(self, name) for name in self._NUMBERS}
        d["failures"] = [f.to_dict() for f in self.failures]
        d["stuck"] = sorted(self.stuck)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Counts:
        c = cls()
        for name in cls._NUMBERS:
            setattr(c, name, int(d.get(name, 0)))
        c.failures = [Failure(**f) for f in d.get("failures", ())]
        c.stuck = set(d.get("stuck", ()))
        return c


class BatchJob:
    """One table's job: subclasses set :attr:`where` and implement :meth:`work`.

    ``names`` are the columns selected after the primary key (so ``row[npk + i]`` is
    ``names[i]``)."""

    #: Verb shown on the progress bar.
    verb = "process"

    def __init__(self, guard: Any, target: TableTarget, *, batch_size: int, dry_run: bool,
                 progress: Progress, max_rate: float | None, stop: threading.Event) -> None:
        self.engine = guard.engine
        self.target = target
        self.lite = Lite(target, self.engine)
        self.npk = len(target.pk)
        self.batch_size = batch_size
        self.dry_run = dry_run
        self.progress = progress
        self.max_rate = max_rate
        self.stop = stop
        self.names: list[str] = []
        self.where: Any = None
        #: Called inside each batch's transaction with the connection and the batch's
        #: counts, after its compare-and-swap updates and before the commit: a queued job
        #: adds the counts to its job row there, so they commit exactly when the rows do
        #: (a killed worker's lost batch counts nothing).
        self.on_batch: Callable[[Any, Counts], None] | None = None

    def select(self, name: str) -> int:
        """Add ``name`` to the selected columns; returns its position in a row."""
        self.names.append(name)
        return self.npk + len(self.names) - 1

    def work(self, row: Any, counts: Counts) -> RowUpdate | None:
        """The new values of one row, or ``None`` when it needs nothing."""
        raise NotImplementedError

    def begin_batch(self) -> None:
        """Called before each batch's rows are worked on (refresh per-batch caches)."""


    def fail(self, counts: Counts, ec: EncryptedColumn, row: Any, why: str) -> None:
        rk = row_key(self.target.pk, row[:self.npk])
        counts.failures.append(Failure(ec.label, rk, why))
        counts.stuck.add(rk)

    def stuck(self, counts: Counts, row: Any) -> None:
        counts.stuck.add(row_key(self.target.pk, row[:self.npk]))

    # -- the loop ---------------------------------------------------------------------------
    def run_range(self, lo: Any, hi: Any) -> Counts:
        """Process the rows with ``lo <= pk <= hi`` (``None``: unbounded), batch by batch."""
        counts = Counts()
        last = None if lo is None else (lo - 1,)
        started = time.perf_counter()
        done = 0
        retries = 0
        while not self.stop.is_set():
            batch = Counts()
            try:
                page = self._batch(last, hi, batch)
            except OperationalError as exc:
                # Lock timeout / deadlock: the batch's transaction rolled back, its rows
                # still need work; retry a few times, then give up loudly.
                if exc.connection_invalidated or retries >= 5:
                    raise self._db_error(exc) from None
                retries += 1
                time.sleep(0.05 * retries)
                continue
            except DBAPIError as exc:
                raise self._db_error(exc) from None
            retries = 0
            counts.add(batch)
            if page.rows == 0:
                break
            last = page.last
            self.progress.advance(page.rows)
            done += page.rows
            if self.max_rate:
                ahead = done / self.max_rate - (time.perf_counter() - started)
                if ahead > 0:
                    time.sleep(ahead)
        return counts

    def _db_error(self, exc: DBAPIError) -> PIIGuardError:
        """A value-free error for a database failure: SQLAlchemy's message lists the
        statement's parameters (old plaintext during encrypt-existing), and a driver's
        message may quote a value, so only the error class and code are kept."""
        orig = exc.orig
        code = getattr(orig, "sqlstate", None) or (getattr(orig, "args", None) or [None])[0]
        what = type(orig).__name__ + (f" {code}" if isinstance(code, (int, str)) and code
                                      else "")
        where = self.target.name
        if isinstance(exc, DataError):
            return ConfigurationError(f"the database refused a value in {where} ({what}): "
                                      "is each column wide enough for envelopes?",
                                      operation=self.verb)
        return PIIGuardError(f"database error in {where} ({what}); the batch was rolled "
                             "back, run the job again", operation=self.verb)

    def _batch(self, last: Any, hi: Any, counts: Counts) -> _Page:
        """One transaction: select up to ``batch_size`` rows, compute, compare-and-swap."""
        lite = self.lite
        npk = self.npk
        with self.engine.begin() as conn:
            rows = conn.execute(lite.page(self.names, self.where, last=last, upto=hi,
                                          limit=self.batch_size,
                                          lock=not self.dry_run)).all()
            if not rows:
                return _Page(0, last)
            counts.candidates += len(rows)
            # Driver parameters (*new values, *primary key, *old values) by statement.
            groups: dict[_CasShape, list[tuple[Any, ...]]] = {}
            exact = lite.exact_param if lite.mysql else None
            work = self.work
            self.begin_batch()
            for row in rows:
                u = work(row, counts)
                if u is None:
                    continue
                olds = u.olds if exact is None else [exact(v) for v in u.olds]
                shape = _CasShape(tuple(u.sets), tuple(u.checks))
                params = (*u.values, *row[:npk], *olds)
                group = groups.get(shape)
                if group is None:
                    groups[shape] = [params]
                else:
                    group.append(params)
            attempted = sum(len(p) for p in groups.values())
            if self.dry_run:
                counts.updated += attempted
            else:
                changed = 0
                for shape, group_params in groups.items():
                    changed += lite.run_cas(conn, shape.sets, shape.checks, group_params)
                counts.updated += changed
                counts.conflicts += attempted - changed
            if self.on_batch is not None:
                self.on_batch(conn, counts)
        return _Page(len(rows), tuple(rows[-1][:npk]))

    def partitions(self, workers: int) -> list[KeyRange]:
        """Primary key ranges for ``workers`` (one unbounded range if the key is not a
        single integer column, or there is one worker)."""
        if workers <= 1 or not self.target.int_pk:
            return [KeyRange(None, None)]
        with self.engine.connect() as conn:
            return split(conn.execute(self.lite.pk_bounds(self.where)).one(), workers)

    def todo(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(self.lite.count(self.where)).scalar_one()


def split(bounds: Any, workers: int) -> list[KeyRange]:
    """``workers`` primary key ranges covering ``bounds`` = (min, max) (one unbounded
    range without bounds or with one worker).

    >>> split((1, 10), 3)
    [KeyRange(lo=1, hi=4), KeyRange(lo=5, hi=8), KeyRange(lo=9, hi=10)]
    >>> split((None, None), 3), split((1, 10), 1)
    ([KeyRange(lo=None, hi=None)], [KeyRange(lo=None, hi=None)])
    """
    if workers <= 1 or bounds is None or bounds[0] is None:
        return [KeyRange(None, None)]
    lo, hi = bounds
    step = -(-(hi - lo + 1) // workers)
    return [KeyRange(a, min(a + step - 1, hi)) for a in range(lo, hi + 1, step)]


#: Runs one pass's primary key ranges of a job and returns their merged counts (threads
#: in this process by default; :mod:`piiguard.rotation.workers` passes one that sends
#: the ranges to worker processes).
RangeRunner = Callable[[BatchJob, list[KeyRange]], Counts]


def run_in_threads(job: BatchJob, parts: list[KeyRange]) -> Counts:
    """The default :data:`RangeRunner`: one thread a range (one range: this thread)."""
    out = Counts()
    if len(parts) == 1:
        out.add(job.run_range(parts[0].lo, parts[0].hi))
        return out
    with ThreadPoolExecutor(max_workers=len(parts),
                            thread_name_prefix="piiguard-job") as pool:
        futures = [pool.submit(job.run_range, part.lo, part.hi) for part in parts]
        try:
            for fut in futures:
                out.add(fut.result())
        except BaseException:
            job.stop.set()
            raise
    return out


def run_passes(job: BatchJob, *, workers: int, max_passes: int,
               progress: Progress, runner: RangeRunner | None = None) -> TableReport:
    """Run ``job`` pass after pass until nothing is left that a pass can change."""
    rep = TableReport(job.target.name)
    total = Counts()
    last_pass = Counts()
    for _ in range(max_passes):
        todo = job.todo()
        if todo == 0 or (rep.passes and todo <= len(last_pass.stuck)):
            break
        rep.passes += 1
        verb = "count" if job.dry_run else job.verb
        suffix = f" (pass {rep.passes})" if rep.passes > 1 else ""
        progress.start(f"{verb} {job.target.name}{suffix}", todo)
        last_pass = (runner or run_in_threads)(job, job.partitions(workers))
        total.add(last_pass)
        if job.dry_run or (last_pass.updated == 0 and last_pass.conflicts == 0):
            break
    for name in ("candidates", "updated", "values", "indexes", "conflicts", "upgraded"):
        setattr(rep, name, getattr(total, name))
    rep.shredded, rep.plaintext = last_pass.shredded, last_pass.plaintext
    rep.failures = last_pass.failures
    if not job.dry_run:
        rep.remaining = max(0, job.todo() - len(last_pass.stuck))
    return rep
