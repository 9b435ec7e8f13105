"""Data keys: the key table, the plaintext key cache and the key lifecycle.

- :mod:`~piiguard.keys.table`: the key table's definition, key kinds and states.
- :mod:`~piiguard.keys.store`: :class:`KeyStore`, every SQL statement on that table.
- :mod:`~piiguard.keys.locks`: brief lock waits for refreshes that may use the cache.
- :mod:`~piiguard.keys.cache`: :class:`CacheLimits`, cache entries and their freshness.
- :mod:`~piiguard.keys.manager`: :class:`KeyManager`, which serves keys and runs the
  lifecycle (create, rotate, retire, destroy, rewrap).
"""

from piiguard.keys.cache import CacheLimits
from piiguard.keys.manager import KeyManager, kms_context
from piiguard.keys.store import KeyInfo, KeyStore
from piiguard.keys.table import (ACTIVE, DECRYPT_ONLY, DESTROYED, KEY_KINDS, RETIRED, STATES,
                                 key_table)

__all__ = ["CacheLimits", "KeyInfo", "KeyManager", "KeyStore", "kms_context", "key_table",
           "KEY_KINDS", "STATES", "ACTIVE", "DECRYPT_ONLY", "RETIRED", "DESTROYED"]
