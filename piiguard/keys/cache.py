"""Limits on how long and how much a plaintext data key may be used from memory.

>>> CacheLimits(soft_ttl=60, hard_ttl=30)
Traceback (most recent call last):
...
piiguard.errors.ConfigurationError: hard_ttl must be at least soft_ttl
"""

from __future__ import annotations

from dataclasses import dataclass

from piiguard.errors import ConfigurationError


@dataclass(frozen=True)
class CacheLimits:
    """How plaintext DEKs are cached.

    - ``soft_ttl``: seconds after which the key table is consulted again (a rotation
      or destruction elsewhere is seen within this time); the plaintext stays cached.
    - ``hard_ttl``: seconds after which the plaintext is dropped and the KMS must unwrap
      the key again (while KMS is down, cached keys keep working until then).
    - ``max_uses``: encryptions under one DEK before a new DEK is created (well below
      2**32, the bound for random 96-bit nonces).
    """

    soft_ttl: float = 300.0
    hard_ttl: float = 3600.0
    max_uses: int = 2**30

    def __post_init__(self) -> None:
        if not self.soft_ttl > 0:
            raise ConfigurationError("soft_ttl must be positive")
        if self.hard_ttl < self.soft_ttl:
            raise ConfigurationError("hard_ttl must be at least soft_ttl")
        if not 1 <= self.max_uses <= 2**32:
            raise ConfigurationError("max_uses must be between 1 and 2**32")


class Entry:
    """One cached plaintext key and its bookkeeping (never printed with its key)."""

    __slots__ = ("key", "id", "kind", "scope", "state", "loaded", "checked", "uses",
                 "persisted_uses", "flushed_uses", "expires", "wexpires", "_limits", "aead")

    def __init__(self, key, kind: str, scope: str, state: str, now: float,
                 limits: CacheLimits, persisted_uses: int = 0) -> None:
        self.key = key
        self.id = key.id
        self.aead = getattr(key, "aead", None)
        self.kind = kind
        self.scope = scope
        self.state = state
        self._limits = limits
        self.loaded = now
        # ``uses`` counts every encryption under this key known here (the key table's
        # count when loaded, plus ours), so max_uses holds across reloads and restarts.
        self.uses = persisted_uses
        self.flushed_uses = persisted_uses
        self.persisted_uses = persisted_uses
        self.touch(now)

    def touch(self, now: float) -> None:
        """The key table was consulted at ``now``: the entry is fresh until ``expires``
        (the earlier of the soft TTL from now and the hard TTL from loading)."""
        self.checked = now
        self.expires = min(now + self._limits.soft_ttl, self.loaded + self._limits.hard_ttl)
        self.wexpires = self.expires if self.state == "active" else float("-inf")

    def set_state(self, state: str) -> None:
        self.state = state
        if state != "active":
            self.wexpires = float("-inf")

    def invalidate(self) -> None:
        """Make every holder of this entry take the slow path next time."""
        self.expires = self.wexpires = float("-inf")

    def __repr__(self) -> str:
        return f"Entry(id={self.id}, kind={self.kind}, scope={self.scope}, state={self.state})"
