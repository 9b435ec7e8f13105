"""The plaintext DEK cache keeps its limits exactly (injected clock, counted KMS calls).

``SpyKMS`` wraps a real ``LocalKMS`` and counts the calls that reach it; SQL statements
are counted with a SQLAlchemy engine event. ``CacheLimits(soft_ttl, hard_ttl, max_uses)``:

- max_uses: exactly N encryptions under one DEK, then a new DEK id (also across a hard
  TTL reload and a restart, since the count lives in the key table);
- soft TTL: the key table is read again (a rotation or destruction by another Guard is
  seen), with no KMS call for a key already in memory;
- hard TTL: the plaintext is dropped and the KMS unwraps the key again.
"""

from __future__ import annotations

from collections import Counter

import pytest

from piiguard import CacheLimits, Guard, LocalKMS
from piiguard.testing import CountingKMS as SpyKMS
from piiguard.testing import ManualClock as Clock
from piiguard.testing import StatementCounter as SQLCounter
from piiguard.errors import ConfigurationError, KeyDestroyedError

SOFT, HARD = 60.0, 600.0


@pytest.fixture
def master():
    return LocalKMS.generate()


@pytest.fixture
def clock():
    return Clock()


def make_guard(engine, master, clock, **limits):
    spy = SpyKMS(master)
    # Change notifications off: these tests pin the soft/hard TTL rules alone (what
    # serves when nothing is heard); test_keys_notify.py tests them with notifications.
    limits = {"soft_ttl": SOFT, "hard_ttl": HARD, "watch_changes": False, **limits}
    guard = Guard(kms=spy, cache=CacheLimits(**limits), clock=clock).bind(engine)
    return guard, spy


def key_id(blob: bytes) -> int:
    return int.from_bytes(blob[1:5], "big")


# -- max_uses -------------------------------------------------------------------------------
def test_max_uses_gives_exactly_n_encryptions_per_dek(sqlite_engine, master, clock):
    guard, spy = make_guard(sqlite_engine, master, clock, max_uses=5)
    cipher = guard.field("customers", "national_id")
    blobs = [cipher.encrypt(b"10000000146") for _ in range(16)]
    ids = [key_id(b) for b in blobs]
    counts = Counter(ids)
    assert list(counts.values()) == [5, 5, 5, 1]
    assert ids == sorted(ids) and len(set(ids)) == 4
    # One GenerateDataKey for the KEK; the four DEKs are made and wrapped locally under it.
    assert spy.calls == {"generate": 1}
    guard.keys.flush()
    rows = {k.id: k for k in guard.keys.keys(kind="dek", scope="customers")}
    assert [rows[i].encryption_count for i in sorted(rows)] == [5, 5, 5, 1]
    assert [rows[i].state for i in sorted(rows)] == ["decrypt_only"] * 3 + ["active"]
    assert all(cipher.decrypt(b) == b"10000000146" for b in blobs)
    assert spy.calls == {"generate": 1}


def test_max_uses_is_shared_by_every_field_of_the_scope(sqlite_engine, master, clock):
    guard, _ = make_guard(sqlite_engine, master, clock, max_uses=4)
    a = guard.field("customers", "national_id")
    b = guard.field("customers", "phone")
    c = guard.field("orders", "note")
    first = [a.encrypt(b"1"), b.encrypt(b"2"), a.encrypt(b"3"),
             c.encrypt(b"x", scope="customers"), c.encrypt(b"other scope")]
    assert len({key_id(x) for x in first[:4]}) == 1
    assert key_id(first[4]) != key_id(first[0])
    assert key_id(b.encrypt(b"5")) != key_id(first[0])


def test_max_uses_survives_a_hard_ttl_reload(sqlite_engine, master, clock):
    guard, spy = make_guard(sqlite_engine, master, clock, max_uses=5)
    cipher = guard.field("customers", "national_id")
    before = [key_id(cipher.encrypt(b"v")) for _ in range(3)]
    clock.advance(HARD)
    after = [key_id(cipher.encrypt(b"v")) for _ in range(3)]
    assert spy.calls["decrypt"] == 1  # the hard TTL made the KMS unwrap it again
    assert before == [before[0]] * 3
    assert after[:2] == [before[0]] * 2  # uses 4 and 5 of the first key
    assert after[2] != before[0]          # use 6 needs a new key


