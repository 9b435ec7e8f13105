"""Length-hiding padding for free text: the plaintext grows to a size bucket.

ISO/IEC 7816-4 style: append 0x80, then zero bytes up to the bucket size. Buckets are
powers of two from 16 to 4096 bytes, then multiples of 4096, so an 80-character address
and a 100-character one encrypt to the same length.

>>> len(pad(b"Kadikoy")), len(pad(b"x" * 16)), len(pad(b"x" * 5000))
(16, 32, 8192)
>>> unpad(pad("İstanbul".encode()))  == "İstanbul".encode()
True
"""

from __future__ import annotations

from piiguard.errors import DecryptionError

_MIN_BUCKET = 16
_LINEAR_FROM = 4096


def bucket_size(n: int) -> int:
    """Padded size for ``n`` plaintext bytes (always > n: the 0x80 marker needs a byte)."""
    need = n + 1
    if need > _LINEAR_FROM:
        return -(-need // _LINEAR_FROM) * _LINEAR_FROM
    size = _MIN_BUCKET
    while size < need:
        size <<= 1
    return size


def pad(data: bytes) -> bytes:
    return data + b"\x80" + bytes(bucket_size(len(data)) - len(data) - 1)


def unpad(data: bytes) -> bytes:
    end = len(data.rstrip(b"\x00")) - 1
    if end < 0 or data[end] != 0x80:
        # Authenticated data with bad padding means a bug or a forged format byte.
        raise DecryptionError("decryption failed: bad padding", operation="decrypt")
    return data[:end]
