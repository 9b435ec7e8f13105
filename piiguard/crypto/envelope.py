"""Envelope format v1: how one encrypted value is laid out (see ``docs/format.md``).

This module is the one owner of the format: every other module seals, opens, peeks at
and searches for envelopes through the functions and prepared objects below, and none
of them slices envelope bytes or knows the header length.

Binary form (BYTEA / BLOB / VARBINARY)::

    offset  size  field
    0       1     format byte: 0x10 = v1; flags in the low nibble: 0x01 padded
                  plaintext, 0x02 bound to its row (so 0x10, 0x11, 0x12, 0x13)
    1       4     DEK id, unsigned big-endian (the key table's id)
    5       12    nonce (random)
    17      n+16  AES-256-GCM ciphertext of the (padded) plaintext, then the 16-byte tag

33 bytes over the plaintext. The associated data is the 5-byte header followed by the
field context (domain, table, column), each part length-prefixed, so a value moved to
another column, table or key fails to decrypt. A *bound* envelope (flag 0x02) adds the
values of named columns of its row (:class:`BindingLayout`), so it fails to decrypt in
another row, or in its own row once a bound column (a version) changed. The text form
(VARCHAR / TEXT) is ``"pg1:" + base64url(binary, no padding)``.

The hot paths use objects prepared once per key and field: a :class:`Sealer` (header and
associated data built once, one AES-GCM call per value) and an :class:`Opener` (the
same for reading). :func:`seal` and the deterministic :func:`_seal_from_parts` used by
the golden vectors go through the very same :class:`Sealer`.

>>> from piiguard.crypto.aead import DataKey
>>> key = DataKey(1, bytes(range(32)))
>>> ctx = FieldContext("sql", "customers", "national_id")
>>> blob = _seal_from_parts(key, bytes(12), b"10000000146", ctx)
>>> len(blob) - len(b"10000000146")
33
>>> open_with(key, blob, ctx)
b'10000000146'
>>> key_id_of(blob), key_id_of(encode_text(blob))
(1, 1)
>>> open_with(key, blob, FieldContext("sql", "customers", "phone"))
Traceback (most recent call last):
...
piiguard.errors.DecryptionError: decryption failed column=customers.phone key_id=1 operation=decrypt
>>> decode_text(encode_text(blob)) == blob
True
>>> parse_header(b"not an envelope")
Traceback (most recent call last):
...
piiguard.errors.EnvelopeFormatError: not a piiguard envelope: too short operation=decrypt
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Callable, Iterable
from typing import Any

from cryptography.exceptions import InvalidTag

from piiguard.crypto.aead import NONCE_SIZE, TAG_SIZE, DataKey
from piiguard.crypto.binding import BindingLayout
from piiguard.crypto.padding import pad, unpad
from piiguard.errors import DecryptionError, EnvelopeFormatError

__all__ = [
    "BINARY_OVERHEAD",
    "BindingLayout",
    "FORMATS",
    "MAX_SIZE",
    "TEXT_PREFIX",
    "KEY_PREFIX",
    "FieldContext",
    "Opener",
    "Sealer",
    "decode_text",
    "encode_text",
    "header_key_id",
    "header_of",
    "is_binary_shape",
    "is_bound",
    "is_text_envelope_bytes",
    "key_bytes",
    "key_bytes_of",
    "key_id_bytes",
    "key_id_of",
    "key_ids_in_prefix",
    "key_prefixes",
    "looks_like_envelope",
    "may_be_envelope",
    "open_with",
    "parse_header",
    "peek_key_id",
    "seal",
    "to_blob",
    "unbound_prefixes",
]

FORMAT_V1 = 0x10
FLAG_PADDED = 0x01
#: The envelope is bound to values of its row (see :class:`BindingLayout`).
FLAG_BOUND = 0x02
#: Every format byte of version 1: plain, padded, bound, bound and padded.
FORMATS = (FORMAT_V1, FORMAT_V1 | FLAG_PADDED, FORMAT_V1 | FLAG_BOUND,
           FORMAT_V1 | FLAG_BOUND | FLAG_PADDED)
#: The format bytes of envelopes not bound to a row (written before row binding).
UNBOUND_FORMATS = FORMATS[:2]
HEADER_SIZE = 5
BINARY_OVERHEAD = HEADER_SIZE + NONCE_SIZE + TAG_SIZE  # 33
MIN_SIZE = BINARY_OVERHEAD
#: Largest envelope accepted (64 MiB); checked before anything is sliced or decoded.
MAX_SIZE = 64 * 1024 * 1024
TEXT_PREFIX = "pg1:"
_TEXT_PREFIX_BYTES = TEXT_PREFIX.encode("ascii")
_MAX_TEXT = len(TEXT_PREFIX) + (MAX_SIZE * 4) // 3 + 4
_NONCE_END = HEADER_SIZE + NONCE_SIZE
#: First byte of every envelope, binary (a format byte) or text ("p" of "pg1:"): a value
#: starting with anything else is certainly not one (a one-byte test on hot paths).
_FIRST_BYTES = frozenset((*FORMATS, _TEXT_PREFIX_BYTES[0]))
#: Characters of a text envelope's body that fix its format byte and DEK id: base64
#: turns bytes 0-5 into characters 0-7, and characters 0-6 cover bytes 0-4 (the header)
#: plus 2 bits of the nonce.
_TEXT_KEY_CHARS = 7


class FieldContext:
    """Where a value lives: the parts bound into its associated data.

    ``FieldContext("sql", "customers", "phone")`` serialises each part as a 2-byte
    length and its UTF-8 bytes, so ("ab", "c") and ("a", "bc") differ:

    >>> FieldContext("x", "ab", "c").aad != FieldContext("x", "a", "bc").aad
    True
    >>> FieldContext("sql", "customers", "phone")
    FieldContext('sql', 'customers', 'phone')
    """

    __slots__ = ("parts", "aad", "label")

    def __init__(self, *parts: str) -> None:
        out = bytearray()
        for part in parts:
            raw = part.encode("utf-8")
            if len(raw) > 0xFFFF:
                raise EnvelopeFormatError("context part too long", operation="encrypt")
            out += len(raw).to_bytes(2, "big") + raw
        self.parts = parts
        self.aad = bytes(out)
        self.label = ".".join(parts[1:]) if len(parts) > 1 else ".".join(parts)

    def __repr__(self) -> str:
        return "FieldContext(" + ", ".join(repr(p) for p in self.parts) + ")"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FieldContext) and other.aad == self.aad

    def __hash__(self) -> int:
        return hash(self.aad)


# -- sealing and opening ------------------------------------------------------------------
class Sealer:
    """Seals values of one field under one DEK: header and associated data built once.

    ``padded`` pads the plaintext to a size bucket first (format byte 0x11).
    ``seal(plaintext)`` is the whole hot path: a nonce, one AES-GCM call, two joins.
    ``bound=True`` makes row-bound envelopes (flag 0x02): seal them with
    :meth:`seal_bound`, giving the row's binding (:meth:`BindingLayout.aad`).

    >>> from piiguard.crypto.aead import DataKey
    >>> key = DataKey(7, bytes(32))
    >>> sealer = Sealer(key, FieldContext("sql", "t", "c"))
    >>> sealer.key_id, len(sealer.seal(b"abc"))
    (7, 36)
    """

    __slots__ = ("key_id", "padded", "bound", "_header", "_aad", "_encrypt", "_nonce")

    def __init__(self, key: DataKey, ctx: FieldContext, *, padded: bool = False,
                 bound: bool = False, nonce: Callable[[], bytes] | None = None) -> None:
        self.key_id = key.id
        self.padded = padded
        self.bound = bound
        fmt = FORMAT_V1 | (FLAG_PADDED if padded else 0) | (FLAG_BOUND if bound else 0)
        self._header = bytes((fmt,)) + key.id_bytes
        self._aad = self._header + ctx.aad
        self._encrypt = key.aead.encrypt
        self._nonce = nonce or key.nonce12

    def __repr__(self) -> str:
        return f"Sealer(key_id={self.key_id}, padded={self.padded}, bound={self.bound})"

    def seal_bound(self, plaintext: bytes, binding: bytes) -> bytes:
        """Row-bound envelope of ``plaintext``: ``binding`` (a
        :meth:`BindingLayout.aad`) joins the associated data."""
        if not self.bound:
            raise EnvelopeFormatError("this sealer makes unbound envelopes",
                                      key_id=self.key_id, operation="encrypt")
        try:
            nonce = self._nonce()
        except ValueError:
            nonce = os.urandom(NONCE_SIZE)
        if self.padded:
            plaintext = pad(plaintext)
        return self._header + nonce + self._encrypt(nonce, plaintext, self._aad + binding)

    def seal(self, plaintext: bytes) -> bytes:
        """Binary envelope of ``plaintext`` (padded first when the sealer pads)."""
        try:
            nonce = self._nonce()
        except ValueError:  # BufferedNonces raced by another thread: take a fresh one
            nonce = os.urandom(NONCE_SIZE)
        if self.padded:
            plaintext = pad(plaintext)
        return self._header + nonce + self._encrypt(nonce, plaintext, self._aad)

    def seal_prepared(self, data: bytes, binding: bytes = b"") -> bytes:
        """Binary envelope of ``data`` taken as already padded when the sealer pads
        (what :meth:`Opener.open_prepared` returns): re-encryption keeps the stored
        plaintext byte for byte, without an unpad/pad round trip. A bound sealer takes
        the row's ``binding``."""
        if self.bound != bool(binding):
            raise EnvelopeFormatError("a bound envelope needs its binding, an unbound one "
                                      "none", key_id=self.key_id, operation="encrypt")
        try:
            nonce = self._nonce()
        except ValueError:
            nonce = os.urandom(NONCE_SIZE)
        return self._header + nonce + self._encrypt(nonce, data, self._aad + binding)


