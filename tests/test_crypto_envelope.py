"""Envelope format v1 through the public cipher (Guard.field): layout, context binding,
round trips with Turkish text, nonce uniqueness, refusing to double-encrypt, and errors
that name the column but never the value."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine

from piiguard import Guard, LocalKMS
from piiguard.crypto.aead import DataKey
from piiguard.crypto.envelope import (
    BINARY_OVERHEAD,
    TEXT_PREFIX,
    FieldContext,
    _seal_from_parts,
    decode_text,
    encode_text,
    looks_like_envelope,
    open_with,
    parse_header,
)
from piiguard.crypto.padding import bucket_size
from piiguard.errors import (
    AlreadyEncryptedError,
    DecryptionError,
    EnvelopeFormatError,
    PIIGuardError,
)

TURKISH = "İıŞşĞğÇçÖöÜü"


@pytest.fixture(scope="module")
def mguard():
    return Guard(kms=LocalKMS.generate()).bind(create_engine("sqlite://"))


# -- layout ---------------------------------------------------------------------------------
def test_binary_layout_header_nonce_ciphertext(mguard):
    cipher = mguard.field("customers", "national_id")
    blob = cipher.encrypt(b"10000000146")
    key_id = mguard.keys.keys(kind="dek", scope="customers")[0].id
    assert blob[0] == 0x10
    assert int.from_bytes(blob[1:5], "big") == key_id == cipher.key_id_of(blob)
    assert len(blob) == len(b"10000000146") + BINARY_OVERHEAD == 44
    assert BINARY_OVERHEAD == 33 <= 40  # issue 2: at most 40 bytes over the plaintext
    assert parse_header(blob) == (0x10, key_id)


def test_padded_layout_hides_length_within_a_bucket(mguard):
    cipher = mguard.field("customers", "address", padded=True)
    short = cipher.encrypt("Kadıköy".encode())
    longer = cipher.encrypt("Kadıköy Moda Cd. No 1".encode())
    assert short[0] == 0x11
    assert len(short) == BINARY_OVERHEAD + bucket_size(len("Kadıköy".encode()))
    assert len(cipher.encrypt(b"x" * 31)) == len(longer) == BINARY_OVERHEAD + 32
    assert cipher.decrypt(short) == "Kadıköy".encode()


def test_text_form_is_prefix_and_urlsafe_base64_without_padding(mguard):
    cipher = mguard.field("customers", "phone")
    text = cipher.encrypt_text("+905321234567")
    assert text.startswith(TEXT_PREFIX) and "=" not in text
    assert set(text[len(TEXT_PREFIX):]) <= set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    blob = decode_text(text)
    assert encode_text(blob) == text
    assert cipher.decrypt_str(blob) == "+905321234567"
    assert cipher.key_id_of(text) == cipher.key_id_of(blob)


def test_empty_plaintext_round_trips(mguard):
    for padded in (False, True):
        cipher = mguard.field("customers", "empty", padded=padded)
        assert cipher.decrypt(cipher.encrypt(b"")) == b""
        assert cipher.decrypt_text(cipher.encrypt_text("")) == ""


# -- associated data binds the value to where it lives -------------------------------------
def test_value_moved_to_another_column_fails(mguard):
    blob = mguard.field("customers", "national_id").encrypt(b"10000000146")
    with pytest.raises(DecryptionError) as info:
        mguard.field("customers", "phone").decrypt(blob)
    assert "customers.phone" in str(info.value)


def test_value_moved_to_another_table_fails_even_under_the_same_key(mguard):
    # Same scope, so the same DEK: only the associated data differs.
    a = mguard.field("customers", "national_id", scope="shared")
    b = mguard.field("suppliers", "national_id", scope="shared")
    blob = a.encrypt(b"10000000146")
    assert a.key_id_of(blob) == b.key_id_of(b.encrypt(b"x"))
    with pytest.raises(DecryptionError):
        b.decrypt(blob)
    assert a.decrypt(blob) == b"10000000146"


def test_value_moved_to_another_domain_fails(mguard):
    blob = mguard.field("customers", "national_id", domain="sql").encrypt(b"v")
    with pytest.raises(DecryptionError):
        mguard.field("customers", "national_id", domain="json").decrypt(blob)


def test_value_under_another_tables_key_fails(mguard):
    blob = mguard.field("customers", "national_id").encrypt(b"10000000146")
    with pytest.raises(DecryptionError):
        mguard.field("suppliers", "national_id").decrypt(blob)


def test_context_parts_are_length_prefixed():
    assert FieldContext("sql", "ab", "c").aad != FieldContext("sql", "a", "bc").aad
    assert FieldContext("sql", "a.b", "c").aad != FieldContext("sql", "a", "b.c").aad
    assert FieldContext("sql", "ab", "c").aad == b"\x00\x03sql\x00\x02ab\x00\x01c"
    key = DataKey(1, bytes(range(32)))
    blob = _seal_from_parts(key, bytes(12), b"v", FieldContext("sql", "ab", "c"))
    with pytest.raises(DecryptionError):
        open_with(key, blob, FieldContext("sql", "a", "bc"))


def test_ab_c_and_a_bc_fields_cannot_read_each_other(mguard):
    one = mguard.field("ab", "c", scope="boundary")
    two = mguard.field("a", "bc", scope="boundary")
    blob = one.encrypt(b"secret-value")
    with pytest.raises(DecryptionError):
        two.decrypt(blob)
    with pytest.raises(DecryptionError):
        one.decrypt(two.encrypt(b"secret-value"))


def test_format_byte_and_key_id_are_authenticated(mguard):
    cipher = mguard.field("customers", "notes")
    blob = cipher.encrypt(b"some text")
    # Claim "padded" without changing anything else: the tag covers the header.
    with pytest.raises(DecryptionError):
        cipher.decrypt(bytes((0x11,)) + blob[1:])


# -- round trips ----------------------------------------------------------------------------
turkish_text = st.text(
    alphabet=st.one_of(st.sampled_from(TURKISH), st.characters(codec="utf-8")),
    max_size=300)


@pytest.mark.parametrize("padded", [False, True], ids=["unpadded", "padded"])
@settings(max_examples=500, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=turkish_text)
def test_round_trip_turkish_text_binary(mguard, padded, value):
    cipher = mguard.field("customers", "full_name", padded=padded)
    try:
        blob = cipher.encrypt_str(value)
    except AlreadyEncryptedError:  # "\x10\x00\x00\x00\x01..." names a key of this table
        assert value[:1] in ("\x10", "\x11") and looks_like_envelope(value.encode())
        return
    assert cipher.decrypt_str(blob) == value
    assert len(value.encode()) < 8 or value.encode() not in blob


@pytest.mark.parametrize("padded", [False, True], ids=["unpadded", "padded"])
@settings(max_examples=500, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=turkish_text)
def test_round_trip_turkish_text_text_form(mguard, padded, value):
    cipher = mguard.field("customers", "full_name_text", padded=padded)
    try:
        text = cipher.encrypt_text(value)
    except AlreadyEncryptedError:
        assert value[:1] in ("\x10", "\x11") and looks_like_envelope(value.encode())
        return
    assert text.startswith(TEXT_PREFIX)
    assert cipher.decrypt_text(text) == value


def test_turkish_samples_round_trip_exactly(mguard):
    cipher = mguard.field("customers", "city")
    for value in ("İSTANBUL", "ıspanak", "Şişli", "Çağlayan", "Gökçe Öztürk", TURKISH):
        assert cipher.decrypt_str(cipher.encrypt_str(value)) == value
        # No case folding or normalisation happens inside the envelope.
        assert cipher.decrypt_str(cipher.encrypt_str(value.lower())) == value.lower()


# -- nonces ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_2_pow_17_encryptions_give_no_duplicate_nonce(mguard):
    cipher = mguard.field("customers", "nonce_check")
    n = 2**17
    nonces = {cipher.encrypt(b"10000000146")[5:17] for _ in range(n)}
    assert len(nonces) == n


# -- never double-encrypt; never fall back to plaintext -------------------------------------
def test_refuses_to_encrypt_a_text_envelope(mguard):
    cipher = mguard.field("customers", "national_id")
    text = cipher.encrypt_text("10000000146")
    assert looks_like_envelope(text)
    with pytest.raises(AlreadyEncryptedError) as info:
        cipher.encrypt_text(text)
    assert isinstance(info.value, ValueError) and "customers.national_id" in str(info.value)
    with pytest.raises(AlreadyEncryptedError):
        cipher.encrypt_str(text)
    # An envelope of another field (another key, another column) is refused too.
    other = mguard.field("suppliers", "tax_id").encrypt_text("1234567890")
    with pytest.raises(AlreadyEncryptedError):
        cipher.encrypt_str(other)


def test_refuses_to_encrypt_a_binary_envelope(mguard):
    cipher = mguard.field("customers", "national_id")
    blob = cipher.encrypt(b"10000000146")
    assert looks_like_envelope(blob)
    with pytest.raises(AlreadyEncryptedError) as info:
        cipher.encrypt(blob)
    assert "customers.national_id" in str(info.value)
    with pytest.raises(AlreadyEncryptedError):
        cipher.encrypt(encode_text(blob).encode())


def test_binary_lookalikes_naming_no_key_of_this_table_still_encrypt(mguard):
    # The header shape alone (0x10/0x11 and >= 33 bytes) matches 1 in 128 random byte
    # strings; only values naming a data key of this key table count as envelopes.
    cipher = mguard.field("customers", "scan")
    for value in (b"\x10\xff\xff\xff\xff" + bytes(40), b"\x11" + bytes(range(1, 60)),
                  b"\x10\x00\x00\x00\x00" + bytes(28)):
        assert cipher.decrypt(cipher.encrypt(value)) == value
    text = "\x10" + "Ayşe" * 10
    assert cipher.decrypt_str(cipher.encrypt_str(text)) == text
    # Another field's binary envelope from this database is refused.
    other = mguard.field("suppliers", "tax_id").encrypt(b"1234567890")
    with pytest.raises(AlreadyEncryptedError):
        cipher.encrypt(other)


def test_prefix_lookalikes_that_are_not_envelopes_still_encrypt(mguard):
    cipher = mguard.field("customers", "notes")
    for value in ("pg1:", "pg1:hello world", "pg1:" + "A" * 10, "PG1:abc"):
        assert not looks_like_envelope(value)
        assert cipher.decrypt_str(cipher.encrypt_str(value)) == value


NOT_ENVELOPES = [b"", b"10000000146", b"\x10" * 10, b"\x20" + bytes(40), b"\x14" + bytes(40),
                 b"\x00" * 33, "10000000146".encode() * 5]


@pytest.mark.parametrize("stored", NOT_ENVELOPES)
def test_non_envelopes_raise_format_error_naming_the_column(mguard, stored):
    cipher = mguard.field("customers", "national_id")
    with pytest.raises(EnvelopeFormatError) as info:
        cipher.decrypt(stored)
    msg = str(info.value)
    assert "customers.national_id" in msg
    assert info.value.column == "customers.national_id"
    if stored:
        assert stored.decode("latin-1") not in msg


@pytest.mark.parametrize("stored", ["", "10000000146", "pg1:", "pg1:!!!!", "pg1:AAAA=",
                                    "pg2:" + "A" * 60, "pg1:" + "A" * 60, "Ayşe Yılmaz"])
def test_non_text_envelopes_raise_format_error_naming_the_column(mguard, stored):
    cipher = mguard.field("customers", "full_name")
    with pytest.raises(EnvelopeFormatError) as info:
        cipher.decrypt_text(stored)
    assert "customers.full_name" in str(info.value)
    if len(stored) > 4:
        assert stored not in str(info.value) and stored not in repr(info.value)


@pytest.mark.parametrize("stored", [b"", b"\x10\x00\x00\x00\x01", b"\x20" + bytes(40),
                                    "10000000146", "pg1:AAAA"])
def test_key_id_of_refuses_non_envelopes(mguard, stored):
    with pytest.raises(EnvelopeFormatError):
        mguard.field("customers", "national_id").key_id_of(stored)


def test_oversized_input_is_rejected_before_decoding(mguard):
    cipher = mguard.field("customers", "notes")
    with pytest.raises(EnvelopeFormatError):
        cipher.decrypt(b"\x10" + bytes(64 * 1024 * 1024 + 1))
    with pytest.raises(EnvelopeFormatError):
        cipher.decrypt_text(TEXT_PREFIX + "A" * (90 * 1024 * 1024))


def test_no_plaintext_in_any_error(mguard):
    secret = "Ayşe Yılmaz 10000000146"
    cipher = mguard.field("customers", "full_name")
    blob = cipher.encrypt_str(secret)
    errors: list[PIIGuardError] = []
    for bad in (blob[:-1], blob + b"\x00", bytes((blob[0] ^ 1,)) + blob[1:]):
        with pytest.raises(PIIGuardError) as info:
            cipher.decrypt(bad)
        errors.append(info.value)
    with pytest.raises(PIIGuardError) as info:
        mguard.field("customers", "other").decrypt(blob)
    errors.append(info.value)
    with pytest.raises(PIIGuardError) as info:
        cipher.encrypt_text(cipher.encrypt_text(secret))
    errors.append(info.value)
    for err in errors:
        text = str(err) + repr(err) + repr(err.args) + repr(vars(err))
        for part in ("Ayşe", "Yılmaz", "10000000146"):
            assert part not in text
        assert err.__cause__ is None or "Ayşe" not in repr(err.__cause__)