def test_max_uses_survives_a_restart(sqlite_engine, master, clock):
    g1, _ = make_guard(sqlite_engine, master, clock, max_uses=5)
    first = [key_id(g1.field("customers", "phone").encrypt(b"v")) for _ in range(3)]
    g1.close()  # records the use count in the key table
    g2, _ = make_guard(sqlite_engine, master, clock, max_uses=5)
    later = [key_id(g2.field("customers", "phone").encrypt(b"v")) for _ in range(3)]
    assert later[:2] == first[:2] and later[2] != first[0]


def test_a_key_used_up_before_a_restart_is_not_used_again(sqlite_engine, master, clock):
    g1, _ = make_guard(sqlite_engine, master, clock, max_uses=4)
    first = {key_id(g1.field("customers", "phone").encrypt(b"v")) for _ in range(4)}
    g1.close()
    g2, _ = make_guard(sqlite_engine, master, clock, max_uses=4)
    assert key_id(g2.field("customers", "phone").encrypt(b"v")) not in first
    g2.keys.flush()
    counts = [k.encryption_count for k in g2.keys.keys(kind="dek", scope="customers")]
    assert counts == [4, 1]


def test_uses_by_another_guard_count_at_the_next_refresh(sqlite_engine, master, clock):
    g1, _ = make_guard(sqlite_engine, master, clock, max_uses=10)
    g2, _ = make_guard(sqlite_engine, master, clock, max_uses=10)
    k = key_id(g1.field("customers", "phone").encrypt(b"v"))  # g1: 1 use
    assert all(key_id(g2.field("customers", "phone").encrypt(b"v")) == k
               for _ in range(7))                              # g2: 7 uses
    g2.keys.flush()
    clock.advance(SOFT)  # g1 consults the key table again and learns of g2's uses
    ids = [key_id(g1.field("customers", "phone").encrypt(b"v")) for _ in range(3)]
    assert ids[:2] == [k, k] and ids[2] != k


# -- soft TTL -------------------------------------------------------------------------------
def test_soft_ttl_rereads_the_key_table_without_kms(sqlite_engine, master, clock):
    guard, spy = make_guard(sqlite_engine, master, clock)
    cipher = guard.field("customers", "national_id")
    blob = cipher.encrypt(b"10000000146")
    spy.calls.clear()
    sql = SQLCounter(sqlite_engine)
    clock.advance(SOFT - 0.001)
    cipher.encrypt(b"10000000146")
    cipher.decrypt(blob)
    assert sql.n == 0 and spy.total == 0  # fresh: memory only
    clock.advance(0.001)                   # exactly soft_ttl since the last check
    cipher.encrypt(b"10000000146")
    assert sql.n >= 1 and spy.total == 0   # key table read again, KMS not called
    n = sql.n
    cipher.decrypt(blob)
    cipher.encrypt(b"10000000146")
    assert sql.n == n                      # fresh again for another soft_ttl


def test_soft_ttl_picks_up_a_rotation_by_another_guard(sqlite_engine, master, clock):
    g1, spy1 = make_guard(sqlite_engine, master, clock)
    g2, _ = make_guard(sqlite_engine, master, clock)
    cipher = g1.field("customers", "national_id")
    old = cipher.encrypt(b"10000000146")
    new_id = g2.keys.rotate("dek", "customers")
    assert new_id != key_id(old)
    clock.advance(SOFT - 1)
    assert key_id(cipher.encrypt(b"v")) == key_id(old)  # not seen yet
    spy1.calls.clear()
    clock.advance(1)
    assert key_id(cipher.encrypt(b"v")) == new_id       # seen after soft_ttl
    assert spy1.calls == {}              # the new key unwrapped locally, under the KEK
    assert cipher.decrypt(old) == b"10000000146"
    assert spy1.calls == {}                             # old key still in memory


