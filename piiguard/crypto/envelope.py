"""Envelope format v1: how one encrypted value is laid out (see ``docs/format.md``).

Binary form (BYTEA / BLOB / VARBINARY)::

    offset  size  field
    0       1     format byte: 0x10 = v1, 0x11 = v1 with padded plaintext
    1       4     DEK id, unsigned big-endian (the key table's id)
    5       12    nonce (random)
    17      n+16  AES-256-GCM ciphertext of the (padded) plaintext, then the 16-byte tag

33 bytes over the plaintext. The associated data is the 5-byte header followed by the
field context (domain, table, column), each part length-prefixed, so a value moved to
another column, table or key fails to decrypt. The text form (VARCHAR / TEXT) is
``"pg1:" + base64url(binary, no padding)``.

>>> from piiguard.crypto.aead import DataKey
>>> key = DataKey(1, bytes(range(32)))
>>> ctx = FieldContext("sql", "customers", "national_id")
>>> blob = _seal_from_parts(key, bytes(12), b"10000000146", ctx)
>>> len(blob) - len(b"10000000146")
33
>>> open_with(key, blob, ctx)
b'10000000146'
>>> open_with(key, blob, FieldContext("sql", "customers", "phone"))
Traceback (most recent call last):
...
piiguard.errors.DecryptionError: decryption failed key_id=1 operation=decrypt
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

from piiguard.crypto.aead import NONCE_SIZE, TAG_SIZE, DataKey
from piiguard.crypto.padding import pad, unpad
from piiguard.errors import EnvelopeFormatError

FORMAT_V1 = 0x10
FLAG_PADDED = 0x01
HEADER_SIZE = 5
BINARY_OVERHEAD = HEADER_SIZE + NONCE_SIZE + TAG_SIZE  # 33
MIN_SIZE = BINARY_OVERHEAD
#: Largest envelope accepted (64 MiB); checked before anything is sliced or decoded.
MAX_SIZE = 64 * 1024 * 1024
TEXT_PREFIX = "pg1:"
_MAX_TEXT = len(TEXT_PREFIX) + (MAX_SIZE * 4) // 3 + 4
_NONCE_END = HEADER_SIZE + NONCE_SIZE


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


def parse_header(blob: bytes) -> tuple[int, int]:
    """Check an envelope's shape and return ``(format_byte, dek_id)``; no decryption."""
    n = len(blob)
    if n < MIN_SIZE:
        raise EnvelopeFormatError("not a piiguard envelope: too short", operation="decrypt")
    if n > MAX_SIZE:
        raise EnvelopeFormatError("not a piiguard envelope: too long", operation="decrypt")
    fmt = blob[0]
    if fmt & 0xF0 != FORMAT_V1 or fmt & 0x0F & ~FLAG_PADDED:
        raise EnvelopeFormatError("not a piiguard envelope: unknown format version",
                                  operation="decrypt")
    return fmt, int.from_bytes(blob[1:5], "big")


def seal(key: DataKey, plaintext: bytes, ctx: FieldContext, *, padded: bool = False) -> bytes:
    """Encrypt ``plaintext`` for ``ctx`` under ``key`` with a fresh nonce."""
    return _seal_from_parts(key, key.new_nonce(), plaintext, ctx, padded=padded)


def _seal_from_parts(key: DataKey, nonce: bytes, plaintext: bytes, ctx: FieldContext, *,
                     padded: bool = False) -> bytes:
    """Deterministic path (fixed nonce) for golden test vectors; never use it otherwise."""
    if padded:
        header = bytes((FORMAT_V1 | FLAG_PADDED,)) + key.id_bytes
        plaintext = pad(plaintext)
    else:
        header = bytes((FORMAT_V1,)) + key.id_bytes
    return header + nonce + key.seal(nonce, plaintext, header + ctx.aad)


def open_with(key: DataKey, blob: bytes, ctx: FieldContext) -> bytes:
    """Decrypt an envelope whose header has been checked with :func:`parse_header`."""
    fmt = blob[0]
    header = blob[:HEADER_SIZE]
    data = key.open(blob[HEADER_SIZE:_NONCE_END], blob[_NONCE_END:], header + ctx.aad)
    return unpad(data) if fmt & FLAG_PADDED else data


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
