"""Golden row-bound envelopes (format bytes 0x12 / 0x13) stay decryptable forever.

``tests/vectors/golden_v1_bound.json`` was written once by
``tests/vectors/make_golden_v1_bound.py`` and committed; ``golden_v1.json`` (the unbound
vectors) is unchanged by row binding. Each vector is checked four ways: re-sealing the
fixed parts gives the same bytes; raw ``AESGCM`` with associated data built here from
docs/format.md (section 2.1) decrypts it; another row's values, or the envelope read as
unbound, fail; and a ``Guard`` holding the wrapped golden DEK opens it through the public
``FieldCipher.decrypt_bound`` path, binary and text.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import create_engine

from piiguard import Guard, LocalKMS
from piiguard.crypto.aead import DataKey
from piiguard.crypto.envelope import BindingLayout, FieldContext, _seal_from_parts, decode_text
from piiguard.errors import DecryptionError

HERE = Path(__file__).parent / "vectors"
GOLDEN = json.loads((HERE / "golden_v1_bound.json").read_text("utf-8"))
VECTORS = GOLDEN["vectors"]
DEK = bytes.fromhex(GOLDEN["dek"]["key"])
DEK_ID = GOLDEN["dek"]["id"]
IDS = [f"{v['column']}-{'-'.join(map(str, v['row']))}-{i}" for i, v in enumerate(VECTORS)]


def _u16(raw: bytes) -> bytes:
    return len(raw).to_bytes(2, "big") + raw


def _binding(names: list[str], values: list) -> bytes:
    """docs/format.md, section 2.1, built independently of piiguard."""
    out = len(names).to_bytes(2, "big")
    for name, value in zip(names, values, strict=True):
        out += _u16(name.encode())
        if value is None:
            out += b"n" + _u16(b"")
        elif isinstance(value, int):
            out += b"i" + _u16(str(value).encode())
        else:
            out += b"s" + _u16(value.encode())
    return out


def _aad(v: dict) -> bytes:
    header = bytes((0x13 if v["padded"] else 0x12,)) + DEK_ID.to_bytes(4, "big")
    ctx = b"".join(_u16(p.encode()) for p in (v["domain"], v["table"], v["column"]))
    return header + ctx + _binding(v["bound_to"], v["row"])


def test_golden_file_covers_the_cases():
    assert len(VECTORS) >= 6
    assert {v["envelope"][:2] for v in VECTORS} == {"12", "13"}
    assert any(None in v["row"] for v in VECTORS)
    rows = [tuple(v["row"]) for v in VECTORS]
    assert ("C-1", 7) in rows and ("C-1", "7") in rows     # 7 and '7' bind differently
    unbound = json.loads((HERE / "golden_v1.json").read_text("utf-8"))
    assert {v["envelope"][:2] for v in unbound["vectors"]} == {"10", "11"}


@pytest.mark.parametrize("v", VECTORS, ids=IDS)
def test_resealing_fixed_parts_reproduces_the_bytes(v):
    binding = BindingLayout(v["bound_to"]).aad(v["row"])
    assert binding.hex() == v["binding"] == _binding(v["bound_to"], v["row"]).hex()
    blob = _seal_from_parts(DataKey(DEK_ID, DEK), bytes.fromhex(v["nonce"]),
                            v["plaintext"].encode(),
                            FieldContext(v["domain"], v["table"], v["column"]),
                            padded=v["padded"], binding=binding)
    assert blob.hex() == v["envelope"]


@pytest.mark.parametrize("v", VECTORS, ids=IDS)
def test_golden_layout_decrypts_with_raw_aesgcm_and_only_in_its_row(v):
    blob = bytes.fromhex(v["envelope"])
    assert _aad(v).hex() == v["aad"]
    data = AESGCM(DEK).decrypt(blob[5:17], blob[17:], _aad(v))
    if v["padded"]:
        data = data[:data.rstrip(b"\x00").rindex(b"\x80")]
    assert data.decode() == v["plaintext"]
    other = dict(v, row=[*v["row"][:-1], "elsewhere"])
    with pytest.raises(InvalidTag):
        AESGCM(DEK).decrypt(blob[5:17], blob[17:], _aad(other))
    unbound = bytes((blob[0] & ~0x02,)) + _aad(v)[1:len(_aad(v)) - len(
        _binding(v["bound_to"], v["row"]))]
    with pytest.raises(InvalidTag):
        AESGCM(DEK).decrypt(blob[5:17], blob[17:], unbound)


def test_vectors_that_differ_only_in_their_row_differ():
    phones = [v for v in VECTORS if v["column"] == "phone"]
    assert len(phones) == 2 and phones[0]["nonce"] == phones[1]["nonce"]
    assert phones[0]["envelope"] != phones[1]["envelope"]   # version 3 vs 4


@pytest.fixture
def golden_guard():
    lk = GOLDEN["local_kms"]
    kms = LocalKMS({lk["master_key_id"]: bytes.fromhex(lk["master_key"])},
                   lk["master_key_id"])
    guard = Guard(kms=kms).bind(create_engine("sqlite://"))
    with guard.engine.begin() as conn:
        conn.execute(guard.keys.table.insert().values(
            id=DEK_ID, kind="dek", scope=GOLDEN["dek"]["scope"], state="decrypt_only",
            active_slot=None, wrapped_key=bytes.fromhex(lk["wrapped_dek"]),
            master_key_id=lk["master_key_id"], encryption_count=len(VECTORS),
            created_at=datetime(2025, 1, 1, tzinfo=timezone.utc)))
    return guard


@pytest.mark.parametrize("v", VECTORS, ids=IDS)
def test_golden_envelopes_open_through_guard_with_their_row(golden_guard, v):
    cipher = golden_guard.field(v["table"], v["column"], padded=v["padded"])
    binding = bytes.fromhex(v["binding"])
    for blob in (bytes.fromhex(v["envelope"]), decode_text(v["text"])):
        assert cipher.decrypt_bound(blob, binding).decode() == v["plaintext"]
        with pytest.raises(DecryptionError, match="bound to its row"):
            cipher.decrypt(blob)
        with pytest.raises(DecryptionError):
            cipher.decrypt_bound(blob, BindingLayout(v["bound_to"]).aad(
                [*v["row"][:-1], "elsewhere"]))
