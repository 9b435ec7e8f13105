"""Synthetic, reproducible test data: valid T.C. numbers, Turkish mobiles, addresses.

Nothing here is real personal data. Values are generated from a seed in one of two
input sets (``make_rows(..., input=...)``):

- ``"typed"`` (the default): what forms, imports and APIs send, as people type it:
  T.C. numbers with spaces (``100 000 001 46``), phones in national formats
  (``0532 123 45 67``, ``+90 532 123 4567``, ``0532 1234567``), addresses in mixed case
  in the usual orders of district, province and postal code
  (``… No:71 D:16 Şahinbey/Gaziantep 27228``, ``…, 34710 Kadıköy/İstanbul``);
- ``"canonical"``: the same people already in piiguard's canonical forms (what a
  database round trip or an API that validated its input sends): 11 digits, E.164,
  the canonical upper-case address text.

T.C. numbers are built with the checksum, phones are Turkish mobiles, addresses are
about 80 characters.

>>> tckn(1)
'10000000146'
>>> rows = make_rows(3, seed=1)
>>> sorted(rows[0])
['address', 'id', 'national_id', 'phone', 'score', 'segment']
>>> len(make_rows(3, seed=1, input="canonical")[0]['phone'])
13
>>> typed = make_rows(3, seed=1)[0]
>>> typed['national_id'][3], typed['address'] == typed['address'].upper()
(' ', False)
"""

from __future__ import annotations

import random

#: (postal code, district, province) triples whose postal code starts with the plate code.
_PLACES = [
    ("34710", "KADIKÖY", "İSTANBUL"), ("34357", "BEŞİKTAŞ", "İSTANBUL"),
    ("06420", "ÇANKAYA", "ANKARA"), ("06560", "YENİMAHALLE", "ANKARA"),
    ("35220", "KONAK", "İZMİR"), ("35530", "KARŞIYAKA", "İZMİR"),
    ("16010", "OSMANGAZİ", "BURSA"), ("07100", "MURATPAŞA", "ANTALYA"),
    ("01120", "SEYHAN", "ADANA"), ("42060", "SELÇUKLU", "KONYA"),
    ("61030", "ORTAHİSAR", "TRABZON"), ("26010", "ODUNPAZARI", "ESKİŞEHİR"),
]
_MAH = ["ATATÜRK", "CUMHURİYET", "FATİH", "YENİ", "BAHÇELİEVLER", "GÜZELYALI",
        "İSTİKLAL", "KÜLTÜR", "ÇAMLICA", "ŞİRİNEVLER", "ÖRNEKKÖY", "ĞÖKTÜRK"]
_STREET = ["İNÖNÜ", "GAZİ", "ÇINAR", "MENEKŞE", "LALE", "KARANFİL", "AKASYA",
           "ŞEHİT ÖĞRETMEN", "İPEKYOLU", "DERE", "ÇİÇEK", "ÜMİT"]


def tckn(n: int) -> str:
    """The ``n``-th valid T.C. Kimlik No of a deterministic sequence (checksum-built)."""
    base = 100000000 + n  # 9 digits, first digit never 0
    d = [int(c) for c in str(base)]
    d10 = ((d[0] + d[2] + d[4] + d[6] + d[8]) * 7 - (d[1] + d[3] + d[5] + d[7])) % 10
    d11 = (sum(d) + d10) % 10
    return f"{base}{d10}{d11}"


def phone(rng: random.Random) -> str:
    """A Turkish mobile in E.164 (``+90`` 53x / 54x / 55x)."""
    prefix = rng.choice(("532", "533", "535", "536", "537", "538", "542", "543", "544",
                         "545", "546", "505", "506", "507", "552", "553", "554", "555"))
    return f"+90{prefix}{rng.randrange(10**7):07d}"


def address(rng: random.Random) -> str:
    """A canonical address of about 80 characters (varies from about 70 to 90)."""
    postal, district, province = rng.choice(_PLACES)
    line = (f"{rng.choice(_MAH)} MAH. {rng.choice(_STREET)} CAD. {rng.choice(_STREET)} SOK. "
            f"NO:{rng.randrange(1, 200)} KAT:{rng.randrange(1, 12)} D:{rng.randrange(1, 40)}")
    return f"{line}, {postal} {district}/{province}"


#: The input sets :func:`make_rows` knows; the first is the default.
INPUT_SETS = ("typed", "canonical")

_TR_LOWER = str.maketrans({"İ": "i", "I": "ı"})


def _title(word: str) -> str:
    """A Turkish upper-case word as people write it: first letter capital (Kadıköy)."""
    return word[0] + word[1:].translate(_TR_LOWER).lower()


def typed_tckn(canonical: str) -> str:
    """A T.C. number as typed: ``100 000 001 46``."""
    return f"{canonical[:3]} {canonical[3:6]} {canonical[6:9]} {canonical[9:]}"


def typed_phone(canonical: str, k: int) -> str:
    """An E.164 TR mobile in one of the national spellings people type."""
    n = canonical[3:]
    return (f"0{n[:3]} {n[3:6]} {n[6:8]} {n[8:]}", f"+90 {n[:3]} {n[3:6]} {n[6:]}",
            f"0{n[:3]} {n[3:]}", f"0{n}")[k % 4]


def typed_address(canonical: str, k: int) -> str:
    """A canonical address as typed: mixed case, and the district, province and
    postal code in one of the usual orders."""
    line, _, tail = canonical.rpartition(", ")
    postal, _, place = tail.partition(" ")
    district, _, province = place.partition("/")
    words = " ".join(w if any(c.isdigit() for c in w) else _title(w)
                     for w in line.split(" "))
    words = words.replace("NO:", "No:").replace("KAT:", "Kat:")
    place = f"{_title(district)}/{_title(province)}"
    return (f"{words} {place} {postal}", f"{words}, {postal} {place}",
            f"{words} {postal} {place}")[k % 3]


def make_rows(n: int, *, seed: int = 7, start: int = 0, input: str = "typed") -> list[dict]:
    """``n`` rows: id, three PII columns (national_id, phone, address) and two plain ones,
    in the input set ``input`` (``"typed"`` or ``"canonical"``): the same people either
    way."""
    if input not in INPUT_SETS:
        raise ValueError(f"input set is one of {INPUT_SETS}")
    rng = random.Random(seed * 1_000_003 + start)
    rows = []
    for i in range(start, start + n):
        row = {
            "id": i + 1,
            "national_id": tckn(i),
            "phone": phone(rng),
            "address": address(rng),
            "segment": rng.choice(("retail", "sme", "corporate", "private")),
            "score": rng.randrange(1000),
        }
        if input == "typed":
            row["national_id"] = typed_tckn(row["national_id"])
            row["phone"] = typed_phone(row["phone"], i)
            row["address"] = typed_address(row["address"], i)
        rows.append(row)
    return rows
