"""KMS providers: where master keys live and how data keys are wrapped.

:class:`KeyProvider` is the small protocol every provider implements; ``LocalKMS`` keeps
master keys in a local key file (the embedded default); ``AwsKMS`` calls AWS KMS through
boto3 and is the only module that imports it.
"""

from typing import Any

from piiguard.kms.base import DataKeyPair, KeyProvider, check_key_provider
from piiguard.kms.local import LocalKMS


def __getattr__(name: str) -> Any:  # AwsKMS imports boto3 only when asked for
    if name == "AwsKMS":
        from piiguard.kms.aws import AwsKMS

        return AwsKMS
    raise AttributeError(name)


__all__ = ["KeyProvider", "DataKeyPair", "check_key_provider", "LocalKMS", "AwsKMS"]
