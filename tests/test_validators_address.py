"""Turkish addresses: province table, postal codes, Turkish casing, canonical text."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from piiguard import errors
from piiguard.validators import address
from piiguard.validators.address import PROVINCES, TurkishAddress


def test_province_table():
    assert len(PROVINCES) == 81
    assert [p.code for p in PROVINCES] == list(range(1, 82))
    assert len({p.name for p in PROVINCES}) == 81
    assert len({address._fold(p.name) for p in PROVINCES}) == 81   # lenient keys unique
    spot = {1: "Adana", 6: "Ankara", 16: "Bursa", 33: "Mersin", 34: "İstanbul", 35: "İzmir",
            46: "Kahramanmaraş", 63: "Şanlıurfa", 67: "Zonguldak", 68: "Aksaray",
            76: "Iğdır", 78: "Karabük", 81: "Düzce"}
    for code, name in spot.items():
        assert address.province_by_code(code).name == name
    for p in PROVINCES:
        assert address.province_by_name(p.name) == p
        assert address.province_by_name(address.tr_upper(p.name)) == p
        assert address.province_by_name(address.tr_lower(p.name)) == p
        assert address.province_by_name(address._fold(p.name)) == p     # no Turkish letters
    assert address.province_by_name("İçel").code == 33
    for bad in (0, 82, -1, True):
        with pytest.raises(errors.InvalidComponentError):
            address.province_by_code(bad)


def test_turkish_case_rules():
    assert address.tr_upper("istanbul") == "İSTANBUL"
    assert address.tr_upper("ılıca") == "ILICA"
    assert address.tr_lower("İSTANBUL") == "istanbul"
    assert address.tr_lower("ILICA") == "ılıca"
    assert address.tr_upper("i̇stanbul") != "İSTANBUL"  # 'İ'.lower() artefact, fixed by normalize
    assert address.normalize("i̇stanbul") == "İSTANBUL"


def test_same_address_one_string():
    spellings = [
        "Atatürk Mah. Cumhuriyet Cad. No:5 D:3, 34710 Kadıköy/İstanbul",
        "ATATÜRK MAH. CUMHURİYET CAD. NO:5 D:3 34710 KADIKÖY/İSTANBUL",
        "atatürk mah.  cumhuriyet cad.  no : 5  d : 3 ,34710 kadıköy / istanbul",
        "Atatu\u0308rk Mah. Cumhuriyet Cad. No:5 D:3, 34710 Kadıko\u0308y/I\u0307stanbul",  # NFD
        "Atatürk Mah.\u200b Cumhuriyet Cad. No:5 D:3,\n34710 Kadıköy/İstanbul, Türkiye",
        "Atatürk Mah. Cumhuriyet Cad. No:5 D:3, Kadıköy/İstanbul 34710",
    ]
    canon = {address.validate(s) for s in spellings}
    assert canon == {"ATATÜRK MAH. CUMHURİYET CAD. NO:5 D:3, 34710 KADIKÖY/İSTANBUL"}


def test_province_spelled_without_turkish_letters_is_written_officially():
    assert address.validate("Bagdat Cad. No:1, Kadikoy/Istanbul") == "BAGDAT CAD. NO:1, KADİKOY/İSTANBUL"  # Turkish rules: i -> İ
    assert address.province_of(address.validate("x sk. 1, Sanliurfa")) == "ŞANLIURFA"
    assert address.province_of(address.validate("x sk. 1, Icel")) == "MERSİN"


def test_postal_code_rules():
    assert address.validate("Kızılay Mah. No:1, 06420 Çankaya/Ankara").startswith("KIZILAY")
    for bad in ("Kızılay Mah. No:1, 34420 Çankaya/Ankara", "No:1, 01000 Düzce"):
        with pytest.raises(errors.InvalidComponentError) as info:
            address.validate(bad)
        assert info.value.rule == "postal_code"
        assert "Kızılay" not in str(info.value) and "34420" not in str(info.value)
    with pytest.raises(errors.InvalidFormatError):
        address.validate({"street": "No:1", "province": "Ankara", "postal_code": "6420"})
    with pytest.raises(errors.InvalidFormatError):
        address.validate({"street": "No:1", "province": "Ankara", "postal_code": "０６４２０"})
    with pytest.raises(errors.InvalidComponentError):
        address.validate("No:1, 06420 Çankaya/Ankara 06421")     # two postal codes


def test_structured_and_text_agree():
    a = TurkishAddress(street="Alsancak Mah. 1470 Sk. No:3", district="Konak",
                       province="izmir", postal_code="35220")
    text = a.format()
    assert text == "ALSANCAK MAH. 1470 SK. NO:3, 35220 KONAK/İZMİR"
    parsed = TurkishAddress.parse(text)
    assert parsed == TurkishAddress(street="ALSANCAK MAH. 1470 SK. NO:3", district="KONAK",
                                    province="İZMİR", postal_code="35220")
    assert parsed.plate_code == 35
    assert address.validate(a) == address.validate(text) == address.validate(
        {"street": "Alsancak Mah. 1470 Sk. No:3", "district": "Konak", "province": 35,
         "postal_code": "35220"})
    assert address.province_of(text) == "İZMİR" and address.district_of(text) == "KONAK"
    assert "ALSANCAK" not in repr(parsed) and "35220" not in repr(parsed)


def test_multi_word_district_after_comma_or_postal():
    t = address.validate("Merkez Mah. No:1, Hasan Kale/Erzurum")
    assert address.district_of(t) == "HASAN KALE"
    t = address.validate("Merkez Mah. No:1 25000 Hasan Kale/Erzurum")
    assert address.district_of(t) == "HASAN KALE"
    t = address.validate("Merkez Mah. No:1 Kale/Erzurum")
    assert address.district_of(t) == "KALE"
    assert address.district_of(address.validate("Merkez Mah. No:1, Erzurum")) is None


@pytest.mark.parametrize("bad,rule", [
    ("Cumhuriyet Cad. No:5", "province"),
    ("Cumhuriyet Cad. No:5, Gotham City", "province"),
    ("İstanbul", "street"),
    ("Kadıköy/İstanbul", "street"),
    (", , İstanbul", "street"),
    ("", "province"),
])
def test_refused(bad, rule):
    with pytest.raises(errors.InvalidInputError) as info:
        address.validate(bad)
    assert info.value.rule == rule
    assert not address.is_valid(bad)


def test_refused_characters_and_structure():
    for bad in ("No:٣, İstanbul", "No:3\x00, İstanbul", "No:3\x1b, İstanbul", "No:², Ankara"):
        with pytest.raises(errors.InvalidFormatError):
            address.validate(bad)
    with pytest.raises(errors.InvalidFormatError):
        address.validate({"street": "x", "province": "Ankara", "city": "y"})
    with pytest.raises(errors.InvalidComponentError):
        address.validate({"street": "x", "province": "Ankara", "district": "Çankaya 2"})
    with pytest.raises(errors.InvalidLengthError):
        address.validate("a" * (address.MAX_LENGTH + 1) + ", Ankara")


_letters = "abcçdefgğhıijklmnoöprsştuüvyzABCÇDEFGĞHIİJKLMNOÖPRSŞTUÜVYZ"
street_st = st.text(alphabet=_letters + "0123456789 .,:/-", min_size=1, max_size=40).filter(
    lambda s: any(c.isalnum() for c in s))
district_st = st.one_of(st.none(), st.text(alphabet=_letters + " ", min_size=1, max_size=20).filter(
    lambda s: s.strip()))


@settings(max_examples=300, deadline=None)
@given(street=street_st, district=district_st, province=st.sampled_from(PROVINCES),
       postal=st.one_of(st.none(), st.integers(0, 999)), style=st.sampled_from(
           ["name", "upper", "lower", "fold", "code"]))
def test_structured_round_trip(street, district, province, postal, style):
    p = {"name": province.name, "upper": address.tr_upper(province.name),
         "lower": address.tr_lower(province.name), "fold": address._fold(province.name),
         "code": province.code}[style]
    postal_code = None if postal is None else f"{province.code:02d}{postal:03d}"
    a = TurkishAddress(street=street, district=district, province=p, postal_code=postal_code)
    text = a.format()
    assert address.validate(text) == text                     # canonical is a fixed point
    back = TurkishAddress.parse(text)
    assert back == a.normalized()
    assert address.province_of(text) == province.canonical
    assert address.district_of(text) == back.district
