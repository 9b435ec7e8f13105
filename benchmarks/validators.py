"""Validator cost per call (µs), piiguard next to python-stdnum and raw phonenumbers.

Validators sit on the write path of every insert, so they are measured in the same run
as the references they replace:

- ``tckn.validate`` on canonical (``10000000146``) and formatted (``100 000 001 46``)
  input, against ``stdnum.tr.tckimlik.validate``;
- ``phone.validate`` on canonical E.164 (``+905321234567``, the fast path) and on
  formatted national input (``0532 123 45 67``) and a non-TR number (full parse),
  against ``phonenumbers.parse`` + ``is_valid_number``.

Each figure is the best of several ``timeit`` repeats (the median is printed too).
Run ``python -m benchmarks.validators [--quick]``.
"""

from __future__ import annotations

import statistics
import sys
import timeit
from collections.abc import Callable

__all__ = ["run"]

TCKN = "10000000146"
TCKN_FORMATTED = "100 000 001 46"
PHONE = "+905321234567"
PHONE_FORMATTED = "0532 123 45 67"
PHONE_FOREIGN = "+49 30 123456"


def _measure(fn: Callable[[], object], number: int, repeat: int) -> tuple[float, float]:
    fn()  # warm up (imports, compiled patterns)
    times = [t / number * 1e6 for t in timeit.repeat(fn, number=number, repeat=repeat)]
    return min(times), statistics.median(times)


ADDRESS = "ATATÜRK MAH. CUMHURİYET CAD. GÜL SOK. NO:5 D:3 KAT:2, 34710 KADIKÖY/İSTANBUL"
ADDRESS_FREE = "Atatürk Mah. Cumhuriyet Cad.  Gül Sok. No:5 D:3 Kat:2,34710 Kadıköy/istanbul"
EMAIL = "ali.veli@example.com.tr"
ADDRESS_TYPED = ("Cumhuriyet Mah. Atatürk Cad. Ihlamur Sok. No:71 D:16 Şahinbey/Gaziantep "
                 "27228")
ADDRESS_TYPED_2 = "Atatürk Mah. İnönü Cad. Gazi Sok. No:12 Kat:3 D:7, 34710 Kadıköy/İstanbul"
PHONE_PLUS = "+90 532 123 4567"


def _cases() -> list[tuple[str, Callable[[], object]]]:
    import phonenumbers
    from stdnum.tr import tckimlik

    import email_validator

    from piiguard.validators import address, email, phone, tckn, vkn

    def pn(s: str) -> Callable[[], object]:
        def f() -> bool:
            return phonenumbers.is_valid_number(phonenumbers.parse(s, "TR"))
        return f

    cases: list[tuple[str, Callable[[], object]]] = [
        ("piiguard tckn.validate (canonical)", lambda: tckn.validate(TCKN)),
        ("piiguard tckn.validate (formatted)", lambda: tckn.validate(TCKN_FORMATTED)),
        ("stdnum tckimlik.validate (canonical)", lambda: tckimlik.validate(TCKN)),
        ("piiguard vkn.validate (canonical)", lambda: vkn.validate("1234567890")),
        ("piiguard phone.validate (E.164, fast path)", lambda: phone.validate(PHONE)),
        ("piiguard phone.validate (national formatted)", lambda: phone.validate(PHONE_FORMATTED)),
        ("piiguard phone.validate (non-TR, full parse)", lambda: phone.validate(PHONE_FOREIGN)),
        ("phonenumbers parse+is_valid (E.164)", pn(PHONE)),
        ("phonenumbers parse+is_valid (national formatted)", pn(PHONE_FORMATTED)),
        ("piiguard address.validate (canonical, 76 ch)", lambda: address.validate(ADDRESS)),
        ("piiguard address.validate (free text)", lambda: address.validate(ADDRESS_FREE)),
        # what an EncryptedAddress column (strict) runs per value, on hand-typed input
        ("piiguard address.as_written (hand-typed, district/province postal)",
         lambda: address.as_written(ADDRESS_TYPED)),
        ("piiguard address.as_written (hand-typed, postal district/province)",
         lambda: address.as_written(ADDRESS_TYPED_2)),
        ("piiguard phone.validate (national, 0532 123 45 67)",
         lambda: phone.validate(PHONE_FORMATTED)),
        ("piiguard phone.validate (national, +90 532 123 4567)",
         lambda: phone.validate(PHONE_PLUS)),
        ("piiguard email.validate (canonical)", lambda: email.validate(EMAIL)),
        ("email-validator validate_email (canonical)",
         lambda: email_validator.validate_email(EMAIL, check_deliverability=False)),
    ]
    try:
        from stdnum.tr import vkn as stdnum_vkn
        cases.insert(4, ("stdnum tr.vkn.validate (canonical)",
                         lambda: stdnum_vkn.validate("1234567890")))
    except ImportError:  # pragma: no cover
        pass
    return cases


def run(quick: bool = False) -> list[dict]:
    """Measure every case; return ``[{"scenario": "validators", "system": name,
    "us_per_call": best, "us_median": median}, ...]``."""
    number, repeat = (2_000, 3) if quick else (50_000, 7)
    rows = []
    for name, fn in _cases():
        best, median = _measure(fn, number, repeat)
        rows.append({"scenario": "validators", "system": name,
                     "us_per_call": round(best, 3), "us_median": round(median, 3)})
    return rows


def _table(rows: list[dict]) -> str:
    width = max(len(r["system"]) for r in rows)
    lines = [f"{'system'.ljust(width)}  µs/call (best)  median",
             f"{'-' * width}  --------------  ------"]
    for r in rows:
        lines.append(f"{r['system'].ljust(width)}  {r['us_per_call']:14.2f}  {r['us_median']:6.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    print(_table(run(quick="--quick" in argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