class Opener:
    """Opens envelopes of one field that carry one header (one DEK, one format).

    Look openers up by :func:`header_of` and test a value with
    ``blob.startswith(opener.header)``; :meth:`open` then needs no further check.
    Every failure is one opaque :class:`~piiguard.errors.DecryptionError` naming the
    field and the key id. A row-bound header (:attr:`bound`) opens only with the row's
    binding (:meth:`open` with ``binding=``).

    >>> from piiguard.crypto.aead import DataKey
    >>> key = DataKey(7, bytes(32))
    >>> ctx = FieldContext("sql", "t", "c")
    >>> blob = Sealer(key, ctx, padded=True).seal(b"abc")
    >>> opener = Opener(key, header_of(blob), ctx)
    >>> opener.open(blob), opener.padded
    (b'abc', True)
    """

    __slots__ = ("key_id", "header", "padded", "bound", "label", "_aad", "_decrypt")

    def __init__(self, key: DataKey, header: bytes, ctx: FieldContext) -> None:
        if len(header) != HEADER_SIZE or header[0] not in FORMATS \
                or header[1:] != key.id_bytes:
            raise EnvelopeFormatError("header does not name this key", key_id=key.id,
                                      operation="decrypt")
        self.key_id = key.id
        self.header = bytes(header)
        self.padded = bool(header[0] & FLAG_PADDED)
        self.bound = bool(header[0] & FLAG_BOUND)
        self.label = ctx.label
        self._aad = self.header + ctx.aad
        self._decrypt = key.aead.decrypt

    def __repr__(self) -> str:
        return (f"Opener(key_id={self.key_id}, padded={self.padded}, bound={self.bound}, "
                f"field={self.label!r})")

    def open_prepared(self, blob: bytes, binding: bytes = b"") -> bytes:
        """The stored plaintext, still padded if the format byte says so (a bound
        envelope with its row's ``binding``)."""
        if len(blob) < MIN_SIZE:
            raise EnvelopeFormatError("not a piiguard envelope: too short",
                                      column=self.label or None, operation="decrypt")
        try:
            return self._decrypt(blob[HEADER_SIZE:_NONCE_END], blob[_NONCE_END:],
                                 self._aad + binding if binding else self._aad)
        except (InvalidTag, ValueError, OverflowError):
            raise DecryptionError("decryption failed", column=self.label or None,
                                  key_id=self.key_id, operation="decrypt") from None

    def open(self, blob: bytes, binding: bytes = b"") -> bytes:
        """The plaintext of ``blob`` (which starts with :attr:`header`); a bound envelope
        opens only with its row's ``binding``."""
        data = self.open_prepared(blob, binding)
        if not self.padded:
            return data
        try:
            return unpad(data)
        except DecryptionError:
            raise DecryptionError("decryption failed", column=self.label or None,
                                  key_id=self.key_id, operation="decrypt") from None


