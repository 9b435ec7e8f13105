"""The provider protocol that ``Guard`` needs from a KMS.

Every call carries an *encryption context*: a small ``dict[str, str]`` naming what the
data key serves (``{"piiguard:kind": "dek", "piiguard:scope": "customers"}``). The
provider authenticates it, so a wrapped key cannot be unwrapped for another purpose.

A new provider is a class with the three methods of :class:`KeyProvider` and a
``master_key_id``; it need not inherit from anything. ``Guard`` checks it on
construction with :func:`check_key_provider`::

    >>> check_key_provider(object())
    Traceback (most recent call last):
    ...
    piiguard.errors.ConfigurationError: kms must be a KeyProvider (missing generate_data_key())
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from piiguard.errors import ConfigurationError

__all__ = ["Context", "DataKeyPair", "KeyProvider", "PROVIDER_METHODS", "check_key_provider"]

#: The encryption context of a data key (what it serves), authenticated by the KMS.
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
    """What a KMS must do for piiguard: the only interface the rest of the package uses.

    Implemented by :class:`~piiguard.kms.LocalKMS` and :class:`~piiguard.kms.AwsKMS`.
    Errors are piiguard's: :class:`~piiguard.errors.KMSUnavailableError` for "try again
    later", :class:`~piiguard.errors.KMSAccessError` for "no".
    """

    @property
    def master_key_id(self) -> str:
        """The master key that new data keys are wrapped under."""
        ...

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


#: The methods of :class:`KeyProvider` (what :func:`check_key_provider` looks for).
PROVIDER_METHODS = ("generate_data_key", "decrypt_data_key", "rewrap")


def check_key_provider(kms: object) -> None:
    """Refuse (:class:`~piiguard.errors.ConfigurationError`) an object without the
    methods of :class:`KeyProvider`, before anything calls them."""
    for name in PROVIDER_METHODS:
        if not callable(getattr(kms, name, None)):
            raise ConfigurationError(f"kms must be a KeyProvider (missing {name}())")
