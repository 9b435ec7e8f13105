"""rotate-master: every wrapped key moves to a new master key, no data row changes, and
afterwards everything decrypts with the old master key unavailable (fresh Guard, cold
cache). Against the local key file (SQLite and PostgreSQL) and a real moto server (AWS
KMS ``ReEncrypt``). moto never refuses a disabled key on its own, so "the old master key
is unavailable" is injected with a botocore event hook that fails every call naming it.
"""

from __future__ import annotations

import hashlib
import json
import os

import pytest
from sqlalchemy import Integer, insert, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from piiguard import AuditTrail, Guard, LocalKMS
from piiguard.errors import KMSAccessError, KMSUnavailableError
from piiguard.keys.manager import kms_context
from piiguard.rotation import rotate_master, verify
from piiguard.sqlalchemy import EncryptedAddress, EncryptedNationalId, EncryptedPhone
from piiguard.validators import tckn

N = 200


def tc(n: int) -> str:
    base = str(300000000 + n)
    return base + tckn.calc_check_digits(base)


def model(guard):
    class Base(DeclarativeBase):
        pass

    class Customer(Base):
        __tablename__ = "customers"
        id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
        national_id: Mapped[str] = mapped_column(EncryptedNationalId(guard, searchable=True))
        phone: Mapped[str] = mapped_column(EncryptedPhone(guard, text=True))
        address: Mapped[str] = mapped_column(EncryptedAddress(guard))

    return Base, Customer


def seed(guard, engine):
    Base, Customer = model(guard)
    Base.metadata.create_all(engine)
    guard.bind(engine)
    with engine.begin() as conn:
        conn.execute(insert(Customer.__table__), [
            dict(id=i, national_id=tc(i), phone=f"+90534{i:07d}",
                 address=f"Alsancak Mah. No:{i}, 35220 Konak/İzmir") for i in range(1, N + 1)])
    guard.keys.rotate("dek", "customers")           # two generations of DEKs
    with engine.begin() as conn:
        conn.execute(insert(Customer.__table__), [
            dict(id=N + 1, national_id=tc(N + 1), phone="+905340000000",
                 address="Alsancak Mah. No:1, 35220 Konak/İzmir")])
    return Customer


def kms_wrapped(guard) -> list[str]:
    """The master key of every key the KMS wraps (KEKs, format-1 keys), by key id."""
    t = guard.keys.table
    with guard.engine.connect() as conn:
        return list(conn.execute(select(t.c.master_key_id).where(
            t.c.wrapped_key.is_not(None), t.c.master_key_id.not_like("kek:%"))
            .order_by(t.c.id)).scalars())


def legacy_key(guard, scope: str) -> None:
    """A key of key-table format 1 (wrapped by the KMS directly), as older versions made."""
    from datetime import datetime, timezone
    guard.keys.store.insert_active("dek", scope,
                                   guard.kms.generate_data_key(kms_context("dek", scope)),
                                   datetime.now(timezone.utc))


def data_digest(engine) -> str:
    """SHA-256 over every byte of every data row (the key table excluded)."""
    h = hashlib.sha256()
    with engine.connect() as conn:
        for row in conn.execute(text("SELECT id, national_id, national_id_bidx, phone, "
                                     "address FROM customers ORDER BY id")):
            for v in row:
                h.update(repr(bytes(v) if isinstance(v, memoryview) else v).encode())
    return h.hexdigest()


def fresh_read(kms, engine):
    """A new Guard (cold cache) and model, as a freshly started process would have."""
    g = Guard(kms=kms)
    _, Customer = model(g)
    g.bind(engine)
    report = verify(g)
    with engine.connect() as conn:
        phones = conn.execute(select(Customer.phone).order_by(Customer.id)).scalars().all()
    return report, phones


