"""The key table: wrapped data keys, stored next to the data they protect.

One row a key. ``kind`` is ``dek`` (data encryption), ``index`` (blind index) or
``pseudonym``; ``scope`` says what it serves (a table, a tenant, a subject). The unique
``active_slot`` (``kind:scope`` while active, NULL otherwise) makes "one active key per
scope" a database rule that concurrent processes cannot break.
"""

from __future__ import annotations

from sqlalchemy import (BigInteger, Column, DateTime, Index, Integer, LargeBinary, MetaData,
                        String, Table)

DEFAULT_TABLE_NAME = "piiguard_data_keys"

#: What a key serves: data encryption, blind indexes, pseudonym masks. (Not the PII kinds
#: of :data:`piiguard.kinds.KINDS`.)
KEY_KINDS = ("dek", "index", "pseudonym")
ACTIVE, DECRYPT_ONLY, RETIRED, DESTROYED = "active", "decrypt_only", "retired", "destroyed"
#: A key's lifecycle, in order (see :mod:`piiguard.keys.manager`).
STATES = (ACTIVE, DECRYPT_ONLY, RETIRED, DESTROYED)


def key_table(name: str = DEFAULT_TABLE_NAME, metadata: MetaData | None = None) -> Table:
    """The key table definition (its own ``MetaData`` unless one is given)."""
    md = metadata if metadata is not None else MetaData()
    return Table(
        name, md,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("kind", String(16), nullable=False),
        Column("scope", String(255), nullable=False),
        Column("state", String(16), nullable=False),
        Column("active_slot", String(300), nullable=True, unique=True),
        Column("wrapped_key", LargeBinary, nullable=True),
        Column("master_key_id", String(512), nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("state_changed_at", DateTime(timezone=True), nullable=True),
        Column("destroyed_at", DateTime(timezone=True), nullable=True),
        Column("encryption_count", BigInteger, nullable=False, default=0),
        Index(f"ix_{name}_kind_scope", "kind", "scope"),
    )
