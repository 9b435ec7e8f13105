"""MaskingPolicy: shape, precedence, defaults for unknown and missing roles, errors."""

from __future__ import annotations

import re
import textwrap

import pytest
from hypothesis import given
from hypothesis import strategies as st

import piiguard
from piiguard import Guard, LocalKMS
from piiguard.errors import ConfigurationError, PIIGuardError, PolicyError
from piiguard.masking.policy import KINDS, MaskingPolicy

DESIGN_EXAMPLE = {
    "default": "redact",
    "national_id": {"admin": "reveal", "support": "partial:1:2"},
    "phone": {"admin": "reveal", "support": "partial:0:2"},
}

FULL = {
    "default": "redact",
    "national_id": {"admin": "reveal", "support": "partial:1:2", "default": "null"},
    "phone": {"admin": "reveal", "support": "partial:0:2", "analyst": "pseudonym"},
    "address": {"admin": "reveal", "support": "city"},
    "email": "email",
    "customers.national_id": {"auditor": "pseudonym:audit"},
    "customers.address": {"courier": "reveal", "default": "city:province"},
    "Customer.phone": "null",
}


def spec(policy, kind, column, role):
    return policy.mask_for(kind=kind, column=column, role=role).spec


def test_public_name():
    assert piiguard.MaskingPolicy is MaskingPolicy
    assert set(KINDS) == {"national_id", "tax_id", "phone", "address", "email", "name",
                          "text", "date", "datetime", "integer", "decimal", "json", "bytes"}


def test_design_example():
    p = MaskingPolicy.from_dict(DESIGN_EXAMPLE)
    assert spec(p, "national_id", "customers.national_id", "admin") == "reveal"
    assert spec(p, "national_id", "customers.national_id", "support") == "partial:1:2"
    assert spec(p, "phone", "customers.phone", "support") == "partial:0:2"
    assert spec(p, "address", "customers.address", "admin") == "redact"


@pytest.mark.parametrize("kind, column, role, expected", [
    # column role > column default > kind role > kind default > policy default
    ("national_id", "customers.national_id", "auditor", "pseudonym:audit"),
    ("national_id", "customers.national_id", "admin", "reveal"),
    ("national_id", "customers.national_id", "support", "partial:1:2"),
    ("national_id", "customers.national_id", "intern", "null"),     # kind default
    ("national_id", "customers.national_id", None, "null"),         # no role -> default
    ("national_id", "orders.national_id", "auditor", "null"),       # other column
    ("address", "customers.address", "courier", "reveal"),
    ("address", "customers.address", "admin", "city:province"),     # column default wins
    ("address", "customers.address", None, "city:province"),
    ("address", "shops.address", "admin", "reveal"),
    ("address", "shops.address", "support", "city"),
    ("address", "shops.address", "intern", "redact"),               # policy default
    ("address", None, None, "redact"),
    ("phone", "Customer.phone", "admin", "null"),                   # string column rule
    ("phone", "Lead.phone", "analyst", "pseudonym"),
    ("phone", "Lead.phone", "nobody", "redact"),
    ("email", "customers.email", "anyone", "email"),               # string kind rule
    ("email", "customers.email", None, "email"),
    ("tax_id", "customers.vkn", "admin", "redact"),
    ("text", None, "admin", "redact"),
    ("unknown_kind", None, "admin", "redact"),                      # fails closed
])
def test_precedence(kind, column, role, expected):
    p = MaskingPolicy.from_dict(FULL)
    assert spec(p, kind, column, role) == expected


def test_role_called_default_is_not_special():
    p = MaskingPolicy.from_dict(FULL)
    assert spec(p, "national_id", None, "default") == spec(p, "national_id", None, "x")


@given(st.text(min_size=1, max_size=30))
def test_unknown_roles_get_the_default(role):
    p = MaskingPolicy.from_dict(DESIGN_EXAMPLE)
    expected = {"admin": "reveal", "support": "partial:1:2"}.get(role, "redact")
    assert spec(p, "national_id", "customers.national_id", role) == expected
    assert spec(p, "tax_id", "customers.tax_id", role) == "redact"


def test_default_default_is_redact():
    p = MaskingPolicy.from_dict({"national_id": {"admin": "reveal"}})
    assert spec(p, "national_id", None, None) == "redact"
    assert spec(p, "national_id", None, "support") == "redact"
    assert MaskingPolicy().default.spec == "redact"


def test_mask_for_is_cached_and_consistent():
    p = MaskingPolicy.from_dict(FULL)
    a = p.mask_for(kind="phone", column="c.phone", role="support")
    assert p.mask_for(kind="phone", column="c.phone", role="support") is a
    for i in range(5000):   # beyond the cache bound: still right
        assert spec(p, "phone", f"t{i}.phone", "support") == "partial:0:2"


