"""Synthetic, reproducible test data: valid T.C. numbers, Turkish mobiles, addresses.

Nothing here is real personal data. Values are generated from a seed, already in their
canonical form (what a database round-trip or an API that validated its input sends):
T.C. numbers are built with the checksum, phones are E.164 mobiles, addresses are about
80 characters in the canonical form of :mod:`piiguard.validators.address`.

>>> tckn(1)
'10000000146'
>>> rows = make_rows(3, seed=1)
>>> sorted(rows[0])
['address', 'id', 'national_id', 'phone', 'score', 'segment']
>>> len(rows[0]['phone'])
13
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


def make_rows(n: int, *, seed: int = 7, start: int = 0) -> list[dict]:
    """``n`` rows: id, three PII columns (national_id, phone, address) and two plain ones."""
    rng = random.Random(seed * 1_000_003 + start)
    rows = []
    for i in range(start, start + n):
        rows.append({
            "id": i + 1,
            "national_id": tckn(i),
            "phone": phone(rng),
            "address": address(rng),
            "segment": rng.choice(("retail", "sme", "corporate", "private")),
            "score": rng.randrange(1000),
        })
    return rows
