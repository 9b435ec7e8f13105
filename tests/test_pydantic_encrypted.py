"""Encrypted pydantic fields: models that hold only envelopes (piiguard.pydantic.encryption).

Acceptance (issue 3): a model round-trips through JSON with no plaintext in the JSON
text; a tampered envelope fails validation with a clear error; an envelope made for
another field or model is refused.
"""

from __future__ import annotations

import json
import re
from typing import Annotated

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError
from sqlalchemy import create_engine

import piiguard.pydantic as ppyd
import piiguard.pydantic.encryption as penc
from piiguard import Guard, LocalKMS, MaskingPolicy, acting_as
from piiguard.crypto.envelope import decode_text, encode_text, key_id_of
from piiguard.errors import ConfigurationError, DecryptionError, KeyDestroyedError
from piiguard.guard import FieldCipher
from piiguard.masking.view import MaskedStr
from piiguard.pydantic import (
    Address,
    Email,
    Encrypted,
    NationalId,
    Phone,
    PhoneOptions,
    TaxId,
    encrypted,
    masking,
    optional,
    reveal,
)

RAW = {"national_id": "100 000 001 46", "tax_id": "1234567890", "phone": "0532 123 45 67",
       "email": "Şükrü.Öz@Örnek.com.tr", "address": "Moda Cad. No:5, 34710 Kadıköy/İstanbul",
       "note": "Gizli not: İğdır'da çalışıyor"}
CANON = {"national_id": "10000000146", "tax_id": "1234567890", "phone": "+905321234567",
         "email": "Şükrü.Öz@örnek.com.tr", "address": "Moda Cad. No:5, 34710 Kadıköy/İstanbul",
         "note": "Gizli not: İğdır'da çalışıyor"}
ENVELOPE = re.compile(penc.ENVELOPE_PATTERN)


def make_models(guard):
    """Fresh model classes bound to ``guard`` (one set per test: guards differ)."""

    class Customer(BaseModel):
        model_config = ConfigDict(hide_input_in_errors=True)
        national_id: encrypted(NationalId, guard)
        tax_id: encrypted(TaxId, guard)
        phone: Annotated[Phone, Encrypted(guard)]
        email: encrypted(Email, guard)
        address: encrypted(Address, guard)
        note: encrypted(str, guard)
        spouse_national_id: optional(encrypted(NationalId, guard)) = None

    class Lead(BaseModel):
        model_config = ConfigDict(hide_input_in_errors=True)
        national_id: encrypted(NationalId, guard)

    return Customer, Lead


def json_texts(value: str) -> list[str]:
    """How ``value`` could appear in JSON text (as it is, and \\u-escaped)."""
    return [value, json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]]


def flip(envelope: str, pos: int) -> str:
    """``envelope`` with the base64 character at ``pos`` (after the prefix) changed."""
    i = 4 + pos
    c = envelope[i]
    new = "A" if c != "A" else "B"
    return envelope[:i] + new + envelope[i + 1:]


# -- JSON round trip ---------------------------------------------------------------------------
def test_json_round_trip_has_no_plaintext(guard):
    Customer, _ = make_models(guard)
    c = Customer(**RAW, spouse_national_id="10000000146")
    text = c.model_dump_json()
    for name, raw in RAW.items():
        for form in (raw, CANON[name]):
            for t in json_texts(form):
                assert t not in text, name
    data = json.loads(text)
    assert set(data) == set(RAW) | {"spouse_national_id"}
    assert all(ENVELOPE.fullmatch(v) for v in data.values())
    back = Customer.model_validate_json(text)
    assert back.model_dump() == c.model_dump() == data  # envelopes kept byte for byte
    for name in RAW:
        assert reveal(back, name) == CANON[name]
    assert reveal(back, "spouse_national_id") == "10000000146"


def test_model_holds_only_envelopes_and_repr_hides_them(guard):
    Customer, _ = make_models(guard)
    c = Customer(**RAW)
    for name in RAW:
        v = getattr(c, name)
        assert type(v) is str and ENVELOPE.fullmatch(v)
        assert CANON[name] not in v
        assert decode_text(v)[0] == 0x10  # a v1 envelope
    assert repr(c) == "Customer()"
    assert "pg1:" not in str(c) and CANON["national_id"] not in str(c)
    # Each value encrypts afresh (random nonce): equal plaintexts, different envelopes.
    assert Customer(**RAW).national_id != c.national_id


