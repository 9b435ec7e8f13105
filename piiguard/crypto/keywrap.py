"""Local key wrapping: a data, index or pseudonym key wrapped under a key-encryption key.

Key-table format 2 (``docs/format.md`` section 4.1) keeps per-subject keys out of the KMS:
the KMS wraps only the key-encryption keys (KEKs); every other key is wrapped here, with
AES-256-GCM under a KEK, the associated data naming the key's id, kind and scope (and the
KEK's id), each length-prefixed. A wrapped key moved to another row, kind or scope, or
presented under another KEK, does not unwrap::

    >>> kek = KeyEncryptionKey(3, bytes(32))
    >>> wrapped = kek.wrap(41, "dek", "customers:C-42", bytes(range(32)), nonce=bytes(12))
    >>> len(wrapped), wrapped[0] == WRAP_VERSION, wrapped_kek_id(wrapped)
    (65, True, 3)
    >>> kek.unwrap(41, "dek", "customers:C-42", wrapped) == bytes(range(32))
    True
    >>> kek.unwrap(42, "dek", "customers:C-42", wrapped)
    Traceback (most recent call last):
    ...
    piiguard.errors.DecryptionError: wrapped key does not unwrap under its KEK key_id=42 ...

Layout (65 bytes)::

    0    1   wrap version 0x21
    1    4   KEK id, u32 big-endian
    5    12  nonce
    17   48  AES-256-GCM(KEK, nonce, key, aad) = encrypted key (32) || tag (16)
    aad = lp("piiguard:keywrap:1") || lp(str(kek_id)) || lp(str(key_id)) || lp(kind)
          || lp(scope)       where lp(x) = u16(len(utf8(x))) || utf8(x)
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from piiguard.errors import ConfigurationError, DecryptionError

__all__ = ["WRAP_VERSION", "WRAPPED_SIZE", "KeyEncryptionKey", "keywrap_aad", "wrapped_kek_id"]

#: First byte of a locally wrapped key (key-table format 2).
WRAP_VERSION = 0x21
_LABEL = "piiguard:keywrap:1"
_HEADER = 1 + 4
_NONCE = 12
#: Size of a wrapped 32-byte key.
WRAPPED_SIZE = _HEADER + _NONCE + 32 + 16


def _lp(part: str) -> bytes:
    raw = part.encode("utf-8")
    if len(raw) > 0xFFFF:
        raise ConfigurationError("key scope is too long to wrap")
    return len(raw).to_bytes(2, "big") + raw


def keywrap_aad(kek_id: int, key_id: int, kind: str, scope: str) -> bytes:
    """The associated data of a key wrapped under KEK ``kek_id``."""
    return b"".join(_lp(p) for p in (_LABEL, str(kek_id), str(key_id), kind, scope))


def wrapped_kek_id(wrapped: bytes | bytearray | memoryview) -> int | None:
    """The KEK id a locally wrapped key names, or None if ``wrapped`` is not one (a key
    wrapped by the KMS itself: key-table format 1, or a KEK)."""
    raw = bytes(wrapped)
    if len(raw) != WRAPPED_SIZE or raw[0] != WRAP_VERSION:
        return None
    return int.from_bytes(raw[1:_HEADER], "big")


class KeyEncryptionKey:
    """One plaintext KEK in memory (its ``AESGCM`` built once); never shows its bytes.

    >>> KeyEncryptionKey(3, bytes(32))
    KeyEncryptionKey(id=3, key=<redacted>)
    """

    __slots__ = ("id", "_aead")

    def __init__(self, kek_id: int, material: bytes) -> None:
        if len(material) != 32:
            raise ConfigurationError("a KEK must be 32 bytes", key_id=kek_id)
        if not 0 <= kek_id < 2**32:
            raise ConfigurationError("a KEK id must fit in 32 bits", key_id=kek_id)
        self.id = kek_id
        self._aead = AESGCM(material)

    def __repr__(self) -> str:
        return f"KeyEncryptionKey(id={self.id}, key=<redacted>)"

    def wrap(self, key_id: int, kind: str, scope: str, plaintext: bytes, *,
             nonce: bytes | None = None) -> bytes:
        """``plaintext`` (a 32-byte key) wrapped for key ``key_id`` of ``kind``/``scope``.
        ``nonce`` is for golden vectors only."""
        if len(plaintext) != 32:
            raise ConfigurationError("only 32-byte keys are wrapped", key_id=key_id)
        n = os.urandom(_NONCE) if nonce is None else nonce
        return (bytes((WRAP_VERSION,)) + self.id.to_bytes(4, "big") + n
                + self._aead.encrypt(n, plaintext, keywrap_aad(self.id, key_id, kind, scope)))

    def unwrap(self, key_id: int, kind: str, scope: str,
               wrapped: bytes | bytearray | memoryview) -> bytes:
        """The key wrapped in ``wrapped``; :class:`~piiguard.errors.DecryptionError` if it
        was not wrapped under this KEK for exactly this key id, kind and scope."""
        raw = bytes(wrapped)
        if wrapped_kek_id(raw) != self.id:
            raise DecryptionError("wrapped key names another KEK or has an unknown format",
                                  key_id=key_id, operation="unwrap")
        try:
            plaintext: bytes = self._aead.decrypt(
                raw[_HEADER:_HEADER + _NONCE], raw[_HEADER + _NONCE:],
                keywrap_aad(self.id, key_id, kind, scope))
        except InvalidTag:
            raise DecryptionError("wrapped key does not unwrap under its KEK", key_id=key_id,
                                  operation="unwrap") from None
        return plaintext
