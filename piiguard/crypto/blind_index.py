"""Blind index: a keyed HMAC-SHA256 of a canonical value, for equality search.

The index key is separate from every DEK. Stored form: 4-byte index key id (big-endian)
followed by the HMAC, truncated to ``bits`` when asked (fewer bits leak less: equal
values no longer show as equal, and a lookup re-checks candidates after decryption).

>>> k = BlindIndexKey(3, bytes(32))
>>> k
BlindIndexKey(id=3, key=<redacted>)
>>> tag = k.compute(b"customers.national_id", b"10000000146")
>>> len(tag), tag[:4]
(36, b'\\x00\\x00\\x00\\x03')
>>> len(k.compute(b"c", b"v", bits=20))
7
>>> recommend_bits(1_000_000)
18
"""

from __future__ import annotations

import hashlib
import hmac
import math

from piiguard.errors import ConfigurationError

FULL_BITS = 256
KEY_ID_SIZE = 4


class BlindIndexKey:
    """One plaintext blind-index key in memory; its HMAC state is keyed once."""

    __slots__ = ("id", "id_bytes", "_base", "_by_context")

    def __init__(self, key_id: int, key: bytes) -> None:
        if len(key) < 32:
            raise ConfigurationError("a blind-index key must be at least 32 bytes",
                                     key_id=key_id)
        self.id = key_id
        self.id_bytes = key_id.to_bytes(KEY_ID_SIZE, "big")
        self._base = hmac.new(key, digestmod=hashlib.sha256)
        # HMAC state with the context already absorbed, per context (a few columns):
        # each value then costs one copy, one update and the digest.
        self._by_context: dict[bytes, hmac.HMAC] = {}

    def __repr__(self) -> str:
        return f"BlindIndexKey(id={self.id}, key=<redacted>)"

    def compute(self, context: bytes, canonical: bytes, bits: int = FULL_BITS) -> bytes:
        """Index value for ``canonical`` in ``context`` (``table.column``)."""
        base = self._by_context.get(context)
        if base is None:
            base = self._base.copy()
            base.update(len(context).to_bytes(2, "big"))
            base.update(context)
            if len(self._by_context) < 256:  # bounded: contexts are table.column names
                self._by_context[context] = base
        h = base.copy()
        h.update(canonical)
        digest = h.digest()
        if bits >= FULL_BITS:
            return self.id_bytes + digest
        return self.id_bytes + truncate(digest, bits)


def index_context(table: str, column: str) -> bytes:
    """The context a column's blind index values are computed in (``docs/format.md``
    section 5): ``table.column``, or length-prefixed parts when a name has a dot.

    >>> index_context("customers", "national_id")
    b'customers.national_id'
    >>> index_context("a.b", "c") != index_context("a", "b.c")
    True
    """
    if "." in table or "." in column:
        # "a.b" + "c" and "a" + "b.c" would share the context "a.b.c" (and so every
        # index value): such names get the length-prefixed parts instead, after a NUL
        # that no "table.column" text starts with. Names without dots keep "t.c".
        out = bytearray(b"\x00")
        for part in (table, column):
            raw = part.encode("utf-8")
            out += len(raw).to_bytes(2, "big") + raw
        return bytes(out)
    return f"{table}.{column}".encode("utf-8")


def index_key_bytes_of(value: bytes | bytearray | memoryview) -> bytes:
    """The 4 bytes naming the index key of a stored blind-index value."""
    return bytes(value[:KEY_ID_SIZE])


def index_key_id_of(value: bytes | bytearray | memoryview | None) -> int | None:
    """The index key id a stored blind-index value names; ``None`` if it is too short."""
    if isinstance(value, (bytes, bytearray, memoryview)) and len(value) > KEY_ID_SIZE:
        return int.from_bytes(bytes(value[:KEY_ID_SIZE]), "big")
    return None


def truncate(digest: bytes, bits: int) -> bytes:
    nbytes = -(-bits // 8)
    out = bytearray(digest[:nbytes])
    spare = nbytes * 8 - bits
    if spare:
        out[-1] &= (0xFF << spare) & 0xFF
    return bytes(out)


def check_bits(bits: int) -> int:
    if not isinstance(bits, int) or not 8 <= bits <= FULL_BITS:
        raise ConfigurationError("blind index bits must be an integer from 8 to 256")
    return bits


def recommend_bits(expected_rows: int) -> int:
    """Index size in bits for a table of ``expected_rows`` (CipherSweet's planner rule).

    Chooses the largest size at which every index value is still expected to be shared
    by at least 2 rows, and never so small that a lookup returns more than
    ``sqrt(rows)`` candidates: ``2 <= rows / 2**bits < sqrt(rows)``.

    The narrowest index is 8 bits, so the rule has no answer below 512 rows: there a
    :class:`~piiguard.errors.ConfigurationError` says so rather than return a size that
    breaks the rule (an 8-bit index over 300 rows singles most rows out anyway, so it
    would leak what a full index leaks; keep the full index, ``index_bits=256``, or
    plan with the row count the table will grow to).

    >>> recommend_bits(512), recommend_bits(10_000)
    (8, 12)
    >>> recommend_bits(511)
    Traceback (most recent call last):
        ...
    piiguard.errors.ConfigurationError: a table of 511 rows is too small for the rule
        2 <= rows / 2**bits (the narrowest index, 8 bits, needs 512 rows): keep the full
        index (index_bits=256) or plan with the row count the table will grow to
    """
    if not isinstance(expected_rows, int) or isinstance(expected_rows, bool):
        raise ConfigurationError("recommend_bits takes the expected number of rows (int)")
    if expected_rows < 2 * 2**8:
        raise ConfigurationError(
            f"a table of {expected_rows} rows is too small for the rule 2 <= rows / "
            "2**bits (the narrowest index, 8 bits, needs 512 rows): keep the full index "
            "(index_bits=256) or plan with the row count the table will grow to")
    bits = int(math.floor(math.log2(expected_rows / 2)))
    while bits < FULL_BITS and expected_rows / 2**bits >= math.sqrt(expected_rows):
        bits += 1
    return max(8, min(bits, FULL_BITS))
