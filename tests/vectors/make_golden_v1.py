"""Write ``golden_v1.json``: envelope format v1 test vectors (run once, then commit).

    .venv/bin/python tests/vectors/make_golden_v1.py

The vectors come from the deterministic private path
(``piiguard.crypto.envelope._seal_from_parts``) with a fixed DEK, DEK id and nonce, so
anyone can re-derive them. The DEK is also stored wrapped by a LocalKMS master key
(random wrap nonce: the wrapped key is a recording, not a derivation), so the test can
decrypt the vectors through the public ``Guard`` path. ``tests/test_crypto_golden.py``
only reads the file: it never regenerates it.
"""

from __future__ import annotations

import json
from pathlib import Path

from piiguard.crypto.aead import DataKey
from piiguard.crypto.envelope import FieldContext, _seal_from_parts, encode_text
from piiguard.keys.manager import kms_context
from piiguard.kms.local import LocalKMS

OUT = Path(__file__).with_name("golden_v1.json")

DEK_ID = 0x01020304          # big-endian on the wire: 01 02 03 04
DEK = bytes(range(0x20, 0x40))
MASTER_ID = "mk-golden-1"
MASTER = bytes(range(0xA0, 0xC0))
SCOPE = "customers"

CASES = [
    # (domain, table, column, padded, nonce, plaintext)
    ("sql", "customers", "national_id", False, bytes(12), "10000000146"),
    ("sql", "customers", "phone", False, bytes(range(1, 13)), "+905321234567"),
    ("sql", "customers", "full_name", False, bytes(range(12, 24)), "Gökçe Öztürk"),
    ("sql", "customers", "city", False, bytes([0xFF] * 12), "İĞÜŞÖÇığüşöç"),
    ("sql", "customers", "notes", False, bytes(range(24, 36)), ""),
    ("sql", "customers", "address", True, bytes(range(36, 48)),
     "Caferağa Mah. Moda Cd. No:1 Kadıköy/İstanbul"),
    ("sql", "customers", "address", True, bytes(range(48, 60)), ""),
    ("sql", "customers", "address", True, bytes(range(60, 72)), "x" * 15),
    ("sql", "customers", "address", True, bytes(range(72, 84)), "y" * 16),
    ("json", "customers", "email", False, bytes(range(84, 96)), "ayse.yilmaz@example.com"),
    ("sql", "ab", "c", False, bytes(12), "context"),
    ("sql", "a", "bc", False, bytes(12), "context"),
]


def main() -> None:
    key = DataKey(DEK_ID, DEK)
    kms = LocalKMS({MASTER_ID: MASTER}, MASTER_ID)
    ctx = kms_context("dek", SCOPE)
    wrapped = kms._wrap(MASTER_ID, DEK, ctx, "generate_data_key")
    vectors = []
    for domain, table, column, padded, nonce, text in CASES:
        fc = FieldContext(domain, table, column)
        blob = _seal_from_parts(key, nonce, text.encode("utf-8"), fc, padded=padded)
        vectors.append({
            "domain": domain, "table": table, "column": column, "padded": padded,
            "nonce": nonce.hex(), "plaintext": text, "aad": (blob[:5] + fc.aad).hex(),
            "envelope": blob.hex(), "text": encode_text(blob),
        })
    doc = {
        "format": "piiguard envelope v1 (docs/format.md)",
        "generator": "tests/vectors/make_golden_v1.py via _seal_from_parts",
        "dek": {"id": DEK_ID, "key": DEK.hex(), "scope": SCOPE},
        "local_kms": {"master_key_id": MASTER_ID, "master_key": MASTER.hex(),
                      "context": ctx, "wrapped_dek": wrapped.hex()},
        "vectors": vectors,
    }
    OUT.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", "utf-8")
    print(f"wrote {len(vectors)} vectors to {OUT}")


if __name__ == "__main__":
    main()
