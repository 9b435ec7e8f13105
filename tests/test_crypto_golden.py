"""Golden envelopes: format v1 stays decryptable forever.

``tests/vectors/golden_v1.json`` was written once by ``tests/vectors/make_golden_v1.py``
(``_seal_from_parts`` with a fixed DEK, DEK id and nonces) and committed. This test only
reads it. It checks each vector four ways: re-sealing with the same fixed parts gives the
same bytes; the private ``open_with`` path decrypts it; raw ``AESGCM`` with associated
data built here from docs/format.md decrypts it (so the layout itself is pinned); and a
``Guard`` whose key table holds the LocalKMS-wrapped DEK decrypts it through the public
``FieldCipher`` path, binary and text.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import create_engine

from piiguard import Guard, LocalKMS
from piiguard.crypto.aead import DataKey
from piiguard.crypto.envelope import FieldContext, _seal_from_parts, decode_text, open_with
from piiguard.errors import DecryptionError

GOLDEN = json.loads((Path(__file__).parent / "vectors" / "golden_v1.json").read_text("utf-8"))
VECTORS = GOLDEN["vectors"]
DEK = bytes.fromhex(GOLDEN["dek"]["key"])
DEK_ID = GOLDEN["dek"]["id"]
IDS = [f"{v['table']}.{v['column']}-{'padded' if v['padded'] else 'plain'}-{i}"
       for i, v in enumerate(VECTORS)]


def _aad(v: dict) -> bytes:
    """Associated data as docs/format.md describes it, built independently of piiguard."""
    header = bytes((0x11 if v["padded"] else 0x10,)) + DEK_ID.to_bytes(4, "big")
    ctx = b"".join(len(p.encode()).to_bytes(2, "big") + p.encode()
                   for p in (v["domain"], v["table"], v["column"]))
    return header + ctx


def test_golden_file_covers_the_cases():
    assert len(VECTORS) >= 10
    assert any(v["padded"] for v in VECTORS) and any(not v["padded"] for v in VECTORS)
    assert any(v["plaintext"] == "" and v["padded"] for v in VECTORS)
    assert any(v["plaintext"] == "" and not v["padded"] for v in VECTORS)
    assert any(set("İıŞşĞğÇçÖöÜü") & set(v["plaintext"]) for v in VECTORS)
    assert any(v["domain"] != "sql" for v in VECTORS)


@pytest.mark.parametrize("v", VECTORS, ids=IDS)
def test_resealing_fixed_parts_reproduces_the_bytes(v):
    key = DataKey(DEK_ID, DEK)
    blob = _seal_from_parts(key, bytes.fromhex(v["nonce"]), v["plaintext"].encode(),
                            FieldContext(v["domain"], v["table"], v["column"]),
                            padded=v["padded"])
    assert blob.hex() == v["envelope"]


@pytest.mark.parametrize("v", VECTORS, ids=IDS)
def test_golden_layout_decrypts_with_raw_aesgcm(v):
    blob = bytes.fromhex(v["envelope"])
    assert blob[0] == (0x11 if v["padded"] else 0x10)
    assert int.from_bytes(blob[1:5], "big") == DEK_ID and blob[1:5] == b"\x01\x02\x03\x04"
    assert blob[5:17].hex() == v["nonce"]
    assert _aad(v).hex() == v["aad"]
    data = AESGCM(DEK).decrypt(blob[5:17], blob[17:], _aad(v))
    if v["padded"]:
        # ISO/IEC 7816-4: 0x80 then zeros, up to a power-of-two bucket of >= 16 bytes.
        assert len(data) >= 16 and len(data) & (len(data) - 1) == 0
        data = data[:data.rstrip(b"\x00").rindex(b"\x80")]
    else:
        assert len(blob) == 33 + len(v["plaintext"].encode())
    assert data.decode() == v["plaintext"]
    assert open_with(DataKey(DEK_ID, DEK), blob,
                     FieldContext(v["domain"], v["table"], v["column"])) == data


@pytest.mark.parametrize("v", VECTORS, ids=IDS)
def test_golden_text_form(v):
    assert v["text"].startswith("pg1:")
    assert decode_text(v["text"]).hex() == v["envelope"]


def test_ab_c_and_a_bc_vectors_differ():
    by_table = {(v["table"], v["column"]): v for v in VECTORS}
    one, two = by_table[("ab", "c")], by_table[("a", "bc")]
    assert one["nonce"] == two["nonce"] and one["plaintext"] == two["plaintext"]
    assert one["envelope"] != two["envelope"] and one["aad"] != two["aad"]


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


def test_wrapped_golden_dek_unwraps_with_local_kms():
    lk = GOLDEN["local_kms"]
    kms = LocalKMS({lk["master_key_id"]: bytes.fromhex(lk["master_key"])},
                   lk["master_key_id"])
    assert kms.decrypt_data_key(bytes.fromhex(lk["wrapped_dek"]), lk["master_key_id"],
                                lk["context"]) == DEK


@pytest.mark.parametrize("v", VECTORS, ids=IDS)
def test_golden_envelopes_decrypt_through_guard(golden_guard, v):
    cipher = golden_guard.field(v["table"], v["column"], padded=v["padded"],
                                domain=v["domain"])
    assert cipher.decrypt_str(bytes.fromhex(v["envelope"])) == v["plaintext"]
    assert cipher.decrypt_text(v["text"]) == v["plaintext"]
    assert cipher.key_id_of(v["text"]) == DEK_ID
    other = golden_guard.field(v["table"], v["column"] + "_x", domain=v["domain"])
    with pytest.raises(DecryptionError):
        other.decrypt(bytes.fromhex(v["envelope"]))
