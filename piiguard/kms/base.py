"""The provider protocol that ``Guard`` needs from a KMS.

Every call carries an *encryption context*: a small ``dict[str, str]`` naming what the
data key serves (``{"piiguard:kind": "dek", "piiguard:scope": "customers"}``). The
provider authenticates it, so a wrapped key cannot be unwrapped for another purpose.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Protocol, runtime_checkable

Context = Mapping[str, str]


@dataclass(frozen=True)
class DataKeyPair:
    """A new data key: the plaintext (kept in memory only) and its wrapped form.

    >>> DataKeyPair(b"k" * 32, b"wrapped", "mk-1")
    DataKeyPair(master_key_id='mk-1', plaintext=<redacted>, wrapped=<7 bytes>)
    """

    plaintext: bytes = field(repr=False)
    wrapped: bytes = field(repr=False)
    master_key_id: str

    def __repr__(self) -> str:
        return (f"DataKeyPair(master_key_id={self.master_key_id!r}, plaintext=<redacted>, "
                f"wrapped=<{len(self.wrapped)} bytes>)")


@runtime_checkable
class KeyProvider(Protocol):
    """What a KMS must do for piiguard. ``master_key_id`` names the key new DEKs use."""

    master_key_id: str

    def generate_data_key(self, context: Context) -> DataKeyPair:
        """A fresh 32-byte data key, wrapped under the current master key."""
        ...

    def decrypt_data_key(self, wrapped: bytes, master_key_id: str, context: Context) -> bytes:
        """Unwrap a data key wrapped under ``master_key_id`` with ``context``."""
        ...

    def rewrap(self, wrapped: bytes, source_key_id: str, dest_key_id: str,
               context: Context) -> bytes:
        """The same data key, wrapped under ``dest_key_id`` instead (no plaintext out)."""
        ...
