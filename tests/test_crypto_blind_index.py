"""BlindIndexKey: the index value is HMAC-SHA256(key, len(context) || context || value),
whatever order contexts are used in (the key keeps a pre-keyed state per context)."""

from __future__ import annotations

import hashlib
import hmac

from hypothesis import given, settings
from hypothesis import strategies as st

import pytest

from piiguard.crypto.blind_index import BlindIndexKey, recommend_bits, truncate
from piiguard.errors import ConfigurationError

KEY = bytes(range(32))


def _reference(context: bytes, value: bytes) -> bytes:
    msg = len(context).to_bytes(2, "big") + context + value
    return hmac.new(KEY, msg, hashlib.sha256).digest()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([b"customers.national_id", b"customers.phone",
                                            b"a.b", b"a", b""]),
                          st.binary(max_size=40),
                          st.sampled_from([256, 64, 20, 8])), min_size=1, max_size=12))
def test_compute_matches_an_independent_hmac_in_any_context_order(calls):
    key = BlindIndexKey(7, KEY)
    for context, value, bits in calls:
        expected = _reference(context, value)
        if bits < 256:
            expected = truncate(expected, bits)
        assert key.compute(context, value, bits) == (7).to_bytes(4, "big") + expected


def test_contexts_do_not_collide_by_concatenation():
    key = BlindIndexKey(1, KEY)
    assert key.compute(b"ab", b"c") != key.compute(b"a", b"bc")


def test_dotted_names_do_not_share_an_index_context(local_kms, sqlite_engine):
    from piiguard import Guard

    guard = Guard(kms=local_kms).bind(sqlite_engine)
    # One index key (one scope) for both, as when tables share a key scope.
    a = guard.blind_index("a.b", "c", scope="shared")       # table "a.b", column "c"
    b = guard.blind_index("a", "b.c", scope="shared")       # table "a", column "b.c"
    assert a.label == b.label == "a.b.c"    # the same text, so the label alone is ambiguous
    assert a.compute("10000000146") != b.compute("10000000146")
    # names without dots keep the "table.column" context
    plain = guard.blind_index("customers", "national_id")
    key = guard.keys.active_index_key(plain.scope)
    assert plain.compute("10000000146") == key.compute(b"customers.national_id", b"10000000146")


# --- recommend_bits says when a table is too small for its own rule (issue 16) ---------


@given(st.integers(min_value=512, max_value=10**15))
def test_recommend_bits_keeps_its_rule(rows):
    bits = recommend_bits(rows)
    assert 8 <= bits <= 256
    assert 2 <= rows / 2**bits


@given(st.integers(min_value=-5, max_value=511))
def test_recommend_bits_refuses_tables_too_small_for_the_rule(rows):
    with pytest.raises(ConfigurationError) as info:
        recommend_bits(rows)
    assert "too small for the rule 2 <= rows / 2**bits" in str(info.value)
