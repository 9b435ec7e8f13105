"""``alembic revision --autogenerate`` with encrypted columns.

Imported (by :func:`.hooks.register_alembic_if_loaded`) only once Alembic is loaded, it
registers with Alembic's global comparator and renderer registries, which Alembic keeps
for third-party extensions:

- migrations whose metadata has encrypted columns get ``import piiguard.sqlalchemy``
  (the columns render as :class:`~.storage.Ciphertext` / :class:`~.storage.BlindIndex`:
  no Guard, no key);
- the Guard's key table (and audit table) are never proposed for ``drop_table`` or
  ``drop_index``, although they are not in the application's metadata.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from alembic.autogenerate.compare import comparators
from alembic.autogenerate.render import renderers
from alembic.operations.ops import OpContainer
from alembic.util import DispatchPriority, PriorityDispatchResult
from sqlalchemy import MetaData

from piiguard.sqlalchemy.state import attached_column_of
from piiguard.sqlalchemy.storage import BlindIndex, Ciphertext

__all__ = ["ImportPiiguard"]


class ImportPiiguard(OpContainer):
    """Renders nothing but ``import piiguard.sqlalchemy`` among the imports (an empty
    container: no diff, no statement)."""

    def __init__(self) -> None:
        super().__init__(ops=())

    def reverse(self) -> ImportPiiguard:
        return ImportPiiguard()


@renderers.dispatch_for(ImportPiiguard)
def _render_import(autogen_context: Any, op: ImportPiiguard) -> list[str]:
    autogen_context.imports.add("import piiguard.sqlalchemy")
    return []


def _metadatas_of(autogen_context: Any) -> list[MetaData]:
    mds = autogen_context.metadata
    if mds is None:
        return []
    return list(mds) if isinstance(mds, (list, tuple)) else [mds]


def _guard_tables_of(metadatas: Iterable[MetaData]) -> tuple[bool, set[str]]:
    """(any encrypted column?, names of the Guards' own tables) for these MetaData."""
    found = False
    names: set[str] = set()
    for md in metadatas:
        for table in md.tables.values():
            for c in table.c:
                if isinstance(c.type, (Ciphertext, BlindIndex)):
                    found = True
                    continue
                st = attached_column_of(c.type)
                if st is not None:
                    found = True
                    guard = st.guard
                    names.add(guard.keys.table.name)
                    names.add(guard.keys.store.generation.name)  # key-change counter
                    audit_table = getattr(getattr(guard, "audit", None), "table", None)
                    if audit_table is not None:
                        names.add(audit_table.name)
    return found, names


@comparators.dispatch_for("schema", priority=DispatchPriority.LAST)
def _piiguard_autogenerate(autogen_context: Any, upgrade_ops: Any, schemas: Any) -> Any:
    found, keep = _guard_tables_of(_metadatas_of(autogen_context))
    if keep:
        upgrade_ops.ops[:] = [op for op in upgrade_ops.ops
                              if getattr(op, "table_name", None) not in keep]
    if found and upgrade_ops.ops:
        upgrade_ops.ops.insert(0, ImportPiiguard())
    return PriorityDispatchResult.CONTINUE
