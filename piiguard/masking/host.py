"""What masking needs from the object that owns it (a :class:`piiguard.Guard`).

Masking sits below the Guard: it must not import it nor reach into its key manager.
:class:`MaskingHost` is the small interface it uses instead: the policy in force, the
audit trail, and the key behind ``pseudonym`` masks. ``Guard`` implements it.

>>> from piiguard import Guard, LocalKMS
>>> isinstance(Guard(kms=LocalKMS.generate()), MaskingHost)
True
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

from piiguard.masking.masks import PseudonymKeys

if TYPE_CHECKING:
    from piiguard.masking.audit import AuditTrail
    from piiguard.masking.policy import MaskingPolicy

__all__ = ["MaskingHost"]


@runtime_checkable
class MaskingHost(PseudonymKeys, Protocol):
    """The policy, audit trail and pseudonym keys masking works with (masks themselves
    see only the :class:`~piiguard.masking.masks.PseudonymKeys` part)."""

    @property
    def policy(self) -> MaskingPolicy | None:
        """The masking policy in force (``None``: encryption only, reveal everything)."""
        ...

    @property
    def audit(self) -> AuditTrail:
        """Where reveal events go."""
        ...

    # pseudonym_key(scope) -> BlindIndexKey comes from PseudonymKeys.