def seal(key: DataKey, plaintext: bytes, ctx: FieldContext, *, padded: bool = False,
         binding: bytes = b"") -> bytes:
    """Encrypt ``plaintext`` for ``ctx`` under ``key`` with a fresh nonce (bound to a
    row when ``binding`` is given)."""
    sealer = Sealer(key, ctx, padded=padded, bound=bool(binding))
    return sealer.seal_bound(plaintext, binding) if binding else sealer.seal(plaintext)


def _seal_from_parts(key: DataKey, nonce: bytes, plaintext: bytes, ctx: FieldContext, *,
                     padded: bool = False, binding: bytes = b"") -> bytes:
    """Deterministic path (fixed nonce) for golden test vectors; never use it otherwise.
    The same :class:`Sealer` as production, given the nonce."""
    sealer = Sealer(key, ctx, padded=padded, bound=bool(binding), nonce=lambda: nonce)
    return sealer.seal_bound(plaintext, binding) if binding else sealer.seal(plaintext)


def open_with(key: DataKey, blob: bytes, ctx: FieldContext, binding: bytes = b"") -> bytes:
    """Decrypt one envelope under ``key`` (shape checked first; a bound one with its
    row's ``binding``)."""
    return Opener(key, header_of(blob), ctx).open(blob, binding)