def test_to_dict_round_trip_and_introspection():
    p = MaskingPolicy.from_dict(FULL)
    again = MaskingPolicy.from_dict(p.to_dict())
    assert again == p
    assert p.pseudonym_scopes() == {"default", "audit"}
    assert p.roles() == {"admin", "support", "analyst", "auditor", "courier"}
    assert "pseudonym:audit" in {m.spec for m in p.masks()}
    assert dict(p.rules) == FULL
    with pytest.raises(TypeError):
        p.rules["default"] = "reveal"  # type: ignore[index]
    assert "MaskingPolicy(default='redact'" in repr(p)


def test_guard_accepts_policy():
    g = Guard(kms=LocalKMS.generate())
    g.policy = MaskingPolicy.from_dict(DESIGN_EXAMPLE)
    assert g.policy.mask_for(kind="phone", column=None, role="admin").is_reveal
    with pytest.raises(ConfigurationError):
        g.policy = {"default": "redact"}


def test_custom_masks_in_policy():
    p = MaskingPolicy.from_dict({"phone": {"ops": "last4"}},
                                masks={"last4": lambda v: "…" + v[-4:]})
    assert p.mask_for(kind="phone", column=None, role="ops")("+905321234567",
                                                             kind="phone") == "…4567"
    with pytest.raises(PolicyError, match=r"policy\['phone'\]\['ops'\]: unknown mask 'last5'"):
        MaskingPolicy.from_dict({"phone": {"ops": "last5"}},
                                masks={"last4": lambda v: v[-4:]})
    p.register_mask("blank", lambda v: "", needs_plaintext=False)
    p2 = p.with_rules({"phone": {"ops": "last4", "intern": "blank"}})
    assert p2.mask_for(kind="phone", column=None, role="intern").needs_plaintext is False
    with pytest.raises(PolicyError, match="already registered"):
        p.register_mask("blank", lambda v: "")
    with pytest.raises(PolicyError, match="built-in"):
        p.register_mask("redact", lambda v: "")


def test_custom_masks_are_per_policy():
    MaskingPolicy.from_dict({}, masks={"mine": lambda v: "x"})
    with pytest.raises(PolicyError, match="unknown mask 'mine'"):
        MaskingPolicy.from_dict({"default": "mine"})


# ----------------------------------------------------------------------------- errors

@pytest.mark.parametrize("rules, message", [
    ({"nationalid": {"admin": "reveal"}},
     ("policy['nationalid']: unknown kind 'nationalid' (kinds: national_id, tax_id, "
      "phone, address, email, name, text, date, datetime, integer, decimal, json, bytes; "
      "or a table.column)")),
    ({"national_id": {"support": "blur"}},
     "policy['national_id']['support']: unknown mask 'blur'"),
    ({"national_id": {"support": "partial:1"}},
     "policy['national_id']['support']: bad mask 'partial:1': partial takes two numbers"),
    ({"phone": {"support": "partial:x:2"}},
     "policy['phone']['support']: bad mask 'partial:x:2': partial takes whole numbers"),
    ({"phone": {"support": "partial:1:2:3"}}, "policy['phone']['support']: bad mask"),
    ({"default": "partial:1000:0"}, "policy['default']: bad mask 'partial:1000:0'"),
    ({"default": "nope"}, "policy['default']: unknown mask 'nope'"),
    ({"phone": {"support": "city"}},
     "policy['phone']['support']: mask 'city' is for address values, not phone"),
    ({"national_id": "email"},
     "policy['national_id']: mask 'email' is for email values, not national_id"),
    ({"phone": ["reveal"]},
     "policy['phone']: a rule is a mask or a table of role = mask, not a list"),
    ({"phone": {}}, "policy['phone']: empty rule"),
    ({"phone": {"admin": {"x": "reveal"}}},
     "policy['phone']['admin']: a role takes a mask, not a table"),
    ({"phone": {"admin": 1}}, "policy['phone']['admin']: a mask is a string"),
    ({"phone": {"bad role": "reveal"}}, "policy['phone']: role names are"),
    ({"customers.national_id.x": "reveal"},
     "policy['customers.national_id.x']: 'customers.national_id.x' is not a table.column"),
    ({"customers.": "reveal"}, "policy['customers.']: 'customers.' is not a table.column"),
    ({1: "reveal"}, "policy keys are strings"),
])
def test_policy_errors_name_the_key(rules, message):
    with pytest.raises(PolicyError) as info:
        MaskingPolicy.from_dict(rules)
    assert str(info.value).startswith(message), str(info.value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, PIIGuardError)


def test_policy_must_be_a_mapping():
    with pytest.raises(PolicyError, match="a policy is a mapping"):
        MaskingPolicy.from_dict(["default", "redact"])  # type: ignore[arg-type]


