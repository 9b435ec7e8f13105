"""KMS outages and KMS call counts, against a real moto server over HTTP.

moto never fails on its own, so outages and throttling are injected with botocore event
hooks (``piiguard.testing.inject_kms_fault``): while the block runs, every KMS call made
through the client is answered with the error and never reaches the server.

While KMS is down: values under cached DEKs still encrypt and decrypt (and no KMS call
is even attempted); anything that needs KMS (a new scope, a cold key, a rotation) fails
fast with ``KMSUnavailableError`` naming the column, key and operation; nothing is half
written (no key table row without a usable key).
"""

from __future__ import annotations

import time

import pytest
from botocore.exceptions import EndpointConnectionError
from sqlalchemy import Column, Integer, LargeBinary, MetaData, Table, insert, select

from piiguard import AwsKMS, CacheLimits, Guard
from piiguard.errors import KMSUnavailableError
from piiguard.testing import ManualClock, inject_kms_fault
from piiguard.validators import tckn

FAULTS = [dict(code="ServiceUnavailable"), dict(code="ThrottlingException"),
          dict(exception=EndpointConnectionError(endpoint_url="http://127.0.0.1:1"))]
FAULT_IDS = ["ServiceUnavailable", "ThrottlingException", "EndpointConnectionError"]


def national_id(i: int) -> str:
    base = str(100000000 + i)
    return base + tckn.calc_check_digits(base)


def scopes_in_table(guard: Guard) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for k in guard.keys.keys():
        out.setdefault(k.scope, []).append(k.state)
    return out


@pytest.mark.parametrize("fault", FAULTS, ids=FAULT_IDS)
def test_warm_cache_works_and_kms_needs_fail_fast(aws_kms, sqlite_engine, fault):
    kms, client, _ = aws_kms
    guard = Guard(kms=kms).bind(sqlite_engine)
    cipher = guard.field("customers", "national_id")
    before = cipher.encrypt_str("10000000146")
    before_text = guard.field("customers", "phone").encrypt_text("+905321234567")
    table_before = scopes_in_table(guard)
    assert table_before == {"customers": ["active"]}

    with inject_kms_fault(client, **fault) as failed:
        # Warm: everything under the cached DEK keeps working, without touching KMS.
        for i in range(200):
            value = national_id(i)
            assert cipher.decrypt_str(cipher.encrypt_str(value)) == value
        assert cipher.decrypt_str(before) == "10000000146"
        assert guard.field("customers", "phone").decrypt_text(before_text) == "+905321234567"
        assert sum(failed.values()) == 0

        # A new scope needs no KMS call (its key is wrapped under the cached KEK).
        assert guard.field("orders", "address").decrypt_str(
            guard.field("orders", "address").encrypt_str("Moda Cd. No 1")) == "Moda Cd. No 1"
        assert sum(failed.values()) == 0

        # A cold Guard (empty cache) needs Decrypt for the KEK: fails fast, and names
        # column, key and operation, never the value.
        start = time.monotonic()
        cold = Guard(kms=AwsKMS(kms.master_key_id, client=client)).bind(sqlite_engine)
        with pytest.raises(KMSUnavailableError) as info:
            cold.field("customers", "national_id").decrypt_str(before)
        assert time.monotonic() - start < 15
        assert "customers.national_id" in str(info.value) and kms.master_key_id in str(
            info.value)
        assert "operation=decrypt" in str(info.value) and "10000000146" not in str(
            info.value)
        assert info.value.__cause__ is not None and failed["Decrypt"] >= 1
        with pytest.raises(KMSUnavailableError):
            cold.field("customers", "national_id").encrypt_str("10000000146")
        # A rotation or a new scope in the warm Guard needs no KMS call either.
        guard.keys.rotate("dek", "customers")
        guard.register_scope("dek", "invoices")
        # A new KEK (rotation of the hierarchy) needs GenerateDataKey: refused, nothing
        # half-written.
        keks = guard.keys.keys(kind="kek")
        with pytest.raises(KMSUnavailableError):
            guard.keys.hierarchy.rotate_kek()
        assert guard.keys.keys(kind="kek") == keks
        assert failed["GenerateDataKey"] >= 1

    # KMS back: the cold Guard reads the old value.
    assert cold.field("customers", "national_id").decrypt_str(before) == "10000000146"
    assert scopes_in_table(guard)["orders"] == ["active"]


