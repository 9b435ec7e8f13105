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
    return max(_MIN_BUCKET, 1 << (need - 1).bit_length())


# The padding of every length below 512 bytes (most PII), made once: padding a value is
# then one concatenation. About 40 KB.
_SUFFIX = [b"\x80" + bytes(bucket_size(n) - n - 1) for n in range(512)]


def pad(data: bytes) -> bytes:
    n = len(data)
    if n < 512:
        return data + _SUFFIX[n]
    return data + b"\x80" + bytes(bucket_size(n) - n - 1)


def unpad(data: bytes) -> bytes:
    end = len(data.rstrip(b"\x00")) - 1
    if end < 0 or data[end] != 0x80:
        # Authenticated data with bad padding means a bug or a forged format byte.
        raise DecryptionError("decryption failed: bad padding", operation="decrypt")
    return data[:end]
