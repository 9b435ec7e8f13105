"""piiguard: personal data encrypted field by field in your own database.

>>> import piiguard
>>> sorted(piiguard.__all__)[:4]
['AuditTrail', 'AwsKMS', 'CacheLimits', 'Guard']
"""

from piiguard import errors
from piiguard.guard import Guard
from piiguard.keys.cache import CacheLimits
from piiguard.kms.local import LocalKMS
from piiguard.masking.audit import AuditTrail
from piiguard.masking.context import acting_as

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy, so that `import piiguard` does not import boto3 (slow) or the policy module
    # before they are needed.
    if name == "AwsKMS":
        from piiguard.kms.aws import AwsKMS

        return AwsKMS
    if name == "MaskingPolicy":
        from piiguard.masking.policy import MaskingPolicy

        return MaskingPolicy
    raise AttributeError(f"module 'piiguard' has no attribute {name!r}")


__all__ = ["Guard", "LocalKMS", "AwsKMS", "MaskingPolicy", "acting_as", "errors",
           "CacheLimits", "AuditTrail", "__version__"]