def test_outage_longer_than_hard_ttl_fails_closed(aws_kms, sqlite_engine):
    kms, client, _ = aws_kms
    clock = ManualClock(0.0)
    guard = Guard(kms=kms, clock=clock,
                  cache=CacheLimits(soft_ttl=10, hard_ttl=100)).bind(sqlite_engine)
    cipher = guard.field("customers", "national_id")
    blob = cipher.encrypt_str("10000000146")
    with inject_kms_fault(client, "ServiceUnavailable") as failed:
        clock.now = 99.9  # soft refreshes read the key table only
        assert cipher.decrypt_str(cipher.encrypt_str("10000000146")) == "10000000146"
        assert cipher.decrypt_str(blob) == "10000000146"
        assert sum(failed.values()) == 0
        clock.now = 100.0  # hard TTL: the plaintext key is gone until KMS answers
        with pytest.raises(KMSUnavailableError):
            cipher.encrypt_str("10000000146")
        with pytest.raises(KMSUnavailableError):
            cipher.decrypt_str(blob)
        assert failed["Decrypt"] >= 1
    assert cipher.decrypt_str(blob) == "10000000146"


def test_rotation_elsewhere_during_outage_keeps_writing_under_the_cached_key(
        aws_kms, sqlite_engine):
    kms, client, _ = aws_kms
    clock = ManualClock(0.0)
    limits = CacheLimits(soft_ttl=10, hard_ttl=100)
    g1 = Guard(kms=kms, clock=clock, cache=limits).bind(sqlite_engine)
    g2 = Guard(kms=kms, clock=clock, cache=limits).bind(sqlite_engine)
    cipher = g1.field("customers", "phone")
    old = cipher.encrypt_str("+905321234567")
    old_id = cipher.key_id_of(old)
    new_id = g2.keys.rotate("dek", "customers")
    with inject_kms_fault(client, "ThrottlingException"):
        clock.now = 10  # g1 sees the rotation and unwraps the new key under its KEK
        blob = cipher.encrypt_str("+905321234567")
        assert cipher.key_id_of(blob) == new_id != old_id
        assert cipher.decrypt_str(blob) == "+905321234567"
        assert cipher.decrypt_str(old) == "+905321234567"
    clock.now = 20
    assert cipher.key_id_of(cipher.encrypt_str("+905321234567")) == new_id


# -- KMS calls per DEK, not per value ---------------------------------------------------------
@pytest.mark.slow
def test_100k_values_make_a_handful_of_kms_calls(aws_kms, sqlite_engine):
    kms, client, counter = aws_kms
    counter.reset()
    n = 100_000
    md = MetaData()
    people = Table("people", md, Column("id", Integer, primary_key=True),
                   Column("national_id", LargeBinary, nullable=False))
    md.create_all(sqlite_engine)
    guard = Guard(kms=kms).bind(sqlite_engine)
    cipher = guard.field("people", "national_id")
    values = [national_id(i) for i in range(n)]
    with sqlite_engine.begin() as conn:
        conn.execute(insert(people), [{"id": i, "national_id": cipher.encrypt_str(v)}
                                      for i, v in enumerate(values)])
    with sqlite_engine.connect() as conn:
        rows = conn.execute(select(people).order_by(people.c.id)).all()
    assert len(rows) == n
    assert all(cipher.decrypt_str(r.national_id) == values[r.id] for r in rows)
    # Writing and reading 100,000 values: one GenerateDataKey, nothing else.
    assert counter.calls == {"GenerateDataKey": 1}

    # A second process-like reader with a cold cache: one Decrypt for all 100,000.
    reader = Guard(kms=AwsKMS(kms.master_key_id, client=client)).bind(sqlite_engine)
    rcipher = reader.field("people", "national_id")
    assert all(rcipher.decrypt_str(r.national_id) == values[r.id] for r in rows)
    assert counter.calls == {"GenerateDataKey": 1, "Decrypt": 1}
    guard.close()
    assert guard.keys.keys(scope="people")[0].encryption_count == n
