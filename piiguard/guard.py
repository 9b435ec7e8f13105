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
    piiguard.errors.DecryptionError: decryption failed column=customers.phone key_id=1 operation=decrypt
"""

from __future__ import annotations

import os
import threading
import time
from datetime import datetime
from typing import Any, Callable

from cryptography.exceptions import InvalidTag
from sqlalchemy.engine import Engine

from piiguard.crypto.blind_index import BlindIndexKey, check_bits
from piiguard.crypto.envelope import (FLAG_PADDED, FORMAT_V1, MAX_SIZE, MIN_SIZE, TEXT_PREFIX,
                                      FieldContext, decode_text, encode_text,
                                      looks_like_envelope, parse_header)
from piiguard.crypto.nonces import BufferedNonces
from piiguard.crypto.padding import pad, unpad
from piiguard.errors import (AlreadyEncryptedError, ConfigurationError, DecryptionError,
                             EnvelopeFormatError, InvalidInputError, PIIGuardError,
                             UnknownKeyError)
from piiguard.keys.cache import CacheLimits
from piiguard.keys.manager import KeyManager, _utcnow
from piiguard.kms.base import KeyProvider
from piiguard.kms.local import LocalKMS
from piiguard.masking.audit import AuditTrail

__all__ = ["Guard", "FieldCipher", "FieldIndex"]

def _urandom12() -> bytes:
    return os.urandom(12)


_FMT_PLAIN = bytes((FORMAT_V1,))
_FMT_PADDED = bytes((FORMAT_V1 | FLAG_PADDED,))
_PREFIX_BYTES = TEXT_PREFIX.encode()
#: First bytes of a binary envelope (0x10, 0x11) or of a text one ("p" of "pg1:").
_ENVELOPE_FIRST = frozenset((FORMAT_V1, FORMAT_V1 | FLAG_PADDED, _PREFIX_BYTES[0]))


def _is_envelope(data: bytes, keys: KeyManager) -> bool:
    """True if ``data`` is the bytes of a text envelope, or a binary envelope naming a
    data key of this key table. (The binary header shape alone, a 0x10/0x11 byte and a
    length of 33 or more, matches 1 in 128 random byte strings: too weak on its own.)"""
    if data[0] == _PREFIX_BYTES[0]:
        if not data.startswith(_PREFIX_BYTES):
            return False
        try:
            return looks_like_envelope(bytes(data).decode("ascii"))
        except UnicodeDecodeError:
            return False
    return looks_like_envelope(data) and keys.has_key(int.from_bytes(data[1:5], "big"))


def _refuse_envelope(data: bytes, keys: KeyManager, label: str) -> None:
    """Raise :class:`AlreadyEncryptedError` if ``data`` is an envelope already."""
    if _is_envelope(data, keys):
        raise AlreadyEncryptedError("refusing to encrypt a value that is already an "
                                    "envelope", column=label, operation="encrypt")


def _name_column(exc: PIIGuardError, label: str) -> PIIGuardError:
    """Name ``table.column`` in an error raised below the cipher (in its message too)."""
    if exc.column is None:
        exc.column = label
        parts = [exc._detail, f"column={label}"]
        if exc.key_id is not None:
            parts.append(f"key_id={exc.key_id}")
        if exc.operation:
            parts.append(f"operation={exc.operation}")
        exc.args = (" ".join(parts),)
    return exc


class FieldCipher:
    """Encrypts and decrypts the values of one field, bound to where it lives.

    Made by :meth:`Guard.field`. The hot path is one cached key entry, one clock read
    and one AES-GCM call: the header and associated data are built once per key, not
    per value. Errors name ``table.column`` and the key id, never the value.
    """

    __slots__ = ("_keys", "ctx", "scope", "padded", "label", "_aad", "_fmt", "_clock",
                 "_max_uses", "_we", "_whdr", "_waad", "_wnonce", "_reads", "_last",
                 "_seal")

    def __init__(self, keys: KeyManager, ctx: FieldContext, scope: str, padded: bool) -> None:
        self._keys = keys
        self.ctx = ctx
        self.scope = scope
        self.padded = padded
        self.label = ctx.label
        self._aad = ctx.aad
        self._fmt = _FMT_PADDED if padded else _FMT_PLAIN
        self._clock = keys._clock
        self._max_uses = keys.limits.max_uses
        self._we = None          # cache entry of the DEK we write with
        self._whdr = b""         # its envelope header
        self._waad = b""         # header + context
        self._wnonce = _urandom12
        self._reads: dict[bytes, tuple] = {}  # header -> (header, entry, aad, padded)
        self._last: tuple = (b"\xff", None, b"", False)  # matches no envelope
        self._seal = self.encryptor(encoded=True)  # encrypt() in the field's own scope

    def __repr__(self) -> str:
        return f"FieldCipher({self.label!r}, scope={self.scope!r}, padded={self.padded})"

    # -- binary envelopes ------------------------------------------------------------------
    def encrypt(self, plaintext: bytes, *, scope: str | None = None) -> bytes:
        """Binary envelope of ``plaintext`` under the active DEK of the field's scope.

        Refuses (:class:`AlreadyEncryptedError`) a value that already parses as an
        envelope, binary or text."""
        if scope is not None and scope != self.scope:
            if plaintext and plaintext[0] in _ENVELOPE_FIRST:
                _refuse_envelope(plaintext, self._keys, self.label)
            return self._encrypt_in(scope, plaintext)
        return self._seal(plaintext)

    def encryptor(self, prepare: Callable[[Any], str] | None = None, *,
                  check_envelope: bool = True,
                  encoded: bool = False) -> Callable[[Any], bytes]:
        """A function ``value -> binary envelope``: :meth:`encrypt` fused with the
        column's own preparation, for hot paths that encrypt many values one by one
        (an ORM flush, an ``executemany``).

        ``prepare`` turns a value into the canonical text (a validator); its
        :class:`InvalidInputError` comes out naming this field. Without it the value
        must be ``str`` (``bytes`` with ``encoded=True``). ``check_envelope=False`` skips the "already an envelope" check,
        for validators whose canonical forms can never be one (digits, E.164, upper-case
        addresses). Same envelopes, same key bookkeeping and the same errors as
        ``encrypt(prepare(value).encode())``; one call instead of several.

            >>> from sqlalchemy import create_engine
            >>> from piiguard import Guard, LocalKMS
            >>> guard = Guard(LocalKMS.generate()).bind(create_engine("sqlite://"))
            >>> enc = guard.field("t", "c").encryptor(str.strip)
            >>> blob = enc("  10000000146  ")
            >>> len(blob), guard.field("t", "c").decrypt_str(blob)
            (44, '10000000146')
        """
        label = self.label
        clock = self._clock
        max_uses = self._max_uses
        padded = self.padded
        keys = self._keys
        me = self

        def enc(value):
            if prepare is not None:
                try:
                    value = prepare(value)
                except InvalidInputError as exc:
                    raise exc.with_column(label) from None
            plaintext = value if encoded else value.encode("utf-8")
            if check_envelope and plaintext and plaintext[0] in _ENVELOPE_FIRST:
                _refuse_envelope(plaintext, keys, label)
            e = me._we
            if e is None or e.uses >= max_uses or clock() >= e.wexpires:
                e = me._write_entry()
            e.uses += 1
            try:
                nonce = me._wnonce()
            except ValueError:  # BufferedNonces raced by another thread: take a fresh one
                nonce = os.urandom(12)
            if padded:
                plaintext = pad(plaintext)
            return me._whdr + nonce + e.aead.encrypt(nonce, plaintext, me._waad)
        return enc

    def _write_entry(self):
        try:
            e = self._keys.write_entry(self.scope)
        except PIIGuardError as exc:
            _name_column(exc, self.label)
            raise
        self._whdr = self._fmt + e.key.id_bytes
        self._waad = self._whdr + self._aad
        source = e.key._nonce
        self._wnonce = getattr(source, "next12", None) or (lambda: source(12))
        self._we = e
        return e

    def _encrypt_in(self, scope: str, plaintext: bytes) -> bytes:
        try:
            key = self._keys.active_dek(scope)
        except PIIGuardError as exc:
            _name_column(exc, self.label)
            raise
        header = self._fmt + key.id_bytes
        nonce = key.new_nonce()
        if self.padded:
            plaintext = pad(plaintext)
        return header + nonce + key.seal(nonce, plaintext, header + self._aad)

    def decrypt(self, blob: bytes) -> bytes:
        """Plaintext of a binary envelope; one opaque :class:`DecryptionError` if it was
        tampered with, truncated or made for another field."""
        if type(blob) is not bytes:
            blob = bytes(blob)
        r = self._last  # (header, entry, aad, padded) of the key used last time
        if len(blob) < 33 or not blob.startswith(r[0]) or self._clock() >= r[1].expires:
            r = self._read_entry(blob)
        try:
            data = r[1].aead.decrypt(blob[5:17], blob[17:], r[2])
        except InvalidTag:
            raise DecryptionError("decryption failed", column=self.label, key_id=r[1].id,
                                  operation="decrypt") from None
        if r[3]:
            try:
                return unpad(data)
            except DecryptionError:
                raise DecryptionError("decryption failed", column=self.label,
                                      key_id=r[1].id, operation="decrypt") from None
        return data

    def _read_entry(self, blob: bytes) -> tuple:
        if not MIN_SIZE <= len(blob) <= MAX_SIZE:
            raise EnvelopeFormatError("stored value is not a piiguard envelope",
                                      column=self.label, operation="decrypt")
        hdr = blob[:5]
        if hdr[0] & 0xFE != FORMAT_V1:
            raise EnvelopeFormatError("stored value is not a piiguard envelope: unknown "
                                      "format version", column=self.label,
                                      operation="decrypt")
        r = self._reads.get(hdr)
        if r is None or self._clock() >= r[1].expires:
            key_id = int.from_bytes(hdr[1:5], "big")
            try:
                e = self._keys.read_entry(key_id)
            except UnknownKeyError as exc:
                if exc.key_id != str(key_id):  # e.g. the KMS does not know the master key
                    _name_column(exc, self.label)
                    raise
                # No such data key here: tampered with, or copied from another database.
                # Same opaque error as a failed tag (DecryptionError's contract).
                raise DecryptionError("decryption failed: no data key with this id",
                                      column=self.label, key_id=key_id,
                                      operation="decrypt") from None
            except PIIGuardError as exc:
                _name_column(exc, self.label)
                raise
            r = (hdr, e, hdr + self._aad, bool(hdr[0] & FLAG_PADDED))
            if len(self._reads) > 64:  # many keys seen: keep the map small
                self._reads.clear()
            self._reads[hdr] = r
        self._last = r
        return r

    # -- strings -----------------------------------------------------------------------------
    def encrypt_str(self, value: str, *, scope: str | None = None) -> bytes:
        # encrypt() refuses the UTF-8 of a text envelope ("pg1:...") as well.
        return self.encrypt(value.encode("utf-8"), scope=scope)

    def decrypt_str(self, blob: bytes) -> str:
        return self.decrypt(blob).decode("utf-8")

    def encrypt_text(self, value: str, *, scope: str | None = None) -> str:
        """Text envelope (``pg1:...``) for VARCHAR/TEXT columns and JSON."""
        return encode_text(self.encrypt_str(value, scope=scope))

    def decrypt_text(self, text: str) -> str:
        try:
            blob = decode_text(text)
        except EnvelopeFormatError as exc:
            raise EnvelopeFormatError(exc._detail, column=self.label,
                                      operation="decrypt") from None
        return self.decrypt_str(blob)

    @staticmethod
    def key_id_of(blob: bytes | str) -> int:
        """The DEK id an envelope names (no decryption); :class:`EnvelopeFormatError`
        if ``blob`` is not a well-formed envelope."""
        if isinstance(blob, str):
            blob = decode_text(blob)
        return parse_header(bytes(blob))[1]


class FieldIndex:
    """Blind index of one field: keyed HMAC of the canonical value.

    ``compute`` uses the active index key (for writes); ``candidates`` gives the values
    under every usable index key (active and, during an index-key rotation, the previous
    ones), for lookups.
    """

    __slots__ = ("_keys", "scope", "bits", "label", "_ctx")

    def __init__(self, keys: KeyManager, table: str, column: str, scope: str,
                 bits: int) -> None:
        self._keys = keys
        self.scope = scope
        self.bits = check_bits(bits)
        self.label = f"{table}.{column}"
        if "." in table or "." in column:
            # "a.b" + "c" and "a" + "b.c" would share the context "a.b.c" (and so every
            # index value): such names get the length-prefixed parts instead, after a NUL
            # that no "table.column" text starts with. Names without dots keep "t.c".
            self._ctx = b"\x00" + FieldContext(table, column).aad
        else:
            self._ctx = self.label.encode("utf-8")

    def __repr__(self) -> str:
        return f"FieldIndex({self.label!r}, scope={self.scope!r}, bits={self.bits})"

    def compute(self, canonical: str) -> bytes:
        key: BlindIndexKey = self._keys.active_index_key(self.scope)
        return key.compute(self._ctx, canonical.encode("utf-8"), self.bits)

    def candidates(self, canonical: str) -> list[bytes]:
        raw = canonical.encode("utf-8")
        return [k.compute(self._ctx, raw, self.bits)
                for k in self._keys.usable_index_keys(self.scope)]

    def usable_keys(self) -> list:
        """The index keys lookups consult now (the same list object while the key cache
        is fresh, so callers can memoise on its identity)."""
        return self._keys.usable_index_keys(self.scope)

    def cached_key_count(self) -> int | None:
        """``len(usable_keys())`` if known without I/O (warm key cache), else None."""
        return self._keys.cached_index_key_count(self.scope)

    def with_key(self, key_id: int, canonical: str) -> bytes:
        return self._keys.index_key(key_id).compute(self._ctx, canonical.encode("utf-8"),
                                                   self.bits)


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


def _sync_engine_for(async_engine: Any) -> Engine:
    from sqlalchemy import create_engine

    url = async_engine.url
    driver = _SYNC_DRIVERS.get((url.get_backend_name(), url.get_driver_name()))
    if driver is None:
        raise ConfigurationError(
            f"cannot derive a sync engine for the key table from the async driver "
            f"{url.get_backend_name()}+{url.get_driver_name()}: pass "
            "guard.bind(async_engine, key_engine=create_engine(...))")
    return create_engine(url.set(drivername=f"{url.get_backend_name()}+{driver}"))


class Guard:
    """Field encryption for one application: KMS + key table + cache + policy + audit.

    - ``kms``: a :class:`~piiguard.kms.KeyProvider` (``LocalKMS`` or ``AwsKMS``).
    - ``cache``: :class:`~piiguard.keys.CacheLimits` for plaintext DEKs in memory.
    - ``policy``: a :class:`~piiguard.MaskingPolicy`; ``None`` means reveal everything
      (encryption-only mode).
    - ``clock`` / ``wall_clock`` / ``nonce_source``: injectable for tests.

    Call :meth:`bind` with the application's engine before the first value is written.
    """

    def __init__(self, kms: KeyProvider, *, cache: CacheLimits | None = None,
                 policy: Any = None, key_table: str = "piiguard_data_keys",
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], datetime] = _utcnow,
                 nonce_source: Callable[[int], bytes] | None = None,
                 audit: AuditTrail | None = None, default_scope: str | None = None) -> None:
        for attr in ("generate_data_key", "decrypt_data_key", "rewrap"):
            if not callable(getattr(kms, attr, None)):
                raise ConfigurationError(f"kms must be a KeyProvider (missing {attr}())")
        if nonce_source is not None and not callable(nonce_source):
            raise ConfigurationError("nonce_source must be callable")
        self.kms = kms
        self.audit = audit or AuditTrail()
        self.keys = KeyManager(kms, limits=cache, clock=clock, wall_clock=wall_clock,
                               nonce_source=nonce_source or BufferedNonces(),
                               table_name=key_table,
                               on_event=self._key_event)
        self.default_scope = default_scope
        self._policy = None
        self._scopes: set[tuple[str, str]] = set()
        self.policy = policy
        self._fields: dict[tuple, FieldCipher] = {}
        self._indexes: dict[tuple, FieldIndex] = {}
        self._lock = threading.Lock()
        self.columns: list[Any] = []  # column types registered by piiguard.sqlalchemy

    def __repr__(self) -> str:
        bound = self.keys.engine.url.render_as_string(hide_password=True) \
            if self.keys.engine is not None else None
        return f"Guard(kms={self.kms!r}, bound={bound!r})"

    # -- configuration -----------------------------------------------------------------------
    @property
    def policy(self):
        return self._policy

    @policy.setter
    def policy(self, value) -> None:
        if value is not None and not callable(getattr(value, "mask_for", None)):
            raise ConfigurationError("policy must be a MaskingPolicy (or None to reveal)")
        # Keys of the policy's pseudonym masks: created now (or at bind), not mid-read.
        scopes = getattr(value, "pseudonym_scopes", None)
        if callable(scopes):
            for scope in sorted(scopes()):
                self.register_scope("pseudonym", scope)
        self._policy = value

    def bind(self, engine: Any, *, key_engine: Engine | None = None) -> "Guard":
        """Use ``engine``'s database for the key table (created if missing) and make sure
        every registered field has its keys.

        Accepts sync and async engines. For an async engine the key table is reached
        through a *sync* engine on the same database, so that key lookups work anywhere
        (also outside SQLAlchemy's greenlet, e.g. when a masked value is rendered after
        the query returned): ``key_engine`` if given, else one derived from the async
        URL (``sqlite+aiosqlite`` -> ``sqlite``, ``postgresql+asyncpg`` ->
        ``postgresql+psycopg``, ``mysql+aiomysql``/``asyncmy`` -> ``mysql+pymysql``;
        ``postgresql+psycopg`` serves both).
        """
        if key_engine is not None:
            sync = key_engine
        elif hasattr(engine, "sync_engine"):
            sync = _sync_engine_for(engine)
        else:
            sync = engine
        if not isinstance(sync, Engine):
            raise ConfigurationError("guard.bind() needs a SQLAlchemy Engine")
        self.keys.bind(sync)
        self.audit.bind(sync)
        for kind, scope in sorted(self._scopes):
            self.keys.ensure_active(kind, scope)
        return self

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

    # -- audit -----------------------------------------------------------------------------
    def _key_event(self, action: str, **fields: Any) -> None:
        self.audit.emit(action, outcome="ok", **fields)

    def close(self) -> None:
        """Write pending audit events, record use counts and drop every plaintext key
        from memory."""
        self.audit.flush()
        if self.keys.engine is not None:
            self.keys.clear_cache()


# LocalKMS is imported for the module doctest above.
_ = LocalKMS
