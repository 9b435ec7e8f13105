"""render(): policy None, reveal with audit, no plaintext for redact/null, roles across
threads and asyncio tasks."""

from __future__ import annotations

import asyncio
import threading

import pytest

from piiguard import MaskingPolicy, acting_as
from piiguard.errors import DecryptionError
from piiguard.masking.view import MaskedStr, is_masked, render

POLICY = {
    "default": "redact",
    "national_id": {"admin": "reveal", "support": "partial:1:2", "ops": "null"},
    "phone": {"admin": "reveal", "support": "partial:0:2", "analyst": "pseudonym"},
}
TCKN = "10000000146"
PHONE = "+905321234567"


class Spy:
    """A plaintext_fn that counts how often it is called."""

    def __init__(self, value):
        self.value = value
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return self.value


def show(guard, spy, kind="national_id", column="customers.national_id", **kw):
    return render(guard, kind=kind, column=column, plaintext_fn=spy, **kw)


def test_no_policy_reveals_without_audit(guard):
    spy = Spy(TCKN)
    with acting_as("anyone"):
        out = show(guard, spy)
    assert out == TCKN and type(out) is str and spy.calls == 1
    assert guard.audit.pending() == 0 and not guard.audit.last_events


def test_roles(guard):
    guard.policy = MaskingPolicy.from_dict(POLICY)
    spy = Spy(TCKN)
    with acting_as("admin"):
        assert show(guard, spy) == TCKN and not is_masked(show(guard, spy))
    with acting_as("support"):
        out = show(guard, spy)
        assert out == "1********46" and type(out) is MaskedStr
    with acting_as("stranger"):
        assert show(guard, spy) == "[REDACTED]"
    assert show(guard, spy) == "[REDACTED]"          # no role: the default
    with acting_as("ops"):
        assert show(guard, spy) is None
    with acting_as("analyst"):
        token = show(guard, Spy(PHONE), kind="phone", column="customers.phone")
        assert token.startswith("psn_") and is_masked(token)


@pytest.mark.parametrize("role", ["ops", "stranger", None])
def test_no_plaintext_read_for_redact_and_null(guard, role):
    guard.policy = MaskingPolicy.from_dict(POLICY)

    def never():
        raise AssertionError("decrypted for a role that needs no plaintext")

    if role is None:
        assert show(guard, never) == "[REDACTED]"
    else:
        with acting_as(role):
            assert show(guard, never) in ("[REDACTED]", None)


def test_null_stored_value_stays_none(guard):
    guard.policy = MaskingPolicy.from_dict(POLICY)
    for role in ("admin", "support"):
        with acting_as(role):
            assert show(guard, Spy(None)) is None
    with acting_as("analyst"):
        assert show(guard, Spy(None), kind="phone", column="customers.phone") is None
    guard.audit.flush()
    assert not [e for e in guard.audit.last_events if e["action"] == "reveal"]


def test_reveal_is_counted_and_flushed_when_the_role_block_ends(guard):
    guard.policy = MaskingPolicy.from_dict(POLICY)
    with acting_as("admin", purpose="ticket-9"):
        for i in range(250):
            show(guard, Spy(TCKN), row_key=i, key_id=7)
        for _ in range(40):
            show(guard, Spy(PHONE), kind="phone", column="customers.phone", key_id=8)
        with acting_as("support"):
            show(guard, Spy(TCKN))                  # partial: not a reveal
        assert guard.audit.pending() == 290 or guard.audit.pending() == 0
    assert guard.audit.pending() == 0
    events = [e for e in guard.audit.last_events if e["action"] == "reveal"]
    by_column = {e["column"]: e for e in events}
    assert sum(e["count"] for e in events) == 290
    nid = by_column["customers.national_id"]
    assert (nid["count"], nid["role"], nid["purpose"], nid["key_id"], nid["outcome"]) == \
        (250, "admin", "ticket-9", 7, "ok")
    assert nid["row_keys"] == list(range(100)) and nid["row_keys_omitted"] == 150
    assert by_column["customers.phone"]["count"] == 40
    assert "row_keys" not in by_column["customers.phone"]


def test_failed_reveal_is_audited_as_error(guard):
    guard.policy = MaskingPolicy.from_dict(POLICY)

    def broken():
        raise DecryptionError("decryption failed", column="customers.national_id",
                              key_id=3, operation="decrypt")

    with acting_as("admin"), pytest.raises(DecryptionError):
        show(guard, broken, key_id=3, row_key=12)
    err = guard.audit.last_events[-1]
    assert (err["action"], err["outcome"], err["error"], err["row_keys"], err["count"]) == \
        ("reveal", "error", "DecryptionError", [12], 1)


def test_threads_see_their_own_role(guard):
    guard.policy = MaskingPolicy.from_dict(POLICY)
    results: dict[str, set] = {}
    barrier = threading.Barrier(3)

    def worker(role):
        with acting_as(role):
            barrier.wait()
            results[role] = {show(guard, Spy(TCKN)) for _ in range(300)}

    threads = [threading.Thread(target=worker, args=(r,)) for r in ("admin", "support", "x")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {"admin": {TCKN}, "support": {"1********46"}, "x": {"[REDACTED]"}}
    guard.audit.flush()
    reveals = [e for e in guard.audit.last_events if e["action"] == "reveal"]
    assert sum(e["count"] for e in reveals) == 300 and {e["role"] for e in reveals} == {"admin"}


async def test_asyncio_tasks_with_different_roles_at_once(guard):
    guard.policy = MaskingPolicy.from_dict(POLICY)

    async def task(role):
        async with acting_as(role):
            seen = []
            for _ in range(20):
                seen.append(show(guard, Spy(TCKN)))
                await asyncio.sleep(0)     # interleave with the other tasks
            return role, set(seen)

    out = dict(await asyncio.gather(*(task(r) for r in ("admin", "support", "ops", "nn"))))
    assert out == {"admin": {TCKN}, "support": {"1********46"}, "ops": {None},
                   "nn": {"[REDACTED]"}}


def test_masked_str_marker():
    import copy
    import pickle

    m = MaskedStr("1********46")
    assert repr(m) == "'1********46'" and str(m) == "1********46"
    assert is_masked(copy.copy(m)) and is_masked(pickle.loads(pickle.dumps(m)))
    assert not is_masked(m + "")