# -- peeking without decrypting ------------------------------------------------------------
def parse_header(blob: bytes) -> tuple[int, int]:
    """Check an envelope's shape and return ``(format_byte, dek_id)``; no decryption."""
    n = len(blob)
    if n < MIN_SIZE:
        raise EnvelopeFormatError("not a piiguard envelope: too short", operation="decrypt")
    if n > MAX_SIZE:
        raise EnvelopeFormatError("not a piiguard envelope: too long", operation="decrypt")
    fmt = blob[0]
    if fmt not in FORMATS:
        raise EnvelopeFormatError("not a piiguard envelope: unknown format version",
                                  operation="decrypt")
    return fmt, int.from_bytes(blob[1:HEADER_SIZE], "big")


def header_of(blob: bytes) -> bytes:
    """The header of a binary envelope (format byte and DEK id) after checking its
    shape: the key to look an :class:`Opener` up by."""
    parse_header(blob)
    return bytes(blob[:HEADER_SIZE])


def header_key_id(header: bytes) -> int:
    """The DEK id named by a header that :func:`header_of` returned."""
    return int.from_bytes(header[1:HEADER_SIZE], "big")


def is_bound(blob: bytes) -> bool:
    """True if a binary envelope (checked with :func:`to_blob` or :func:`header_of`)
    is bound to its row (flag 0x02).

    >>> from piiguard.crypto.aead import DataKey
    >>> key, ctx = DataKey(1, bytes(32)), FieldContext("sql", "t", "c")
    >>> is_bound(seal(key, b"x", ctx)), is_bound(seal(key, b"x", ctx, binding=b"\\0\\0"))
    (False, True)
    """
    return bool(blob[0] & FLAG_BOUND)


def key_id_of(stored: bytes | bytearray | memoryview | str) -> int:
    """The DEK id an envelope names, binary or text (no decryption);
    :class:`~piiguard.errors.EnvelopeFormatError` if it is not a well-formed one."""
    if isinstance(stored, str):
        stored = decode_text(stored)
    return parse_header(bytes(stored))[1]


