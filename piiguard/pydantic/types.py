"""The piiguard pydantic types: annotations that validate one PII kind each.

:class:`PIIAnnotation` takes everything it says about a kind (validator, error-type
prefix, JSON schema format and example, description) from the registry
:mod:`piiguard.kinds`; the classes below only name their kind and, for
:class:`PhoneOptions` and :class:`EmailOptions`, carry options. The ``Annotated`` types
(``NationalId``, ``PhoneValue`` …) and :func:`optional` are built from them; see
:mod:`piiguard.pydantic` for how to use them.

>>> from pydantic import TypeAdapter
>>> TypeAdapter(NationalIdValue).validate_python("100 000 001 46")
'10000000146'
>>> NationalIdRules.facts.error_prefix, PhoneOptions.facts.json_format
('tckn', 'phone')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, get_args, get_origin

from pydantic import Field, GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.fields import FieldInfo
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

from piiguard.errors import ConfigurationError, InvalidInputError
from piiguard.field import unencodable
from piiguard.kinds import Kind
from piiguard.kinds import kind as registered_kind
from piiguard.pydantic.serialization import (
    KIND_KEY,
    field_label,
    keep_masked,
    serializer_schema,
)
from piiguard.validators import phone as _phone

__all__ = [
    "Address",
    "AddressRules",
    "AddressValue",
    "Email",
    "EmailOptions",
    "EmailValue",
    "LenientAddress",
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
]


class PIIAnnotation:
    """Base of the piiguard annotations: validate with the kind's validator, turn its
    errors into ``PydanticCustomError`` (type ``<prefix>_<rule>``, no input in the
    message), and describe the value in JSON schema.

    A subclass names its ``kind`` (the :mod:`piiguard.kinds` name, which is also the
    masking policy key); ``facts``, the registry entry, is looked up once when the
    class is made. Subclasses with options override :meth:`check`.
    """

    kind: ClassVar[str] = ""      # the registry name and masking policy key, 'national_id'
    facts: ClassVar[Kind]         # kind(cls.kind), set by __init_subclass__
    # facts.validate, resolved once (it runs for every value validated).
    validator: ClassVar[staticmethod[..., str]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.kind:
            cls.facts = registered_kind(cls.kind)
            cls.validator = staticmethod(cls.facts.validate)

    def check(self, value: str) -> str:
        """Validate ``value`` and return its canonical form (raises piiguard errors)."""
        return self.validator(value)

    def serializer(self, label: str | None = None) -> core_schema.SerSchema | None:
        """Role-aware masking on output (:mod:`piiguard.pydantic.serialization`);
        ``label`` is ``Model.field``, the column name policy rules can use."""
        return serializer_schema(self.kind, label)

    def _validate(self, value: str) -> str:
        try:
            out = self.check(value)
            if not out.isascii():
                out.encode("utf-8")   # text with no UTF-8 form could not be stored
        except InvalidInputError as err:
            rule, message = err.rule, str(err)
        except UnicodeEncodeError:
            refused = unencodable(None, "validate")
            rule, message = refused.rule, str(refused)
        else:
            return out
        del value     # (and no chained error: pydantic keeps none, the frame goes too)
        raise PydanticCustomError(f"{self.facts.error_prefix or self.kind}_{rule}",
                                  message, {"rule": rule})

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler
                                     ) -> core_schema.CoreSchema:
        inner = handler(source)
        # A later piiguard annotation replaces an earlier one: Annotated[Phone, PhoneOptions(...)].
        while (inner.get("type") in ("function-after", "function-wrap")
               and KIND_KEY in (inner.get("metadata") or {})):
            inner = inner["schema"]
        meta = {KIND_KEY: self.kind}
        # keep_masked: a MaskedStr (a masked view, e.g. from an ORM attribute read under a
        # role) passes validation as it is, so response models can be built from it.
        return keep_masked(core_schema.no_info_after_validator_function(
            self._validate, inner, metadata=meta,
            serialization=self.serializer(field_label(handler))), meta)

    def __get_pydantic_json_schema__(self, schema: core_schema.CoreSchema,
                                     handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        facts = self.facts
        js = handler(schema)
        js = handler.resolve_ref_schema(js)
        js.update(format=facts.json_format, examples=[facts.json_example])
        if facts.description and "description" not in js:
            js["description"] = facts.description
        # facts.json_pattern describes the canonical form; serialisation output may also
        # be a masked view ('1********46', '[REDACTED]', null) by role, so no pattern there.
        return js

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


@dataclass(frozen=True, repr=False)
class NationalIdRules(PIIAnnotation):
    """T.C. Kimlik No / YKN (:mod:`piiguard.validators.tckn`)."""

    kind: ClassVar[str] = "national_id"


@dataclass(frozen=True, repr=False)
class TaxIdRules(PIIAnnotation):
    """VKN, the Turkish tax number (:mod:`piiguard.validators.vkn`)."""

    kind: ClassVar[str] = "tax_id"


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

    def __post_init__(self) -> None:
        _phone.check_region(self.region)
        _phone.check_region(self.only_region)
        if not isinstance(self.mobile_only, bool):
            raise ConfigurationError("mobile_only must be a bool")

    def check(self, value: str) -> str:
        return self.validator(value, self.region, only_region=self.only_region,
                              mobile_only=self.mobile_only)

    def __repr__(self) -> str:
        return (f"PhoneOptions(region={self.region!r}, only_region={self.only_region!r}, "
                f"mobile_only={self.mobile_only!r})")


@dataclass(frozen=True, repr=False)
class AddressRules(PIIAnnotation):
    """Turkish postal address, kept as written (NFC, whitespace collapsed) once it
    passes the rules of ``level`` (:func:`piiguard.validators.address.check`):
    ``"strict"`` (the default, :data:`Address`) or ``"lenient"``
    (:data:`LenientAddress`: a recognisable province is enough).

    >>> from pydantic import TypeAdapter
    >>> TypeAdapter(LenientAddress).validate_python('Moda Cad. No:5, 06710 Kadıköy/İstanbul')
    'Moda Cad. No:5, 06710 Kadıköy/İstanbul'
    """

    level: str = "strict"

    kind: ClassVar[str] = "address"

    def __post_init__(self) -> None:
        if self.level not in ("strict", "lenient"):
            raise ConfigurationError(f"unknown address validation level {self.level!r}; "
                                     "expected 'strict' or 'lenient'")

    def check(self, value: str) -> str:
        if self.level == "strict":
            return self.validator(value)
        return self.validator(value, self.level)

    def __repr__(self) -> str:
        return f"AddressRules(level={self.level!r})"


@dataclass(frozen=True, repr=False)
class EmailOptions(PIIAnnotation):
    """E-mail address (:mod:`piiguard.validators.email`), domain lower-cased."""

    lowercase_local: bool = False

    kind: ClassVar[str] = "email"

    def check(self, value: str) -> str:
        return self.validator(value, lowercase_local=self.lowercase_local)

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
LenientAddress = Annotated[str, AddressRules(level="lenient"), Field(repr=False)]
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
    value_type = Annotated[(base, *kept)] if kept else base
    return Annotated[value_type | None, Field(repr=False)]
