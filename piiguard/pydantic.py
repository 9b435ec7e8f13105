"""pydantic v2 types for Turkish PII: ``NationalId``, ``TaxId``, ``Phone``, ``Address``,
``Email``.

Each is an ``Annotated[str, ...]`` type: the value is validated by the matching
:mod:`piiguard.validators` module and stored as its canonical form, a plain ``str``::

    from pydantic import BaseModel, ConfigDict
    from piiguard.pydantic import NationalId, Phone

    class Customer(BaseModel):
        model_config = ConfigDict(hide_input_in_errors=True)
        national_id: NationalId
        phone: Phone

Refused values raise pydantic's ``ValidationError`` with stable error types
(``tckn_checksum``, ``tckn_length``, ``tckn_format``, ``vkn_checksum``,
``phone_number_range``, ``phone_length``, ``phone_region``, ``phone_mobile``,
``address_province``, ``address_postal_code``, ``email_syntax`` … i.e. ``<prefix>_<rule>``
where the rule is the :class:`piiguard.errors.InvalidInputError` rule) and messages that
never contain the value. **pydantic itself echoes the input** in the text of a
``ValidationError`` (``input_value='10000000147'``) and in ``errors()`` (``'input'``)
unless the model sets ``model_config = ConfigDict(hide_input_in_errors=True)``: set it
on every model that holds PII (a ``TypeAdapter`` takes ``config=`` the same way).
FastAPI's default 422 handler copies each error's ``input`` into the response body
whatever the model config says; register a ``RequestValidationError`` handler that
drops ``input`` if responses may be logged.

``repr(model)`` never shows these fields: each type carries ``Field(repr=False)``.
pydantic ignores field metadata on a member of a union, so for optional fields use
:func:`optional` (``national_id: optional(NationalId) = None``), or write
``Annotated[NationalIdValue | None, Field(repr=False)]`` yourself. The ``…Value``
types (no field metadata) are for containers and ``TypeAdapter``
(``list[PhoneValue]``); ``TypeAdapter(NationalId)`` warns that ``repr`` has no effect.

Options are annotations: ``Annotated[Phone, PhoneOptions(mobile_only=True)]`` (a later
piiguard annotation replaces the earlier one of the same type, so options are not
applied twice); :data:`MobilePhone` is Turkish mobiles only. Options are checked when
the annotation is built, not at first use.

JSON schema works (FastAPI): validation mode describes what is accepted (``format``,
``examples``); serialization mode has no ``pattern``: output is the canonical form or,
under a masking policy, a masked view (or ``null`` for the ``null`` mask).

Masking by role: every annotation has a ``kind`` (``'national_id'``, ``'tax_id'``,
``'phone'``, ``'address'``, ``'email'``), recorded as ``metadata['piiguard_kind']`` in
its core schema; :meth:`PIIAnnotation.serializer` returns the role-aware serializer of
:mod:`piiguard.masking.serialization`: ``model_dump``/``model_dump_json``/FastAPI
responses show what the role in effect may see under the policy of the Guard set with
``masking(guard)`` (or ``context={"piiguard": guard}``, or ``Masked(guard)``); with no
Guard in effect values are serialised as they are.

>>> from pydantic import BaseModel, ConfigDict, ValidationError
>>> class Customer(BaseModel):
...     model_config = ConfigDict(hide_input_in_errors=True)
...     national_id: NationalId
...     phone: Phone
>>> c = Customer(national_id='100 000 001 46', phone='0532 123 45 67')
>>> c.national_id, c.phone
('10000000146', '+905321234567')
>>> c
Customer()
>>> try:
...     Customer(national_id='10000000147', phone='+90 599 123 45 67')
... except ValidationError as exc:
...     print([e['type'] for e in exc.errors()])
...     print('10000000147' in str(exc))
['tckn_checksum', 'phone_number_range']
False
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, get_args, get_origin

from pydantic import Field, GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.fields import FieldInfo
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

from piiguard.errors import ConfigurationError, InvalidInputError
from piiguard.masking.serialization import Masked, masking
from piiguard.validators import address as _address
from piiguard.validators import email as _email
from piiguard.validators import phone as _phone
from piiguard.validators import tckn as _tckn
from piiguard.validators import vkn as _vkn

__all__ = [
    "Address",
    "AddressRules",
    "AddressValue",
    "Email",
    "EmailOptions",
    "EmailValue",
    "MobilePhone",
    "NationalId",
    "NationalIdRules",
    "NationalIdValue",
    "PIIAnnotation",
    "Phone",
    "PhoneOptions",
    "PhoneValue",
    "TaxId",
    "TaxIdRules",
    "TaxIdValue",
    "optional",
    "masking",
    "Masked",
]


class PIIAnnotation:
    """Base of the piiguard annotations: validate with a piiguard validator, turn its
    errors into ``PydanticCustomError`` (type ``<prefix>_<rule>``, no input in the
    message), and describe the value in JSON schema."""

    kind: ClassVar[str] = ""                 # masking policy key, e.g. 'national_id'
    error_prefix: ClassVar[str] = ""         # error type prefix, e.g. 'tckn'
    json_format: ClassVar[str] = ""
    json_pattern: ClassVar[str | None] = None
    json_example: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def check(self, value: str) -> str:
        """Validate ``value`` and return its canonical form (raises piiguard errors)."""
        raise NotImplementedError

    def serializer(self, label: str | None = None) -> core_schema.SerSchema | None:
        """Role-aware masking on output (:mod:`piiguard.masking.serialization`);
        ``label`` is ``Model.field``, the column name policy rules can use."""
        from piiguard.masking.serialization import serializer_schema

        return serializer_schema(self.kind, label)

    def _validate(self, value: str) -> str:
        try:
            return self.check(value)
        except InvalidInputError as err:
            raise PydanticCustomError(
                f"{self.error_prefix}_{err.rule}", str(err), {"rule": err.rule}) from None

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler
                                     ) -> core_schema.CoreSchema:
        from piiguard.masking.serialization import field_label, keep_masked

        inner = handler(source)
        # A later piiguard annotation replaces an earlier one: Annotated[Phone, PhoneOptions(...)].
        while (inner.get("type") in ("function-after", "function-wrap")
               and "piiguard_kind" in (inner.get("metadata") or {})):
            inner = inner["schema"]  # type: ignore[typeddict-item]
        meta = {"piiguard_kind": self.kind}
        # keep_masked: a MaskedStr (a masked view, e.g. from an ORM attribute read under a
        # role) passes validation as it is, so response models can be built from it.
        return keep_masked(core_schema.no_info_after_validator_function(
            self._validate, inner, metadata=meta,
            serialization=self.serializer(field_label(handler))), meta)

    def __get_pydantic_json_schema__(self, schema: core_schema.CoreSchema,
                                     handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        js = handler(schema)
        js = handler.resolve_ref_schema(js)
        js.update(format=self.json_format, examples=[self.json_example])
        if self.description and "description" not in js:
            js["description"] = self.description
        # json_pattern describes the canonical form; serialisation output may also be a
        # masked view ('1********46', '[REDACTED]', null) by role, so no pattern there.
        return js

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


@dataclass(frozen=True, repr=False)
class NationalIdRules(PIIAnnotation):
    """T.C. Kimlik No / YKN (:mod:`piiguard.validators.tckn`)."""

    kind: ClassVar[str] = "national_id"
    error_prefix: ClassVar[str] = "tckn"
    json_format: ClassVar[str] = "tckn"
    json_pattern: ClassVar[str] = "^[1-9][0-9]{10}$"
    json_example: ClassVar[str] = "10000000146"
    description: ClassVar[str] = "T.C. Kimlik No (11 digits with check digits)"

    def check(self, value: str) -> str:
        return _tckn.validate(value)


@dataclass(frozen=True, repr=False)
class TaxIdRules(PIIAnnotation):
    """VKN, the Turkish tax number (:mod:`piiguard.validators.vkn`)."""

    kind: ClassVar[str] = "tax_id"
    error_prefix: ClassVar[str] = "vkn"
    json_format: ClassVar[str] = "vkn"
    json_pattern: ClassVar[str] = "^[0-9]{10}$"
    json_example: ClassVar[str] = "1234567890"
    description: ClassVar[str] = "Vergi Kimlik Numarası (10 digits with a check digit)"

    def check(self, value: str) -> str:
        return _vkn.validate(value)


@dataclass(frozen=True, repr=False)
class PhoneOptions(PIIAnnotation):
    """Phone numbers to E.164 (:mod:`piiguard.validators.phone`), with options.

    >>> PhoneOptions(region='XX')
    Traceback (most recent call last):
        ...
    piiguard.errors.ConfigurationError: unknown phone region 'XX'
    """

    region: str | None = "TR"
    only_region: str | None = None
    mobile_only: bool = False

    kind: ClassVar[str] = "phone"
    error_prefix: ClassVar[str] = "phone"
    json_format: ClassVar[str] = "phone"
    json_pattern: ClassVar[str] = r"^\+[1-9][0-9]{6,14}$"
    json_example: ClassVar[str] = "+905321234567"
    description: ClassVar[str] = "Phone number, stored in E.164"

    def __post_init__(self) -> None:
        _phone.check_region(self.region)
        _phone.check_region(self.only_region)
        if not isinstance(self.mobile_only, bool):
            raise ConfigurationError("mobile_only must be a bool")

    def check(self, value: str) -> str:
        return _phone.validate(value, self.region, only_region=self.only_region,
                               mobile_only=self.mobile_only)

    def __repr__(self) -> str:
        return (f"PhoneOptions(region={self.region!r}, only_region={self.only_region!r}, "
                f"mobile_only={self.mobile_only!r})")


@dataclass(frozen=True, repr=False)
class AddressRules(PIIAnnotation):
    """Turkish postal address to canonical text (:mod:`piiguard.validators.address`)."""

    kind: ClassVar[str] = "address"
    error_prefix: ClassVar[str] = "address"
    json_format: ClassVar[str] = "tr-address"
    json_example: ClassVar[str] = "BAĞDAT CAD. NO:1, 34728 KADIKÖY/İSTANBUL"
    description: ClassVar[str] = "Turkish postal address ending with [postal code] [district/]province"

    def check(self, value: str) -> str:
        return _address.validate(value)


@dataclass(frozen=True, repr=False)
class EmailOptions(PIIAnnotation):
    """E-mail address (:mod:`piiguard.validators.email`), domain lower-cased."""

    lowercase_local: bool = False

    kind: ClassVar[str] = "email"
    error_prefix: ClassVar[str] = "email"
    json_format: ClassVar[str] = "email"
    json_example: ClassVar[str] = "ali.veli@example.com"
    description: ClassVar[str] = "E-mail address"

    def check(self, value: str) -> str:
        return _email.validate(value, lowercase_local=self.lowercase_local)

    def __repr__(self) -> str:
        return f"EmailOptions(lowercase_local={self.lowercase_local!r})"


# Value types (no field metadata: usable inside unions, lists, dict values …).
NationalIdValue = Annotated[str, NationalIdRules()]
TaxIdValue = Annotated[str, TaxIdRules()]
PhoneValue = Annotated[str, PhoneOptions()]
AddressValue = Annotated[str, AddressRules()]
EmailValue = Annotated[str, EmailOptions()]

# Field types: the value types plus Field(repr=False), so repr(model) hides them.
NationalId = Annotated[str, NationalIdRules(), Field(repr=False)]
TaxId = Annotated[str, TaxIdRules(), Field(repr=False)]
Phone = Annotated[str, PhoneOptions(), Field(repr=False)]
MobilePhone = Annotated[str, PhoneOptions(only_region="TR", mobile_only=True), Field(repr=False)]
Address = Annotated[str, AddressRules(), Field(repr=False)]
Email = Annotated[str, EmailOptions(), Field(repr=False)]


def optional(tp: Any) -> Any:
    """``tp | None`` for a piiguard field type, keeping it out of ``repr``.

    >>> from pydantic import BaseModel
    >>> class M(BaseModel):
    ...     national_id: optional(NationalId) = None
    >>> M(national_id='10000000146'), M().national_id
    (M(), None)
    """
    if get_origin(tp) is not Annotated:
        raise ConfigurationError("optional() takes a piiguard Annotated type")
    base, *meta = get_args(tp)
    kept = [m for m in meta if not isinstance(m, FieldInfo)]
    value_type = Annotated[(base, *kept)] if kept else base  # type: ignore[valid-type]
    return Annotated[value_type | None, Field(repr=False)]


# Encrypted fields (piiguard/pydantic_encrypted.py): hold only envelopes; reveal() decrypts.
from piiguard.pydantic_encrypted import Encrypted, encrypted, reveal  # noqa: E402

__all__ += ["Encrypted", "encrypted", "reveal"]