def test_envelope_input_is_kept_not_reencrypted(guard, monkeypatch):
    Customer, _ = make_models(guard)
    c = Customer(**RAW)
    text = c.model_dump_json()
    calls = []
    real = FieldCipher.encrypt
    monkeypatch.setattr(FieldCipher, "encrypt",
                        lambda self, *a, **k: calls.append(self.label) or real(self, *a, **k))
    back = Customer.model_validate_json(text)
    again = Customer.model_validate(c.model_dump())
    assert calls == []
    assert back.note == again.note == c.note
    # Plaintext input does go through encryption (the counter works).
    Customer(**RAW)
    assert "Customer.national_id" in calls


def test_plain_str_round_trip_keeps_the_text_exactly(guard):
    Customer, _ = make_models(guard)
    raw = dict(RAW, note="  İ ı I i \u0130\u0307 ﬁ ₺ ")
    c = Customer.model_validate_json(json.dumps(raw))  # plaintext can come in as JSON too
    assert reveal(Customer.model_validate_json(c.model_dump_json()), "note") == raw["note"]


TURKISH = st.text(alphabet=st.sampled_from(
    list("abcçdefgğhıijklmnoöprsştuüvyzABCÇDEFGĞHIİJKLMNOÖPRSŞTUÜVYZ0123456789 .,:;'\"-/\\\n")
    + ["\u0307", "₺", "é", "\u00a0", "😀", "\x00"]), max_size=200)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=TURKISH)
def test_hypothesis_turkish_text_round_trip(guard, text):
    if text.startswith("pg1:"):
        return  # reserved for envelopes (tested below)

    class Note(BaseModel):
        model_config = ConfigDict(hide_input_in_errors=True)
        body: encrypted(str, guard)

    n = Note(body=text)
    dumped = n.model_dump_json()
    if len(text.strip()) >= 4:
        assert all(t not in dumped for t in json_texts(text))
    back = Note.model_validate_json(dumped)
    assert back.body == n.body
    assert reveal(back, "body") == text


# -- tampering ---------------------------------------------------------------------------------
def test_tampered_envelope_fails_validation_clearly(guard):
    _, Lead = make_models(guard)
    env = Lead(national_id="10000000146").national_id
    body_len = len(env) - 4
    rules = set()
    for pos in range(body_len):
        bad = flip(env, pos)
        with pytest.raises(ValidationError) as ei:
            Lead.model_validate_json(json.dumps({"national_id": bad}))
        (err,) = ei.value.errors()
        assert err["type"] == "piiguard_envelope"
        assert err["loc"] == ("national_id",)
        assert "Lead.national_id" in err["msg"]
        rules.add(err["ctx"]["rule"])
        text = str(ei.value)
        assert bad not in text and "10000000146" not in text and "input_value" not in text
    # Bits in the nonce/ciphertext/tag fail the AEAD check; the last character's spare
    # bits make a non-canonical base64 that is refused as malformed.
    assert rules == {"authentication", "format"}
    # The untouched envelope still validates.
    assert Lead.model_validate_json(json.dumps({"national_id": env})).national_id == env


@pytest.mark.parametrize("bad", ["pg1:", "pg1:!!!!", "pg1:AAAA", "pg1:" + "A" * 60 + "=",
                                 "pg1:" + encode_text(b"\x20" + bytes(40))[4:]])
def test_malformed_envelope_is_refused_never_encrypted(guard, bad):
    _, Lead = make_models(guard)

    class Note(BaseModel):
        body: encrypted(str, guard)

    for model, field in ((Lead, "national_id"), (Note, "body")):
        with pytest.raises(ValidationError) as ei:
            model(**{field: bad})
        (err,) = ei.value.errors()
        assert err["type"] == "piiguard_envelope" and err["ctx"]["rule"] == "format"
        assert f"{model.__name__}.{field}" in err["msg"]


def test_truncated_and_extended_envelopes_are_refused(guard):
    _, Lead = make_models(guard)
    blob = decode_text(Lead(national_id="10000000146").national_id)
    for bad in (blob[:-1], blob[:-16], blob + b"\x00", blob[:5] + blob[17:] + blob[5:17]):
        with pytest.raises(ValidationError) as ei:
            Lead(national_id=encode_text(bad))
        assert ei.value.errors()[0]["type"] == "piiguard_envelope"


