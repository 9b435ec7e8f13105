"""Write ``golden_v1_bound.json``: row-bound envelope test vectors (run once, then commit).

    .venv/bin/python tests/vectors/make_golden_v1_bound.py

Envelope format v1 with the row-bound flag (0x02: format bytes 0x12 and 0x13), from the
deterministic private path (``piiguard.crypto.envelope._seal_from_parts`` with a
``binding``) and the same fixed DEK, DEK id and master key as ``golden_v1.json``, so
anyone can re-derive them. The file is written next to ``golden_v1.json``, which it
never touches: the unbound vectors stay as they were. ``tests/test_crypto_golden_bound.py``
only reads it.
"""

from __future__ import annotations

import json
from pathlib import Path

from piiguard.crypto.aead import DataKey
from piiguard.crypto.envelope import BindingLayout, FieldContext, _seal_from_parts, encode_text

OUT = Path(__file__).with_name("golden_v1_bound.json")
GOLDEN = json.loads(Path(__file__).with_name("golden_v1.json").read_text("utf-8"))

DEK_ID = GOLDEN["dek"]["id"]
DEK = bytes.fromhex(GOLDEN["dek"]["key"])

CASES = [
    # (table, column, padded, nonce, plaintext, bound column names, their row's values)
    ("customers", "national_id", False, bytes(12), "10000000146",
     ("tenant_id",), (42,)),
    ("customers", "phone", False, bytes(range(1, 13)), "+905321234567",
     ("tenant_id", "customer_ref", "version"), (42, "C-42", 3)),
    ("customers", "phone", False, bytes(range(1, 13)), "+905321234567",
     ("tenant_id", "customer_ref", "version"), (42, "C-42", 4)),
    ("customers", "address", True, bytes(range(36, 48)),
     "Caferağa Mah. Moda Cd. No:1 Kadıköy/İstanbul", ("customer_ref",), ("Müşteri-7",)),
    ("customers", "notes", False, bytes(range(24, 36)), "", ("customer_ref", "branch"),
     ("C-1", None)),
    ("customers", "notes", False, bytes(range(24, 36)), "", ("customer_ref", "branch"),
     ("C-1", "7")),
    ("customers", "notes", False, bytes(range(24, 36)), "", ("customer_ref", "branch"),
     ("C-1", 7)),
]


def main() -> None:
    key = DataKey(DEK_ID, DEK)
    vectors = []
    for table, column, padded, nonce, text, names, values in CASES:
        fc = FieldContext("sql", table, column)
        binding = BindingLayout(names).aad(values)
        blob = _seal_from_parts(key, nonce, text.encode("utf-8"), fc, padded=padded,
                                binding=binding)
        vectors.append({
            "domain": "sql", "table": table, "column": column, "padded": padded,
            "nonce": nonce.hex(), "plaintext": text, "bound_to": list(names),
            "row": list(values), "binding": binding.hex(),
            "aad": (blob[:5] + fc.aad + binding).hex(), "envelope": blob.hex(),
            "text": encode_text(blob),
        })
    doc = {
        "format": "piiguard envelope v1, row-bound (docs/format.md, section 2.1)",
        "generator": "tests/vectors/make_golden_v1_bound.py via _seal_from_parts",
        "dek": GOLDEN["dek"], "local_kms": GOLDEN["local_kms"], "vectors": vectors,
    }
    OUT.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", "utf-8")
    print(f"wrote {len(vectors)} vectors to {OUT}")


if __name__ == "__main__":
    main()