def to_blob(stored: Any) -> bytes | None:
    """The binary envelope a stored value holds (binary, text, or a text envelope kept
    in a binary column), or ``None`` if it is not an envelope. Never raises."""
    if type(stored) is bytes and MIN_SIZE <= len(stored) <= MAX_SIZE \
            and stored[0] in FORMATS:
        return stored  # the common case: a binary envelope as the driver returns it
    if isinstance(stored, str):
        if not stored.startswith(TEXT_PREFIX):
            return None
        try:
            blob = decode_text(stored)
        except EnvelopeFormatError:
            return None
    elif isinstance(stored, (bytes, bytearray, memoryview)):
        blob = bytes(stored)
        if blob.startswith(_TEXT_PREFIX_BYTES):
            try:
                blob = decode_text(blob.decode("ascii"))
            except (UnicodeDecodeError, EnvelopeFormatError):
                return None
    else:
        return None
    if not MIN_SIZE <= len(blob) <= MAX_SIZE or blob[0] not in FORMATS:
        return None
    return blob


def peek_key_id(stored: Any) -> int | None:
    """The DEK id of a stored value, or ``None`` if it is not an envelope. Never raises.

    >>> peek_key_id("10000000146") is None
    True
    """
    blob = to_blob(stored)
    return None if blob is None else int.from_bytes(blob[1:HEADER_SIZE], "big")


def may_be_envelope(data: bytes | bytearray | memoryview) -> bool:
    """False when the first byte proves ``data`` is no envelope (binary or the UTF-8 of
    a text one): a one-byte test that lets hot paths skip the full check."""
    return bool(data) and data[0] in _FIRST_BYTES


def is_binary_shape(data: bytes | bytearray | memoryview) -> bool:
    """True if ``data`` has the shape of a binary envelope (length and format byte);
    matches about 1 in 128 random byte strings, so it never proves one on its own."""
    return MIN_SIZE <= len(data) <= MAX_SIZE and data[0] in FORMATS


def is_text_envelope_bytes(data: bytes | bytearray | memoryview) -> bool:
    """True if ``data`` is the ASCII of a well-formed text envelope (``pg1:...``)."""
    if not bytes(data[:len(_TEXT_PREFIX_BYTES)]) == _TEXT_PREFIX_BYTES:
        return False
    try:
        return looks_like_envelope(bytes(data).decode("ascii"))
    except UnicodeDecodeError:
        return False


# -- text form ------------------------------------------------------------------------------
def encode_text(blob: bytes) -> str:
    """Text form of a binary envelope: ``pg1:`` + URL-safe base64 without padding."""
    return TEXT_PREFIX + base64.urlsafe_b64encode(blob).rstrip(b"=").decode("ascii")


def decode_text(text: str) -> bytes:
    """Binary form of a text envelope; the shape is checked, the content is not."""
    if not isinstance(text, str) or not text.startswith(TEXT_PREFIX):
        raise EnvelopeFormatError("not a piiguard text envelope: missing prefix",
                                  operation="decrypt")
    if len(text) > _MAX_TEXT:
        raise EnvelopeFormatError("not a piiguard envelope: too long", operation="decrypt")
    body = text[len(TEXT_PREFIX):]
    try:
        blob = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise EnvelopeFormatError("not a piiguard text envelope: bad base64",
                                  operation="decrypt") from None
    if encode_text(blob) != text:  # reject non-canonical encodings (extra bits, '=' etc.)
        raise EnvelopeFormatError("not a piiguard text envelope: non-canonical base64",
                                  operation="decrypt")
    return blob


def looks_like_envelope(value: str | bytes) -> bool:
    """True if ``value`` parses as a v1 envelope (text or binary form); never raises.

    >>> looks_like_envelope("10000000146")
    False
    """
    try:
        blob = decode_text(value) if isinstance(value, str) else bytes(value)
        parse_header(blob)
    except (EnvelopeFormatError, TypeError, ValueError):
        return False
    return True


