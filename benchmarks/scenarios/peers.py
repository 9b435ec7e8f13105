"""The peers piiguard is compared with, set up once so every scenario uses them alike.

- raw ``AESGCM`` (the floor): a random 12-byte nonce from ``os.urandom`` and one
  ``encrypt``; ``decrypt``; the key schedule built once;
- ``Fernet`` (AES-128-CBC + HMAC-SHA256, base64 token);
- sqlalchemy-utils ``StringEncryptedType(String, key, AesGcmEngine)``;
- aws-encryption-sdk with a caching materials manager over a raw AES master key and
  the unsigned committing suite ``AES_256_GCM_HKDF_SHA512_COMMIT_KEY`` (the SDK's
  default commitment policy ``REQUIRE_ENCRYPT_REQUIRE_DECRYPT`` allows only committing
  suites; the signed one would add an ECDSA signature per value). No encryption context
  is passed (it would be stored in every message and make it bigger). The cache limits
  are piiguard's defaults (an hour, 2**30 messages per data key), so neither side is
  held to a stricter limit than the other.
"""

from __future__ import annotations

import os
from typing import Any

#: Bytes of key material for the peers that take one (sqlalchemy-utils hashes it anyway).
_KEY = bytes(range(32))


def aesgcm(key: bytes = _KEY):
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM(key)


def fernet():
    from cryptography.fernet import Fernet

    return Fernet(Fernet.generate_key())


def sqlalchemy_utils_type(length: int = 255, key: str = "bench-key-0123456789abcdef"):
    """``StringEncryptedType(String(length), key, AesGcmEngine)``; None if not installed."""
    from sqlalchemy import String
    from sqlalchemy_utils import StringEncryptedType
    from sqlalchemy_utils.types.encrypted.encrypted_type import AesGcmEngine

    # ``length`` sizes the VARCHAR that holds the base64 ciphertext (MySQL/MariaDB need
    # one); ``String(length)`` is the plaintext type it decrypts to.
    return StringEncryptedType(String(length), key, AesGcmEngine, length=2 * length + 64)


def sqlalchemy_utils_available() -> str | None:
    try:
        import sqlalchemy_utils  # noqa: F401
        from sqlalchemy_utils.types.encrypted.encrypted_type import AesGcmEngine  # noqa: F401
    except ImportError as exc:
        return f"sqlalchemy-utils not installed ({exc})"
    return None


def aws_sdk_available() -> str | None:
    try:
        import aws_encryption_sdk  # noqa: F401
    except ImportError as exc:
        return f"aws-encryption-sdk not installed ({exc})"
    return None


class AwsSdk:
    """aws-encryption-sdk: a client, a materials manager and the suite used everywhere."""

    def __init__(self, master_key: Any = None, *, caching: bool = True,
                 max_age: float = 3600.0, max_messages: int = 2**30,
                 capacity: int = 100) -> None:
        import aws_encryption_sdk
        from aws_encryption_sdk import (CachingCryptoMaterialsManager, CommitmentPolicy,
                                        DefaultCryptoMaterialsManager,
                                        LocalCryptoMaterialsCache)
        from aws_encryption_sdk.identifiers import Algorithm

        self.algorithm = Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY
        self.client = aws_encryption_sdk.EncryptionSDKClient(
            commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT)
        self.master_key = master_key if master_key is not None else raw_master_key()
        if caching:
            self.cmm = CachingCryptoMaterialsManager(
                master_key_provider=self.master_key,
                cache=LocalCryptoMaterialsCache(capacity=capacity), max_age=max_age,
                max_messages_encrypted=max_messages)
        else:
            self.cmm = DefaultCryptoMaterialsManager(master_key_provider=self.master_key)

    def encrypt(self, plaintext: bytes) -> bytes:
        ct, _header = self.client.encrypt(source=plaintext, materials_manager=self.cmm,
                                          algorithm=self.algorithm)
        return ct

    def decrypt(self, message: bytes) -> bytes:
        pt, _header = self.client.decrypt(source=message, materials_manager=self.cmm)
        return pt


def raw_master_key():
    from aws_encryption_sdk.identifiers import EncryptionKeyType, WrappingAlgorithm
    from aws_encryption_sdk.internal.crypto.wrapping_keys import WrappingKey
    from aws_encryption_sdk.key_providers.raw import RawMasterKey

    return RawMasterKey(provider_id="piiguard-bench", key_id=b"raw-aes-256",
                        wrapping_key=WrappingKey(
                            wrapping_algorithm=WrappingAlgorithm.AES_256_GCM_IV12_TAG16_NO_PADDING,
                            wrapping_key=os.urandom(32),
                            wrapping_key_type=EncryptionKeyType.SYMMETRIC))
