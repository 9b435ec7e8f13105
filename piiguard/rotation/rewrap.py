"""``keys rotate-master``: rewrap every key the KMS wraps under a new master key.

Only the key table changes: each key-encryption key (and each key of key-table format 1,
still wrapped by the KMS directly) is rewrapped (KMS ``ReEncrypt`` for AWS, unwrap + wrap
in memory for the local key file) and its row records the new master key id. Data, index
and pseudonym keys wrapped locally under a KEK are not touched: a handful of KMS calls,
whatever the number of subjects. No data row is read or written. Resumable: rows already under the
destination master key are skipped, so an interrupted run is simply run again.

With :class:`~piiguard.kms.local.LocalKMS`, ``to="new"`` creates a master key in the key
file and makes it current (new DEKs are wrapped under it at once); ``disable_old=True``
disables the previous master keys in the key file once nothing uses them any more, so
the test "everything still decrypts with the old master key disabled" is one flag away.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sqlalchemy import func, select

from piiguard.errors import ConfigurationError, UnknownKeyError
from piiguard.rotation.progress import NullProgress, Progress

__all__ = ["RewrapReport", "rotate_master"]


@dataclass
class RewrapReport:
    """What ``rotate_master`` did."""

    destination: str
    created: bool
    rewrapped: int
    remaining: int
    previous: list[str] = field(default_factory=list)
    disabled: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.remaining == 0

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "destination": self.destination, "created": self.created,
                "rewrapped": self.rewrapped, "remaining": self.remaining,
                "previous": self.previous, "disabled": self.disabled, "notes": self.notes}


def _is_local(kms: Any) -> bool:
    from piiguard.kms.local import LocalKMS

    return isinstance(kms, LocalKMS)


class _Pending(NamedTuple):
    """Wrapped keys not under the destination master key yet, and the master keys they
    are under."""

    keys: int
    masters: list[str]


def _pending(guard: Any, dest: str) -> _Pending:
    t = guard.keys.table
    # Keys wrapped locally under a KEK (master_key_id "kek:<id>") move with their KEK.
    cond = (t.c.master_key_id != dest, t.c.wrapped_key.is_not(None),
            t.c.master_key_id.not_like("kek:%"))
    with guard.engine.connect() as conn:
        n = conn.execute(select(func.count()).select_from(t).where(*cond)).scalar_one()
        masters = list(conn.execute(select(t.c.master_key_id).where(*cond).distinct())
                       .scalars())
    return _Pending(n, sorted(masters))


def _disable_unused(guard: Any, kms: Any, dest: str) -> list[str]:
    """Disable every enabled master key of the key file other than ``dest`` that no key
    row names (not only those this run moved away from: after an interrupted run, or
    with ``--to`` the current key, those are none)."""
    t = guard.keys.table
    with guard.engine.connect() as conn:
        used = set(conn.execute(select(t.c.master_key_id).where(
            t.c.wrapped_key.is_not(None)).distinct()).scalars())
    disabled = []
    for kid in sorted(kms.key_ids):
        if kid != dest and kid not in kms.disabled and kid not in used:
            kms.disable(kid)
            disabled.append(kid)
    return disabled


def rotate_master(guard: Any, to: str, *, disable_old: bool = False,
                  progress: Progress | None = None) -> RewrapReport:
    """Rewrap every wrapped key in the guard's key table under master key ``to``.

    ``to`` is a master key id (LocalKMS key id, AWS key id/ARN/alias) or, for LocalKMS
    with a key file, ``"new"`` to create one. Emits one ``key.rewrap`` audit event per
    key. Raises :class:`~piiguard.errors.KMSError` if the KMS refuses (nothing is half
    written: each key row is updated in its own transaction, and only if it is still
    under the master key it was read with).
    """
    if guard.engine is None:
        raise ConfigurationError("the Guard is not bound to a database",
                                 operation="rotate-master")
    progress = progress or NullProgress()
    kms = guard.kms
    local = _is_local(kms)
    created = False
    notes: list[str] = []
    if not to:
        raise ConfigurationError("rotate-master needs a destination master key",
                                 operation="rotate-master")
    if to == "new":
        if not local:
            raise ConfigurationError("--to new creates a key only in a local key file; "
                                     "create the AWS KMS key first and pass its id",
                                     operation="rotate-master")
        if kms.path is None:
            raise ConfigurationError("this LocalKMS has no key file: a new master key "
                                     "would be lost", operation="rotate-master")
        dest = kms.add_master_key()
        created = True
    elif local:
        if to not in kms.key_ids:
            raise UnknownKeyError("unknown master key", key_id=to, operation="rotate-master")
        dest = to
    else:
        resolve = getattr(kms, "resolve_key_id", None)
        dest = resolve(to) if resolve is not None else to
    if local:
        if dest in kms.disabled:
            kms.enable(dest)
        kms.set_current(dest)  # new DEKs are wrapped under the new master key from now on
    else:
        kms.master_key_id = dest
        notes.append("point the application's KMS configuration at the new master key "
                     "so that new data keys are created under it")
    before = _pending(guard, dest)
    previous = before.masters
    progress.start("rewrap keys", before.keys)
    done = guard.keys.rewrap(dest, progress=progress.advance)
    remaining = _pending(guard, dest).keys
    disabled: list[str] = []
    if disable_old:
        if not local:
            notes.append("disable the previous master key in AWS KMS yourself "
                         "(piiguard never changes a KMS key's state)")
        elif remaining:
            notes.append(f"--disable-old: nothing disabled, {remaining} key(s) are still "
                         "under an old master key; run rotate-master again")
        else:
            disabled = _disable_unused(guard, kms, dest)
            if not disabled:
                notes.append("--disable-old: nothing to disable, the key file has no "
                             f"enabled master key other than {dest}")
    return RewrapReport(dest, created, done, remaining, previous, disabled, notes)