def test_kind_specific_masks_under_default_and_columns_fail_closed():
    p = MaskingPolicy.from_dict({"default": "city", "x.y": "email"})
    m = p.mask_for(kind="phone", column=None, role=None)
    assert m("+905321234567", kind="phone") == "[REDACTED]"
    assert p.mask_for(kind="text", column="x.y", role=None)("no at sign", kind="text") \
        == "[REDACTED]"


# ----------------------------------------------------------------------------- TOML

def test_from_toml(tmp_path):
    f = tmp_path / "policy.toml"
    f.write_text(textwrap.dedent("""
        default = "redact"

        [national_id]
        admin = "reveal"
        support = "partial:1:2"

        [phone]
        admin = "reveal"
        support = "partial:0:2"
        analyst = "pseudonym"

        ["customers.address"]
        support = "city"
        default = "null"
    """), encoding="utf-8")
    p = MaskingPolicy.from_toml(f)
    assert spec(p, "national_id", "customers.national_id", "support") == "partial:1:2"
    assert spec(p, "address", "customers.address", "support") == "city"
    assert spec(p, "address", "customers.address", "admin") == "null"
    assert spec(p, "phone", None, None) == "redact"
    assert p.source == str(f) and str(f) in repr(p)
    assert MaskingPolicy.from_toml(str(f)) == p


@pytest.mark.parametrize("body, message", [
    ('[national_id]\nsupport = "partial:1"\n',
     "policy['national_id']['support']: bad mask 'partial:1'"),
    ('[nationalid]\nadmin = "reveal"\n', "policy['nationalid']: unknown kind"),
    ('default = "blur"\n', "policy['default']: unknown mask 'blur'"),
    ('[phone]\nadmin = 3\n', "policy['phone']['admin']: a mask is a string"),
    ('[phone.admin]\nx = "reveal"\n', "policy['phone']['admin']: a role takes a mask"),
    ('[phone\nadmin = "reveal"\n', "not valid TOML"),
    ('default = redact\n', "not valid TOML"),
])
def test_from_toml_errors_name_file_and_key(tmp_path, body, message):
    f = tmp_path / "bad.toml"
    f.write_text(body, encoding="utf-8")
    with pytest.raises(PolicyError) as info:
        MaskingPolicy.from_toml(f)
    text = str(info.value)
    assert text.startswith(f"{f}: ") and message in text, text


def test_from_toml_missing_file(tmp_path):
    with pytest.raises(PolicyError, match=re.escape(f"{tmp_path / 'nope.toml'}: policy "
                                                    "file not found")):
        MaskingPolicy.from_toml(tmp_path / "nope.toml")


# ----------------------------------------------------------------------------- properties

ROLES = ["admin", "support", "analyst", "x"]
COLUMNS = ["customers.national_id", "orders.national_id", "Customer.phone"]
SIMPLE_SPECS = ["reveal", "redact", "null", "partial:1:2", "partial:0:3", "pseudonym"]


@st.composite
def rule_tables(draw):
    def rule():
        if draw(st.booleans()):
            return draw(st.sampled_from(SIMPLE_SPECS))
        keys = draw(st.lists(st.sampled_from(["default", *ROLES[:3]]), min_size=1,
                             max_size=4, unique=True))
        return {k: draw(st.sampled_from(SIMPLE_SPECS)) for k in keys}

    rules = {}
    if draw(st.booleans()):
        rules["default"] = draw(st.sampled_from(SIMPLE_SPECS))
    for key in draw(st.lists(st.sampled_from(["national_id", "phone", *COLUMNS]),
                             unique=True, max_size=5)):
        rules[key] = rule()
    return rules


def reference(rules, kind, column, role):
    """The documented precedence, written out plainly."""
    for key in (column, kind):
        r = rules.get(key)
        if r is None:
            continue
        if isinstance(r, str):
            return r
        if role is not None and role != "default" and role in r:
            return r[role]
        if "default" in r:
            return r["default"]
    return rules.get("default", "redact")


@given(rule_tables(), st.sampled_from(["national_id", "phone", "email"]),
       st.sampled_from([None, *COLUMNS]), st.sampled_from([None, *ROLES]))
def test_precedence_matches_the_documented_rule(rules, kind, column, role):
    p = MaskingPolicy.from_dict(rules)
    assert spec(p, kind, column, role) == reference(rules, kind, column, role)
    assert MaskingPolicy.from_dict(p.to_dict()) == p
    assert spec(MaskingPolicy.from_dict(p.to_dict()), kind, column, role) == \
        reference(rules, kind, column, role)


def test_all_names_exist():
    import piiguard.masking as pkg
    from piiguard.masking import audit, context, host, masked, masks, policy, view
    from piiguard.pydantic import serialization  # role-aware serialisation moved there

    for mod in (pkg, audit, context, host, masked, masks, policy, serialization, view):
        for name in mod.__all__:
            assert getattr(mod, name) is not None, (mod.__name__, name)
