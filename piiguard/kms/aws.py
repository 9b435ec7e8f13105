"""AwsKMS: data keys from AWS KMS through boto3 (the only module that imports boto3).

``GenerateDataKey`` makes a DEK, ``Decrypt`` (always with ``KeyId``) unwraps it and
``ReEncrypt`` moves it to another master key without the plaintext leaving KMS. Every
call carries the encryption context. The client gets short timeouts and a bounded retry
budget, because boto3's defaults can hang a request for minutes::

    kms = AwsKMS(key_id="alias/app-pii", region_name="eu-central-1")
    guard = Guard(kms=kms)

botocore errors are translated at this boundary: unreachable, timed out or throttled
becomes :class:`~piiguard.errors.KMSUnavailableError`; refused (disabled key, access
denied, wrong context) becomes :class:`~piiguard.errors.KMSAccessError`; both name the
key id and the operation and chain the original with ``from``. A configuration mistake
(no region, an endpoint that is not a URL, an unknown profile, no credentials) becomes
:class:`~piiguard.errors.ConfigurationError` naming the fix. ``docs/kms.md`` has every
option, the IAM actions and a moto recipe.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ConnectionError as BotoConnectionError
from botocore.exceptions import (
    ConnectTimeoutError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ProfileNotFound,
    ReadTimeoutError,
)

from piiguard.errors import (
    ConfigurationError,
    KMSAccessError,
    KMSConfigurationError,
    KMSUnavailableError,
)
from piiguard.kms.base import Context, DataKeyPair, KeyProvider

#: Error codes that mean "try again later" rather than "no".
_TRANSIENT = frozenset({
    "ThrottlingException", "Throttling", "RequestLimitExceeded", "LimitExceededException",
    "KMSInternalException", "DependencyTimeoutException", "ServiceUnavailable",
    "InternalFailure", "RequestTimeout",
})


_NO_CREDENTIALS = ("no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                   "or AWS_PROFILE, or run with an IAM role (instance profile, ECS task "
                   "role, IRSA), or pass client=boto3.client('kms', ...)")


def _client(region_name: str | None, config: Config, endpoint_url: str | None) -> Any:
    """A KMS client, with configuration mistakes as ConfigurationError naming the fix."""
    try:
        return boto3.client("kms", region_name=region_name, config=config,
                            endpoint_url=endpoint_url)
    except NoRegionError:
        raise ConfigurationError(
            "AwsKMS has no AWS region: pass AwsKMS(..., region_name='eu-central-1') or "
            "set AWS_REGION / AWS_DEFAULT_REGION") from None
    except ProfileNotFound:
        raise ConfigurationError("the AWS profile named by AWS_PROFILE does not exist: "
                                 "fix AWS_PROFILE or ~/.aws/config") from None
    except ValueError as exc:
        if "endpoint" not in str(exc).lower():
            raise
        raise ConfigurationError(
            "AwsKMS endpoint_url is not a URL: pass e.g. "
            "endpoint_url='https://kms.eu-central-1.amazonaws.com' or "
            "'http://127.0.0.1:5000' (a moto server), or leave it out") from None


class AwsKMS:
    """AWS KMS as a :class:`~piiguard.kms.KeyProvider`.

    - ``key_id``: the master key (key id, key ARN, ``alias/...`` or alias ARN) under
      which new data keys are generated.
    - ``region_name``: the AWS region (default: ``AWS_REGION`` / ``AWS_DEFAULT_REGION``
      / the profile's).
    - ``endpoint_url``: another endpoint (a VPC endpoint, FIPS, or a moto server).
    - ``client``: a ready ``boto3.client("kms")`` (tests, custom sessions); the
      options below are then not used.
    - ``connect_timeout`` / ``read_timeout``: seconds (2 and 3), and ``max_attempts``
      tries in total (3: botocore's ``total_max_attempts``; its ``max_attempts`` would
      count retries only), so a KMS that accepts connections and never answers fails in
      about ``max_attempts * read_timeout`` seconds plus a short backoff.

    >>> AwsKMS(key_id="alias/app-pii", region_name="eu-central-1")
    AwsKMS(key_id='alias/app-pii')
    """

    def __init__(self, key_id: str, *, client: Any = None, region_name: str | None = None,
                 connect_timeout: float = 2.0, read_timeout: float = 3.0,
                 max_attempts: int = 3, endpoint_url: str | None = None) -> None:
        if not key_id or not isinstance(key_id, str):
            raise ConfigurationError("AwsKMS needs a key_id (key id, ARN or alias/...)")
        if max_attempts < 1:
            raise ConfigurationError("max_attempts must be at least 1")
        self.master_key_id = key_id
        if client is None:
            config = Config(connect_timeout=connect_timeout, read_timeout=read_timeout,
                            retries={"total_max_attempts": max_attempts,
                                     "mode": "standard"})
            client = _client(region_name, config, endpoint_url)
        self.client = client

    def __repr__(self) -> str:
        return f"AwsKMS(key_id={self.master_key_id!r})"

    def _call(self, operation: str, key_id: str, **kwargs: Any) -> dict[str, Any]:
        method = getattr(self.client, operation)
        try:
            response: dict[str, Any] = method(**kwargs)
            return response
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in _TRANSIENT:
                raise KMSUnavailableError(f"KMS is unavailable ({code})", key_id=key_id,
                                          operation=operation) from exc
            raise KMSAccessError(f"KMS refused the request ({code or 'unknown'})",
                                 key_id=key_id, operation=operation) from exc
        except (NoCredentialsError, PartialCredentialsError):
            raise KMSConfigurationError(_NO_CREDENTIALS, key_id=key_id,
                                     operation=operation) from None
        except (BotoConnectionError, ConnectTimeoutError, ReadTimeoutError) as exc:
            raise KMSUnavailableError("KMS could not be reached in time", key_id=key_id,
                                      operation=operation) from exc
        except BotoCoreError as exc:
            raise KMSUnavailableError(f"KMS call failed ({type(exc).__name__})",
                                      key_id=key_id, operation=operation) from exc

    def generate_data_key(self, context: Context) -> DataKeyPair:
        resp = self._call("generate_data_key", self.master_key_id, KeyId=self.master_key_id,
                          KeySpec="AES_256", EncryptionContext=dict(context))
        return DataKeyPair(resp["Plaintext"], resp["CiphertextBlob"],
                           resp.get("KeyId") or self.master_key_id)

    def decrypt_data_key(self, wrapped: bytes, master_key_id: str, context: Context) -> bytes:
        resp = self._call("decrypt", master_key_id, CiphertextBlob=bytes(wrapped),
                          KeyId=master_key_id, EncryptionContext=dict(context))
        return resp["Plaintext"]

    def rewrap(self, wrapped: bytes, source_key_id: str, dest_key_id: str,
               context: Context) -> bytes:
        resp = self._call("re_encrypt", source_key_id, CiphertextBlob=bytes(wrapped),
                          SourceKeyId=source_key_id, DestinationKeyId=dest_key_id,
                          SourceEncryptionContext=dict(context),
                          DestinationEncryptionContext=dict(context))
        return resp["CiphertextBlob"]

    def schedule_key_deletion(self, key_id: str, pending_days: int = 30) -> dict[str, str]:
        """Retire master key ``key_id`` (an erasure epoch): AWS KMS ``ScheduleKeyDeletion``
        with a waiting period of ``pending_days`` (7 to 30, AWS's bounds). The key is
        ``PendingDeletion`` at once (every use refused) and deleted for good when the
        period ends; until then ``CancelKeyDeletion`` can undo it. Returns the key id,
        its state and the deletion date."""
        if not 7 <= pending_days <= 30:
            raise ConfigurationError("the pending window must be 7 to 30 days",
                                     key_id=key_id, operation="schedule_key_deletion")
        # the key id (the ARN's last part): some KMS look-alikes refuse an ARN here
        kid = key_id.rsplit(":key/", 1)[-1]
        resp = self._call("schedule_key_deletion", key_id, KeyId=kid,
                          PendingWindowInDays=pending_days)
        when = resp.get("DeletionDate")
        return {"key_id": resp.get("KeyId", key_id),
                "state": resp.get("KeyState", "PendingDeletion"),
                "deletion_date": when.isoformat() if isinstance(when, datetime) else str(when)}

    def key_state(self, key_id: str) -> str:
        """The KMS key's state (``Enabled``, ``PendingDeletion`` ...)."""
        return str(self._call("describe_key", key_id, KeyId=key_id)["KeyMetadata"]["KeyState"])

    def resolve_key_id(self, key_id: str) -> str:
        """The key ARN for an alias or id (what the key table records)."""
        return self._call("describe_key", key_id, KeyId=key_id)["KeyMetadata"]["Arn"]


if TYPE_CHECKING:
    def _is_a_key_provider(kms: AwsKMS) -> KeyProvider:  # mypy: AwsKMS keeps the protocol
        return kms
