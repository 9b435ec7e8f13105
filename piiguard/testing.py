"""Test helpers: a local KMS, a real moto server KMS, KMS call counting, fault injection,
a manual clock and a SQL statement counter.

Use them as pytest fixtures (``pytest_plugins = ["piiguard.testing"]``) or directly.
moto never fails on its own (it does not enforce key states, outages or throttling), so
faults are injected with botocore event hooks on the client (``client.meta.events``):

    kms = AwsKMS(key_id=key_id, client=client)
    counter = KMSCallCounter(client)          # counts every KMS API call
    with inject_kms_fault(client, "ThrottlingException"):
        ...                                   # every call now fails as throttled
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from typing import Any, NamedTuple

import pytest

__all__ = [
    "TEST_REGION",
    "AwsKMSSetup",
    "CountingKMS",
    "KMSCallCounter",
    "ManualClock",
    "MotoServer",
    "StatementCounter",
    "aws_kms",
    "inject_kms_fault",
    "local_kms",
    "moto_server",
]

TEST_REGION = "eu-central-1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fake_credentials() -> None:
    # moto accepts any credentials; set dummies so boto3 never looks further.
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", TEST_REGION)


class MotoServer:
    """A real ``moto_server`` process on 127.0.0.1 and a free port; stopped by pid."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> MotoServer:
        exe = os.path.join(os.path.dirname(sys.executable), "moto_server")
        cmd = [exe] if os.path.exists(exe) else [sys.executable, "-m", "moto.server"]
        self.proc = subprocess.Popen([*cmd, "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("moto_server exited at start")
            try:
                urllib.request.urlopen(self.url + "/moto-api/", timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("moto_server did not start in time")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None

    def client(self, **config: Any) -> Any:
        """A boto3 KMS client for this server (short timeouts, few retries)."""
        import boto3
        from botocore.config import Config

        _fake_credentials()
        cfg = Config(connect_timeout=config.pop("connect_timeout", 2),
                     read_timeout=config.pop("read_timeout", 5),
                     retries={"max_attempts": config.pop("max_attempts", 2),
                              "mode": "standard"})
        return boto3.client("kms", region_name=TEST_REGION, endpoint_url=self.url,
                            config=cfg)


class KMSCallCounter:
    """Counts KMS API calls made through ``client`` (a botocore event hook)."""

    def __init__(self, client: Any) -> None:
        self.calls: Counter[str] = Counter()
        client.meta.events.register("before-call.kms", self._count)

    def _count(self, model: Any = None, **_: Any) -> None:
        self.calls[model.name] += 1

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    def reset(self) -> None:
        self.calls.clear()


class CountingKMS:
    """A key provider in front of another (a fresh :class:`~piiguard.LocalKMS` by
    default) that counts the calls reaching it: a spy, not a fake.

        >>> kms = CountingKMS()
        >>> pair = kms.generate_data_key({"piiguard:scope": "t"})
        >>> kms.calls["generate"], kms.total
        (1, 1)
    """

    def __init__(self, inner: Any = None) -> None:
        if inner is None:
            from piiguard.kms.local import LocalKMS
            inner = LocalKMS.generate()
        self.inner = inner
        self.calls: Counter[str] = Counter()

    @property
    def master_key_id(self) -> str:
        return self.inner.master_key_id

    def generate_data_key(self, context: dict[str, str]) -> Any:
        self.calls["generate"] += 1
        return self.inner.generate_data_key(context)

    def decrypt_data_key(self, wrapped: bytes, master_key_id: str,
                         context: dict[str, str]) -> bytes:
        self.calls["decrypt"] += 1
        return self.inner.decrypt_data_key(wrapped, master_key_id, context)

    def rewrap(self, wrapped: bytes, source_key_id: str, dest_key_id: str,
               context: dict[str, str]) -> Any:
        self.calls["rewrap"] += 1
        return self.inner.rewrap(wrapped, source_key_id, dest_key_id, context)

    @property
    def total(self) -> int:
        return sum(self.calls.values())


class ManualClock:
    """A clock that moves only when told: ``Guard(..., clock=clock)`` and
    ``clock.advance(seconds)`` to step over a key cache's TTLs."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class StatementCounter:
    """Counts the SQL statements ``engine`` sends (e.g. to show a warm key cache reads
    nothing from the key table); ``stop()`` detaches it."""

    def __init__(self, engine: Any) -> None:
        from sqlalchemy import event

        self.engine, self.n = engine, 0
        event.listen(engine, "before_cursor_execute", self._on)

    def _on(self, *args: Any, **kwargs: Any) -> None:
        self.n += 1

    def stop(self) -> None:
        from sqlalchemy import event

        event.remove(self.engine, "before_cursor_execute", self._on)


@contextlib.contextmanager
def inject_kms_fault(client: Any, code: str = "ServiceUnavailable", *,
                     operations: set[str] | None = None,
                     exception: BaseException | None = None) -> Iterator[Counter[str]]:
    """Make KMS calls fail while the block runs (moto cannot fail on its own).

    With ``code`` the call returns that AWS error (``ThrottlingException``,
    ``DisabledException`` …); with ``exception`` it raises it (e.g. botocore's
    ``EndpointConnectionError``). Yields a counter of the failed attempts by operation.
    """
    failed: Counter[str] = Counter()

    def hook(model: Any = None, **_: Any) -> tuple[Any, dict[str, Any]] | None:
        # botocore's before-call protocol: a (response, parsed) pair short-circuits the
        # call; None lets it through.
        if operations and model.name not in operations:
            return None
        failed[model.name] += 1
        if exception is not None:
            raise exception
        from botocore.awsrequest import AWSResponse

        status = 400 if "Exception" in code else 503
        return (AWSResponse("", status, {}, None),
                {"Error": {"Code": code, "Message": "injected by piiguard.testing"},
                 "ResponseMetadata": {"HTTPStatusCode": status}})

    client.meta.events.register_first("before-call.kms", hook)
    try:
        yield failed
    finally:
        client.meta.events.unregister("before-call.kms", hook)


# -- pytest fixtures -------------------------------------------------------------------------
class AwsKMSSetup(NamedTuple):
    """What the :func:`aws_kms` fixture gives: the provider, its boto3 client (to inject
    faults into) and the counter of the KMS calls it made."""

    kms: Any
    client: Any
    counter: KMSCallCounter


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """A moto server process for the whole test session."""
    server = MotoServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def aws_kms(moto_server: MotoServer) -> AwsKMSSetup:
    """``(kms, client, counter)`` (:class:`AwsKMSSetup`): an AwsKMS against the moto
    server, with a fresh master key."""
    from piiguard.kms.aws import AwsKMS

    client = moto_server.client()
    key_id = client.create_key(Description="piiguard test")["KeyMetadata"]["Arn"]
    counter = KMSCallCounter(client)
    return AwsKMSSetup(AwsKMS(key_id=key_id, client=client), client, counter)


@pytest.fixture
def local_kms() -> Any:
    """A LocalKMS with a fresh in-memory master key."""
    from piiguard.kms.local import LocalKMS

    return LocalKMS.generate()
