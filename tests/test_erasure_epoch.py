"""Erasure epochs: a copy of the database taken before a shred decrypts the erased
subject until the epoch is closed, and not after; every other subject reads the same.

A SQLite file copy is the backup here (LocalKMS with a key file, and AwsKMS on a moto
server, where the old KMS key is shown ``PendingDeletion``). The backup is read the way
an attacker holding it would: with the application's current key material (the key file
as it is now, or the live AWS account).
"""

from __future__ import annotations

import json
import shutil

import pytest
from sqlalchemy import Integer, String, create_engine, insert, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from piiguard import AuditTrail, Guard, LocalKMS
from piiguard.errors import PIIGuardError
from piiguard.rotation import shred_scope
from piiguard.rotation.epoch import close_epoch
from piiguard.sqlalchemy import EncryptedNationalId, EncryptedPhone
from piiguard.validators import tckn


def tc(n: int) -> str:
    base = str(500000000 + n)
    return base + tckn.calc_check_digits(base)


def make(engine, kms, events=None):
    guard = Guard(kms=kms, audit=AuditTrail(sinks=[events.append] if events is not None
                                            else []))

    class Base(DeclarativeBase):
        pass

    class Customer(Base):
        __tablename__ = "customers"
        id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
        subject: Mapped[str] = mapped_column(String(32))
        national_id: Mapped[str] = mapped_column(EncryptedNationalId(
            guard, searchable=True, key_scope="subject", on_destroyed="raise"))
        phone: Mapped[str] = mapped_column(EncryptedPhone(guard, key_scope="subject",
                                                          on_destroyed="raise"))

    Base.metadata.create_all(engine)
    guard.bind(engine)
    return guard, Customer


def read_all(engine, kms) -> dict[int, object]:
    """Every row's phone as a fresh process with ``kms`` would read it (an error's class
    name where it cannot)."""
    guard, C = make(engine, kms)
    out: dict[int, object] = {}
    with Session(engine) as s:
        for cid in s.scalars(select(C.id).order_by(C.id)).all():
            try:
                out[cid] = s.get(C, cid).phone
            except PIIGuardError as exc:
                out[cid] = type(exc).__name__
            s.expunge_all()
    guard.close()
    return out


def seed(engine, kms):
    guard, C = make(engine, kms)
    with engine.begin() as conn:
        conn.execute(insert(C.__table__), [
            dict(id=i, subject=f"S-{i}", national_id=tc(i), phone=f"+90533{i:07d}")
            for i in range(1, 21)])
    return guard