@pytest.mark.parametrize("engine_name", ["sqlite_engine", "pg_engine"])
def test_rotate_master_with_the_local_key_file(request, tmp_path, engine_name):
    engine = request.getfixturevalue(engine_name)
    path = tmp_path / "master.key"
    events: list[dict] = []
    kms = LocalKMS.from_file(path, create=True)
    old_master = kms.master_key_id
    guard = Guard(kms=kms, audit=AuditTrail(sinks=[events.append]))
    seed(guard, engine)
    assert len(guard.keys.keys()) == 3                # 2 DEKs + 1 index key ...
    n_keys = len(kms_wrapped(guard))
    assert n_keys == 1                                # ... wrapped under 1 KEK
    before = data_digest(engine)
    probe = kms.generate_data_key(kms_context("dek", "probe"))   # wrapped under the old

    report = rotate_master(guard, "new", disable_old=True)

    assert report.ok and report.created and report.rewrapped == n_keys
    assert report.previous == [old_master] and report.disabled == [old_master]
    assert set(kms_wrapped(guard)) == {report.destination}
    assert data_digest(engine) == before              # 0 bytes of data changed
    assert [e["action"] for e in events].count("key.rewrap") == n_keys
    # The key file now has the new master key current and the old one disabled.
    on_disk = LocalKMS.from_file(path)
    assert on_disk.master_key_id == report.destination
    assert on_disk.disabled == {old_master}
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    # The old master key really is unusable ...
    with pytest.raises(KMSAccessError):
        on_disk.decrypt_data_key(probe.wrapped, old_master, kms_context("dek", "probe"))
    # ... and a cold process still reads 100% of the rows.
    check, phones = fresh_read(on_disk, engine)
    assert check.ok and check.checked == 3 * (N + 1)
    assert phones[:2] == ["+905340000001", "+905340000002"] and len(phones) == N + 1
    # Idempotent: nothing left to rewrap.
    again = rotate_master(Guard(kms=on_disk).bind(engine), report.destination)
    assert again.rewrapped == 0 and again.ok


def test_rotate_master_resumes_after_an_interruption(sqlite_engine, tmp_path, monkeypatch):
    kms = LocalKMS.from_file(tmp_path / "master.key", create=True)
    guard = Guard(kms=kms)
    seed(guard, sqlite_engine)
    legacy_key(guard, "legacy-a")                      # 3 keys the KMS wraps: the KEK
    legacy_key(guard, "legacy-b")                      # and two of format 1
    calls = []
    real = LocalKMS.rewrap

    def flaky(self, *a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KMSUnavailableError("injected outage", operation="rewrap")
        return real(self, *a, **k)

    monkeypatch.setattr(LocalKMS, "rewrap", flaky)
    dest = kms.add_master_key()
    with pytest.raises(KMSUnavailableError):
        rotate_master(guard, dest)
    masters = kms_wrapped(guard)
    assert masters.count(dest) == 1                    # one key moved before the outage
    report = rotate_master(guard, dest)                # run again: picks up the rest
    assert report.ok and report.rewrapped == 2 and report.remaining == 0
    kms.disable([m for m in masters if m != dest][0])
    check, _ = fresh_read(kms, sqlite_engine)
    assert check.ok


def test_rotate_master_on_aws_kms_moto_server(aws_kms, sqlite_engine):
    kms, client, counter = aws_kms
    old_arn = kms.master_key_id
    new_arn = client.create_key(Description="piiguard rotation target")["KeyMetadata"]["Arn"]
    guard = Guard(kms=kms)
    seed(guard, sqlite_engine)
    n_keys = len(kms_wrapped(guard))
    assert n_keys == 1                                 # one KEK: one ReEncrypt
    before = data_digest(sqlite_engine)
    probe = kms.generate_data_key(kms_context("dek", "probe"))
    counter.reset()

    report = rotate_master(guard, new_arn)

    assert report.ok and report.rewrapped == n_keys
    assert counter.calls["ReEncrypt"] == n_keys and counter.calls["Decrypt"] == 0
    assert counter.calls["GenerateDataKey"] == 0
    assert set(kms_wrapped(guard)) == {new_arn}
    assert data_digest(sqlite_engine) == before

    # The old master key becomes unavailable: every call naming it fails (injected, since
    # moto does not enforce disabled keys).
    refused = []

    def refuse_old_key(params=None, model=None, **_):
        body = json.loads(params.get("body") or b"{}")   # KMS speaks JSON
        named = {body.get("KeyId"), body.get("SourceKeyId")}
        if old_arn in named:
            refused.append(model.name)
            from botocore.awsrequest import AWSResponse

            return (AWSResponse("", 400, {}, None),
                    {"Error": {"Code": "DisabledException", "Message": "injected"},
                     "ResponseMetadata": {"HTTPStatusCode": 400}})
        return None

    client.meta.events.register_first("before-call.kms", refuse_old_key)
    try:
        from piiguard import AwsKMS

        cold = AwsKMS(key_id=new_arn, client=client)
        # sanity: the hook does refuse the old key (a DEK wrapped under it)
        with pytest.raises(KMSAccessError) as err:
            cold.decrypt_data_key(probe.wrapped, old_arn, kms_context("dek", "probe"))
        assert "DisabledException" in str(err.value)
        check, phones = fresh_read(cold, sqlite_engine)
        assert check.ok and check.checked == 3 * (N + 1) and len(phones) == N + 1
        assert refused == ["Decrypt"]                  # only the sanity call named it
    finally:
        client.meta.events.unregister("before-call.kms", refuse_old_key)
