"""AwsKMS against moto: in-process (``moto.mock_aws``) and a real moto server over HTTP.

moto never fails on its own (no outages, no throttling, no key states), so failures are
injected with botocore event hooks (``piiguard.testing.inject_kms_fault``): the hook
answers the call with the AWS error instead of sending it. Timeouts use real sockets on
127.0.0.1: a port where nothing listens, and a socket that accepts and never answers.
"""

from __future__ import annotations

import base64
import socket
import threading
import time

import boto3
import moto
import pytest
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from sqlalchemy import create_engine

from piiguard import AwsKMS, Guard
from piiguard.errors import ConfigurationError, KMSAccessError, KMSUnavailableError
from piiguard.kms import KeyProvider
from piiguard.testing import TEST_REGION, KMSCallCounter, inject_kms_fault

CTX = {"piiguard:kind": "dek", "piiguard:scope": "customers"}


@pytest.fixture
def fake_credentials(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", TEST_REGION)


@pytest.fixture(scope="module")
def inproc():
    """(AwsKMS on an alias, client, key ARN, second key ARN) with moto in-process
    (one mock for the module: starting moto costs about a second)."""
    with pytest.MonkeyPatch.context() as mp, moto.mock_aws():
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", TEST_REGION)
        client = boto3.client("kms", region_name=TEST_REGION)
        arn = client.create_key(Description="piiguard")["KeyMetadata"]["Arn"]
        arn2 = client.create_key(Description="piiguard 2")["KeyMetadata"]["Arn"]
        client.create_alias(AliasName="alias/app-pii", TargetKeyId=arn)
        yield AwsKMS(key_id="alias/app-pii", client=client), client, arn, arn2


# -- behaviour (moto in-process) ------------------------------------------------------------
def test_generate_and_decrypt_with_context(inproc):
    kms, client, arn, _ = inproc
    assert isinstance(kms, KeyProvider)
    pair = kms.generate_data_key(CTX)
    assert len(pair.plaintext) == 32 and pair.master_key_id == arn
    assert pair.plaintext not in pair.wrapped
    assert kms.decrypt_data_key(pair.wrapped, pair.master_key_id, CTX) == pair.plaintext
    assert kms.resolve_key_id("alias/app-pii") == arn


@pytest.mark.parametrize("ctx", [{}, {**CTX, "piiguard:scope": "orders"},
                                 {"piiguard:kind": "index", "piiguard:scope": "customers"}])
def test_wrong_context_is_refused(inproc, ctx):
    kms, _, arn, _ = inproc
    pair = kms.generate_data_key(CTX)
    with pytest.raises(KMSAccessError) as info:
        kms.decrypt_data_key(pair.wrapped, pair.master_key_id, ctx)
    assert arn in str(info.value) and "operation=decrypt" in str(info.value)
    assert isinstance(info.value.__cause__, ClientError)


def test_decrypt_names_the_key_id_and_refuses_another_master_key(inproc):
    kms, _, _, arn2 = inproc
    pair = kms.generate_data_key(CTX)
    with pytest.raises(KMSAccessError) as info:
        kms.decrypt_data_key(pair.wrapped, arn2, CTX)
    assert arn2 in str(info.value)


def test_rewrap_moves_the_key_and_keeps_the_context(inproc):
    kms, _, arn, arn2 = inproc
    pair = kms.generate_data_key(CTX)
    wrapped = kms.rewrap(pair.wrapped, arn, arn2, CTX)
    assert wrapped != pair.wrapped
    assert kms.decrypt_data_key(wrapped, arn2, CTX) == pair.plaintext
    with pytest.raises(KMSAccessError):
        kms.decrypt_data_key(wrapped, arn, CTX)
    with pytest.raises(KMSAccessError):
        kms.decrypt_data_key(wrapped, arn2, {**CTX, "piiguard:scope": "x"})
    with pytest.raises(KMSAccessError):
        kms.rewrap(pair.wrapped, arn, arn2, {**CTX, "piiguard:scope": "x"})


def test_guard_on_aws_kms_round_trip(inproc):
    kms, client, _, _ = inproc
    counter = KMSCallCounter(client)
    guard = Guard(kms=kms).bind(create_engine("sqlite://"))
    cipher = guard.field("customers", "national_id")
    blobs = [cipher.encrypt(b"10000000146") for _ in range(100)]
    assert all(cipher.decrypt(b) == b"10000000146" for b in blobs)
    assert counter.calls == {"GenerateDataKey": 1}
    guard.close()
    assert cipher.decrypt(blobs[0]) == b"10000000146"
    assert counter.calls == {"GenerateDataKey": 1, "Decrypt": 1}


# -- error translation (faults injected with botocore event hooks) ---------------------------
OPERATIONS = [
    ("generate_data_key", lambda k, p, a2: k.generate_data_key(CTX)),
    ("decrypt", lambda k, p, a2: k.decrypt_data_key(p.wrapped, p.master_key_id, CTX)),
    ("re_encrypt", lambda k, p, a2: k.rewrap(p.wrapped, p.master_key_id, a2, CTX)),
]


@pytest.mark.parametrize("code", ["ThrottlingException", "ServiceUnavailable",
                                  "KMSInternalException", "DependencyTimeoutException"])
@pytest.mark.parametrize("operation,call", OPERATIONS, ids=[o[0] for o in OPERATIONS])
def test_transient_errors_become_unavailable(inproc, code, operation, call):
    kms, client, arn, arn2 = inproc
    pair = kms.generate_data_key(CTX)
    with inject_kms_fault(client, code) as failed:
        with pytest.raises(KMSUnavailableError) as info:
            call(kms, pair, arn2)
    assert sum(failed.values()) == 1
    msg = str(info.value)
    assert code in msg and f"operation={operation}" in msg
    assert info.value.operation == operation
    expected_key = "alias/app-pii" if operation == "generate_data_key" else arn
    assert info.value.key_id == expected_key and expected_key in msg
    assert isinstance(info.value.__cause__, ClientError)
    assert info.value.__cause__.response["Error"]["Code"] == code
    for enc in (pair.plaintext.hex(), base64.b64encode(pair.plaintext).decode()):
        assert enc not in msg


@pytest.mark.parametrize("exc", [EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
                                 ConnectTimeoutError(endpoint_url="http://127.0.0.1:1"),
                                 ReadTimeoutError(endpoint_url="http://127.0.0.1:1")],
                         ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("operation,call", OPERATIONS, ids=[o[0] for o in OPERATIONS])
def test_connection_errors_become_unavailable(inproc, exc, operation, call):
    kms, client, arn, arn2 = inproc
    pair = kms.generate_data_key(CTX)
    with inject_kms_fault(client, exception=exc):
        with pytest.raises(KMSUnavailableError) as info:
            call(kms, pair, arn2)
    assert info.value.__cause__ is exc
    assert f"operation={operation}" in str(info.value) and "key_id=" in str(info.value)


@pytest.mark.parametrize("code", ["DisabledException", "AccessDeniedException",
                                  "NotFoundException", "KMSInvalidStateException",
                                  "InvalidCiphertextException", "IncorrectKeyException"])
def test_refusals_become_access_errors(inproc, code):
    kms, client, arn, _ = inproc
    pair = kms.generate_data_key(CTX)
    with inject_kms_fault(client, code, operations={"Decrypt"}):
        with pytest.raises(KMSAccessError) as info:
            kms.decrypt_data_key(pair.wrapped, arn, CTX)
        # Only Decrypt fails: GenerateDataKey still works inside the block.
        assert len(kms.generate_data_key(CTX).plaintext) == 32
    assert code in str(info.value) and arn in str(info.value)
    assert "operation=decrypt" in str(info.value)
    assert isinstance(info.value.__cause__, ClientError)
    assert not isinstance(info.value, KMSUnavailableError)


def test_configuration_is_checked_when_built(fake_credentials):
    with pytest.raises(ConfigurationError):
        AwsKMS(key_id="")
    with pytest.raises(ConfigurationError):
        AwsKMS(key_id="alias/x", max_attempts=0)


def test_own_client_has_short_timeouts_and_bounded_retries(fake_credentials):
    kms = AwsKMS(key_id="alias/x", region_name=TEST_REGION)
    cfg = kms.client.meta.config
    assert cfg.connect_timeout <= 5 and cfg.read_timeout <= 5
    assert cfg.retries["total_max_attempts"] == 3 and cfg.retries["mode"] == "standard"
    assert repr(kms) == "AwsKMS(key_id='alias/x')"


# -- timeouts against real sockets -----------------------------------------------------------
def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_nothing_listening_fails_fast(fake_credentials):
    url = f"http://127.0.0.1:{_closed_port()}"
    kms = AwsKMS(key_id="alias/app-pii", region_name=TEST_REGION, endpoint_url=url)
    start = time.monotonic()
    with pytest.raises(KMSUnavailableError) as info:
        kms.generate_data_key(CTX)
    elapsed = time.monotonic() - start
    assert elapsed < 15  # a bound on hanging, not a performance target
    assert isinstance(info.value.__cause__, EndpointConnectionError)
    assert "alias/app-pii" in str(info.value)


@pytest.fixture
def silent_server():
    """A socket on 127.0.0.1 that accepts connections and never answers."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    accepted: list[socket.socket] = []

    def accept():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            accepted.append(conn)

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{srv.getsockname()[1]}", accepted
    srv.close()
    for conn in accepted:
        conn.close()


@pytest.mark.slow
def test_server_that_never_answers_fails_within_bound(fake_credentials, silent_server):
    url, accepted = silent_server
    kms = AwsKMS(key_id="alias/app-pii", region_name=TEST_REGION, endpoint_url=url)
    start = time.monotonic()
    with pytest.raises(KMSUnavailableError) as info:
        kms.decrypt_data_key(b"x" * 64, "alias/app-pii", CTX)
    elapsed = time.monotonic() - start
    assert elapsed < 15  # default timeouts and retries: a bound on hanging
    assert isinstance(info.value.__cause__, ReadTimeoutError)
    assert len(accepted) == 3  # total attempts, not 1 + 3 retries
    assert "operation=decrypt" in str(info.value)


# -- real moto server over HTTP --------------------------------------------------------------
def test_moto_server_generate_decrypt_rewrap(aws_kms):
    kms, client, counter = aws_kms
    arn2 = client.create_key(Description="second")["KeyMetadata"]["Arn"]
    pair = kms.generate_data_key(CTX)
    assert kms.decrypt_data_key(pair.wrapped, pair.master_key_id, CTX) == pair.plaintext
    wrapped = kms.rewrap(pair.wrapped, pair.master_key_id, arn2, CTX)
    assert kms.decrypt_data_key(wrapped, arn2, CTX) == pair.plaintext
    assert counter.calls == {"CreateKey": 1, "GenerateDataKey": 1, "Decrypt": 2,
                             "ReEncrypt": 1}


def test_moto_server_wrong_context_is_refused(aws_kms):
    kms, _, _ = aws_kms
    pair = kms.generate_data_key(CTX)
    with pytest.raises(KMSAccessError) as info:
        kms.decrypt_data_key(pair.wrapped, pair.master_key_id, {**CTX, "piiguard:scope": "x"})
    assert pair.master_key_id in str(info.value)


@pytest.mark.parametrize("code,error", [("ThrottlingException", KMSUnavailableError),
                                        ("ServiceUnavailable", KMSUnavailableError),
                                        ("DisabledException", KMSAccessError)])
def test_moto_server_fault_translation(aws_kms, code, error):
    kms, client, _ = aws_kms
    pair = kms.generate_data_key(CTX)
    with inject_kms_fault(client, code):
        with pytest.raises(error) as info:
            kms.decrypt_data_key(pair.wrapped, pair.master_key_id, CTX)
    assert pair.master_key_id in str(info.value) and "operation=decrypt" in str(info.value)
    assert isinstance(info.value.__cause__, ClientError)
    # After the fault is lifted the same call works again.
    assert kms.decrypt_data_key(pair.wrapped, pair.master_key_id, CTX) == pair.plaintext


def test_moto_server_endpoint_connection_error(aws_kms):
    kms, client, _ = aws_kms
    exc = EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
    with inject_kms_fault(client, exception=exc):
        with pytest.raises(KMSUnavailableError) as info:
            kms.generate_data_key(CTX)
    assert info.value.__cause__ is exc and kms.master_key_id in str(info.value)
