"""Masking by role: what a caller sees depends on the role in effect.

- :class:`MaskingPolicy` (rules: kind or ``table.column`` -> role -> mask),
- :mod:`~piiguard.masking.masks` (``reveal``, ``redact``, ``partial:F:L``, ``email``,
  ``city``, ``pseudonym``, ``null`` and custom masks),
- :func:`acting_as` (the role in effect, on ``contextvars``),
- :func:`render` and :class:`MaskedStr` (what the column types and pydantic types call),
- :class:`AuditTrail` (reveal and key events, batched with exact counts),
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
from piiguard.masking.context import acting_as, current_purpose, current_role

_LAZY = {"MaskingPolicy": "policy", "KINDS": "policy", "Mask": "masks", "REDACTED": "masks",
         "MaskedStr": "view", "render": "view", "is_masked": "view",
         "MaskingHost": "host"}


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
    "Mask",
    "MaskedStr",
    "MaskingHost",
    "MaskingPolicy",
    "acting_as",
    "current_purpose",
    "current_role",
    "is_masked",
    "render",
]
