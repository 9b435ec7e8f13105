"""Masking by role: what a caller sees depends on the role in effect."""

from piiguard.masking.audit import AuditTrail
from piiguard.masking.context import acting_as, current_purpose, current_role

__all__ = ["AuditTrail", "acting_as", "current_role", "current_purpose"]
