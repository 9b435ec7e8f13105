"""``piiguard keys epoch``: close an erasure epoch, so that erasures reach every copy.

``shred`` destroys a scope's keys in the live key table at once. A copy of the database
taken before it (a backup, a dump, a replica, WAL/redo logs, old heap pages) still holds
those keys, wrapped under a KEK that the KMS can still unwrap. Closing the epoch ends
that:

1. a new master key (LocalKMS: created in the key file; AwsKMS: the one you name) and a
   new KEK under it;
2. every surviving key rewrapped locally under the new KEK (format-1 keys through the
   KMS, once), in the key table only: no data row changes;
3. every older KEK destroyed (its row deleted: nothing of it stays in the live table);
4. every older master key retired: LocalKMS removes it from the key file (atomic
   rewrite, mode 0600); AwsKMS schedules its deletion (``ScheduleKeyDeletion``, 7 to 30
   days pending; the key is ``PendingDeletion``, so refused, at once);
5. the receipts of the erasures made before it completed (``erasure.complete`` audit
   events), and an ``epoch.close`` event.

After it, a copy taken before any erasure in the closed epoch holds keys wrapped under a
KEK that is wrapped under a retired master key: nothing alive can unwrap them. Refused
(nothing destroyed) when a key could not be rewrapped. Irreversible: the CLI asks for
confirmation (``--yes``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from piiguard.errors import ConfigurationError, KeyStateError
from piiguard.keys.hierarchy import kek_id_of
from piiguard.rotation.progress import NullProgress, Progress

__all__ = ["EpochReport", "close_epoch"]


@dataclass
class EpochReport:
    """What :func:`close_epoch` did (no personal data: ids, counts, times)."""

    epoch: int
    master_key_id: str
    rewrapped: int
    destroyed_keks: list[int] = field(default_factory=list)
    retired_master_keys: list[dict[str, str]] = field(default_factory=list)
    completed: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": True, "epoch": self.epoch, "master_key_id": self.master_key_id,
                "rewrapped": self.rewrapped, "destroyed_keks": self.destroyed_keks,
                "retired_master_keys": self.retired_master_keys,
                "completed_erasures": self.completed, "notes": self.notes}


def _new_master(guard: Any, new_master_key: str | None) -> str:
    from piiguard.kms.local import LocalKMS

    kms = guard.kms
    if isinstance(kms, LocalKMS):
        if new_master_key is not None:
            raise ConfigurationError("LocalKMS makes the new master key itself",
                                     operation="epoch")
        return kms.add_master_key(make_current=True)
    if not new_master_key:
        raise ConfigurationError("an erasure epoch needs a new master key: create one in "
                                 "the KMS and pass it (--new-master-key)", operation="epoch")
    resolve = getattr(kms, "resolve_key_id", None)
    dest = resolve(new_master_key) if resolve is not None else new_master_key
    if dest == kms.master_key_id:
        raise ConfigurationError("the new master key must differ from the current one",
                                 key_id=dest, operation="epoch")
    kms.master_key_id = dest
    return str(dest)


def _retire(guard: Any, master_key_id: str, pending_days: int) -> dict[str, str]:
    kms = guard.kms
    remove = getattr(kms, "remove_master_key", None)
    if remove is not None:
        if master_key_id in kms.key_ids:
            remove(master_key_id)
        return {"key_id": master_key_id, "state": "removed from the key file"}
    schedule = getattr(kms, "schedule_key_deletion", None)
    if schedule is None:
        raise ConfigurationError("this KMS cannot retire a master key; retire it yourself",
                                 key_id=master_key_id, operation="epoch")
    return dict(schedule(master_key_id, pending_days))


def close_epoch(guard: Any, *, new_master_key: str | None = None, pending_days: int = 30,
                progress: Progress | None = None) -> EpochReport:
    """Close the current erasure epoch (see the module docstring); returns the report.

    ``new_master_key``: AwsKMS only, the KMS key the new KEK is wrapped under (it must
    exist). ``pending_days``: AwsKMS's deletion waiting period for the old master keys
    (7 to 30)."""
    if guard.engine is None:
        raise ConfigurationError("the Guard is not bound to a database", operation="epoch")
    if not 7 <= pending_days <= 30:
        raise ConfigurationError("the pending window must be 7 to 30 days", operation="epoch")
    progress = progress or NullProgress()
    keys = guard.keys
    store = keys.store
    old_masters = {k.master_key_id for k in keys.keys(kind="kek")}
    old_masters |= {k.master_key_id for k in keys.keys()
                    if kek_id_of(k.master_key_id) is None and k.state != "destroyed"}
    dest = _new_master(guard, new_master_key)
    new_kek = keys.hierarchy.rotate_kek()
    progress.start("rewrap keys under the new KEK", None)
    rewrapped = keys.hierarchy.adopt(progress=progress.advance)
    left = store.locally_wrapped_outside(new_kek.id, 1)
    if left:
        raise KeyStateError("a key could not be rewrapped under the new KEK; nothing was "
                            "destroyed (run verify)", key_id=left[0].id, operation="epoch")
    report = EpochReport(new_kek.id, dest, rewrapped)
    for row in keys.hierarchy.old_keks():
        store.delete_row(row.id)
        report.destroyed_keks.append(row.id)
        guard.audit.emit("key.destroy", key_id=row.id, kind="kek", reason="epoch")
    keys.hierarchy.forget()
    for master in sorted(old_masters - {dest}):
        report.retired_master_keys.append(_retire(guard, master, pending_days))
    now = keys.wall_now()
    for tomb in store.complete_tombstones(report.destroyed_keks, now):
        if tomb.kind != "dek":
            continue        # one receipt a scope (its tombstones share the epoch)
        done = {"scope": tomb.scope, "erased_at": tomb.created_at.isoformat(),
                "epoch": kek_id_of(tomb.master_key_id), "status": "complete",
                "completed_at": now.isoformat()}
        report.completed.append(done)
        guard.audit.emit("erasure.complete", scope=tomb.scope, epoch=done["epoch"],
                         erased_at=done["erased_at"], completed_at=done["completed_at"],
                         status="complete")
    guard.audit.emit("epoch.close", epoch=new_kek.id, master_key_id=dest,
                     count=len(report.destroyed_keks),
                     retired_master_key_ids=[m["key_id"] for m in report.retired_master_keys])
    report.notes.append("copies of the database taken before this epoch can no longer be "
                        "decrypted once the retired master keys are gone (LocalKMS: now, "
                        "unless a copy of the old key file survives; AWS: PendingDeletion "
                        "refuses every use now, deletion at the date shown)")
    return report
