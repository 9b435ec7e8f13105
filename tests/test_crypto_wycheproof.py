"""The AEAD layer (piiguard.crypto.aead.DataKey) against Project Wycheproof AES-GCM.

Every AES-256 / 96-bit-IV vector (66 of them) goes through ``DataKey.seal`` and
``DataKey.open`` with the vector's own IV: valid ones encrypt to exactly ct+tag and
decrypt back; invalid ones (modified tags and the like) raise ``DecryptionError``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from piiguard.crypto.aead import DataKey
from piiguard.errors import DecryptionError

VECTORS = Path(__file__).parent / "vectors" / "aes_gcm_test.json"
SHA256 = "985e5ecc172e181eaf49e89508b9470dcf478002eb7e8559c707eb42dc97dfe7"


def _load():
    raw = VECTORS.read_bytes()
    doc = json.loads(raw)
    cases = [t for g in doc["testGroups"]
             if g["ivSize"] == 96 and g["keySize"] == 256 and g["tagSize"] == 128
             for t in g["tests"]]
    return hashlib.sha256(raw).hexdigest(), cases


DIGEST, CASES = _load()


def test_vector_file_is_the_pinned_one():
    assert DIGEST == SHA256
    assert (VECTORS.parent / "LICENSE").exists() and (VECTORS.parent / "README.md").exists()


def test_exactly_66_aes256_iv96_vectors_with_valid_and_invalid_ones():
    assert len(CASES) == 66
    results = {t["result"] for t in CASES}
    assert results == {"valid", "invalid"}  # no "acceptable" ones in this group
    assert sum(t["result"] == "invalid" for t in CASES) >= 10


@pytest.mark.parametrize("case", CASES, ids=[f"tc{t['tcId']}" for t in CASES])
def test_wycheproof_vector(case):
    key = DataKey(case["tcId"], bytes.fromhex(case["key"]))
    iv = bytes.fromhex(case["iv"])
    aad = bytes.fromhex(case["aad"])
    msg = bytes.fromhex(case["msg"])
    sealed = bytes.fromhex(case["ct"]) + bytes.fromhex(case["tag"])
    if case["result"] == "valid":
        assert key.seal(iv, msg, aad) == sealed
        assert key.open(iv, sealed, aad) == msg
    else:
        with pytest.raises(DecryptionError) as info:
            key.open(iv, sealed, aad)
        assert case["key"] not in str(info.value)
        assert not case["msg"] or case["msg"] not in str(info.value)
