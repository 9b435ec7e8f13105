"""Cryptographic building blocks: AES-256-GCM, envelope format v1, blind index, padding.

Nothing here talks to a KMS or a database; keys come in as bytes from ``piiguard.keys``.
"""

from piiguard.crypto.aead import AEAD_KEY_SIZE, NONCE_SIZE, TAG_SIZE, DataKey
from piiguard.crypto.envelope import (
    BINARY_OVERHEAD,
    TEXT_PREFIX,
    FieldContext,
    decode_text,
    encode_text,
    looks_like_envelope,
    parse_header,
)

__all__ = [
    "AEAD_KEY_SIZE",
    "NONCE_SIZE",
    "TAG_SIZE",
    "DataKey",
    "BINARY_OVERHEAD",
    "TEXT_PREFIX",
    "FieldContext",
    "decode_text",
    "encode_text",
    "looks_like_envelope",
    "parse_header",
]