def test_envelope_with_another_key_id_is_refused(guard):
    _, Lead = make_models(guard)
    blob = bytearray(decode_text(Lead(national_id="10000000146").national_id))
    blob[1:5] = (999).to_bytes(4, "big")  # no such DEK in this key table
    with pytest.raises(ValidationError) as ei:
        Lead(national_id=encode_text(bytes(blob)))
    err = ei.value.errors()[0]
    assert err["type"] == "piiguard_envelope" and err["ctx"]["rule"] == "authentication"
    assert err["ctx"]["key_id"] == "999" and "key_id=999" in err["msg"]


# -- binding to the model and field ------------------------------------------------------------
def test_envelope_for_another_field_is_refused(guard):
    Customer, _ = make_models(guard)
    c = Customer(**RAW, spouse_national_id="10000000146")
    data = c.model_dump()
    # Same kind, same plaintext rules, same model: only the field name differs.
    swapped = dict(data, national_id=data["spouse_national_id"],
                   spouse_national_id=data["national_id"])
    with pytest.raises(ValidationError) as ei:
        Customer.model_validate(swapped)
    errs = {e["loc"][0]: e for e in ei.value.errors()}
    assert set(errs) == {"national_id", "spouse_national_id"}
    assert all(e["type"] == "piiguard_envelope" and e["ctx"]["rule"] == "authentication"
               for e in errs.values())
    assert "Customer.spouse_national_id" in errs["spouse_national_id"]["msg"]
    # Even a plain-text field refuses an envelope made for a PII field.
    with pytest.raises(ValidationError):
        Customer.model_validate(dict(data, note=data["phone"]))


def test_envelope_for_another_model_with_the_same_field_name_is_refused(guard):
    Customer, Lead = make_models(guard)
    c = Customer(**RAW)
    with pytest.raises(ValidationError) as ei:
        Lead.model_validate_json(json.dumps({"national_id": c.national_id}))
    err = ei.value.errors()[0]
    assert err["type"] == "piiguard_envelope" and "Lead.national_id" in err["msg"]
    # ... and the other way round.
    lead = Lead(national_id="10000000146")
    with pytest.raises(ValidationError):
        Customer.model_validate(dict(c.model_dump(), national_id=lead.national_id))


def test_binding_uses_the_model_title(guard):
    """The context is the core-config title: the class name unless config sets title,
    so a renamed class can keep reading its envelopes; a subclass is another model."""

    class Customer(BaseModel):
        national_id: encrypted(NationalId, guard)

    class CustomerV2(BaseModel):  # renamed class, same title
        model_config = ConfigDict(title="Customer")
        national_id: encrypted(NationalId, guard)

    class VipCustomer(Customer):
        pass

    env = Customer(national_id="10000000146").national_id
    v2 = CustomerV2(national_id=env)
    assert v2.national_id == env and reveal(v2, "national_id") == "10000000146"
    with pytest.raises(ValidationError):
        VipCustomer(national_id=env)
    assert reveal(VipCustomer(national_id="10000000146"), "national_id") == "10000000146"


def test_nested_models_bind_to_the_inner_model(guard):
    _Customer, Lead = make_models(guard)

    class Envelope(BaseModel):
        lead: Lead
        national_id: encrypted(NationalId, guard)

    e = Envelope(lead={"national_id": "10000000146"}, national_id="10000000146")
    back = Envelope.model_validate_json(e.model_dump_json())
    assert reveal(back.lead, "national_id") == reveal(back, "national_id") == "10000000146"
    with pytest.raises(ValidationError):  # the outer field's envelope in the inner model
        Envelope(lead={"national_id": e.national_id}, national_id=e.national_id)


def test_two_guards_cannot_read_each_others_envelopes(guard, tmp_path):
    other = Guard(kms=LocalKMS.generate()).bind(create_engine(f"sqlite:///{tmp_path / 'b.db'}"))
    _, LeadA = make_models(guard)
    _, LeadB = make_models(other)
    a = LeadA(national_id="10000000146")
    b = LeadB(national_id="10000000146")
    assert key_id_of(a.national_id) == key_id_of(b.national_id)  # both DEK 1
    for model, env in ((LeadB, a.national_id), (LeadA, b.national_id)):
        with pytest.raises(ValidationError) as ei:
            model.model_validate_json(json.dumps({"national_id": env}))
        assert ei.value.errors()[0]["ctx"]["rule"] == "authentication"
    # A value smuggled past validation still cannot be revealed by the other Guard.
    smuggled = LeadB.model_construct(national_id=a.national_id)
    with pytest.raises(DecryptionError) as ei:
        reveal(smuggled, "national_id")
    assert ei.value.column == "Lead.national_id" and "10000000146" not in str(ei.value)


