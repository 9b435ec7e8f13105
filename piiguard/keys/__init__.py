"""Data keys: the key table, the plaintext key cache and the key lifecycle."""

from piiguard.keys.cache import CacheLimits
from piiguard.keys.manager import KeyInfo, KeyManager, kms_context
from piiguard.keys.table import ACTIVE, DECRYPT_ONLY, DESTROYED, RETIRED, key_table

__all__ = ["CacheLimits", "KeyInfo", "KeyManager", "kms_context", "key_table", "ACTIVE",
           "DECRYPT_ONLY", "RETIRED", "DESTROYED"]
