"""What a reader sees: :func:`render` applies the guard's policy for the role in effect.

:func:`render` is the one place where the SQLAlchemy column types and the pydantic types
turn a stored value into what the current role may see:

- no policy on the Guard (``guard.policy is None``): the plaintext, no audit event
  (encryption-only mode);
- ``reveal``: the plaintext (a :class:`RevealedStr`), and one counted reveal in the
  audit trail (:meth:`~piiguard.masking.audit.AuditTrail.record_reveal`; with
  ``AuditTrail(durable=True)`` written before the value is returned, and if it cannot
  be written the value is not returned: :class:`~piiguard.errors.AuditError`);
- ``redact``, ``null`` and custom masks made with ``needs_plaintext=False``: the mask's
  output *without calling* ``plaintext_fn`` — nothing is decrypted, no key is loaded,
  no KMS call happens;
- every other mask: the mask applied to ``plaintext_fn()``.

Masked output is a :class:`MaskedStr` (:mod:`piiguard.masking.masked`, re-exported
here), a ``str`` marked as not being a real value: the column types and encrypted
pydantic fields refuse to write one back (:class:`~piiguard.errors.MaskedValueError`).

>>> from sqlalchemy import create_engine
>>> from piiguard import Guard, LocalKMS, MaskingPolicy, acting_as
>>> guard = Guard(kms=LocalKMS.generate()).bind(create_engine('sqlite://'))
>>> show = lambda: render(guard, kind='national_id', column='customers.national_id',
...                       plaintext_fn=lambda: '10000000146')
>>> show()
'10000000146'
>>> guard.policy = MaskingPolicy.from_dict({'default': 'redact',
...                                         'national_id': {'support': 'partial:1:2'}})
>>> with acting_as('support'):
...     show()
'1********46'
>>> show(), type(show()).__name__
('[REDACTED]', 'MaskedStr')
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from piiguard.errors import PIIGuardError
from piiguard.masking.context import current_purpose, current_role
from piiguard.masking.host import MaskingHost
from piiguard.masking.masked import MaskedStr, RevealedStr, is_masked

__all__ = ["MaskedStr", "RevealedStr", "is_masked", "render"]


def render(guard: MaskingHost, *, kind: str, column: str | None,
           plaintext_fn: Callable[[], str | None], row_key: Any = None,
           key_id: int | None = None, audited: bool = False) -> str | None:
    """What the role in effect may see of one stored value.

    ``guard`` is the :class:`~piiguard.masking.host.MaskingHost` (a Guard) whose policy
    applies and whose audit trail records reveals; ``plaintext_fn`` decrypts the value
    (called at most once, and never for masks that need no plaintext); ``column`` is
    ``table.column`` or ``Model.field``; ``row_key`` (the primary key, where known) and
    ``key_id`` (the DEK id in the envelope) go to the audit trail with reveals.
    ``audited=True``: this value's reveal is already recorded (a :class:`RevealedStr`
    passed on), so a ``reveal`` records nothing more. Call it for non-NULL stored values
    only.
    """
    policy = guard.policy
    if policy is None:
        return plaintext_fn()
    role = current_role()
    mask = policy.mask_for(kind=kind, column=column, role=role)
    if mask.is_reveal:
        try:
            value = plaintext_fn()
        except PIIGuardError as exc:
            guard.audit.emit("reveal", outcome="error", column=column, key_id=key_id,
                             row_keys=None if row_key is None else [row_key], count=1,
                             error=type(exc).__name__)
            raise
        if value is None:
            return None
        if not audited:
            guard.audit.record_reveal(column, key_id, row_key, role, current_purpose())
        return value if type(value) is RevealedStr else RevealedStr(value)
    if not mask.needs_plaintext:
        return mask(None, kind=kind, guard=guard, column=column)
    return mask(plaintext_fn(), kind=kind, guard=guard, column=column)