# -- plaintext input ---------------------------------------------------------------------------
@pytest.mark.parametrize(("field", "value", "etype"), [
    ("national_id", "10000000147", "tckn_checksum"),
    ("national_id", "1000000014", "tckn_length"),
    ("tax_id", "1234567891", "vkn_checksum"),
    ("phone", "+90 599 123 45 67", "phone_number_range"),
    ("address", "Moda Cad. No:5, 34710 Kadıköy/Narnia", "address_province"),
    ("email", "not an e-mail", "email_syntax"),
])
def test_invalid_plaintext_is_refused_with_the_validators_error_type(guard, field, value,
                                                                       etype):
    Customer, _ = make_models(guard)
    with pytest.raises(ValidationError) as ei:
        Customer(**dict(RAW, **{field: value}))
    (err,) = ei.value.errors()
    assert err["type"] == etype and err["loc"] == (field,)
    assert value not in str(ei.value)


def test_masked_view_is_refused(guard):
    Customer, Lead = make_models(guard)
    for bad in (MaskedStr("1********46"), MaskedStr("10000000146")):
        with pytest.raises(ValidationError) as ei:
            Lead(national_id=bad)
        err = ei.value.errors()[0]
        assert err["type"] == "piiguard_masked" and "Lead.national_id" in err["msg"]
    with pytest.raises(ValidationError) as ei:
        Customer(**dict(RAW, note=MaskedStr("[REDACTED]")))
    assert ei.value.errors()[0]["type"] == "piiguard_masked"


def test_bytes_that_look_like_an_envelope_are_not_encrypted_again(guard):
    class Note(BaseModel):
        body: encrypted(str, guard)

    env = Note(body="gizli").body
    with pytest.raises(ValidationError) as ei:
        Note(body=env.encode())  # lax mode turns bytes into str after the envelope check
    err = ei.value.errors()[0]
    assert err["type"] == "piiguard_envelope" and err["ctx"]["rule"] == "already_encrypted"


def test_optional_field(guard):
    Customer, _ = make_models(guard)
    c = Customer(**RAW)
    assert c.spouse_national_id is None and reveal(c, "spouse_national_id") is None
    assert json.loads(c.model_dump_json())["spouse_national_id"] is None
    with pytest.raises(ValidationError) as ei:
        Customer(**RAW, spouse_national_id="10000000147")
    assert ei.value.errors()[0]["type"] == "tckn_checksum"


def test_options_of_the_inner_type_apply(guard):
    class Contact(BaseModel):
        model_config = ConfigDict(hide_input_in_errors=True)
        mobile: Annotated[Phone, PhoneOptions(mobile_only=True), Encrypted(guard)]

    assert reveal(Contact(mobile="0532 123 45 67"), "mobile") == "+905321234567"
    with pytest.raises(ValidationError) as ei:
        Contact(mobile="0212 123 45 67")
    assert ei.value.errors()[0]["type"] == "phone_mobile"


# -- output ------------------------------------------------------------------------------------
def test_dump_refuses_values_set_without_validation(guard):
    Customer, _ = make_models(guard)
    c = Customer(**RAW)
    c.national_id = "10000000146"  # no validate_assignment: pydantic stores it as given
    for dump in (c.model_dump, c.model_dump_json):
        with pytest.raises(PydanticSerializationError) as ei:
            dump()
        assert "Customer.national_id" in str(ei.value)
        assert "10000000146" not in str(ei.value)
    copied = Customer(**RAW).model_copy(update={"phone": "+905321234567"})
    with pytest.raises(PydanticSerializationError):
        copied.model_dump_json()


def test_validate_assignment_encrypts(guard):
    class Account(BaseModel):
        model_config = ConfigDict(validate_assignment=True, hide_input_in_errors=True)
        national_id: encrypted(NationalId, guard)

    a = Account(national_id="10000000146")
    a.national_id = "100 000 000 78"
    assert a.national_id.startswith("pg1:") and reveal(a, "national_id") == "10000000078"
    with pytest.raises(ValidationError) as ei:
        a.national_id = "10000000147"
    assert ei.value.errors()[0]["type"] == "tckn_checksum"


