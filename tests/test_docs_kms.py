"""docs/kms.md, checked: its code blocks run as written (the moto recipe as a pytest run
of its conftest.py and test file, against the real moto server piiguard.testing starts;
the by-hand block as a script), the IAM actions it lists are exactly the KMS APIs piiguard
calls over a whole key lifecycle, the options table names every AwsKMS parameter, and
configuration mistakes give the errors its table says."""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from sqlalchemy import Integer, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from piiguard import AwsKMS, Guard
from piiguard.errors import ConfigurationError, KMSConfigurationError, KMSError
from piiguard.rotation.epoch import close_epoch
from piiguard.rotation.rewrap import rotate_master
from piiguard.sqlalchemy import EncryptedNationalId
from piiguard.testing import KMSCallCounter, MotoServer

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "kms.md").read_text(encoding="utf-8")


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC, re.S)


def files() -> dict[str, str]:
    out = {}
    for b in blocks("python"):
        first = b.splitlines()[0]
        if first.startswith("# file: "):
            out[first.removeprefix("# file: ").strip()] = b
    return out


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["PYTHONPATH"] = str(ROOT)
    return env


def test_the_moto_recipe_runs_as_written(tmp_path):
    f = files()
    (tmp_path / "conftest.py").write_text(f["conftest.py"])
    (tmp_path / "test_customers_kms.py").write_text(f["test_customers_kms.py"])
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "test_customers_kms.py"], cwd=tmp_path, env=_env(),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "2 passed" in res.stdout


@pytest.mark.parametrize("name", ["moto_by_hand.py", "custom_provider.py",
                                  "aws_production.py"])
def test_the_scripts_run_as_written(tmp_path, name):
    (tmp_path / name).write_text(files()[name])
    env = _env()
    if name == "aws_production.py":
        env["AWS_EC2_METADATA_DISABLED"] = "true"   # construction makes no call
    res = subprocess.run([sys.executable, name], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr


def test_every_python_block_is_run():
    untested = [b.splitlines()[0] for b in blocks("python")
                if not b.startswith("# file: ") and "CacheLimits(" not in b
                and "from_file(\"/var/lib" not in b]
    assert not untested


def test_the_cache_limits_block_and_its_defaults():
    from piiguard.keys import CacheLimits

    block = next(b for b in blocks("python") if "CacheLimits(" in b)
    exec(compile(block, "kms.md", "exec"), {})
    d = CacheLimits()
    assert (d.soft_ttl, d.hard_ttl, d.max_uses) == (300.0, 3600.0, 2**30)
    assert "`soft_ttl` (300 s)" in DOC and "`hard_ttl` (3,600 s" in DOC
    with pytest.raises(ConfigurationError):
        CacheLimits(soft_ttl=10, hard_ttl=5)


def test_the_options_table_names_every_parameter():
    params = set(inspect.signature(AwsKMS).parameters)
    table = DOC.split("| option | default |", 1)[1].split("\n\n", 1)[0]
    documented = set(re.findall(r"^\| `(\w+)` \|", table, re.M))
    assert documented == params
    sig = inspect.signature(AwsKMS).parameters
    for name in ("connect_timeout", "read_timeout", "max_attempts"):
        assert f"| `{name}` | `{sig[name].default}` |" in table


def test_the_iam_actions_are_exactly_the_calls_made(moto_server, tmp_path):
    """bind, writes, a fresh process's reads, keys rotate, rotate-master and an erasure
    epoch: the KMS APIs called are the five the docs list, and the policy grants each."""
    client = moto_server.client()
    old = client.create_key(Description="old")["KeyMetadata"]["Arn"]
    new = client.create_key(Description="new")["KeyMetadata"]["Arn"]
    client.create_alias(AliasName="alias/piiguard-new", TargetKeyId=new)
    third = client.create_key(Description="epoch")["KeyMetadata"]["Arn"]
    counter = KMSCallCounter(client)
    guard = Guard(kms=AwsKMS(key_id=old, client=client))

    class Base(DeclarativeBase):
        pass

    class C(Base):
        __tablename__ = "c"
        id: Mapped[int] = mapped_column(Integer, primary_key=True)
        national_id: Mapped[str] = mapped_column(EncryptedNationalId(guard,
                                                                     searchable=True))

    engine = create_engine(f"sqlite:///{tmp_path / 'a.db'}")
    Base.metadata.create_all(engine)
    guard.bind(engine)
    with Session(engine) as s:
        s.add(C(id=1, national_id="10000000146"))
        s.commit()
    reader = Guard(kms=AwsKMS(key_id=old, client=client)).bind(engine)
    reader.keys.read_entry(2)                      # a fresh process unwraps the DEK (1: KEK)
    guard.keys.rotate("dek", "c")
    rotate_master(guard, "alias/piiguard-new")
    close_epoch(guard, new_master_key=third, pending_days=7)
    called = set(counter.calls)
    table = DOC.split("| KMS API | IAM action | when |", 1)[1].split("\n\n", 1)[0]
    apis = set(re.findall(r"^\| `(\w+)` \|", table, re.M))
    assert called == apis == {"GenerateDataKey", "Decrypt", "ReEncrypt", "DescribeKey",
                              "ScheduleKeyDeletion"}
    policy = json.loads(blocks("json")[0])
    granted = {a for st in policy["Statement"] for a in st["Action"]}
    assert granted == {"kms:GenerateDataKey", "kms:Decrypt", "kms:ReEncryptFrom",
                       "kms:ReEncryptTo", "kms:DescribeKey", "kms:ScheduleKeyDeletion"}
    assert "kms:Encrypt" not in granted


def test_configuration_mistakes_name_the_fix(monkeypatch, tmp_path):
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    for var in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    with pytest.raises(ConfigurationError, match="region_name="):
        AwsKMS(key_id="alias/app-pii")
    with pytest.raises(ConfigurationError, match="endpoint_url"):
        AwsKMS(key_id="alias/app-pii", region_name="eu-central-1",
               endpoint_url="localhost:5000")
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    with pytest.raises(ConfigurationError, match="AWS_PROFILE"):
        AwsKMS(key_id="alias/app-pii", region_name="eu-central-1")
    monkeypatch.delenv("AWS_PROFILE")
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)   # it caches credentials
    server = MotoServer().start()
    try:
        kms = AwsKMS(key_id="alias/app-pii", region_name="eu-central-1",
                     endpoint_url=server.url)
        with pytest.raises(KMSConfigurationError) as err:
            kms.generate_data_key({"piiguard:kind": "dek", "piiguard:scope": "x"})
    finally:
        server.stop()
    assert isinstance(err.value, ConfigurationError) and isinstance(err.value, KMSError)
    assert "AWS_ACCESS_KEY_ID" in str(err.value) and "AWS_PROFILE" in str(err.value)
    assert err.value.__cause__ is None
