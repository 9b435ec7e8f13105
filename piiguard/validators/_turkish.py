"""Turkish letter case and the 81 provinces: what :mod:`piiguard.validators.address`
recognises province names by (private to the validators; the public names are
re-exported by ``address``).

Province names are matched leniently by their *folded* form (:func:`fold`: Turkish upper
case without Turkish letters), so ``Istanbul``, ``istanbul`` and ``İSTANBUL`` are the same
province, and former names (``İçel``, ``Urfa``) still count.

>>> fold('Şanlıurfa'), BY_FOLDED[fold('içel')].name, BY_CANONICAL['İSTANBUL'].code
('SANLIURFA', 'Mersin', 34)
"""

from __future__ import annotations

import unicodedata
from typing import NamedTuple

from piiguard.errors import InvalidComponentError
from piiguard.validators._util import require_str

__all__ = [
    "BY_CANONICAL",
    "BY_FOLDED",
    "PROVINCES",
    "Province",
    "fold",
    "province_by_code",
    "province_by_name",
    "tr_lower",
    "tr_upper",
]


class Province(NamedTuple):
    """One of the 81 provinces (il): its plate code (``34``) and official name."""

    code: int
    name: str

    @property
    def canonical(self) -> str:
        """The name as it appears in canonical address text (Turkish upper case)."""
        return tr_upper(self.name)


#: The 81 provinces of Türkiye with their licence-plate codes (also the first two
#: digits of their postal codes), in plate order.
PROVINCES: tuple[Province, ...] = tuple(Province(c, n) for c, n in (
    (1, "Adana"), (2, "Adıyaman"), (3, "Afyonkarahisar"), (4, "Ağrı"), (5, "Amasya"),
    (6, "Ankara"), (7, "Antalya"), (8, "Artvin"), (9, "Aydın"), (10, "Balıkesir"),
    (11, "Bilecik"), (12, "Bingöl"), (13, "Bitlis"), (14, "Bolu"), (15, "Burdur"),
    (16, "Bursa"), (17, "Çanakkale"), (18, "Çankırı"), (19, "Çorum"), (20, "Denizli"),
    (21, "Diyarbakır"), (22, "Edirne"), (23, "Elazığ"), (24, "Erzincan"), (25, "Erzurum"),
    (26, "Eskişehir"), (27, "Gaziantep"), (28, "Giresun"), (29, "Gümüşhane"),
    (30, "Hakkari"), (31, "Hatay"), (32, "Isparta"), (33, "Mersin"), (34, "İstanbul"),
    (35, "İzmir"), (36, "Kars"), (37, "Kastamonu"), (38, "Kayseri"), (39, "Kırklareli"),
    (40, "Kırşehir"), (41, "Kocaeli"), (42, "Konya"), (43, "Kütahya"), (44, "Malatya"),
    (45, "Manisa"), (46, "Kahramanmaraş"), (47, "Mardin"), (48, "Muğla"), (49, "Muş"),
    (50, "Nevşehir"), (51, "Niğde"), (52, "Ordu"), (53, "Rize"), (54, "Sakarya"),
    (55, "Samsun"), (56, "Siirt"), (57, "Sinop"), (58, "Sivas"), (59, "Tekirdağ"),
    (60, "Tokat"), (61, "Trabzon"), (62, "Tunceli"), (63, "Şanlıurfa"), (64, "Uşak"),
    (65, "Van"), (66, "Yozgat"), (67, "Zonguldak"), (68, "Aksaray"), (69, "Bayburt"),
    (70, "Karaman"), (71, "Kırıkkale"), (72, "Batman"), (73, "Şırnak"), (74, "Bartın"),
    (75, "Ardahan"), (76, "Iğdır"), (77, "Yalova"), (78, "Karabük"), (79, "Kilis"),
    (80, "Osmaniye"), (81, "Düzce"),
))

# Former or colloquial names still seen on addresses.
_ALIASES = {"İçel": 33, "Hakkâri": 30, "Afyon": 3, "K.Maraş": 46, "Maraş": 46,
            "Urfa": 63, "Antep": 27}


# --------------------------------------------------------------------------- casing

def tr_upper(s: str) -> str:
    """Upper-case ``s`` by Turkish rules: ``i→İ``, ``ı→I`` (NFC result).

    >>> tr_upper('istanbul ılgaz'), 'istanbul'.upper()
    ('İSTANBUL ILGAZ', 'ISTANBUL')
    """
    return unicodedata.normalize("NFC", s.replace("i", "İ").replace("ı", "I").upper())


def tr_lower(s: str) -> str:
    """Lower-case ``s`` by Turkish rules: ``İ→i``, ``I→ı`` (NFC result).

    >>> tr_lower('İSTANBUL ILGAZ'), len('İ'.lower())
    ('istanbul ılgaz', 2)
    """
    s = unicodedata.normalize("NFC", s)
    return unicodedata.normalize("NFC", s.replace("İ", "i").replace("I", "ı").lower())


_FOLD = str.maketrans({"İ": "I", "Ş": "S", "Ğ": "G", "Ü": "U", "Ö": "O", "Ç": "C",
                       "Â": "A", "Î": "I", "Û": "U"})


def fold(s: str) -> str:
    """Key for lenient name matching: Turkish upper case without Turkish letters."""
    return tr_upper(s).translate(_FOLD)


#: Folded name (:func:`fold`) of every province and of its former names -> province.
BY_FOLDED: dict[str, Province] = {fold(p.name): p for p in PROVINCES}
BY_FOLDED.update({fold(a): PROVINCES[c - 1] for a, c in _ALIASES.items()})
#: Canonical (Turkish upper-case) name -> province, for canonical text.
BY_CANONICAL: dict[str, Province] = {p.canonical: p for p in PROVINCES}


def province_by_code(code: int) -> Province:
    """The province with plate code ``code`` (1 … 81).

    >>> province_by_code(34)
    Province(code=34, name='İstanbul')
    """
    if type(code) is not int or not 1 <= code <= 81:
        raise InvalidComponentError("province", detail="plate codes are 1 to 81")
    return PROVINCES[code - 1]


def province_by_name(name: str) -> Province:
    """The province called ``name``, in any case, with or without Turkish letters.

    >>> province_by_name('ISTANBUL').code, province_by_name('şanlıurfa').code
    (34, 63)
    >>> province_by_name('Içel').name
    'Mersin'
    """
    name = require_str(name, "province", 64)
    p = BY_CANONICAL.get(name)
    if p is not None:
        return p
    p = BY_FOLDED.get(fold(name.strip().rstrip(".")))
    if p is None:
        raise InvalidComponentError("province", detail="not one of the 81 provinces")
    return p
