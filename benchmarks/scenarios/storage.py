"""Scenario 5: stored bytes per value, and the overhead over the plaintext.

For each PII column (national ID: 11 characters, phone: 13 in E.164, address: about 80
characters, padded to a size bucket by piiguard to hide its length) the mean size of
what the database stores, for:

- ``plaintext`` (UTF-8 bytes), ``piiguard`` (binary envelope, BLOB/BYTEA),
  ``piiguard-text`` (``pg1:`` base64 envelope for VARCHAR/TEXT),
- ``sqlalchemy-utils`` (``StringEncryptedType(AesGcmEngine)``: base64 text),
- ``fernet`` (token), ``aws-encryption-sdk`` (message, committing suite, one raw AES
  encrypted data key, no encryption context, default framing).

When the column types are importable the piiguard figures come from the real column
(``encrypt_value``: validation, canonical form, padding); otherwise from the
``FieldCipher`` with the same padding choice. A ``searchable=True`` column also stores a
blind index (4-byte key id + 32-byte HMAC) in a sibling column: reported separately.
Ratios: to the aws-encryption-sdk message size and to the plaintext.
"""

from __future__ import annotations

import statistics

from benchmarks.data import make_rows
from benchmarks.harness import Context, find, metric, target
from benchmarks.scenarios import peers

NAME = "storage"
TITLE = "Stored bytes per value (mean) and overhead over the plaintext"
BASELINES = ("aws-encryption-sdk", "plaintext")
FIXED = ("national_id", "phone")
COLUMNS = ("national_id", "phone", "address")


def available() -> str | None:
    return None


def _piiguard_encoders(ctx: Context):
    """column -> (binary encoder, text encoder, source) using the column types if they
    are there, else FieldCipher with the same padding choice (addresses padded)."""
    from sqlalchemy import create_engine

    from piiguard import Guard, LocalKMS

    engine = create_engine(f"sqlite:///{ctx.workdir / 'storage.db'}")
    ctx.defer(engine.dispose)
    guard = Guard(kms=LocalKMS.generate())
    try:
        from benchmarks.scenarios import schema

        models = schema.piiguard_tables(guard, text_form=False, suffix="bin")
        text_models = schema.piiguard_tables(guard, text_form=True, suffix="txt")
        guard.bind(engine)
        out = {}
        for col in COLUMNS:
            b = schema.column_type(models, col)
            t = schema.column_type(text_models, col)
            out[col] = (b.encrypt_value, t.encrypt_value, "column type encrypt_value")
        return out, guard
    except ImportError:
        guard.bind(engine)
        out = {}
        for col in COLUMNS:
            c = guard.field("customers", col, padded=(col == "address"))
            out[col] = (c.encrypt_str, c.encrypt_text, "FieldCipher (column types missing)")
        return out, guard


def run(ctx: Context) -> list[dict]:
    n = min(ctx.rows, 2000)
    rows = make_rows(n, seed=5, input="canonical")  # values compared as stored
    enc, guard = _piiguard_encoders(ctx)
    systems: dict[str, callable] = {}
    f = peers.fernet()
    systems["fernet"] = lambda v: f.encrypt(v.encode())
    if peers.sqlalchemy_utils_available() is None:
        from sqlalchemy.dialects import sqlite

        t = peers.sqlalchemy_utils_type()
        d = sqlite.dialect()
        systems["sqlalchemy-utils"] = lambda v: t.process_bind_param(v, d).encode("ascii")
    if peers.aws_sdk_available() is None:
        sdk = peers.AwsSdk()
        systems["aws-encryption-sdk"] = lambda v: sdk.encrypt(v.encode())
    records = []
    for col in COLUMNS:
        values = [r[col] for r in rows]
        plain = statistics.mean(len(v.encode()) for v in values)
        sizes = {"plaintext": plain}
        b_enc, t_enc, source = enc[col]
        sizes["piiguard"] = statistics.mean(len(b_enc(v)) for v in values)
        sizes["piiguard-text"] = statistics.mean(len(t_enc(v).encode("ascii"))
                                                 for v in values)
        for name, fn in systems.items():
            sample = values if name != "aws-encryption-sdk" else values[:200]
            sizes[name] = statistics.mean(len(fn(v)) for v in sample)
        kind = "fixed length" if col in FIXED else "variable length, padded by piiguard"
        for name, size in sizes.items():
            note = source if name.startswith("piiguard") else None
            records.append(metric(NAME, f"{col} stored bytes", name, value=size, unit="bytes",
                                  rows=len(values), note=note, kind_of_value=kind))
            records.append(metric(NAME, f"{col} overhead bytes", name, value=size - plain,
                                  unit="bytes", rows=len(values), kind_of_value=kind))
    index = guard.blind_index("customers", "national_id")
    records.append(metric(NAME, "blind index per searchable value", "piiguard",
                          value=len(index.compute("10000000146")), unit="bytes",
                          note="sibling column, full 256-bit HMAC + 4-byte key id"))
    return records


def targets(records: list[dict], ctx: Context) -> list[dict]:
    out = []
    for col in FIXED:
        r = find(records, case=f"{col} overhead bytes", system="piiguard")
        aws = find(records, case=f"{col} stored bytes", system="aws-encryption-sdk")
        stored = find(records, case=f"{col} stored bytes", system="piiguard")
        if r is None:
            continue
        detail = f"stored {stored['value']:.0f} bytes"
        if aws is not None:
            detail += (f"; {stored['value'] / aws['value']:.2f}× the aws-encryption-sdk "
                       f"message ({aws['value']:.0f} bytes)")
        out.append(target(NAME, f"{col}: overhead per value, binary form",
                          expected="<= 40 bytes", measured=r["value"], unit=" bytes",
                          met=r["value"] <= 40, detail=detail))
    return out
