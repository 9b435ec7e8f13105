"""Write ``golden_keytable_v2.json``: key-table format 2 vectors (run once, then commit).

    .venv/bin/python tests/vectors/make_golden_keytable_v2.py

A KEK wrapped by LocalKMS under the golden master key of ``golden_v1.json`` (context
``{"piiguard:kind": "kek", "piiguard:scope": "piiguard:keyring"}``), and keys wrapped
locally under that KEK (``docs/format.md`` section 4.1) with fixed nonces. Among them the
golden DEK of ``golden_v1.json``, so its envelopes open through a format-2 key table.
``tests/test_keys_golden_v2.py`` only reads the file.
"""

from __future__ import annotations

import json
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from piiguard.crypto.keywrap import KeyEncryptionKey

OUT = Path(__file__).with_name("golden_keytable_v2.json")
GOLDEN = json.loads(Path(__file__).with_name("golden_v1.json").read_text("utf-8"))
MASTER_ID = GOLDEN["local_kms"]["master_key_id"]
MASTER = bytes.fromhex(GOLDEN["local_kms"]["master_key"])
KEK_ID = 1
KEK = bytes(range(0x60, 0x80))
KEK_NONCE = bytes(range(0x70, 0x7C))
CONTEXT = {"piiguard:kind": "kek", "piiguard:scope": "piiguard:keyring"}

KEYS = [
    # (key id, kind, scope, key, nonce)
    (GOLDEN["dek"]["id"], "dek", GOLDEN["dek"]["scope"], bytes.fromhex(GOLDEN["dek"]["key"]),
     bytes(12)),
    (2, "index", "customers", bytes(range(0x80, 0xA0)), bytes(range(1, 13))),
    (3, "dek", "customers:C-42", bytes(range(0xC0, 0xE0)), bytes(range(13, 25))),
    (4, "pseudonym", "default", bytes(range(0xE0, 0x100)), bytes(range(25, 37))),
    (5, "dek", "müşteri:Ç-7", bytes(32), bytes(range(37, 49))),
]


def _lp(part: str) -> bytes:
    raw = part.encode()
    return len(raw).to_bytes(2, "big") + raw


def main() -> None:
    # LocalKMS wrap (docs/format.md 6.1), computed here from the layout.
    aad = _lp(MASTER_ID) + b"".join(_lp(k) + _lp(v) for k, v in sorted(CONTEXT.items()))
    kid = MASTER_ID.encode()
    wrapped_kek = bytes((1, len(kid))) + kid + KEK_NONCE + AESGCM(MASTER).encrypt(
        KEK_NONCE, KEK, aad)
    kek = KeyEncryptionKey(KEK_ID, KEK)
    keys = [{"id": i, "kind": kind, "scope": scope, "key": key.hex(), "nonce": nonce.hex(),
             "master_key_id": f"kek:{KEK_ID}",
             "wrapped_key": kek.wrap(i, kind, scope, key, nonce=nonce).hex()}
            for i, kind, scope, key, nonce in KEYS]
    doc = {
        "format": "piiguard key table format 2 (docs/format.md section 4)",
        "generator": "tests/vectors/make_golden_keytable_v2.py",
        "local_kms": {"master_key_id": MASTER_ID, "master_key": MASTER.hex()},
        "kek": {"id": KEK_ID, "kind": "kek", "scope": "piiguard:keyring", "key": KEK.hex(),
                "master_key_id": MASTER_ID, "context": CONTEXT,
                "wrapped_key": wrapped_kek.hex()},
        "keys": keys,
    }
    OUT.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", "utf-8")


if __name__ == "__main__":
    main()
