"""Search as a governed capability: who may search, how fast, every search on record.

Tried as an attacker with a restricted role would: ``support`` sees ``1********46`` and
tries candidates through ``in_()``. The README's own policy is read from README.md, so
the arithmetic shown there is the arithmetic tested here.
"""

from __future__ import annotations

import ast
import itertools
import re
import warnings
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from masking_world import models
from sqlalchemy import select
from sqlalchemy.orm import Session

from piiguard import Guard, MaskingPolicy, acting_as
from piiguard.errors import AccessDeniedError, PolicyError, SearchLimitError
from piiguard.masking.audit import AuditTrail
from piiguard.masking.policy import PolicyWarning
from piiguard.masking.recovery import MAX_RECOVERY_CHANCE, candidates_left
from piiguard.masking.rules import DEFAULT_SEARCH_LIMIT, SearchLimit
from piiguard.sqlalchemy import lookup
from piiguard.validators import tckn

ROOT = Path(__file__).resolve().parents[1]
NID = "10000000146"


def readme_policy() -> dict:
    """The policy dict of the README's quickstart (the literal passed to from_dict)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    m = re.search(r"MaskingPolicy\.from_dict\((\{.*?\n\s*\})\)", text, re.S)
    assert m, "README.md has no MaskingPolicy.from_dict({...}) block"
    return ast.literal_eval(re.sub(r"#[^\n]*", "", m.group(1)))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def shop(sqlite_engine, local_kms):
    events: list[dict] = []
    clock = Clock()
    guard = Guard(kms=local_kms, clock=clock, audit=AuditTrail(sinks=[events.append]))
    Base, C = models(guard)
    Base.metadata.create_all(sqlite_engine)
    guard.bind(sqlite_engine)
    with Session(sqlite_engine) as s:
        s.add_all([C(id=1, national_id=NID, phone="05321234567"),
                   C(id=2, national_id="10000000078", phone="05321234568")])
        s.commit()
    guard.policy = MaskingPolicy.from_dict(readme_policy())
    events.clear()
    return guard, C, sqlite_engine, events, clock


def searches(events):
    return [e for e in events if e["action"] == "search"]


# ----------------------------------------------------------------------------- arithmetic

def test_readme_policy_arithmetic_support_cannot_recover_a_number_in_a_day():
    policy = MaskingPolicy.from_dict(readme_policy())
    assert policy.may_search(kind="national_id", column="customers.national_id",
                             role="support")
    mask = policy.mask_for(kind="national_id", column="customers.national_id",
                           role="support")
    assert mask.spec == "partial:1:2"
    cands = candidates_left("national_id", "partial", 1, 2)
    limit = policy.search_limit("support")
    assert limit == DEFAULT_SEARCH_LIMIT and limit.to_spec() == "600/hour"
    per_day = limit.tries_per_day()
    assert (cands, limit.burst, per_day) == (2_000_000, 60, 14_460)
    assert per_day / cands == pytest.approx(0.00723)
    assert per_day / cands < MAX_RECOVERY_CHANCE
    # on average half the candidates: 1,000,000 / 600 an hour = 69 days
    assert (cands / 2 - limit.burst) / 600 / 24 > 69


def test_candidate_count_is_exact_for_partial_tc_masks():
    """The DP count against brute force over the hidden digits (1 and 2 hidden ones
    enumerated completely; the 2,000,000 figure by its formula)."""
    def brute(first, last, number):
        shown = set(range(first)) | set(range(11 - last, 11))
        hidden = [i for i in range(9) if i not in shown]
        count = 0
        for digits in itertools.product("0123456789", repeat=len(hidden)):
            n = list(number[:9])
            for i, d in zip(hidden, digits, strict=True):
                n[i] = d
            head = "".join(n)
            if head[0] == "0":
                continue
            full = head + tckn.calc_check_digits(head)
            if all(full[i] == number[i] for i in shown):
                count += 1
        return count
    for first, last, number in [(8, 2, NID), (7, 2, NID), (7, 1, "10000000078"),
                                (6, 3, "12345678950")]:
        assert candidates_left("national_id", "partial", first, last) <= brute(
            first, last, number)
    assert candidates_left("national_id", "partial", 1, 2) == 10**8 * 2 // 100


@pytest.mark.parametrize("rules, fragment", [
    ({"national_id": {"support": "partial:0:4"}, "search": {"national_id": ["support"]}},
     "180,000 candidates"),
    ({"national_id": {"support": "partial:1:2"}, "search": {"national_id": ["support"]},
      "limits": {"search": "unlimited"}}, "unlimited tries"),
    ({"national_id": {"support": "partial:1:2"}, "search": {"national_id": ["support"]},
      "limits": {"search": {"default": "600/hour", "support": "6000/hour"}}},
     "2,000,000 candidates, 144,600 tries"),
    ({"phone": {"support": "partial:3:2"}, "search": {"phone": ["support"]}},
     "100,000 candidates"),
    ({"tax_id": {"support": "partial:0:4"}, "search": {"default": ["support"]}},
     "tax_id"),
])
def test_unsafe_masks_with_search_are_refused(rules, fragment):
    with pytest.raises(PolicyError, match=re.escape(fragment)) as info:
        MaskingPolicy.from_dict(rules)
    assert "support" in str(info.value) and "within 24 hours" in str(info.value)


def test_column_search_rules_are_checked_when_the_guard_knows_the_columns(shop):
    guard, C, engine, events, clock = shop
    unsafe = {**readme_policy(), "customers.national_id": {"support": "partial:0:5"}}
    policy = MaskingPolicy.from_dict(unsafe)      # the column's kind is not known yet
    with pytest.raises(PolicyError, match="customers.national_id"):
        guard.policy = policy


def test_custom_masks_on_searchable_numbers_warn():
    with pytest.warns(PolicyWarning, match="custom mask 'last4'"):
        MaskingPolicy.from_dict({"phone": {"ops": "last4"}, "search": {"phone": ["ops"]}},
                                masks={"last4": lambda v: v[-4:]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MaskingPolicy.from_dict({"phone": {"ops": "last4"}},
                                masks={"last4": lambda v: v[-4:]})


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet="0123456789", min_size=9, max_size=9).filter(
    lambda s: s[0] != "0"), st.integers(0, 4), st.integers(0, 4))
def test_a_shown_number_is_always_among_the_candidates(head, first, last):
    number = head + tckn.calc_check_digits(head)
    assert candidates_left("national_id", "partial", first, last) >= 1
    # more shown -> never more candidates
    assert candidates_left("national_id", "partial", first, last) >= candidates_left(
        "national_id", "partial", first + 1, last)
    assert tckn.is_valid(number)


# ----------------------------------------------------------------------------- the gate

def test_who_may_search(shop):
    guard, C, engine, events, clock = shop
    with Session(engine) as s:
        for role, allowed in (("admin", True), ("support", True), ("intern", False),
                              (None, False)):
            ctx = acting_as(role) if role else _NoRole()
            with ctx:
                if allowed:
                    assert s.scalars(select(C.id).where(C.national_id == NID)).all() == [1]
                else:
                    with pytest.raises(AccessDeniedError, match="policy rule: search"):
                        select(C.id).where(C.national_id == NID)
    outcomes = [(e["role"], e["outcome"]) for e in searches(events)]
    assert outcomes == [("admin", "ok"), ("support", "ok"), ("intern", "denied"),
                        (None, "denied")]


def test_every_search_is_audited_with_its_candidate_count_and_no_value(shop):
    guard, C, engine, events, clock = shop
    with acting_as("support", purpose="ticket-7"), Session(engine) as s:
        s.scalars(select(C).where(C.national_id == NID)).all()
        s.scalars(select(C).where(C.national_id != NID)).all()
        s.scalars(select(C).where(C.national_id.in_([NID, "10000000078", NID]))).all()
        s.scalars(select(C).where(C.national_id.not_in(["10000000078"]))).all()
        assert [c.id for c in lookup(s, C.national_id, "100 000 001 46")] == [1]
        s.scalars(select(C).where(C.national_id.blind_match(NID))).all()
    got = [(e["column"], e["count"], e["outcome"], e["role"], e["purpose"])
           for e in searches(events)]
    assert got == [("customers.national_id", n, "ok", "support", "ticket-7")
                   for n in (1, 1, 2, 1, 1, 1)]
    text = repr(events)
    assert NID not in text and "10000000078" not in text and "0000001" not in text


def test_the_limit_counts_candidate_values_not_statements(shop):
    guard, C, engine, events, clock = shop
    many = [n + tckn.calc_check_digits(n) for n in (f"1{i:08d}" for i in range(61))]
    with acting_as("support"):
        with pytest.raises(SearchLimitError, match="61 candidate values") as info:
            select(C).where(C.national_id.in_(many))          # burst is 60
        assert NID not in str(info.value)
        select(C).where(C.national_id.in_(many[:60]))         # exactly the burst
        with pytest.raises(SearchLimitError):
            select(C).where(C.national_id == NID)             # the bucket is empty
        clock.now += 6.0                                      # 600/hour: one per 6 s
        select(C).where(C.national_id == NID)
        with pytest.raises(SearchLimitError):
            select(C).where(C.national_id == NID)
    outcomes = [(e["outcome"], e["count"]) for e in searches(events)]
    assert outcomes == [("limited", 61), ("ok", 60), ("limited", 1), ("ok", 1),
                        ("limited", 1)]


def test_an_attacker_at_the_limit_tries_at_most_14460_candidates_a_day(shop):
    """support tries candidates for 1********46 as fast as the limit lets it, for a
    simulated day (in_() batches of 25; the clock moves 30 s per attempt)."""
    guard, C, engine, events, clock = shop
    heads = (f"1{i:08d}" for i in range(10**8))
    tried = refused = 0
    with acting_as("support", principal="agent-7"):
        while clock.now < 86_400:
            batch = [next(heads) for _ in range(25)]
            batch = [h + tckn.calc_check_digits(h) for h in batch]
            try:
                select(C.id).where(C.national_id.in_(batch))
                tried += len(batch)
            except SearchLimitError:
                refused += 1
            clock.now += 30
    assert tried <= DEFAULT_SEARCH_LIMIT.tries_per_day() == 14_460
    assert tried >= 14_000 and refused > 0
    assert tried / 2_000_000 < 0.0073
    recorded = searches(events)
    assert sum(e["count"] for e in recorded if e["outcome"] == "ok") == tried
    assert sum(1 for e in recorded if e["outcome"] == "limited") == refused


def test_limits_are_per_principal(shop):
    guard, C, engine, events, clock = shop
    eleven = [f"1{i:08d}" for i in range(60)]
    eleven = [h + tckn.calc_check_digits(h) for h in eleven]
    for who in ("agent-1", "agent-2"):
        with acting_as("support", principal=who):
            select(C).where(C.national_id.in_(eleven))       # each has its own bucket
    with acting_as("support", principal="agent-1"), pytest.raises(SearchLimitError):
        select(C).where(C.national_id == NID)
    with acting_as("support"):                               # no principal: the role's
        select(C).where(C.national_id.in_(eleven))
        with pytest.raises(SearchLimitError):
            select(C).where(C.national_id == NID)


def test_no_policy_means_no_gate(shop):
    guard, C, engine, events, clock = shop
    guard.policy = None
    many = [f"1{i:08d}" for i in range(100)]
    select(C).where(C.national_id.in_([h + tckn.calc_check_digits(h) for h in many]))
    assert searches(events) == []


def test_search_limit_parsing():
    assert SearchLimit.parse("10/minute").tries_per_day() == 60 + 14_400
    assert SearchLimit.parse({"rate": "1/second", "burst": 5}).burst == 5
    for bad in ("10", "ten/hour", "10/fortnight", {"rate": "1/hour", "burst": 0}):
        with pytest.raises(PolicyError):
            SearchLimit.parse(bad)
    p = MaskingPolicy.from_dict({"limits": {"search": {"default": "60/hour",
                                                       "ops": "unlimited"}}})
    assert p.search_limit("ops").unlimited and p.search_limit("x").to_spec() == "60/hour"
    assert MaskingPolicy.from_dict(p.to_dict()) == p


class _NoRole:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
