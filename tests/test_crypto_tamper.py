"""Tampering with a stored envelope always fails closed, at every byte and bit.

For 11-, 13- and 200-byte plaintexts, padded and unpadded, binary and text forms:
every single-bit flip, every truncation and one appended byte make
``Guard.field(...).decrypt`` raise ``DecryptionError`` (authentication failed) or
``EnvelopeFormatError`` (not a well-formed envelope): never plaintext, never another
exception. Which of the two is expected is checked position by position.
"""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine

from piiguard import Guard, LocalKMS
from piiguard.crypto.envelope import HEADER_SIZE, MIN_SIZE
from piiguard.errors import DecryptionError, EnvelopeFormatError

SIZES = (11, 13, 200)


@pytest.fixture(scope="module")
def cipher_guard():
    guard = Guard(kms=LocalKMS.generate()).bind(create_engine("sqlite://"))
    # Keys 1..8 belong to other scopes, so a flipped DEK id bit often lands on a real
    # key (wrong key: authentication fails) and otherwise on no key at all.
    for i in range(8):
        guard.field(f"other{i}", "x").encrypt(b"warm")
    return guard


def _plaintext(n: int) -> bytes:
    return bytes((0x41 + i % 26) for i in range(n))


def _expected_binary(blob: bytes, tampered: bytes) -> tuple[type, ...]:
    """Which error a tampered binary envelope must raise."""
    # 0x10-0x13: v1 with the padded (0x01) and row-bound (0x02) flags; a flipped flag
    # bit still parses, and fails to authenticate
    if len(tampered) < MIN_SIZE or tampered[0] & 0xFC != 0x10:
        return (EnvelopeFormatError,)
    return (DecryptionError,)


def _check(fn, tampered, expected, plaintext):
    try:
        out = fn(tampered)
    except expected as exc:
        msg = str(exc) + repr(exc)
        assert plaintext.decode() not in msg
        return type(exc)
    except Exception as exc:  # noqa: BLE001 - anything else is a failure
        pytest.fail(f"{type(exc).__name__} ({exc}) instead of {expected}")
    pytest.fail(f"tampered envelope decrypted to {out!r}")


@pytest.mark.parametrize("padded", [False, True], ids=["unpadded", "padded"])
@pytest.mark.parametrize("size", SIZES)
def test_every_bit_flip_truncation_and_append_fails_binary(cipher_guard, size, padded):
    cipher = cipher_guard.field("customers", "notes", padded=padded)
    plaintext = _plaintext(size)
    blob = cipher.encrypt(plaintext)
    assert cipher.decrypt(blob) == plaintext
    seen: dict[str, set[type]] = {"flip": set(), "truncate": set(), "append": set()}
    flips = 0
    for pos in range(len(blob)):
        for bit in range(8):
            tampered = bytearray(blob)
            tampered[pos] ^= 1 << bit
            tampered = bytes(tampered)
            seen["flip"].add(_check(cipher.decrypt, tampered,
                                    _expected_binary(blob, tampered), plaintext))
            flips += 1
    assert flips == 8 * len(blob)
    for n in range(len(blob)):
        seen["truncate"].add(_check(cipher.decrypt, blob[:n],
                                    _expected_binary(blob, blob[:n]), plaintext))
    for extra in (b"\x00", b"\xff"):
        seen["append"].add(_check(cipher.decrypt, blob + extra, (DecryptionError,),
                                  plaintext))
    # Both kinds of failure really occur (flips of the format byte vs. the rest).
    assert seen["flip"] == {DecryptionError, EnvelopeFormatError}
    assert seen["truncate"] == {DecryptionError, EnvelopeFormatError}
    # The untouched envelope still decrypts: no state was damaged by the failures.
    assert cipher.decrypt(blob) == plaintext


@pytest.mark.parametrize("padded", [False, True], ids=["unpadded", "padded"])
@pytest.mark.parametrize("size", SIZES)
def test_every_bit_flip_truncation_and_append_fails_text(cipher_guard, size, padded):
    cipher = cipher_guard.field("customers", "notes_text", padded=padded)
    plaintext = _plaintext(size)
    text = cipher.encrypt_text(plaintext.decode())
    assert cipher.decrypt_text(text) == plaintext.decode()
    raw = text.encode("ascii")
    expected = (DecryptionError, EnvelopeFormatError)
    dec = lambda t: cipher.decrypt_text(t).encode()  # noqa: E731
    kinds = set()
    for pos in range(len(raw)):
        for bit in range(8):
            tampered = bytearray(raw)
            tampered[pos] ^= 1 << bit
            # latin-1 maps every byte to one character: a flipped high bit gives a
            # non-ASCII character, as a database could hand back.
            kinds.add(_check(dec, bytes(tampered).decode("latin-1"), expected, plaintext))
            if pos < 4:  # the "pg1:" prefix
                with pytest.raises(EnvelopeFormatError):
                    cipher.decrypt_text(bytes(tampered).decode("latin-1"))
    for n in range(len(raw)):
        kinds.add(_check(dec, text[:n], expected, plaintext))
    for extra in ("A", "=", "-", "é"):
        kinds.add(_check(dec, text + extra, expected, plaintext))
    assert kinds == {DecryptionError, EnvelopeFormatError}
    assert cipher.decrypt_text(text) == plaintext.decode()


def test_header_flips_name_the_column_and_key_not_the_value(cipher_guard):
    cipher = cipher_guard.field("customers", "national_id")
    blob = cipher.encrypt(b"10000000146")
    for pos in range(HEADER_SIZE):
        tampered = bytearray(blob)
        tampered[pos] ^= 0x01
        with pytest.raises((DecryptionError, EnvelopeFormatError)) as info:
            cipher.decrypt(bytes(tampered))
        assert "customers.national_id" in str(info.value)
        assert "10000000146" not in str(info.value)
