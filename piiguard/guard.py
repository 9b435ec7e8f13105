"""Guard: the one object an application owns to encrypt its PII.

A Guard ties together a KMS provider, the key table in the application's database, the
in-memory key cache, the masking policy and the audit trail. Two Guards in one process
share nothing::

    >>> from sqlalchemy import create_engine
    >>> guard = Guard(kms=LocalKMS.generate()).bind(create_engine("sqlite://"))
    >>> cipher = guard.field("customers", "national_id")
    >>> blob = cipher.encrypt_str("10000000146")
    >>> len(blob)
    44
    >>> cipher.decrypt_str(blob)
    '10000000146'
    >>> guard.field("customers", "phone").decrypt_str(blob)
    Traceback (most recent call last):
    ...
    piiguard.errors.DecryptionError: decryption failed column=customers.phone key_id=2 ...
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from datetime import datetime
from typing import Any, Callable

from sqlalchemy.engine import Engine

from piiguard.crypto.blind_index import BlindIndexKey
from piiguard.crypto.envelope import FieldContext
from piiguard.crypto.nonces import BufferedNonces
from piiguard.errors import ConfigurationError
from piiguard.field import FieldCipher, FieldIndex
from piiguard.keys.cache import CacheLimits
from piiguard.keys.manager import KeyManager, utcnow
from piiguard.kms.base import KeyProvider, check_key_provider
from piiguard.kms.local import LocalKMS
from piiguard.masking.audit import AuditTrail, AuditWarning
from piiguard.masking.policy import MaskingPolicy
from piiguard.masking.search import SearchGate

__all__ = ["Guard", "FieldCipher", "FieldIndex"]

#: async driver -> a sync driver for the same database (for the key table)
_SYNC_DRIVERS = {
    ("sqlite", "aiosqlite"): "pysqlite",
    ("postgresql", "asyncpg"): "psycopg",
    ("postgresql", "psycopg"): "psycopg",
    ("postgresql", "psycopg_async"): "psycopg",
    ("mysql", "aiomysql"): "pymysql",
    ("mysql", "asyncmy"): "pymysql",
    ("mariadb", "aiomysql"): "pymysql",
    ("mariadb", "asyncmy"): "pymysql",
}


#: The package (and piiguard extra) that brings each sync driver.
_SYNC_PACKAGES = {"psycopg": ("'psycopg[binary]'", "postgresql"),
                  "pymysql": ("pymysql", "mysql")}


def _sync_engine_for(async_engine: Any) -> Engine:
    from sqlalchemy import create_engine

    url = async_engine.url
    driver = _SYNC_DRIVERS.get((url.get_backend_name(), url.get_driver_name()))
    if driver is None:
        raise ConfigurationError(
            f"cannot derive a sync engine for the key table from the async driver "
            f"{url.get_backend_name()}+{url.get_driver_name()}: pass "
            "guard.bind(async_engine, key_engine=create_engine(...))")
    try:
        return create_engine(url.set(drivername=f"{url.get_backend_name()}+{driver}"))
    except ModuleNotFoundError as exc:
        package, extra = _SYNC_PACKAGES.get(driver, (driver, None))
        install = f"pip install 'piiguard[{extra}]' (or {package})" if extra \
            else f"pip install {package}"
        raise ConfigurationError(
            f"the key table is reached through a sync engine, and its driver "
            f"{url.get_backend_name()}+{driver} is not installed ({exc.name}): "
            f"{install}, or pass guard.bind(async_engine, key_engine=create_engine(...)) "
            "with a sync driver you have") from None


class Guard:
    """Field encryption for one application: KMS + key table + cache + policy + audit.

    - ``kms``: a :class:`~piiguard.kms.KeyProvider` (``LocalKMS`` or ``AwsKMS``).
    - ``cache``: :class:`~piiguard.keys.CacheLimits` for plaintext DEKs in memory.
    - ``policy``: a :class:`~piiguard.MaskingPolicy`; ``None`` means reveal everything
      (encryption-only mode).
    - ``audit``: the :class:`~piiguard.masking.AuditTrail` (default: batched, to the
      ``piiguard.audit`` logger; ``AuditTrail(durable=True, table=True)`` writes each
      reveal's record before the value is returned).
    - ``clock`` / ``wall_clock`` / ``nonce_source``: injectable for tests (``clock``
      also drives the search rate limit, ``guard.searches``).

    Call :meth:`bind` with the application's engine before the first value is written.
    """

    def __init__(self, kms: KeyProvider, *, cache: CacheLimits | None = None,
                 policy: Any = None, key_table: str = "piiguard_data_keys",
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], datetime] = utcnow,
                 nonce_source: Callable[[int], bytes] | None = None,
                 audit: AuditTrail | None = None, default_scope: str | None = None) -> None:
        check_key_provider(kms)
        if nonce_source is not None and not callable(nonce_source):
            raise ConfigurationError("nonce_source must be callable")
        self.kms = kms
        self._audit_watchers: list[Callable[[AuditTrail], None]] = []
        self.audit = audit or AuditTrail()
        self.keys = KeyManager(kms, limits=cache, clock=clock, wall_clock=wall_clock,
                               nonce_source=nonce_source or BufferedNonces(),
                               table_name=key_table,
                               on_event=self._key_event)
        self.default_scope = default_scope
        #: admits searches on encrypted columns (policy, rate limit, audit)
        self.searches = SearchGate(clock=clock)
        self._warned_audit = False
        self._scopes: set[tuple[str, str]] = set()
        self.policy: MaskingPolicy | None = policy   # checked by __setattr__
        self._fields: dict[tuple, FieldCipher] = {}
        self._indexes: dict[tuple, FieldIndex] = {}
        self._lock = threading.Lock()
        self.columns: list[Any] = []  # column types registered by piiguard.sqlalchemy

    def __repr__(self) -> str:
        bound = self.keys.engine.url.render_as_string(hide_password=True) \
            if self.keys.engine is not None else None
        return f"Guard(kms={self.kms!r}, bound={bound!r})"

    # -- configuration -----------------------------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        # ``policy`` is a plain attribute, checked here when it is set: the encrypted
        # column types read it once per value they read (a property would add a call on
        # that path).
        if name == "policy":
            self._check_policy(value)
        elif name == "audit" and not isinstance(value, AuditTrail):
            raise ConfigurationError("audit must be a piiguard AuditTrail")
        object.__setattr__(self, name, value)
        if name == "audit":
            for watcher in list(self._audit_watchers):
                watcher(value)

    def watch_audit(self, watcher: Callable[[AuditTrail], None]) -> None:
        """Call ``watcher(trail)`` now and whenever ``guard.audit`` is replaced (the
        SQLAlchemy layer batches durable reveals only while the trail is durable)."""
        self._audit_watchers.append(watcher)
        watcher(self.audit)

    def _check_policy(self, value: Any) -> None:
        if value is not None and not callable(getattr(value, "mask_for", None)):
            raise ConfigurationError("policy must be a MaskingPolicy (or None to reveal)")
        # Search rules on table.column could not be checked when the policy was built:
        # check them against the columns this Guard knows.
        check_columns = getattr(value, "check_columns", None)
        if callable(check_columns) and getattr(self, "columns", None):
            check_columns(self.column_kinds())
        # Keys of the policy's pseudonym masks: created now (or at bind), not mid-read.
        scopes = getattr(value, "pseudonym_scopes", None)
        if callable(scopes):
            for scope in sorted(scopes()):
                self.register_scope("pseudonym", scope)

    def bind(self, engine: Any, *, key_engine: Engine | None = None,
             create_tables: bool = True) -> "Guard":
        """Use ``engine``'s database for the key table (created if missing) and make sure
        every registered field has its keys.

        Accepts sync and async engines. For an async engine the key table is reached
        through a *sync* engine on the same database, so that key lookups work anywhere
        (also outside SQLAlchemy's greenlet, e.g. when a masked value is rendered after
        the query returned): ``key_engine`` if given, else one derived from the async
        URL (``sqlite+aiosqlite`` -> ``sqlite``, ``postgresql+asyncpg`` ->
        ``postgresql+psycopg``, ``mysql+aiomysql``/``asyncmy`` -> ``mysql+pymysql``;
        ``postgresql+psycopg`` serves both).

        ``create_tables=False``: piiguard's tables (key table, its generation table, the
        audit table if the trail has one) must exist already, made by a migration
        (:func:`piiguard.sqlalchemy.alembic.create_piiguard_tables`); a missing one is a
        :class:`~piiguard.errors.ConfigurationError` instead of a ``CREATE TABLE``, so
        the application runs without DDL rights.
        """
        if key_engine is not None:
            sync = key_engine
        elif hasattr(engine, "sync_engine"):
            sync = _sync_engine_for(engine)
        else:
            sync = engine
        if not isinstance(sync, Engine):
            raise ConfigurationError("guard.bind() needs a SQLAlchemy Engine")
        self.keys.bind(sync, create=create_tables)
        self._check_master_keys()
        self.audit.bind(sync, create=create_tables)
        for kind, scope in sorted(self._scopes):
            self.keys.ensure_active(kind, scope)
        if self.policy is not None:
            self.policy.check_columns(self.column_kinds())
        self._warn_if_audit_goes_nowhere()
        return self

    def _check_master_keys(self) -> None:
        """Refuse a key table that names master keys the key source lacks: every value
        under them would be unreadable, and new keys would go under another master key
        (a key file created afresh from a relative path in another directory). Only a
        provider that can tell (``has_master_key``, as LocalKMS) is checked."""
        has = getattr(self.kms, "has_master_key", None)
        if not callable(has):
            return
        from sqlalchemy import select

        t = self.keys.table
        with self.keys.engine.connect() as conn:   # type: ignore[union-attr]  # bound
            named = sorted(conn.execute(select(t.c.master_key_id).where(
                t.c.wrapped_key.is_not(None), t.c.master_key_id.not_like("kek:%"))
                .distinct()).scalars())   # "kek:<id>": wrapped under a KEK, not the KMS
        missing = [m for m in named if not has(m)]
        if not missing:
            return
        path = getattr(self.kms, "path", None)
        where = f"key file {str(path.resolve())!r}" if path is not None else "the KMS"
        held = ", ".join(getattr(self.kms, "key_ids", None) or ["?"])
        new = ""
        if getattr(self.kms, "created", False):
            new = (" That key file was just created: a relative path is resolved against "
                   f"the working directory ({os.getcwd()}).")
        raise ConfigurationError(
            f"the key table {t.name} names master key(s) {', '.join(missing)} that "
            f"{where} lacks (it holds {held}): values under them could not be read.{new} "
            "Load the key file they were made with, by an absolute path (docs/kms.md, "
            "'Key file custody')", operation="bind")

    def _warn_if_audit_goes_nowhere(self) -> None:
        if self._warned_audit or not self.audit.goes_nowhere():
            return
        self._warned_audit = True
        warnings.warn(
            "piiguard audit events of this Guard go nowhere: the 'piiguard.audit' logger "
            "has no handler for INFO records and the AuditTrail has no sink and no table, "
            "so reveals, searches and key operations are dropped silently. Configure "
            "logging (e.g. logging.basicConfig(level=logging.INFO), or a handler on "
            "'piiguard.audit' at INFO), or pass Guard(..., audit=AuditTrail(table=True)) "
            "or AuditTrail(sinks=[...])", AuditWarning, stacklevel=3)

    def column_kinds(self) -> list[tuple[str, str]]:
        """``(table.column, kind)`` of every encrypted column attached with this Guard."""
        out = []
        for t in self.columns:
            st = getattr(t, "attached_column", None)
            if st is not None:
                out.append((st.label, st.kind))
        return out

    @property
    def engine(self) -> Engine | None:
        return self.keys.engine

    def register_scope(self, kind: str, scope: str) -> None:
        """Ask for an active key of ``kind`` in ``scope`` (created at :meth:`bind`, so
        key creation never happens inside an application's write transaction)."""
        self._scopes.add((kind, scope))
        if self.keys.engine is not None:
            self.keys.ensure_active(kind, scope)

    # -- fields ----------------------------------------------------------------------------
    def scope_for(self, table: str) -> str:
        return self.default_scope or table

    def field(self, table: str, column: str, *, scope: str | None = None,
              padded: bool = False, domain: str = "sql") -> FieldCipher:
        """The cipher for ``table.column`` (cached; cheap to call)."""
        scope = scope or self.scope_for(table)
        k = (domain, table, column, scope, padded)
        cipher = self._fields.get(k)
        if cipher is None:
            with self._lock:
                cipher = self._fields.get(k)
                if cipher is None:
                    cipher = FieldCipher(self.keys, FieldContext(domain, table, column),
                                         scope, padded)
                    self._fields[k] = cipher
        return cipher

    def blind_index(self, table: str, column: str, *, bits: int = 256,
                    scope: str | None = None) -> FieldIndex:
        scope = scope or self.scope_for(table)
        k = (table, column, scope, bits)
        idx = self._indexes.get(k)
        if idx is None:
            with self._lock:
                idx = self._indexes.setdefault(k, FieldIndex(self.keys, table, column,
                                                             scope, bits))
        return idx

    def pseudonym_key(self, scope: str = "default") -> BlindIndexKey:
        """The active key of ``pseudonym:<scope>`` masks (:class:`MaskingHost`)."""
        return self.keys.pseudonym_key(scope)

    # -- audit -----------------------------------------------------------------------------
    def _key_event(self, action: str, **fields: Any) -> None:
        self.audit.emit(action, outcome="ok", **fields)

    def close(self) -> None:
        """Write pending audit events, record use counts and drop every plaintext key
        from memory."""
        self.audit.flush()
        self.keys.stop_background()
        if self.keys.engine is not None:
            self.keys.clear_cache()


# LocalKMS is imported for the module doctest above.
_ = LocalKMS
