"""Length-hiding padding: bucket sizes, and pad/unpad across every length up to 9 KB."""

from __future__ import annotations

import pytest

from piiguard.crypto.padding import bucket_size, pad, unpad
from piiguard.errors import DecryptionError


def _bucket_reference(n: int) -> int:
    # The rule as documented: powers of two from 16 to 4096, then multiples of 4096.
    need = n + 1
    if need > 4096:
        return -(-need // 4096) * 4096
    size = 16
    while size < need:
        size <<= 1
    return size


def test_bucket_sizes_follow_the_documented_rule():
    sizes = {bucket_size(n) for n in range(9000)}
    assert all(bucket_size(n) == _bucket_reference(n) for n in range(9000))
    assert sorted(sizes) == [16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 12288]


def test_pad_unpad_every_length():
    # Both paths: the table of ready-made paddings (< 512 bytes) and the general one.
    for n in range(9000):
        data = bytes((n + i) % 256 or 1 for i in range(n))
        padded = pad(data)
        assert len(padded) == _bucket_reference(n)
        assert padded[n] == 0x80 and not any(padded[n + 1:])
        assert unpad(padded) == data


@pytest.mark.parametrize("bad", [b"", bytes(16), b"abc" + bytes(13), b"\x80\x01" + bytes(14)])
def test_unpad_refuses_bad_padding(bad):
    with pytest.raises(DecryptionError):
        unpad(bad)