def test_dump_emits_envelopes_whatever_the_masking_context(guard):
    Customer, _ = make_models(guard)
    guard.policy = MaskingPolicy.from_dict({"default": "reveal"})
    c = Customer(**RAW)
    plain = c.model_dump()
    with masking(guard), acting_as("admin"):
        assert c.model_dump() == plain
        assert c.model_dump(context={"piiguard": guard}) == plain
    assert guard.audit.pending() == 0  # dumping envelopes reveals nothing


def test_json_schema(guard):
    Customer, _ = make_models(guard)
    ser = Customer.model_json_schema(mode="serialization")["properties"]
    for name in RAW:
        assert ser[name]["type"] == "string" and ser[name]["pattern"] == penc.ENVELOPE_PATTERN
    dumped = Customer(**RAW).model_dump()
    assert all(re.fullmatch(ser[n]["pattern"], dumped[n]) for n in RAW)
    val = Customer.model_json_schema(mode="validation")["properties"]
    nid = val["national_id"]["anyOf"]
    assert {s.get("format") for s in nid} == {"tckn", "piiguard-envelope"}
    spouse = val["spouse_national_id"]["anyOf"]
    assert {"type": "null"} in spouse


# -- reveal and masking by role ----------------------------------------------------------------
POLICY = {
    "default": "redact",
    "national_id": {"admin": "reveal", "support": "partial:1:2", "ops": "null"},
    "phone": {"admin": "reveal", "support": "partial:3:2"},
    "text": {"admin": "reveal"},
    "Lead.national_id": {"support": "redact"},
}


def test_reveal_with_no_policy_gives_plaintext_without_audit(guard):
    Customer, _ = make_models(guard)
    c = Customer(**RAW)
    assert {n: reveal(c, n) for n in RAW} == CANON
    guard.audit.flush()
    assert not [e for e in guard.audit.last_events if e["action"] == "reveal"]


def test_reveal_by_role(guard, monkeypatch):
    Customer, Lead = make_models(guard)
    guard.policy = MaskingPolicy.from_dict(POLICY)
    c = Customer(**RAW)
    lead = Lead(national_id="10000000146")
    decrypts = []
    real = FieldCipher.decrypt
    monkeypatch.setattr(FieldCipher, "decrypt",
                        lambda self, blob: decrypts.append(self.label) or real(self, blob))

    with acting_as("support"):
        nid = reveal(c, "national_id")
        assert nid == "1********46" and type(nid) is MaskedStr
        assert reveal(c, "phone") == "+90********67"
        assert reveal(lead, "national_id") == "[REDACTED]"  # Model.field rule wins
        assert reveal(c, "note") == "[REDACTED]"
    with acting_as("ops"):
        assert reveal(c, "national_id") is None
    assert reveal(c, "national_id") == "[REDACTED]"  # no role: the default
    # Redact and null masks need no plaintext: only the partial masks decrypted.
    assert decrypts == ["Customer.national_id", "Customer.phone"]

    with acting_as("admin", purpose="ticket-7"):
        assert reveal(c, "national_id", row_key=42) == "10000000146"
        assert reveal(c, "note") == CANON["note"]
        key_id = key_id_of(c.national_id)
    events = [e for e in guard.audit.last_events if e["action"] == "reveal"]
    by_col = {e["column"]: e for e in events}
    assert by_col["Customer.national_id"]["count"] == 1
    assert by_col["Customer.national_id"]["row_keys"] == [42]
    assert by_col["Customer.national_id"]["key_id"] == key_id
    assert by_col["Customer.national_id"]["role"] == "admin"
    assert by_col["Customer.note"]["purpose"] == "ticket-7"
    assert all("10000000146" not in json.dumps(e, default=str) for e in events)