def test_backup_copy_decrypts_until_the_epoch_then_never_local_kms(tmp_path):
    db = tmp_path / "live.db"
    key_file = tmp_path / "master.key"
    engine = create_engine(f"sqlite:///{db}")
    kms = LocalKMS.from_file(key_file, create=True)
    events: list[dict] = []
    guard = seed(engine, kms)
    guard.audit = AuditTrail(sinks=[events.append])
    before = read_all(engine, kms)
    assert before[7] == "+905330000007"

    backup = tmp_path / "backup-before-shred.db"
    shutil.copyfile(db, backup)                       # the nightly backup
    report = shred_scope(guard, "customers:S-7")
    receipt = report.receipt()
    assert receipt["status"] == "pending_epoch" and receipt["key_ids"]
    assert tc(7) not in str(receipt) and "0000007" not in str(receipt)

    live = read_all(engine, LocalKMS.from_file(key_file))
    assert live[7] == "KeyDestroyedError"
    assert {k: v for k, v in live.items() if k != 7} == \
        {k: v for k, v in before.items() if k != 7}
    # Before the epoch the backup still decrypts the erased subject (the runbook says so).
    old_copy = create_engine(f"sqlite:///{backup}")
    assert read_all(old_copy, LocalKMS.from_file(key_file))[7] == "+905330000007"
    old_copy.dispose()

    key_file_copy = tmp_path / "master.key.bak"             # a key file backup
    shutil.copyfile(key_file, key_file_copy)
    key_file_copy.chmod(0o600)
    epoch = close_epoch(guard)
    assert epoch.destroyed_keks and epoch.retired_master_keys
    assert [c["scope"] for c in epoch.completed] == ["customers:S-7"]
    assert any(e["action"] == "erasure.complete" and e["scope"] == "customers:S-7"
               for e in events)
    # The key file no longer holds the old master key (rewritten 0600, id kept retired).
    on_disk = LocalKMS.from_file(key_file)
    retired = epoch.retired_master_keys[0]["key_id"]
    assert retired not in on_disk.key_ids and retired in on_disk.retired
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    assert retired not in json.loads(key_file.read_text())["keys"]
    # The live database reads the same as before (but the erased subject).
    after = read_all(engine, on_disk)
    assert after == live
    # The backup can no longer decrypt anybody's values with anything alive, the erased
    # subject included.
    old_copy = create_engine(f"sqlite:///{backup}")
    with pytest.raises(PIIGuardError):
        read_all(old_copy, on_disk)
    # ... but a copy of the key file from before the epoch still holds the old master
    # key: with it, the old database copy still decrypts (docs/operations.md says so).
    old_copy = create_engine(f"sqlite:///{backup}")
    assert read_all(old_copy, LocalKMS.from_file(key_file_copy))[7] == "+905330000007"


def test_backup_copy_with_aws_kms_shows_pending_deletion(aws_kms, tmp_path):
    from piiguard import AwsKMS

    kms, client, _ = aws_kms
    db = tmp_path / "live.db"
    engine = create_engine(f"sqlite:///{db}")
    guard = seed(engine, kms)
    backup = tmp_path / "backup.db"
    shutil.copyfile(db, backup)
    shred_scope(guard, "customers:S-3")
    old_arn = kms.master_key_id
    reader = AwsKMS(key_id=old_arn, client=client)
    old_copy = create_engine(f"sqlite:///{backup}")
    assert read_all(old_copy, reader)[3] == "+905330000003"     # before the epoch
    old_copy.dispose()
    new_arn = client.create_key(Description="epoch 2")["KeyMetadata"]["Arn"]
    with pytest.raises(PIIGuardError):
        close_epoch(guard, new_master_key=None)                   # AWS: must be named
    report = close_epoch(guard, new_master_key=new_arn, pending_days=7)
    assert report.retired_master_keys[0]["state"] == "PendingDeletion"
    assert kms.key_state(old_arn) == "PendingDeletion"
    live = read_all(engine, AwsKMS(key_id=new_arn, client=client))
    assert live[3] == "KeyDestroyedError" and live[4] == "+905330000004"
    # moto does not enforce key states: AWS refuses every use of a PendingDeletion key
    # (KMSInvalidStateException), injected here with a botocore hook for that key only.
    refused = []

    def refuse_pending(params=None, model=None, **_):
        body = json.loads(params.get("body") or b"{}")
        if old_arn in {body.get("KeyId"), body.get("SourceKeyId")}:
            refused.append(model.name)
            from botocore.awsrequest import AWSResponse

            return (AWSResponse("", 400, {}, None),
                    {"Error": {"Code": "KMSInvalidStateException", "Message": "pending"},
                     "ResponseMetadata": {"HTTPStatusCode": 400}})
        return None

    client.meta.events.register_first("before-call.kms", refuse_pending)
    try:
        old_copy = create_engine(f"sqlite:///{backup}")
        got = read_all(old_copy, AwsKMS(key_id=old_arn, client=client))
    finally:
        client.meta.events.unregister("before-call.kms", refuse_pending)
    # nothing in the backup decrypts: its KEK is wrapped under the PendingDeletion key
    assert refused and all(v != f"+90533{i:07d}" for i, v in got.items()), got
