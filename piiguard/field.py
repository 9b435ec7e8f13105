"""Field ciphers and blind indexes: one field's encryption over the key cache.

A :class:`FieldCipher` encrypts and decrypts the values of one field (``table.column``)
with the data keys of its scope; a :class:`FieldIndex` computes the field's blind index.
Both are made by :meth:`piiguard.Guard.field` / :meth:`piiguard.Guard.blind_index` and
sit between the key manager (which keys, cached how long) and the envelope format
(:mod:`piiguard.crypto.envelope`, which they use through prepared sealers and openers).

    >>> from sqlalchemy import create_engine
    >>> from piiguard import Guard, LocalKMS
    >>> guard = Guard(kms=LocalKMS.generate()).bind(create_engine("sqlite://"))
    >>> cipher = guard.field("customers", "national_id")
    >>> blob = cipher.encrypt_str("10000000146")
    >>> len(blob), cipher.decrypt_str(blob)
    (44, '10000000146')
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from piiguard.crypto.blind_index import BlindIndexKey, check_bits, index_context
from piiguard.crypto.envelope import (
    FieldContext,
    Opener,
    Sealer,
    decode_text,
    encode_text,
    header_key_id,
    header_of,
    is_binary_shape,
    is_text_envelope_bytes,
    key_id_of,
    may_be_envelope,
    peek_key_id,
)
from piiguard.errors import (
    AlreadyEncryptedError,
    DecryptionError,
    EnvelopeFormatError,
    InvalidFormatError,
    InvalidInputError,
    PIIGuardError,
    UnknownKeyError,
)
from piiguard.keys.cache import Entry
from piiguard.keys.manager import KeyManager

__all__ = ["FieldCipher", "FieldIndex", "FormIndex", "unencodable", "utf8"]


def unencodable(label: str | None, operation: str = "encrypt") -> InvalidFormatError:
    """The error for text that has no UTF-8 form (a lone surrogate, as text decoded with
    ``errors="surrogateescape"`` from bytes that were not UTF-8 holds). Built outside
    the ``except`` that caught the ``UnicodeEncodeError``, which holds the whole text."""
    return InvalidFormatError("encoding", column=label, operation=operation,
                              detail="text is not valid Unicode: it holds a lone "
                                     "surrogate (bytes decoded with surrogateescape?)")


def utf8(text: str, label: str | None, operation: str = "encrypt") -> bytes:
    """``text`` in UTF-8; :func:`unencodable` if it has no UTF-8 form."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        pass
    raise unencodable(label, operation)


def _is_envelope(data: bytes, keys: KeyManager) -> bool:
    """True if ``data`` is the bytes of a text envelope, or a binary envelope naming a
    data key of this key table. (The binary header shape alone matches 1 in 128 random
    byte strings: too weak on its own.)"""
    if is_text_envelope_bytes(data):
        return True
    if not is_binary_shape(data):
        return False
    key_id = peek_key_id(bytes(data))
    return key_id is not None and keys.has_key(key_id)


def _refuse_envelope(data: bytes, keys: KeyManager, label: str) -> None:
    """Raise :class:`AlreadyEncryptedError` if ``data`` is an envelope already."""
    if _is_envelope(data, keys):
        raise AlreadyEncryptedError("refusing to encrypt a value that is already an "
                                    "envelope", column=label, operation="encrypt")


class _Unread:
    """Stands for "no key read yet": matches no valid envelope and is always stale."""

    header = b"\xff\xff\xff\xff\xff\xff"
    expires = float("-inf")


_UNREAD = _Unread()


