"""The CLI of the key hierarchy and of erasures: ``piiguard keys adopt-kek``, ``keys
epoch`` and ``keys reopen`` (registered on the ``keys`` command group by ``cli.py``).

- ``keys adopt-kek``: keys of key-table format 1 (wrapped by the KMS directly) move under
  the active KEK.
- ``keys epoch``: closes the erasure epoch (:mod:`piiguard.rotation.epoch`): afterwards
  no copy of the database taken before it decrypts the scopes erased before it.
  Irreversible: asks for confirmation unless ``--yes``.
- ``keys reopen --scope``: re-opens an erased scope (audited ``scope.reopen``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

from piiguard._console import failed

__all__ = ["add_key_commands"]


def add_key_commands(keys_app: typer.Typer, state: Callable[[typer.Context], Any],
                     command: Callable[[Callable[..., None]], Callable[..., None]]) -> None:
    """Register the commands on ``keys_app``; ``state(ctx)`` gives the CLI's state (the
    Guard, output, confirmation), ``command`` wraps a command's errors and exit codes."""
    @keys_app.command("adopt-kek")
    @command
    def keys_adopt_kek(ctx: typer.Context) -> None:
        """Move every key still wrapped by the KMS directly (key-table format 1), or under an
        older KEK, under the active KEK: one KMS call per format-1 key, once. Resumable."""
        st = state(ctx)
        guard = st.guard()
        with st.progress() as bar:
            bar.start("adopt keys", None)
            moved = guard.keys.hierarchy.adopt(progress=bar.advance)
        kek = guard.keys.hierarchy.active_kek()
        left = len(guard.keys.store.locally_wrapped_outside(kek.id, 1000))
        if st.json:
            st.emit({"ok": left == 0, "moved": moved, "remaining": left})
        else:
            st.out.print(f"{moved:,} key(s) moved under the active KEK; {left:,} could not "
                         "be unwrapped (run verify)" if left else
                         f"{moved:,} key(s) moved under the active KEK")
        if left:
            raise failed()


    @keys_app.command("epoch")
    @command
    def keys_epoch(ctx: typer.Context,
                   new_master_key: Annotated[str | None, typer.Option(
                       "--new-master-key", help="AWS KMS: the (existing) key the new KEK is "
                                                "wrapped under. LocalKMS creates one.")] = None,
                   pending_days: Annotated[int, typer.Option(
                       "--pending-days", min=7, max=30,
                       help="AWS KMS: deletion waiting period of the old master keys.")] = 30,
                   yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False
                   ) -> None:
        """Close the erasure epoch: new KEK under a new master key, every key rewrapped,
        old KEKs destroyed, old master keys retired. Afterwards no copy of the database taken
        before it (backups, dumps, WAL) can decrypt the scopes erased before it."""
        from piiguard.rotation.epoch import close_epoch

        st = state(ctx)
        guard = st.guard()
        st.confirm(yes, "Close the erasure epoch? Old master keys are retired for good: "
                        "copies of the database taken before now can no longer be decrypted.")
        with st.progress() as bar:
            report = close_epoch(guard, new_master_key=new_master_key,
                                 pending_days=pending_days, progress=bar)
        if st.json:
            st.emit(report.to_dict())
            return
        st.out.print(f"epoch {report.epoch} open under master key {report.master_key_id}; "
                     f"{report.rewrapped:,} key(s) rewrapped; KEK(s) "
                     f"{', '.join(map(str, report.destroyed_keks)) or '-'} destroyed")
        for m in report.retired_master_keys:
            st.out.print(f"master key {m['key_id']}: {m.get('state', '')} "
                         f"{m.get('deletion_date', '')}".rstrip())
        for done in report.completed:
            st.out.print(f"erasure of {done['scope']} complete (copies before "
                         f"{done['erased_at']} no longer decrypt)")


    @keys_app.command("reopen")
    @command
    def keys_reopen(ctx: typer.Context,
                    scope: Annotated[str, typer.Option("--scope", help="The erased scope.")],
                    yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False
                    ) -> None:
        """Re-open an erased scope: writes for it may create a fresh key again (audited)."""
        from piiguard.rotation.shred import reopen_scope

        st = state(ctx)
        guard = st.guard()
        st.confirm(yes, f"Re-open erased scope {scope!r}? New data may be written for it.")
        n = reopen_scope(guard, scope)
        if st.json:
            st.emit({"ok": True, "scope": scope, "reopened": n})
        else:
            st.out.print(f"scope {scope!r} re-opened")
