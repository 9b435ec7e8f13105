"""The key table: wrapped data keys, stored next to the data they protect.

One row a key. ``kind`` is ``dek`` (data encryption), ``index`` (blind index) or
``pseudonym``; ``scope`` says what it serves (a table, a tenant, a subject). The unique
``active_slot`` (``kind:scope`` while active, NULL otherwise) makes "one active key per
scope" a database rule that concurrent processes cannot break.

Key-table format 2 (``docs/format.md`` section 4) adds the key hierarchy without a new
column: rows of kind ``kek`` (scope :data:`KEK_SCOPE`) are key-encryption keys wrapped by
the KMS; every other key created since is wrapped locally under a KEK and records
``kek:<KEK id>`` (:data:`KEK_PREFIX`) as its ``master_key_id``. Rows whose
``master_key_id`` is a KMS key id were wrapped by the KMS (format 1) and stay readable.
A *tombstone* (state ``erased``, no key) holds the active slot of every kind of an erased
scope, so that no process can create a key for it again without an explicit re-opening.
"""

from __future__ import annotations

from sqlalchemy import (BigInteger, Column, DateTime, Index, Integer, LargeBinary, MetaData,
                        String, Table)

DEFAULT_TABLE_NAME = "piiguard_data_keys"

#: What a key serves: data encryption, blind indexes, pseudonym masks. (Not the PII kinds
#: of :data:`piiguard.kinds.KINDS`.)
KEY_KINDS = ("dek", "index", "pseudonym")
#: The kind of a key-encryption key (wraps the keys of :data:`KEY_KINDS`).
KEK = "kek"
#: The scope of every KEK row (one active KEK a key table).
KEK_SCOPE = "piiguard:keyring"
#: ``master_key_id`` prefix of a key wrapped locally under a KEK: ``kek:<KEK id>``.
KEK_PREFIX = "kek:"
ACTIVE, DECRYPT_ONLY, RETIRED, DESTROYED = "active", "decrypt_only", "retired", "destroyed"
#: A tombstone row's state: the scope was erased; its slot stays taken.
ERASED = "erased"
#: ... and once the scope has been re-opened on purpose.
REOPENED = "reopened"
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