class FieldCipher:
    """Encrypts and decrypts the values of one field, bound to where it lives.

    Made by :meth:`Guard.field`. The hot path is one cached key entry, one clock read
    and one AES-GCM call: the header and associated data are built once per key (a
    :class:`~piiguard.crypto.envelope.Sealer` / ``Opener``), not per value. Errors name
    ``table.column`` and the key id, never the value.
    """

    __slots__ = ("_keys", "ctx", "scope", "padded", "label", "_clock", "_max_uses",
                 "_we", "_sealer", "_reads", "_last_opener", "_last_entry", "_seal",
                 "_bound_sealers", "_last_bound")

    def __init__(self, keys: KeyManager, ctx: FieldContext, scope: str, padded: bool) -> None:
        self._keys = keys
        self.ctx = ctx
        self.scope = scope
        self.padded = padded
        self.label = ctx.label
        self._clock = keys.clock
        self._max_uses = keys.limits.max_uses
        self._we: Entry | None = None        # cache entry of the DEK we write with
        self._sealer: Sealer | None = None   # ... and its prepared sealer
        self._reads: dict[bytes, tuple[Opener, Entry]] = {}   # header -> opener, entry
        self._last_opener: Opener | _Unread = _UNREAD
        self._last_entry: Entry | _Unread = _UNREAD
        self._seal = self.encryptor(encoded=True)  # encrypt() in the field's own scope
        self._bound_sealers: dict[int, Sealer] = {}   # DEK id -> sealer of bound envelopes
        self._last_bound: tuple[Any, Any] = (_UNREAD, _UNREAD)  # opener, entry (bound)

    def __repr__(self) -> str:
        return f"FieldCipher({self.label!r}, scope={self.scope!r}, padded={self.padded})"

    # -- binary envelopes ------------------------------------------------------------------
    def encrypt(self, plaintext: bytes, *, scope: str | None = None) -> bytes:
        """Binary envelope of ``plaintext`` under the active DEK of the field's scope.

        Refuses (:class:`AlreadyEncryptedError`) a value that already parses as an
        envelope, binary or text."""
        if scope is not None and scope != self.scope:
            if may_be_envelope(plaintext):
                _refuse_envelope(plaintext, self._keys, self.label)
            return self._encrypt_in(scope, plaintext)
        return self._seal(plaintext)

    def is_envelope(self, data: bytes) -> bool:
        """True if ``data`` is a text envelope, or a binary envelope naming a data key
        of this key table (the header shape alone matches 1 in 128 random byte strings:
        too weak a test for arbitrary bytes)."""
        return _is_envelope(data, self._keys)

    def encryptor(self, prepare: Callable[[Any], str] | None = None, *,
                  check_envelope: bool = True,
                  encoded: bool = False) -> Callable[[Any], bytes]:
        """A function ``value -> binary envelope``: :meth:`encrypt` fused with the
        column's own preparation, for hot paths that encrypt many values one by one
        (an ORM flush, an ``executemany``).

        ``prepare`` turns a value into the canonical text (a validator); its
        :class:`InvalidInputError` comes out naming this field. Without it the value
        must be ``str`` (``bytes`` with ``encoded=True``). ``check_envelope=False``
        skips the "already an envelope" check, for validators whose canonical forms can
        never be one (digits, E.164, upper-case addresses). Same envelopes, same key
        bookkeeping and the same errors as ``encrypt(prepare(value).encode())``; one
        call instead of several.

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
        keys = self._keys
        me = self

        def enc(value: Any) -> bytes:
            if prepare is not None:
                try:
                    value = prepare(value)
                except InvalidInputError as exc:
                    # the validator's frames hold the value, its own error may quote it
                    raise exc.with_column(label).detached() from None
            if encoded:
                plaintext = value
            else:
                try:
                    plaintext = value.encode("utf-8")
                except UnicodeEncodeError:      # (its .object is the whole value)
                    plaintext = None
                if plaintext is None:
                    del value
                    raise unencodable(label)
            if check_envelope and may_be_envelope(plaintext):
                _refuse_envelope(plaintext, keys, label)
            e = me._we
            if e is None or e.uses >= max_uses or clock() >= e.wexpires:
                e = me._write_entry()
            e.uses += 1
            return me._sealer.seal(plaintext)  # type: ignore[union-attr]
        return enc

    def _write_entry(self) -> Entry:
        try:
            e = self._keys.write_entry(self.scope)
        except PIIGuardError as exc:
            exc.with_column(self.label)
            raise
        self._sealer = Sealer(e.key, self.ctx, padded=self.padded)
        self._we = e
        return e

    def _encrypt_in(self, scope: str, plaintext: bytes) -> bytes:
        try:
            key = self._keys.active_dek(scope)
        except PIIGuardError as exc:
            exc.with_column(self.label)
            raise
        return Sealer(key, self.ctx, padded=self.padded).seal(plaintext)

    def decrypt(self, blob: bytes) -> bytes:
        """Plaintext of a binary envelope; one opaque :class:`DecryptionError` if it was
        tampered with, truncated or made for another field (or is bound to a row: see
        :meth:`decrypt_bound`)."""
        if type(blob) is not bytes:
            blob = bytes(blob)
        opener = self._last_opener   # the key used last time, usually the same
        if not blob.startswith(opener.header) or self._clock() >= self._last_entry.expires:
            opener = self._read_entry(blob)
        return opener.open(blob)  # type: ignore[union-attr]

    # -- envelopes bound to their row --------------------------------------------------------
    def encrypt_bound(self, plaintext: bytes, binding: bytes, *,
                      scope: str | None = None) -> bytes:
        """Row-bound envelope of ``plaintext`` under the active DEK of ``scope`` (default:
        the field's): ``binding`` (a :meth:`~piiguard.crypto.envelope.BindingLayout.aad`
        of the row's values) joins the associated data, so the envelope opens only with
        the same values (:meth:`decrypt_bound`).

            >>> from sqlalchemy import create_engine
            >>> from piiguard import Guard, LocalKMS
            >>> from piiguard.crypto.envelope import BindingLayout
            >>> cipher = Guard(LocalKMS.generate()).bind(create_engine("sqlite://")).field(
            ...     "customers", "phone")
            >>> row = BindingLayout(("customer_ref",))
            >>> blob = cipher.encrypt_bound(b"+905321234567", row.aad(("C-42",)))
            >>> cipher.decrypt_bound(blob, row.aad(("C-42",)))
            b'+905321234567'
            >>> cipher.decrypt_bound(blob, row.aad(("C-43",)))  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            piiguard.errors.DecryptionError: decryption failed column=customers.phone ...
            >>> cipher.decrypt(blob)  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            piiguard.errors.DecryptionError: decryption failed: the envelope is bound to ...
        """
        if may_be_envelope(plaintext):
            _refuse_envelope(plaintext, self._keys, self.label)
        try:
            key = self._keys.active_dek(scope or self.scope)
        except PIIGuardError as exc:
            exc.with_column(self.label)
            raise
        sealer = self._bound_sealers.get(key.id)
        if sealer is None:
            if len(self._bound_sealers) > 64:  # many scopes: keep the map small
                self._bound_sealers.clear()
            sealer = self._bound_sealers[key.id] = Sealer(key, self.ctx, padded=self.padded,
                                                          bound=True)
        return sealer.seal_bound(plaintext, binding)

    def decrypt_bound(self, blob: bytes, binding: bytes, *, scope: str | None = None,
                      strict: bool = False) -> bytes:
        """Plaintext of an envelope read from a row whose values give ``binding``.

        A bound envelope opens only with its row's binding: copied to another row,
        replayed after a bound column (a version) changed, or left behind by a scope
        change, it fails with one opaque :class:`DecryptionError`. An envelope that is
        not bound (written before row binding) opens as it is, unless ``strict``. With
        ``scope``, the envelope's DEK must belong to that key scope, whatever the
        format (a value moved between two subjects' rows is refused)."""
        if type(blob) is not bytes:
            blob = bytes(blob)
        r = self._last_bound    # the key used last time (per-subject scopes: often not)
        if not blob.startswith(r[0].header) or self._clock() >= r[1].expires:
            r = self._last_bound = self._entry_for(blob)
        opener, entry = r
        if scope is not None and entry.scope != scope:
            raise DecryptionError("decryption failed: the envelope's key belongs to "
                                  "another key scope than its row's", column=self.label,
                                  key_id=opener.key_id, operation="decrypt")
        if opener.bound:
            return opener.open(blob, binding)
        if strict:
            raise DecryptionError("decryption failed: the envelope is not bound to its "
                                  "row (strict_binding)", column=self.label,
                                  key_id=opener.key_id, operation="decrypt")
        return opener.open(blob)

    def _read_entry(self, blob: bytes) -> Opener:
        r = self._entry_for(blob)
        if r[0].bound:
            raise DecryptionError("decryption failed: the envelope is bound to its row; "
                                  "read it with the row", column=self.label,
                                  key_id=r[0].key_id, operation="decrypt")
        self._last_opener, self._last_entry = r
        return r[0]

    def _entry_for(self, blob: bytes) -> tuple[Opener, Entry]:
        """The opener of ``blob``'s header and the cache entry of its key."""
        try:
            hdr = header_of(blob)
        except EnvelopeFormatError as exc:
            raise exc.with_column(self.label) from None
        r = self._reads.get(hdr)
        if r is None or self._clock() >= r[1].expires:
            key_id = header_key_id(hdr)
            try:
                e = self._keys.read_entry(key_id)
            except UnknownKeyError as exc:
                if exc.key_id != str(key_id):  # e.g. the KMS does not know the master key
                    exc.with_column(self.label)
                    raise
                # No such data key here: tampered with, or copied from another database.
                # Same opaque error as a failed tag (DecryptionError's contract).
                raise DecryptionError("decryption failed: no data key with this id",
                                      column=self.label, key_id=key_id,
                                      operation="decrypt") from None
            except PIIGuardError as exc:
                exc.with_column(self.label)
                raise
            r = (Opener(e.key, hdr, self.ctx), e)
            if len(self._reads) > 64:  # many keys seen: keep the map small
                self._reads.clear()
            self._reads[hdr] = r
        return r

    # -- strings -----------------------------------------------------------------------------
    def encrypt_str(self, value: str, *, scope: str | None = None) -> bytes:
        # encrypt() refuses the UTF-8 of a text envelope ("pg1:...") as well.
        return self.encrypt(utf8(value, self.label), scope=scope)

    def decrypt_str(self, blob: bytes) -> str:
        return self.decrypt(blob).decode("utf-8")

    def encrypt_text(self, value: str, *, scope: str | None = None) -> str:
        """Text envelope (``pg1:...``) for VARCHAR/TEXT columns and JSON."""
        return encode_text(self.encrypt_str(value, scope=scope))

    def decrypt_text(self, text: str) -> str:
        try:
            blob = decode_text(text)
        except EnvelopeFormatError as exc:
            raise exc.with_column(self.label) from None
        return self.decrypt_str(blob)

    @staticmethod
    def key_id_of(blob: bytes | str) -> int:
        """The DEK id an envelope names (no decryption); :class:`EnvelopeFormatError`
        if ``blob`` is not a well-formed envelope."""
        return key_id_of(blob)


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
        self._ctx = index_context(table, column)

    def __repr__(self) -> str:
        return f"FieldIndex({self.label!r}, scope={self.scope!r}, bits={self.bits})"

    def compute(self, canonical: str) -> bytes:
        key: BlindIndexKey = self._keys.active_index_key(self.scope)
        return key.compute(self._ctx, utf8(canonical, self.label, "index"), self.bits)

    def candidates(self, canonical: str) -> list[bytes]:
        raw = utf8(canonical, self.label, "index")
        return [k.compute(self._ctx, raw, self.bits)
                for k in self._keys.usable_index_keys(self.scope)]

    def usable_keys(self) -> list[BlindIndexKey]:
        """The index keys lookups consult now (the same list object while the key cache
        is fresh, so callers can memoise on its identity)."""
        return self._keys.usable_index_keys(self.scope)

    def cached_key_count(self) -> int | None:
        """``len(usable_keys())`` if known without I/O (warm key cache), else None."""
        return self._keys.cached_index_key_count(self.scope)

    def with_key(self, key_id: int, canonical: str) -> bytes:
        return self._keys.index_key(key_id).compute(
            self._ctx, utf8(canonical, self.label, "index"), self.bits)


class FormIndex(FieldIndex):
    """A :class:`FieldIndex` of one form of a value: ``form(value)`` is indexed, so every
    spelling with the same form finds the same rows (addresses are stored as written
    and indexed by their canonical text). The same keys and context as ``inner``.

    >>> from sqlalchemy import create_engine
    >>> from piiguard import Guard, LocalKMS
    >>> guard = Guard(kms=LocalKMS.generate()).bind(create_engine("sqlite://"))
    >>> inner = guard.blind_index("c", "city")
    >>> folded = FormIndex(inner, str.upper)
    >>> folded.compute("ankara") == folded.compute("ANKARA") == inner.compute("ANKARA")
    True
    """

    __slots__ = ("form",)

    def __init__(self, inner: FieldIndex, form: Callable[[str], str]) -> None:
        self._keys = inner._keys
        self.scope = inner.scope
        self.bits = inner.bits
        self.label = inner.label
        self._ctx = inner._ctx
        self.form = form

    def __repr__(self) -> str:
        return f"FormIndex({self.label!r}, scope={self.scope!r}, bits={self.bits})"

    def compute(self, canonical: str) -> bytes:
        return super().compute(self.form(canonical))

    def candidates(self, canonical: str) -> list[bytes]:
        return super().candidates(self.form(canonical))

    def with_key(self, key_id: int, canonical: str) -> bytes:
        return super().with_key(key_id, self.form(canonical))
