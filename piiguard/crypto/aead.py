"""AES-256-GCM with the key schedule built once per key.

A :class:`DataKey` is one plaintext data-encryption key (DEK) in memory: it wraps a
``cryptography`` ``AESGCM`` object built once (building it costs more than encrypting an
11-byte value) and the envelope header that names it. It never shows its key bytes::

    >>> key = DataKey(7, bytes(32))
    >>> key
    DataKey(id=7, key=<redacted>)
    >>> nonce = bytes(12)
    >>> ct = key.seal(nonce, b"hello", b"aad")
    >>> key.open(nonce, ct, b"aad")
    b'hello'
    >>> key.open(nonce, ct, b"other")
    Traceback (most recent call last):
    ...
    piiguard.errors.DecryptionError: decryption failed key_id=7 operation=decrypt
"""

from __future__ import annotations

import os
from typing import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from piiguard.errors import ConfigurationError, DecryptionError

AEAD_KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16

NonceSource = Callable[[int], bytes]


class DataKey:
    """One plaintext DEK in memory, ready to seal and open values.

    ``id`` is the key table id (a 32-bit unsigned integer, written into every envelope);
    ``nonce_source`` is injectable for deterministic test vectors (default ``os.urandom``).
    """

    __slots__ = ("id", "aead", "id_bytes", "nonce12", "__weakref__")

    def __init__(self, key_id: int, key: bytes, *,
                 nonce_source: NonceSource = os.urandom) -> None:
        if len(key) != AEAD_KEY_SIZE:
            raise ConfigurationError("a data key must be 32 bytes (AES-256)", key_id=key_id)
        if not 0 <= key_id < 2**32:
            raise ConfigurationError("a data key id must fit in 32 bits", key_id=key_id)
        self.id = key_id
        #: The ``AESGCM`` object, built once (the envelope's prepared sealers use it).
        self.aead = AESGCM(key)
        self.id_bytes = key_id.to_bytes(4, "big")
        #: Zero-argument nonce source: ``BufferedNonces.next12`` when there is one.
        self.nonce12 = _zero_arg(nonce_source)

    def __repr__(self) -> str:
        return f"DataKey(id={self.id}, key=<redacted>)"

    def seal(self, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
        """AES-256-GCM encrypt: ciphertext followed by the 16-byte tag."""
        return self.aead.encrypt(nonce, plaintext, aad)

    def open(self, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        """AES-256-GCM decrypt; any failure is one opaque :class:`DecryptionError`."""
        try:
            return self.aead.decrypt(nonce, ciphertext, aad)
        except (InvalidTag, ValueError, OverflowError):
            raise DecryptionError("decryption failed", key_id=self.id,
                                  operation="decrypt") from None

    def new_nonce(self) -> bytes:
        """A fresh 12-byte nonce from the key's nonce source."""
        try:
            return self.nonce12()
        except ValueError:  # BufferedNonces raced by another thread: take a fresh one
            return os.urandom(NONCE_SIZE)


def _zero_arg(source: NonceSource) -> Callable[[], bytes]:
    fast = getattr(source, "next12", None)
    if callable(fast):
        return fast
    if source is os.urandom:
        return _urandom12
    return lambda: source(NONCE_SIZE)


def _urandom12() -> bytes:
    return os.urandom(NONCE_SIZE)