def test_reveal_refuses_what_it_cannot_trust(guard):
    Customer, _ = make_models(guard)
    c = Customer(**RAW)
    with pytest.raises(ConfigurationError, match="no field 'nope'"):
        reveal(c, "nope")

    class Plain(BaseModel):
        national_id: NationalId

    with pytest.raises(ConfigurationError, match="not an encrypted field"):
        reveal(Plain(national_id="10000000146"), "national_id")
    c2 = Customer.model_construct(**dict(c.model_dump(), national_id="10000000146"))
    with pytest.raises(Exception) as ei:  # plaintext put in without validation
        reveal(c2, "national_id")
    assert ei.value.__class__.__name__ == "EnvelopeFormatError"
    assert "Customer.national_id" in str(ei.value) and "10000000146" not in str(ei.value)


# -- options and configuration -----------------------------------------------------------------
def test_padded_envelopes_hide_lengths(guard):
    class Note(BaseModel):
        body: encrypted(str, guard, padded=True)

    a, b, c = Note(body="a"), Note(body="Kadıköy'de"), Note(body="Kadıköy'de oturuyor")
    assert len(a.body) == len(b.body) < len(c.body)  # 16-byte bucket, then 32
    assert decode_text(a.body)[0] == 0x11
    for n, text in ((a, "a"), (b, "Kadıköy'de"), (c, "Kadıköy'de oturuyor")):
        assert reveal(Note.model_validate_json(n.model_dump_json()), "body") == text


def test_dek_scope(guard):
    class Ticket(BaseModel):
        a: encrypted(str, guard)
        b: encrypted(str, guard, scope="shared-docs")

    t = Ticket(a="x", b="y")
    scopes = {k.id: k.scope for k in guard.keys.keys(kind="dek")}
    assert scopes[key_id_of(t.a)] == "Ticket"
    assert scopes[key_id_of(t.b)] == "shared-docs"


def test_envelopes_survive_dek_rotation(guard):
    _, Lead = make_models(guard)
    old = Lead(national_id="10000000146")
    old_id = key_id_of(old.national_id)
    new_id = guard.keys.rotate("dek", "Lead")
    new = Lead(national_id="10000000078")
    assert key_id_of(new.national_id) == new_id != old_id
    back = Lead.model_validate_json(old.model_dump_json())  # decrypt-only key still reads
    assert reveal(back, "national_id") == "10000000146"


def test_type_adapter_needs_an_explicit_name(guard):
    with pytest.raises(ConfigurationError, match="name='Model.field'"):
        TypeAdapter(Annotated[str, Encrypted(guard)])
    ta = TypeAdapter(Annotated[str, Encrypted(guard, name="Doc.body")])
    env = ta.validate_python("gizli")
    assert ta.validate_json(json.dumps(env)) == env
    assert guard.field("Doc", "body", domain="pydantic").decrypt_text(env) == "gizli"
    other = TypeAdapter(Annotated[str, Encrypted(guard, name="Doc.title")])
    with pytest.raises(ValidationError):
        other.validate_python(env)


@pytest.mark.parametrize("kwargs", [{"name": "nodot"}, {"name": ".x"}, {"name": "X."},
                                    {"name": 3}, {"scope": ""}, {"padded": "yes"}])
def test_bad_options_are_refused_when_built(guard, kwargs):
    with pytest.raises(ConfigurationError):
        Encrypted(guard, **kwargs)


def test_bad_declarations_are_refused_when_the_model_is_built(guard):
    with pytest.raises(ConfigurationError, match="needs a piiguard Guard"):
        encrypted(str, object())
    with pytest.raises(ConfigurationError, match="str values"):
        class Bad(BaseModel):
            n: Annotated[int, Encrypted(guard)]


def test_operational_failures_are_not_validation_errors(guard, local_kms):
    unbound = Guard(kms=local_kms)

    class Note(BaseModel):
        body: encrypted(str, unbound)

    with pytest.raises(ConfigurationError, match="not bound"):
        Note(body="gizli")

    _, Lead = make_models(guard)
    env = Lead(national_id="10000000146").national_id
    guard.keys.destroy(key_id_of(env))
    with pytest.raises(KeyDestroyedError):  # crypto-shredded: unreadable, not "invalid"
        Lead.model_validate_json(json.dumps({"national_id": env}))


def test_exports():
    assert set(penc.__all__) <= set(dir(penc))
    for name in ("Encrypted", "encrypted", "reveal"):
        assert name in ppyd.__all__ and getattr(ppyd, name) is getattr(penc, name)
    assert repr(Encrypted(Guard(kms=LocalKMS.generate()), scope="s")) == \
        "Encrypted(name=None, scope='s', padded=False)"
