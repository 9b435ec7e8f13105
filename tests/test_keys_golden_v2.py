"""Golden vectors of key-table format 2 (``docs/format.md`` section 4.1) stay readable.

``tests/vectors/golden_keytable_v2.json`` was written once by
``tests/vectors/make_golden_keytable_v2.py`` and committed. Each locally wrapped key is
checked four ways: raw ``AESGCM`` with the associated data built here from the docs
unwraps it; re-wrapping with the fixed nonce gives the same bytes; another id, kind,
scope or KEK does not unwrap it; and a ``Guard`` over a key table holding the golden rows
reads the golden v1 envelopes through the public path (KEK unwrapped by LocalKMS, the
DEK locally).
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
from piiguard.crypto.keywrap import KeyEncryptionKey, wrapped_kek_id
from piiguard.errors import DecryptionError

HERE = Path(__file__).parent / "vectors"
GOLDEN = json.loads((HERE / "golden_keytable_v2.json").read_text("utf-8"))
ENVELOPES = json.loads((HERE / "golden_v1.json").read_text("utf-8"))["vectors"]
KEK = GOLDEN["kek"]
KEYS = GOLDEN["keys"]
IDS = [f"{k['kind']}-{k['id']}" for k in KEYS]


def _lp(part: str) -> bytes:
    raw = part.encode("utf-8")
    return len(raw).to_bytes(2, "big") + raw


def _aad(kek_id: int, k: dict) -> bytes:
    return b"".join(_lp(p) for p in ("piiguard:keywrap:1", str(kek_id), str(k["id"]),
                                     k["kind"], k["scope"]))


@pytest.mark.parametrize("k", KEYS, ids=IDS)
def test_golden_wrapped_key_unwraps_from_the_documented_layout(k):
    wrapped = bytes.fromhex(k["wrapped_key"])
    assert len(wrapped) == 65 and wrapped[0] == 0x21
    assert int.from_bytes(wrapped[1:5], "big") == KEK["id"] == wrapped_kek_id(wrapped)
    assert wrapped[5:17].hex() == k["nonce"]
    plain = AESGCM(bytes.fromhex(KEK["key"])).decrypt(wrapped[5:17], wrapped[17:],
                                                      _aad(KEK["id"], k))
    assert plain.hex() == k["key"]
    kek = KeyEncryptionKey(KEK["id"], bytes.fromhex(KEK["key"]))
    assert kek.unwrap(k["id"], k["kind"], k["scope"], wrapped).hex() == k["key"]
    again = kek.wrap(k["id"], k["kind"], k["scope"], bytes.fromhex(k["key"]),
                     nonce=bytes.fromhex(k["nonce"]))
    assert again == wrapped


@pytest.mark.parametrize("k", KEYS, ids=IDS)
def test_golden_wrapped_key_refuses_another_id_kind_scope_or_kek(k):
    wrapped = bytes.fromhex(k["wrapped_key"])
    kek = KeyEncryptionKey(KEK["id"], bytes.fromhex(KEK["key"]))
    for key_id, kind, scope in ((k["id"] + 1, k["kind"], k["scope"]),
                                (k["id"], "index" if k["kind"] != "index" else "dek",
                                 k["scope"]),
                                (k["id"], k["kind"], k["scope"] + "x")):
        with pytest.raises(DecryptionError):
            kek.unwrap(key_id, kind, scope, wrapped)
    with pytest.raises(DecryptionError):     # another KEK with the same id
        KeyEncryptionKey(KEK["id"], bytes(32)).unwrap(k["id"], k["kind"], k["scope"],
                                                       wrapped)
    with pytest.raises(DecryptionError):     # another KEK id
        KeyEncryptionKey(KEK["id"] + 1, bytes.fromhex(KEK["key"])).unwrap(
            k["id"], k["kind"], k["scope"], wrapped)
    with pytest.raises(InvalidTag):          # a flipped bit anywhere in the body
        flipped = bytearray(wrapped)
        flipped[-1] ^= 1
        AESGCM(bytes.fromhex(KEK["key"])).decrypt(wrapped[5:17], bytes(flipped[17:]),
                                                  _aad(KEK["id"], k))


def test_golden_key_table_reads_golden_envelopes_through_a_guard(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'golden.db'}")
    kms = LocalKMS({GOLDEN["local_kms"]["master_key_id"]:
                    bytes.fromhex(GOLDEN["local_kms"]["master_key"])},
                   GOLDEN["local_kms"]["master_key_id"])
    guard = Guard(kms=kms).bind(engine)
    now = datetime(2025, 1, 1, tzinfo=timezone.utc)
    rows = [dict(id=KEK["id"], kind="kek", scope=KEK["scope"], state="active",
                 active_slot=f"kek:{KEK['scope']}", wrapped_key=bytes.fromhex(KEK["wrapped_key"]),
                 master_key_id=KEK["master_key_id"], created_at=now, encryption_count=0)]
    rows += [dict(id=k["id"], kind=k["kind"], scope=k["scope"], state="active",
                  active_slot=f"{k['kind']}:{k['scope']}",
                  wrapped_key=bytes.fromhex(k["wrapped_key"]),
                  master_key_id=k["master_key_id"], created_at=now, encryption_count=0)
             for k in KEYS]
    with engine.begin() as conn:
        conn.execute(guard.keys.table.insert(), rows)
    seen = 0
    for v in ENVELOPES:
        if v["domain"] != "sql":
            continue
        cipher = guard.field(v["table"], v["column"], padded=v["padded"])
        assert cipher.decrypt_str(bytes.fromhex(v["envelope"])) == v["plaintext"]
        seen += 1
    assert seen >= 3
    # and the keys unwrap through the hierarchy as the vectors say
    for k in KEYS:
        row = guard.keys.store.row(k["id"])
        assert row is not None and guard.keys.hierarchy.unwrap(row).hex() == k["key"]
