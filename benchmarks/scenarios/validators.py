"""Scenario 8: validator µs per call, piiguard next to python-stdnum and phonenumbers.

The measurement itself lives in :mod:`benchmarks.validators` (owned with the
validators); this module folds its rows into the report. Each row is a case such as
``piiguard tckn.validate (canonical)``: the first word is the system. Its figures are
the median and best of several ``timeit`` repeats.
"""

from __future__ import annotations

from benchmarks.harness import Context, metric, target

NAME = "validators"
TITLE = "Validators: µs per call (piiguard vs python-stdnum / phonenumbers)"
BASELINES = ()


def available() -> str | None:
    try:
        import benchmarks.validators  # noqa: F401
    except ImportError as exc:
        return f"benchmarks/validators.py not importable: {exc}"
    return None


def run(ctx: Context) -> list[dict]:
    from benchmarks import validators

    rows = validators.run(quick=ctx.quick)
    records = []
    for row in rows:
        label = str(row["system"])
        system, _, case = label.partition(" ")
        median = float(row.get("us_median", row.get("us_per_call")))
        records.append(metric(NAME, case or label, system, value=median, unit="µs/call",
                              best=row.get("us_per_call"), label=label))
    return records


def _find(records: list[dict], label: str) -> dict | None:
    return next((r for r in records if r["label"] == label), None)


def targets(records: list[dict], ctx: Context) -> list[dict]:
    out = []
    pairs = (("piiguard tckn.validate (canonical)", "stdnum tckimlik.validate (canonical)"),
             ("piiguard phone.validate (national formatted)",
              "phonenumbers parse+is_valid (national formatted)"),
             ("piiguard phone.validate (E.164, fast path)",
              "phonenumbers parse+is_valid (E.164)"))
    for ours, ref in pairs:
        a, b = _find(records, ours), _find(records, ref)
        if a is None or b is None:
            continue
        r = a["value"] / b["value"]
        out.append(target(NAME, f"{ours} at least as fast as {ref}", expected="<= 1.0×",
                          measured=r, unit="x", met=r <= 1.0,
                          detail=f"{a['value']:.2f} vs {b['value']:.2f} µs/call (median)"))
    # issue 16: hand-typed input, absolute limits (µs, median)
    for label, limit in (
            ("piiguard address.as_written (hand-typed, district/province postal)", 3.0),
            ("piiguard address.as_written (hand-typed, postal district/province)", 3.0),
            ("piiguard phone.validate (national, 0532 123 45 67)", 1.5),
            ("piiguard phone.validate (national, +90 532 123 4567)", 1.5)):
        a = _find(records, label)
        if a is None:
            continue
        out.append(target(NAME, f"{label} at most {limit} µs", expected=f"<= {limit} µs",
                          measured=a["value"], unit="µs", met=a["value"] <= limit,
                          detail=f"median {a['value']:.2f} µs/call"))
    return out
