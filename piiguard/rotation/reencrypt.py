"""``reencrypt``: move rows from decrypt-only keys to the active ones, safely.

After ``keys rotate`` the old DEK is decrypt-only: every value under it still reads, new
writes use the new DEK. This job rewrites the old values under the active DEK of the
same scope, and recomputes blind index values made with a non-active index key (after
``keys rotate --kind index``) or missing, through the compare-and-swap batch engine of
:mod:`piiguard.rotation.batches`: a concurrent application write is never overwritten,
a killed run resumes where it stopped (the rows are the checkpoint), a second run
changes nothing, and ``dry_run`` reports the same counts without writing (it decrypts
too, so failures are counted the same).

Values of a row-bound column (``key_scope=``, ``bound_to=``) are opened with their row's
binding and resealed with it; envelopes written before row binding are *upgraded*
(resealed bound to the row they are in, counted as ``upgraded``), except that a
key-scoped one under another scope's key than its row's is a failure, never bound to
the wrong row. Values under a destroyed key (crypto-shredded) are left as they are and
counted as ``shredded``; values that fail to decrypt (tampered with, or moved, copied or
replayed between rows) are reported by ``table.column`` and row key, never by value, and
left untouched::

    report = reencrypt(guard, batch_size=1000, workers=2)
    report.updated, report.remaining, report.failures
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import and_

from piiguard.crypto.blind_index import index_key_bytes_of
from piiguard.crypto.envelope import (
    Opener,
    Sealer,
    encode_text,
    header_key_id,
    header_of,
    is_bound,
    key_bytes,
    key_bytes_of,
    key_id_bytes,
    to_blob,
)
from piiguard.crypto.padding import unpad
from piiguard.errors import (
    ConfigurationError,
    DecryptionError,
    KeyDestroyedError,
    KMSError,
    PIIGuardError,
    UnknownKeyError,
)
from piiguard.keys.cache import Entry
from piiguard.keys.notify import settle_wait
from piiguard.keys.table import ACTIVE, DECRYPT_ONLY, DESTROYED, RETIRED
from piiguard.rotation.batches import (
    BatchJob,
    Counts,
    Failure,
    RangeRunner,
    RowUpdate,
    TableReport,
    default_batch_size,
    describe,
    run_passes,
)
from piiguard.rotation.progress import NullProgress, Progress
from piiguard.rotation.sql import or_all
from piiguard.rotation.targets import EncryptedColumn, TableTarget, discover

__all__ = ["KeyPlan", "ReencryptReport", "reencrypt", "reencrypt_job"]


@dataclass
class ReencryptReport:
    """What :func:`reencrypt` did (or would do), by table."""

    tables: list[TableReport]
    dry_run: bool
    elapsed: float
    workers: int

    @property
    def updated(self) -> int:
        return sum(t.updated for t in self.tables)

    @property
    def values(self) -> int:
        return sum(t.values for t in self.tables)

    @property
    def failures(self) -> list[Failure]:
        return [f for t in self.tables for f in t.failures]

    @property
    def remaining(self) -> int:
        return sum(t.remaining for t in self.tables)

    @property
    def shredded(self) -> int:
        """Values under a destroyed key (erased on purpose), left as they are."""
        return sum(t.shredded for t in self.tables)

    @property
    def upgraded(self) -> int:
        """Values resealed bound to their row (written before row binding)."""
        return sum(t.upgraded for t in self.tables)

    @property
    def rows_per_second(self) -> float:
        return self.updated / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def ok(self) -> bool:
        """No failure and nothing left under an old key."""
        return not self.failures and self.remaining == 0

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "dry_run": self.dry_run, "elapsed": round(self.elapsed, 3),
                "workers": self.workers, "updated": self.updated, "values": self.values,
                "remaining": self.remaining, "shredded": self.shredded,
                "upgraded": self.upgraded,
                "rows_per_second": round(self.rows_per_second, 1),
                "tables": [t.to_dict() for t in self.tables]}


class KeyPlan:
    """Which keys are old (to move away from) and the scope of every DEK.

    Old DEKs are the decrypt-only and retired ones (destroyed ones cannot be read);
    old index keys are every index key that is not active (a destroyed index key's
    values are recomputed from the still readable ciphertext)."""

    def __init__(self, guard: Any) -> None:
        infos = guard.keys.keys()
        self.dek_scope = {k.id: k.scope for k in infos if k.kind == "dek"}
        self.old_deks = frozenset(k.id for k in infos if k.kind == "dek"
                                  and k.state in (DECRYPT_ONLY, RETIRED))
        self.old_index = frozenset(k.id for k in infos if k.kind == "index"
                                   and k.state != ACTIVE)
        self.destroyed_deks = frozenset(k.id for k in infos if k.kind == "dek"
                                        and k.state == DESTROYED)
        #: when the newest of the old keys stopped being active (None: none did)
        self.last_change = max((k.state_changed_at for k in infos
                                if k.state == DECRYPT_ONLY and k.state_changed_at), default=None)
        # The same, keyed by the 4 id bytes as they appear in stored values (hot path).
        self.old_deks_b = key_id_bytes(self.old_deks)
        self.old_index_b = key_id_bytes(self.old_index)
        self.dek_scope_b = {key_bytes(i): s for i, s in self.dek_scope.items()}
        self.destroyed_deks_b = key_id_bytes(self.destroyed_deks)

    def __repr__(self) -> str:
        return f"KeyPlan(old_deks={sorted(self.old_deks)}, old_index={sorted(self.old_index)})"


class _Read(NamedTuple):
    """A DEK loaded for reading and the opener prepared for one envelope header."""

    entry: Entry
    opener: Opener


class _Write(NamedTuple):
    """The active DEK of a scope and the sealer prepared for it (plain or padded)."""

    entry: Entry
    sealer: Sealer


class _Resealer:
    """Opens an envelope of one column and seals the same (padded) plaintext under the
    active DEK of a scope: the re-encryption hot path.

    The format is kept, so a padded value stays padded without an unpad/pad round
    trip (:meth:`~piiguard.crypto.envelope.Opener.open_prepared` /
    :meth:`~piiguard.crypto.envelope.Sealer.seal_prepared`); the associated data is the
    column's (the header changes with the key id, as it must). Keys come from the key
    manager's cache exactly as for :class:`~piiguard.field.FieldCipher`: expiry,
    ``max_uses`` and use counts hold. Errors are the cipher's: one opaque
    :class:`~piiguard.errors.DecryptionError` naming the column and key id."""

    __slots__ = ("clock", "ctx", "keys", "label", "max_uses", "reads", "writes")

    def __init__(self, keys: Any, cipher: Any) -> None:
        self.keys = keys
        self.ctx = cipher.ctx
        self.label = cipher.label
        self.clock = keys.clock
        self.max_uses = keys.limits.max_uses
        self.reads: dict[bytes, _Read] = {}                 # by envelope header
        self.writes: dict[tuple[str, bool, bool], _Write] = {}  # (scope, padded, bound)

    def begin_batch(self) -> None:
        """Drop cached keys whose cache entry expired: expiry is checked once a batch
        (a batch takes well under a second; the change bound is 1-2 s), and a key the
        key manager reloads or rotates is picked up at the next batch."""
        now = self.clock()
        for hdr, r in list(self.reads.items()):
            if now >= r.entry.expires:
                del self.reads[hdr]
        for k, w in list(self.writes.items()):
            if now >= w.entry.wexpires:
                del self.writes[k]

    def open(self, blob: bytes) -> Opener:
        """The opener of ``blob`` (its key loaded); ``opener.open_prepared(blob)`` gives
        the stored plaintext, still padded if the format says so."""
        hdr = header_of(blob)
        r = self.reads.get(hdr)
        if r is None:
            kid = header_key_id(hdr)
            try:
                entry = self.keys.read_entry(kid)
            except UnknownKeyError:
                raise DecryptionError("decryption failed: no data key with this id",
                                      column=self.label, key_id=kid,
                                      operation="decrypt") from None
            except PIIGuardError as exc:
                exc.with_column(self.label)  # names the column in place, keeps the cause
                raise
            r = self.reads[hdr] = _Read(entry, Opener(entry.key, hdr, self.ctx))
        return r.opener

    def seal(self, padded: bool, scope: str, data: bytes, binding: bytes = b"") -> bytes:
        """``data`` (as :meth:`open` gave it) sealed under the active DEK of ``scope``
        (bound to its row when ``binding`` is given)."""
        k = (scope, padded, bool(binding))
        w = self.writes.get(k)
        if w is None or w.entry.uses >= self.max_uses:
            entry = self.keys.write_entry(scope)
            w = self.writes[k] = _Write(entry, Sealer(entry.key, self.ctx, padded=padded,
                                                      bound=bool(binding)))
        w.entry.uses += 1
        return w.sealer.seal_prepared(data, binding)


@dataclass(frozen=True, slots=True)
class _ColumnPlan:
    """One encrypted column of a re-encryption job: where its values are in a selected
    row, and how they are resealed."""

    column: EncryptedColumn
    value_at: int               # position of the ciphertext in a selected row
    index_at: int | None        # position of the blind index (None: not searchable)
    resealer: _Resealer
    home_scope: str             # the column's own key scope (for DEKs of unknown scope)
    text_form: bool
    binding_at: tuple[int, ...]  # positions of the row's binding values (row-bound)


class _ReencryptJob(BatchJob):
    verb = "reencrypt"

    def __init__(self, guard: Any, target: TableTarget, plan: KeyPlan, **kw: Any) -> None:
        super().__init__(guard, target, **kw)
        self.plan = plan
        lite = self.lite
        conds = []
        self.cols: list[_ColumnPlan] = []
        for ec in target.columns:
            conds.append(lite.uses_deks(ec, plan.old_deks))
            ci = self.select(ec.name)
            ii = None
            if ec.index_name is not None:
                conds.append(lite.uses_index_keys(ec, plan.old_index))
                conds.append(lite.index_missing(ec, plan.destroyed_deks))
                ii = self.select(ec.index_name)
            if ec.binding_names:   # envelopes written before row binding: upgraded
                unbound = lite.is_unbound(ec)
                if plan.destroyed_deks:
                    unbound = and_(unbound, ~lite.uses_deks(ec, plan.destroyed_deks))
                conds.append(unbound)
            bat = tuple(self.select(n) for n in ec.binding_names)
            self.cols.append(_ColumnPlan(ec, ci, ii, _Resealer(guard.keys, ec.cipher),
                                         ec.cipher.scope, ec.text_form, bat))
        self.where = or_all(conds)

    def shredded_values(self) -> int:
        """Stored values under a destroyed DEK (erased), counted in SQL: the job never
        selects them, and reports them all."""
        destroyed = self.plan.destroyed_deks
        if not destroyed:
            return 0
        with self.engine.connect() as conn:
            return sum(conn.execute(self.lite.count(self.lite.uses_deks(ec, destroyed)))
                       .scalar_one() for ec in self.target.columns)

    def begin_batch(self) -> None:
        for col in self.cols:
            col.resealer.begin_batch()

    def work(self, row: Any, counts: Counts) -> RowUpdate | None:
        plan = self.plan
        old_deks = plan.old_deks_b
        dry = self.dry_run
        set_names: list[str] = []
        set_vals: list[Any] = []
        check_names: list[str] = []
        check_vals: list[Any] = []
        for col in self.cols:
            stored = row[col.value_at]
            if stored is None:
                continue
            ec = col.column
            blob = to_blob(stored)
            if blob is None:
                if ec.allow_plaintext:
                    counts.plaintext += 1
                else:
                    self.fail(counts, ec, row, "not an envelope")
                continue
            kid = key_bytes_of(blob)
            need_ct = kid in old_deks
            upgrade = bool(col.binding_at) and not is_bound(blob) \
                and kid not in plan.destroyed_deks_b
            ii = col.index_at
            if ii is not None:
                iv = row[ii]
                need_idx = (iv is None and kid not in plan.destroyed_deks_b) \
                    or (iv is not None and index_key_bytes_of(iv) in plan.old_index_b)
            elif not (need_ct or upgrade):
                continue
            else:
                need_idx = False
            if not (need_ct or need_idx or upgrade):
                continue
            try:
                binding, scope = b"", plan.dek_scope_b.get(kid, col.home_scope)
                if col.binding_at:
                    binding, scope = self._row_binding(col, row, kid, scope)
                rs = col.resealer
                opener = rs.open(blob)
                data = opener.open_prepared(blob, binding if opener.bound else b"")
                if need_ct or upgrade:
                    new: bytes | str | None = None
                    if not dry:
                        new = rs.seal(opener.padded, scope, data, binding)
                        if col.text_form:
                            new = encode_text(new)
                    set_names.append(ec.name)
                    set_vals.append(new)
                    check_names.append(ec.name)
                    check_vals.append(stored)
                    counts.values += 1
                    counts.upgraded += upgrade
                if need_idx and opener.padded:
                    data = unpad(data)
            except KMSError:
                raise  # the KMS is down or refuses: stop, nothing half-written
            except KeyDestroyedError:
                counts.shredded += 1
                self.stuck(counts, row)
                continue
            except PIIGuardError as exc:
                self.fail(counts, ec, row, describe(exc))
                continue
            if need_idx and ec.index_name is not None:
                idx = ec.compute_index(data.decode("utf-8"))
                if idx is not None and idx != row[ii]:
                    set_names.append(ec.index_name)
                    set_vals.append(idx)
                    if not need_ct:
                        check_names.append(ec.name)
                        check_vals.append(stored)
                    counts.indexes += 1
        if not set_names:
            return None
        return RowUpdate(set_names, set_vals, check_names, check_vals)

    def _row_binding(self, col: _ColumnPlan, row: Any, kid: bytes,
                     dek_scope: str) -> tuple[bytes, str]:
        """The binding bytes of a row-bound value's row and the scope to seal it in; a
        key-scoped value under another scope's DEK than its row's is refused (moved or
        swapped between subjects: never bound to the wrong row)."""
        bound = col.column.bound_row([row[i] for i in col.binding_at])
        if bound.scope is not None and dek_scope != bound.scope:
            raise DecryptionError("decryption failed: the envelope's key belongs to another "
                                  "key scope than its row's", column=col.column.label,
                                  key_id=int.from_bytes(kid, "big"), operation="decrypt")
        return bound.binding, bound.scope or dek_scope


def reencrypt(guard: Any, *, table: str | None = None, batch_size: int | None = None,
              dry_run: bool = False, workers: int = 1, progress: Progress | None = None,
              max_passes: int = 5, max_rate: float | None = None,
              runner: RangeRunner | None = None) -> ReencryptReport:
    """Move every value under a decrypt-only DEK to the active DEK of its scope and
    recompute blind index values made with a non-active index key.

    - ``table``: only this table (default: every table with an encrypted column).
    - ``batch_size``: rows per SELECT / executemany / transaction (default
      :func:`~piiguard.rotation.batches.default_batch_size`: 5,000 on SQLite, 1,000
      elsewhere).
    - ``dry_run``: count (and decrypt) without writing.
    - ``workers``: threads, each on its own primary key range (integer keys; other keys
      run in one worker). On PostgreSQL rows are taken ``FOR UPDATE SKIP LOCKED``, so
      jobs on several hosts can run at once.
    - ``max_passes``: passes to pick up rows that lost a compare-and-swap.
    - ``max_rate``: at most this many rows a second (to spare a production database).
    - ``runner``: who runs a pass's ranges (default: threads of this process;
      :func:`piiguard.rotation.workers.run_job` runs them in worker processes).

    Emits one ``reencrypt`` audit event per table.
    """
    if guard.engine is None:
        raise ConfigurationError("the Guard is not bound to a database",
                                 operation="reencrypt")
    if batch_size is None:
        batch_size = default_batch_size(guard.engine)
    if batch_size < 1 or workers < 1 or max_passes < 1:
        raise ConfigurationError("batch_size, workers and max_passes must be at least 1",
                                 operation="reencrypt")
    engine = guard.engine
    if workers > 1 and engine.dialect.name == "sqlite" \
            and engine.url.database in (None, "", ":memory:"):
        workers = 1  # an in-memory database lives in one connection: nothing to share
    progress = progress or NullProgress()
    targets = discover(guard, table=table)
    plan = KeyPlan(guard)
    if not dry_run:
        # Right after `keys rotate`, a process that has not heard of it yet may still
        # write (or search) with the old key: wait until every process heard (the
        # change bound), so that the passes below leave nothing behind and no lookup
        # misses a row already moved to the new index key.
        time.sleep(settle_wait(guard.keys.change_bound, plan.last_change,
                               guard.keys.wall_now()))
    stop = threading.Event()
    reports: list[TableReport] = []
    started = time.perf_counter()
    for target in targets:
        job = _ReencryptJob(guard, target, plan, batch_size=batch_size, dry_run=dry_run,
                            progress=progress, max_rate=max_rate and max_rate / workers,
                            stop=stop)
        rep = run_passes(job, workers=workers, max_passes=max_passes, progress=progress,
                         runner=runner)
        rep.shredded = job.shredded_values()
        reports.append(rep)
        guard.audit.emit("reencrypt", outcome="error" if rep.failures else "ok",
                         table=target.name, count=rep.updated, rows=rep.candidates,
                         reason="dry-run" if dry_run else None,
                         error=f"{len(rep.failures)} value(s) failed" if rep.failures
                         else None)
    if not dry_run:
        guard.keys.flush()  # record the new DEK's use count in the key table
    return ReencryptReport(reports, dry_run, time.perf_counter() - started, workers)


def reencrypt_job(guard: Any, table: str, *, batch_size: int, dry_run: bool,
                  progress: Progress, max_rate: float | None,
                  stop: threading.Event) -> BatchJob:
    """The re-encryption job of one table, with the key plan as the key table says now
    (what a worker process or a queued task runs a range of)."""
    target = discover(guard, table=table)[0]
    return _ReencryptJob(guard, target, KeyPlan(guard), batch_size=batch_size,
                         dry_run=dry_run, progress=progress, max_rate=max_rate, stop=stop)
