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

An ``Address`` is kept as the user wrote it (NFC, whitespace collapsed) once it passes
the strict rules; :data:`LenientAddress` (``AddressRules(level="lenient")``) accepts any
address with a recognisable province (:func:`piiguard.validators.address.check` tells
what it could not check).

Options are annotations: ``Annotated[Phone, PhoneOptions(mobile_only=True)]`` (a later
piiguard annotation replaces the earlier one of the same type, so options are not
applied twice); :data:`MobilePhone` is Turkish mobiles only. Options are checked when
the annotation is built, not at first use.

JSON schema works (FastAPI): validation mode describes what is accepted (``format``,
``examples``); serialization mode has no ``pattern``: output is the canonical form or,
under a masking policy, a masked view (or ``null`` for the ``null`` mask).

Masking by role: every annotation has a ``kind`` (``'national_id'``, ``'tax_id'``,
``'phone'``, ``'address'``, ``'email'``: its entry in :mod:`piiguard.kinds`), recorded
as ``metadata['piiguard_kind']`` in its core schema; :meth:`PIIAnnotation.serializer`
returns the role-aware serializer of :mod:`piiguard.pydantic.serialization`:
``model_dump``/``model_dump_json``/FastAPI responses show what the role in effect may
see under the policy of the Guard set with ``masking(guard)`` (or
``context={"piiguard": guard}``, or ``Masked(guard)``); with no Guard in effect values
are serialised as they are.

The package: :mod:`~piiguard.pydantic.types` (the annotations and ``Annotated``
types), :mod:`~piiguard.pydantic.serialization` (role-aware serialisation: ``masking``,
``Masked``), :mod:`~piiguard.pydantic.encryption` (``Encrypted``, ``encrypted``,
``reveal``: fields that hold only envelopes). Every name is importable from here.

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

from piiguard.pydantic.encryption import Encrypted, encrypted, reveal
from piiguard.pydantic.serialization import Masked, masking
from piiguard.pydantic.types import (
    Address,
    AddressRules,
    AddressValue,
    Email,
    EmailOptions,
    EmailValue,
    LenientAddress,
    MobilePhone,
    NationalId,
    NationalIdRules,
    NationalIdValue,
    PIIAnnotation,
    Phone,
    PhoneOptions,
    PhoneValue,
    TaxId,
    TaxIdRules,
    TaxIdValue,
    optional,
)

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
    "masking",
    "Masked",
    "Encrypted",
    "encrypted",
    "reveal",
]
