"""Masking by role: what a caller sees depends on the role in effect.

- :class:`MaskingPolicy` (rules: kind or ``table.column`` -> role -> mask),
- :mod:`~piiguard.masking.masks` (``reveal``, ``redact``, ``partial:F:L``, ``email``,
  ``city``, ``pseudonym``, ``null`` and custom masks),
- :mod:`~piiguard.masking.rules` (who may search, write and clear; search limits) and
  :mod:`~piiguard.masking.recovery` (how many candidates a mask leaves),
- :func:`acting_as` (the role in effect, on ``contextvars``; it never leaks out of its
  block),
- :func:`render`, :class:`MaskedStr` and :class:`RevealedStr` (what the column types and
  pydantic types call and return),
- :mod:`~piiguard.masking.writeback` (no masked view written back, compared by value),
- :class:`SearchGate` (search admitted by policy and rate limit, audited),
- :class:`AuditTrail` (reveal, search and key events: batched with exact counts, or
  durable),
- :class:`MaskingHost` (what masking needs from the Guard: policy, audit, pseudonym keys).

This layer knows nothing of pydantic or SQLAlchemy's column types: role-aware pydantic
serialisation (``masking(guard)``, ``Masked``) lives in :mod:`piiguard.pydantic`.

>>> from piiguard.masking import MaskingPolicy, acting_as
>>> policy = MaskingPolicy.from_dict({"phone": {"support": "partial:0:2"}})
>>> with acting_as("support"):
...     policy.mask_for(kind="phone", column=None, role="support").spec
'partial:0:2'
"""

from piiguard.masking.audit import AuditTrail
from piiguard.masking.context import (
    acting_as,
    current_principal,
    current_purpose,
    current_role,
)

_LAZY = {"MaskingPolicy": "policy", "KINDS": "policy", "Mask": "masks", "REDACTED": "masks",
         "MaskedStr": "view", "RevealedStr": "view", "render": "view", "is_masked": "view",
         "MaskingHost": "host", "SearchGate": "search", "PolicyWarning": "policy",
         "AuditWarning": "audit"}


def __getattr__(name: str) -> object:
    # Lazy, like piiguard.MaskingPolicy: `import piiguard` stays light.
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'piiguard.masking' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"piiguard.masking.{mod}"), name)


__all__ = [
    "KINDS",
    "REDACTED",
    "AuditTrail",
    "AuditWarning",
    "Mask",
    "MaskedStr",
    "MaskingHost",
    "MaskingPolicy",
    "PolicyWarning",
    "RevealedStr",
    "SearchGate",
    "acting_as",
    "current_principal",
    "current_purpose",
    "current_role",
    "is_masked",
    "render",
]