# -- key ids in SQL: the prefixes that name a key ------------------------------------------
class KeyPrefix:
    """Where a stored value names its DEK, for queries that group or filter rows by key
    without decrypting (``keys status``, ``reencrypt``): the first :attr:`binary_length`
    bytes of a binary envelope, or the first :attr:`text_length` characters after the
    ``pg1:`` prefix of a text one (:attr:`text_offset` characters in).

    >>> KEY_PREFIX.binary_length, KEY_PREFIX.text_offset, KEY_PREFIX.text_length
    (5, 4, 7)
    """

    __slots__ = ()
    binary_length = HEADER_SIZE
    text_offset = len(TEXT_PREFIX)
    text_length = _TEXT_KEY_CHARS


KEY_PREFIX = KeyPrefix()


def key_prefixes(key_id: int, *, text: bool = False) -> list[bytes] | list[str]:
    """Every prefix (see :class:`KeyPrefix`) a value under ``key_id`` can start with.

    >>> key_prefixes(1, text=True)[:2]
    ['EAAAAAE', 'EAAAAAF']
    >>> key_prefixes(9)[:2]
    [b'\\x10\\x00\\x00\\x00\\t', b'\\x11\\x00\\x00\\x00\\t']
    """
    kid = key_id.to_bytes(4, "big")
    if not text:
        return [bytes((fmt,)) + kid for fmt in FORMATS]
    out: list[str] = []
    for fmt in FORMATS:
        for top in range(4):  # the 7th character carries 2 random bits of the nonce
            raw = bytes((fmt,)) + kid + bytes((top << 6,))
            out.append(base64.urlsafe_b64encode(raw).decode("ascii")[:_TEXT_KEY_CHARS])
    return out


def unbound_prefixes(*, text: bool = False) -> list[bytes] | list[str]:
    """What an envelope that is *not* row-bound starts with (one written before row
    binding, or for an unbound column): its format byte (binary), or the first 2
    characters of a text envelope's body after ``pg1:`` (:attr:`KeyPrefix.text_offset`
    characters in). Re-encryption finds the envelopes it upgrades with these.

    >>> unbound_prefixes()
    [b'\\x10', b'\\x11']
    >>> p = unbound_prefixes(text=True); len(p), p[0], p[-1]
    (32, 'EA', 'Ef')
    """
    if not text:
        return [bytes((fmt,)) for fmt in UNBOUND_FORMATS]
    out: list[str] = []
    for fmt in UNBOUND_FORMATS:
        for top in range(16):  # the 2nd character carries the DEK id's first 4 bits
            raw = bytes((fmt, top << 4, 0))
            out.append(base64.urlsafe_b64encode(raw).decode("ascii")[:2])
    return out


def key_ids_in_prefix(prefix: Any, *, text: bool = False) -> int | None:
    """The DEK id a prefix (see :class:`KeyPrefix`) names; ``None`` if it is no
    envelope's. Never raises.

    >>> key_ids_in_prefix('EAAAAAF', text=True), key_ids_in_prefix(bytes((0x11, 0, 0, 0, 9)))
    (1, 9)
    """
    if prefix is None:
        return None
    if text:
        if isinstance(prefix, (bytes, bytearray, memoryview)):
            prefix = bytes(prefix).decode("ascii", "replace")
        if not isinstance(prefix, str) or len(prefix) != _TEXT_KEY_CHARS:
            return None
        try:
            raw = base64.urlsafe_b64decode(prefix + "A")
        except (ValueError, TypeError):
            return None
    else:
        try:
            raw = bytes(prefix)
        except TypeError:
            return None
        if len(raw) != HEADER_SIZE:
            return None
    if raw[0] not in FORMATS:
        return None
    return int.from_bytes(raw[1:HEADER_SIZE], "big")


def key_bytes(key_id: int) -> bytes:
    """The form of a DEK id that :func:`key_bytes_of` returns."""
    return key_id.to_bytes(4, "big")


def key_id_bytes(key_ids: Iterable[int]) -> frozenset[bytes]:
    """The forms of DEK ids that :func:`key_bytes_of` returns, as a set."""
    return frozenset(key_bytes(i) for i in key_ids)


def key_bytes_of(blob: bytes) -> bytes:
    """The 4 bytes naming the DEK of a binary envelope checked with :func:`to_blob`
    (hot paths compare them with :func:`key_id_bytes` sets, no int conversion)."""
    return blob[1:HEADER_SIZE]
