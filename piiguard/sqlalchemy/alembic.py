"""``alembic revision --autogenerate`` with encrypted columns.

Imported (by :func:`.hooks.register_alembic_if_loaded`) only once Alembic is loaded, it
registers with Alembic's global comparator and renderer registries, which Alembic keeps
for third-party extensions:

- migrations whose metadata has encrypted columns get ``import piiguard.sqlalchemy``
  (the columns render as :class:`~.storage.Ciphertext` / :class:`~.storage.BlindIndex`:
  no Guard, no key);
- the Guard's key table, its generation table and the audit table are never proposed
  for ``drop_table`` or ``drop_index``, although they are not in the application's
  metadata, and Alembic's "Detected removed table" log line for them is dropped.

It also gives the migration operations that create those tables, so that the
application binds with ``guard.bind(engine, create_tables=False)`` and needs no DDL
rights at run time (``docs/alembic.md``)::

    from piiguard.sqlalchemy.alembic import create_piiguard_tables, drop_piiguard_tables

    def upgrade():
        create_piiguard_tables(op)          # key table + generation table (+ audit)

    def downgrade():
        drop_piiguard_tables(op)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from alembic.autogenerate.compare import comparators
from alembic.autogenerate.render import renderers
from alembic.operations.ops import OpContainer
from alembic.util import DispatchPriority, PriorityDispatchResult
from sqlalchemy import MetaData, Table, inspect
from sqlalchemy.schema import CreateIndex, CreateTable

from piiguard.keys.notify import generation_table
from piiguard.keys.table import DEFAULT_TABLE_NAME, key_table
from piiguard.masking.audit import audit_table as make_audit_table
from piiguard.sqlalchemy.state import attached_column_of
from piiguard.sqlalchemy.storage import BlindIndex, Ciphertext

__all__ = ["ImportPiiguard", "create_piiguard_tables", "drop_piiguard_tables",
           "piiguard_tables"]

DEFAULT_AUDIT_TABLE = "piiguard_audit"


def piiguard_tables(key_table_name: str = DEFAULT_TABLE_NAME,
                    audit_table: bool | str = False,
                    schema: str | None = None) -> list[Table]:
    """piiguard's own tables: the key table, its generation table and (``audit_table``
    True or a name) the audit table, each in its own ``MetaData``.

    >>> [t.name for t in piiguard_tables(audit_table=True)]
    ['piiguard_data_keys', 'piiguard_data_keys_generation', 'piiguard_audit']
    """
    keys = key_table(key_table_name, MetaData(schema=schema))
    tables = [keys, generation_table(keys)]
    if audit_table:
        name = DEFAULT_AUDIT_TABLE if audit_table is True else str(audit_table)
        tables.append(make_audit_table(name, MetaData(schema=schema)))
    return tables


def create_piiguard_tables(op: Any, *, key_table_name: str = DEFAULT_TABLE_NAME,
                           audit_table: bool | str = False,
                           schema: str | None = None) -> list[str]:
    """In a migration's ``upgrade()``: create piiguard's tables that do not exist yet
    (and the generation table's one row); returns the names created. Run again in a
    later migration it creates only what a newer piiguard added (an upgrade), so it is
    also the upgrade operation. Offline (``alembic upgrade --sql``) it emits every
    ``CREATE``."""
    offline = op.get_context().as_sql
    existing: set[str] = set()
    if not offline:
        insp = inspect(op.get_bind())
        existing = {t.name for t in piiguard_tables(key_table_name, audit_table, schema)
                    if insp.has_table(t.name, schema=schema)}
    created = []
    for t in piiguard_tables(key_table_name, audit_table, schema):
        if t.name in existing:
            continue
        op.execute(CreateTable(t))
        for index in sorted(t.indexes, key=lambda i: i.name or ""):
            op.execute(CreateIndex(index))
        if t.name.endswith("_generation") and "generation" in t.c:
            op.execute(t.insert().values(id=1, generation=0))
        created.append(t.name)
    return created


def drop_piiguard_tables(op: Any, *, key_table_name: str = DEFAULT_TABLE_NAME,
                         audit_table: bool | str = False,
                         schema: str | None = None) -> None:
    """In a migration's ``downgrade()``: drop piiguard's tables. **Every wrapped data
    key goes with the key table: every encrypted value becomes unreadable.**"""
    for t in reversed(piiguard_tables(key_table_name, audit_table, schema)):
        op.drop_table(t.name, schema=schema)


#: The tables of queued jobs (:mod:`piiguard.rotation.jobstore`), created on the first
#: ``--queue`` job: autogenerate never proposes dropping them either.
JOB_TABLE_NAMES = ("piiguard_jobs", "piiguard_job_tables")


class _QuietRemovedTables(logging.Filter):
    """Drops Alembic's "Detected removed table" INFO line for piiguard's tables (our
    comparator below removes the drop itself, but Alembic logs before it runs)."""

    names: set[str] = {t.name for t in piiguard_tables(audit_table=True)} | \
        set(JOB_TABLE_NAMES)

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("Detected removed table"):
            return True
        args = record.args if isinstance(record.args, tuple) else ()
        name = str(args[0]) if args else ""
        return name.rpartition(".")[2] not in self.names


_QUIET = _QuietRemovedTables()
# (a logger's filters see only its own records: the module that logs it, in Alembic
# 1.x before and after its compare package was split)
for _name in ("alembic.autogenerate.compare", "alembic.autogenerate.compare.tables"):
    logging.getLogger(_name).addFilter(_QUIET)


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
                    names.add(generation_table(guard.keys.table).name)
                    audit_table = getattr(getattr(guard, "audit", None), "table", None)
                    if audit_table is not None:
                        names.add(audit_table.name)
    if found:
        names.update(JOB_TABLE_NAMES)
    return found, names


@comparators.dispatch_for("schema", priority=DispatchPriority.LAST)
def _piiguard_autogenerate(autogen_context: Any, upgrade_ops: Any, schemas: Any) -> Any:
    found, keep = _guard_tables_of(_metadatas_of(autogen_context))
    _QUIET.names |= keep        # custom table names: quiet from the next run on
    if keep:
        upgrade_ops.ops[:] = [op for op in upgrade_ops.ops
                              if getattr(op, "table_name", None) not in keep]
    if found and upgrade_ops.ops:
        upgrade_ops.ops.insert(0, ImportPiiguard())
    return PriorityDispatchResult.CONTINUE