def test_soft_ttl_sees_a_key_destroyed_by_another_guard(sqlite_engine, master, clock):
    g1, _ = make_guard(sqlite_engine, master, clock)
    g2, _ = make_guard(sqlite_engine, master, clock)
    cipher = g1.field("customers", "national_id")
    blob = cipher.encrypt(b"10000000146")
    g2.keys.rotate("dek", "customers")
    g2.keys.destroy(key_id(blob))
    assert cipher.decrypt(blob) == b"10000000146"  # within soft_ttl: cached
    clock.advance(SOFT)
    with pytest.raises(KeyDestroyedError) as info:
        cipher.decrypt(blob)
    assert "customers.national_id" in str(info.value)
    assert str(key_id(blob)) in str(info.value)
    # And it stays unreadable (no stale plaintext key served later).
    with pytest.raises(KeyDestroyedError):
        cipher.decrypt(blob)


# -- hard TTL -------------------------------------------------------------------------------
def test_hard_ttl_makes_the_kms_unwrap_again(sqlite_engine, master, clock):
    guard, spy = make_guard(sqlite_engine, master, clock)
    cipher = guard.field("customers", "national_id")
    blob = cipher.encrypt(b"10000000146")
    assert spy.calls == {"generate": 1}
    for _ in range(int(HARD // SOFT) - 1):  # soft refreshes along the way: no KMS
        clock.advance(SOFT)
        cipher.encrypt(b"v")
        assert cipher.decrypt(blob) == b"10000000146"
    assert spy.calls == {"generate": 1}
    clock.advance(HARD - (HARD // SOFT - 1) * SOFT - 0.001)
    cipher.encrypt(b"v")
    assert spy.calls == {"generate": 1}
    clock.advance(0.001)  # exactly hard_ttl since the KMS gave us the key
    assert key_id(cipher.encrypt(b"v")) == key_id(blob)
    assert spy.calls == {"generate": 1, "decrypt": 1}
    assert cipher.decrypt(blob) == b"10000000146"
    assert spy.calls == {"generate": 1, "decrypt": 1}


def test_hard_ttl_on_the_read_path(sqlite_engine, master, clock):
    writer, _ = make_guard(sqlite_engine, master, clock)
    blob = writer.field("customers", "phone").encrypt(b"+905321234567")
    reader, spy = make_guard(sqlite_engine, master, clock)
    cipher = reader.field("customers", "phone")
    for _ in range(3):
        assert cipher.decrypt(blob) == b"+905321234567"
    assert spy.calls == {"decrypt": 1}
    sql = SQLCounter(sqlite_engine)
    clock.advance(SOFT - 0.001)
    cipher.decrypt(blob)
    assert sql.n == 0
    clock.advance(0.001)  # soft TTL on the read path: key table read, no KMS call
    cipher.decrypt(blob)
    assert sql.n >= 1 and spy.calls == {"decrypt": 1}
    clock.advance(HARD - SOFT - 0.001)
    cipher.decrypt(blob)
    assert spy.calls == {"decrypt": 1}
    clock.advance(0.001)
    cipher.decrypt(blob)
    cipher.decrypt(blob)
    assert spy.calls == {"decrypt": 2}


def test_clear_cache_drops_plaintext_keys(sqlite_engine, master, clock):
    guard, spy = make_guard(sqlite_engine, master, clock)
    cipher = guard.field("customers", "phone")
    blob = cipher.encrypt(b"x")
    guard.close()
    assert guard.keys.cache.by_id == {} and guard.keys.cache.active == {}
    assert cipher.decrypt(blob) == b"x"
    assert spy.calls == {"generate": 1, "decrypt": 1}


# -- configuration --------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs", [dict(soft_ttl=0), dict(soft_ttl=-1),
                                    dict(soft_ttl=10, hard_ttl=5), dict(max_uses=0),
                                    dict(max_uses=2**32 + 1)])
def test_bad_cache_limits_are_refused_when_built(kwargs):
    with pytest.raises(ConfigurationError):
        CacheLimits(**kwargs)


def test_default_limits_are_conservative():
    limits = CacheLimits()
    assert limits.max_uses <= 2**30 < 2**32
    assert 0 < limits.soft_ttl <= limits.hard_ttl
