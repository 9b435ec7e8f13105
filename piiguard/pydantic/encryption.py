"""Encrypted pydantic fields: a model that holds only envelopes, for JSON that travels.

pydantic models go where no SQL column exists (JSON documents, queues, files, payloads
between services). A field declared with :func:`encrypted` (or the annotation
:class:`Encrypted`) validates and canonicalises the plaintext on input with the inner
type's rules, encrypts it, and from then on holds only the text envelope
(``pg1:...``, see ``docs/format.md``)::

    from pydantic import BaseModel, ConfigDict
    from piiguard.pydantic import NationalId, Phone, encrypted, reveal

    class Customer(BaseModel):
        model_config = ConfigDict(hide_input_in_errors=True, validate_assignment=True)
        national_id: encrypted(NationalId, guard)
        phone: Annotated[Phone, Encrypted(guard)]    # the same thing, spelled out
        note: encrypted(str, guard)                  # free text, kind 'text'

(There is no ``guard.encrypted(...)`` method: the Guard sits below the pydantic layer
and does not import it; :func:`encrypted` takes the Guard as an argument instead.)

**What the field does.**

- *Plaintext in* (any input that does not start with ``pg1:``): the inner type validates
  and canonicalises it (its error types, e.g. ``tckn_checksum``, come out unchanged),
  then the field encrypts the canonical form with
  ``guard.field(Model, field, domain="pydantic")`` and keeps the text envelope. A masked
  view (:class:`~piiguard.masking.view.MaskedStr`) is refused (``piiguard_masked``).
- *Envelope in* (``model_validate_json`` of a dumped model, ``model_copy``, a message
  from a queue): kept byte for byte, never re-encrypted, once it is proven to belong to
  this field (below). Anything starting with ``pg1:`` is treated as an envelope, never
  as plaintext, so a malformed one is refused rather than encrypted.
- *Out*: ``model_dump()`` / ``model_dump_json()`` emit the envelope (whatever the masking
  context); a value that is not an envelope (assigned without validation, or put in with
  ``model_construct``) makes serialisation fail rather than leak.
  ``repr(model)`` hides the field (``Field(repr=False)``).
- *Plaintext out* only through :func:`reveal`, which applies the Guard's masking policy
  for the role in effect (:func:`~piiguard.masking.view.render`; kind from the inner
  type, column ``Model.field``); with no policy it reveals.

**Binding to the model and field.** Each envelope's associated data is
``FieldContext("pydantic", Model, field)``, where ``Model`` is the model's core-config
title: its class name, unless ``model_config`` sets ``title`` (set it to keep reading
old envelopes after renaming the class). An envelope copied into another field, or into
a field of the same name in another model, or made by another Guard, does not
authenticate. ``Encrypted(guard, name="Customer.national_id")`` fixes the context
explicitly (needed for a ``TypeAdapter``, which has no model or field; give each field
its own name). The DEK scope is the model title unless ``scope=`` says otherwise.

**Why validation authenticates (and what "without decrypting" means here).** Only an
authenticated check can refuse a tampered envelope or one made for another field at the
door: the field context is bound into the AES-GCM tag, and nothing in the envelope's
clear bytes names the field (the format has no room for it, and an unkeyed label could
be forged). So an incoming envelope is checked with the field's cipher: the GCM tag is
verified against this field's context, which runs the AEAD over the ciphertext; the
plaintext that the AEAD library returns is dropped at once, never kept, returned,
logged or re-encrypted. The cost is one AES-GCM decryption with a cached DEK (about a
microsecond; the first envelope under a DEK costs one key-table read and one KMS call).
The alternative, a per-field HMAC tag, would need a second key and a second stored
value for the same guarantee. A service that only relays documents without holding keys
should declare the field as a plain ``str`` instead.

**Keys.** Envelopes made here usually live outside the database (documents, queues),
where the key-table tooling cannot see them: rotating the DEK of a model's scope is
safe (old envelopes stay readable under the decrypt-only key), but retiring or
destroying that key makes every document still holding its envelopes unreadable, which
is what crypto-shredding wants and nothing else does. Keep these scopes apart from SQL
table scopes (the default, the model title, does so unless a table has the same name).

Errors (pydantic error types; messages name the field and key id, never a value):
``piiguard_envelope`` (malformed, tampered with, or made for another field, model or
key: ``ctx['rule']`` is ``'format'`` or ``'authentication'``), ``piiguard_masked``; the
inner type's own types for invalid plaintext. Operational failures are not validation
errors and propagate as they are: :class:`~piiguard.errors.KMSUnavailableError`, an
unbound Guard (:class:`~piiguard.errors.ConfigurationError`), a crypto-shredded key
(:class:`~piiguard.errors.KeyDestroyedError`). As for every PII model, set
``hide_input_in_errors=True``: pydantic echoes the input (here: the plaintext) in a
``ValidationError`` otherwise; and set ``validate_assignment=True`` so that
``model.field = value`` encrypts.

>>> from pydantic import BaseModel, ConfigDict, ValidationError
>>> from sqlalchemy import create_engine
>>> from piiguard import Guard, LocalKMS
>>> from piiguard.pydantic import NationalId
>>> guard = Guard(kms=LocalKMS.generate()).bind(create_engine("sqlite://"))
>>> class Customer(BaseModel):
...     model_config = ConfigDict(hide_input_in_errors=True)
...     national_id: encrypted(NationalId, guard)
>>> c = Customer(national_id="100 000 001 46")
>>> c
Customer()
>>> c.national_id.startswith("pg1:"), "10000000146" in c.model_dump_json()
(True, False)
>>> back = Customer.model_validate_json(c.model_dump_json())
>>> back.national_id == c.national_id, reveal(back, "national_id")
(True, '10000000146')
>>> class Lead(BaseModel):
...     model_config = ConfigDict(hide_input_in_errors=True)
...     national_id: encrypted(NationalId, guard)
>>> try:
...     Lead(national_id=c.national_id)
... except ValidationError as exc:
...     print(exc.errors()[0]["type"], exc.errors()[0]["msg"])
piiguard_envelope envelope does not authenticate for Lead.national_id (tampered with, or
made for another field, model or key) key_id=2
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Annotated, Any, NamedTuple, get_args, get_origin

from pydantic import Field, GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.fields import FieldInfo
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

from piiguard.crypto.envelope import TEXT_PREFIX, decode_text, key_id_of
from piiguard.errors import (
    AlreadyEncryptedError,
    ConfigurationError,
    DecryptionError,
    EnvelopeFormatError,
)
from piiguard.masking.view import MaskedStr, render
from piiguard.pydantic.serialization import field_label, kind_in
from piiguard.pydantic.types import PIIAnnotation

if TYPE_CHECKING:
    from piiguard.field import FieldCipher
    from piiguard.guard import Guard

__all__ = ["DOMAIN", "ENVELOPE_PATTERN", "Encrypted", "encrypted", "reveal"]

#: First part of every encrypted field's context (SQL columns use ``"sql"``).
DOMAIN = "pydantic"
#: What an encrypted field holds and emits (the JSON schema's ``pattern``).
ENVELOPE_PATTERN = r"^pg1:[A-Za-z0-9_-]+$"

_AUTH_MSG = ("envelope does not authenticate for {column} (tampered with, or made for "
             "another field, model or key) key_id={key_id}")
_FORMAT_MSG = "not a well-formed piiguard envelope for {column}"
_STR_BASES = frozenset(("str", "function-plain", "definition-ref", "definitions",
                        "json-or-python", "lax-or-strict", "union", "any"))


def _base_type(schema: Any) -> str | None:
    """The core type under function validators and ``nullable`` (``'str'`` for str)."""
    while isinstance(schema, dict):
        t = schema.get("type")
        if t in ("function-after", "function-before", "function-wrap", "nullable",
                 "default"):
            schema = schema.get("schema")
            continue
        return t
    return None


def _check_guard(guard: Any) -> Guard:
    # Duck-typed, checked when the annotation is built: what Encrypted uses of a Guard.
    if not (callable(getattr(guard, "field", None)) and hasattr(guard, "policy")
            and hasattr(guard, "audit")):
        raise ConfigurationError("Encrypted() needs a piiguard Guard")
    return guard


class Encrypted:
    """Annotation that makes a ``str`` field (plain, or a piiguard type such as
    ``NationalId``) hold only its envelope: ``Annotated[NationalId, Encrypted(guard)]``.

    Put it last in ``Annotated``, after the type it encrypts. Options: ``name``
    (``"Model.field"``, the context to bind to instead of the model title and field
    name), ``scope`` (DEK scope, default the model title), ``padded`` (pad plaintext to
    a size bucket so envelope lengths hide value lengths).

    >>> Encrypted("not a guard")
    Traceback (most recent call last):
        ...
    piiguard.errors.ConfigurationError: Encrypted() needs a piiguard Guard
    """

    __slots__ = ("_ciphers", "_where", "guard", "name", "padded", "scope")

    def __init__(self, guard: Guard, *, name: str | None = None, scope: str | None = None,
                 padded: bool = False) -> None:
        self.guard = _check_guard(guard)
        self._where: tuple[str, str] | None = None
        self._ciphers: dict[tuple[str | None, str | None], FieldCipher] = {}
        if name is not None:
            table, dot, column = name.rpartition(".") if isinstance(name, str) else ("", "", "")
            if not (dot and table and column):
                raise ConfigurationError("Encrypted(name=...) must be 'Model.field'")
            self._where = (table, column)
        if scope is not None and (not isinstance(scope, str) or not scope):
            raise ConfigurationError("Encrypted(scope=...) must be a non-empty string")
        if not isinstance(padded, bool):
            raise ConfigurationError("Encrypted(padded=...) must be a bool")
        self.name = name
        self.scope = scope
        self.padded = padded

    def __repr__(self) -> str:
        return f"Encrypted(name={self.name!r}, scope={self.scope!r}, padded={self.padded})"

    # -- where a value lives -----------------------------------------------------------------
    def where(self, model_title: str | None, field_name: str | None) -> tuple[str, str]:
        """``(Model, field)``: the context this annotation binds a value to."""
        if self._where is not None:
            return self._where
        if not model_title or not field_name:
            raise ConfigurationError("an encrypted field needs a model and a field name: "
                                     "use it on a model field, or give "
                                     "Encrypted(name='Model.field')")
        return model_title, field_name

    def cipher(self, model_title: str | None, field_name: str | None) -> FieldCipher:
        """The :class:`~piiguard.field.FieldCipher` for ``Model.field`` (cached by the
        Guard)."""
        k = (model_title, field_name)
        cipher = self._ciphers.get(k)
        if cipher is None:
            table, column = self.where(model_title, field_name)
            cipher = self.guard.field(table, column, scope=self.scope, padded=self.padded,
                                      domain=DOMAIN)
            self._ciphers[k] = cipher
        return cipher

    # -- pydantic hooks --------------------------------------------------------------------
    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler
                                     ) -> core_schema.CoreSchema:
        inner = handler(source)
        base = _base_type(inner)
        if base not in _STR_BASES:
            raise ConfigurationError(f"Encrypted() encrypts str values, not {base!r}: "
                                     "use it on str or a piiguard string type")
        if self._where is None and getattr(handler, "field_name", None) is None:
            raise ConfigurationError("Encrypted() outside a model field needs "
                                     "name='Model.field' (e.g. in a TypeAdapter)")
        kind = kind_in(inner) or "text"
        # For error messages only (the binding uses the title pydantic gives validators).
        label = self.name or field_label(handler)

        def serialize(value: Any) -> Any:
            if value is None or (type(value) is str and value.startswith(TEXT_PREFIX)):
                return value
            # Set without validation (assignment without validate_assignment,
            # model_construct, model_copy(update=...)): refuse rather than emit what may
            # be plaintext.
            raise EnvelopeFormatError("refusing to serialise an encrypted field that holds "
                                      "no envelope (set without validation? use "
                                      "validate_assignment=True)", column=label,
                                      operation="serialize")

        return core_schema.with_info_wrap_validator_function(
            self._validate, inner,
            metadata={"piiguard_encrypted": kind},
            serialization=core_schema.plain_serializer_function_ser_schema(
                serialize, when_used="always", return_schema=core_schema.str_schema()))

    def __get_pydantic_json_schema__(self, schema: core_schema.CoreSchema,
                                     handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        envelope: JsonSchemaValue = {"type": "string", "pattern": ENVELOPE_PATTERN,
                    "format": "piiguard-envelope",
                    "description": "piiguard text envelope (AES-256-GCM, bound to this "
                                   "model and field)"}
        if handler.mode == "serialization":
            return envelope
        # Input may be the plaintext (validated by the inner type) or an envelope.
        return {"anyOf": [handler(schema), envelope]}

    def _validate(self, value: Any, handler: core_schema.ValidatorFunctionWrapHandler,
                  info: core_schema.ValidationInfo) -> Any:
        cipher = self.cipher((info.config or {}).get("title"), info.field_name)
        if isinstance(value, str):
            if isinstance(value, MaskedStr):
                raise PydanticCustomError(
                    "piiguard_masked", "a masked view cannot be encrypted into {column}",
                    {"column": cipher.label})
            if value.startswith(TEXT_PREFIX):
                return self._check_envelope(cipher, str(value))
        canonical = handler(value)
        if canonical is None:
            return None
        if not isinstance(canonical, str):
            raise ConfigurationError(f"Encrypted() encrypts str values; the type of "
                                     f"{cipher.label} produced {type(canonical).__name__}")
        if isinstance(canonical, MaskedStr):
            raise PydanticCustomError(
                "piiguard_masked", "a masked view cannot be encrypted into {column}",
                {"column": cipher.label})
        if canonical.startswith(TEXT_PREFIX):
            raise PydanticCustomError(
                "piiguard_envelope", "refusing to encrypt an envelope again for {column}",
                {"column": cipher.label, "rule": "already_encrypted"})
        try:
            return cipher.encrypt_text(str(canonical))
        except AlreadyEncryptedError:
            raise PydanticCustomError(
                "piiguard_envelope", "refusing to encrypt an envelope again for {column}",
                {"column": cipher.label, "rule": "already_encrypted"}) from None

    @staticmethod
    def _check_envelope(cipher: FieldCipher, text: str) -> str:
        """``text`` if it authenticates for ``cipher``'s field; the plaintext the AEAD
        produces on the way is discarded (see the module docstring)."""
        try:
            blob = decode_text(text)
            cipher.decrypt(blob)  # verifies the tag under this field's context
        except EnvelopeFormatError:
            raise PydanticCustomError("piiguard_envelope", _FORMAT_MSG,
                                      {"column": cipher.label, "rule": "format"}) from None
        except DecryptionError as exc:
            raise PydanticCustomError(
                "piiguard_envelope", _AUTH_MSG,
                {"column": cipher.label, "key_id": exc.key_id, "rule": "authentication"}
            ) from None
        return text


def encrypted(tp: Any, guard: Guard, *, name: str | None = None, scope: str | None = None,
              padded: bool = False) -> Any:
    """``tp`` as an encrypted field type: ``national_id: encrypted(NationalId, guard)``.

    ``tp`` is ``str`` or a piiguard string type (``NationalId``, ``Phone``,
    ``Annotated[Phone, PhoneOptions(mobile_only=True)]`` …). The result is
    ``Annotated[tp, Encrypted(guard, ...), Field(repr=False)]``. For an optional field
    use ``piiguard.pydantic.optional(encrypted(...)) = None``.
    """
    return Annotated[tp, Encrypted(guard, name=name, scope=scope, padded=padded),
                     Field(repr=False)]


# -- reading a value back ----------------------------------------------------------------------
def _title_of(cls: type) -> str:
    """The model's core-config title, as pydantic gives it to validators."""
    config = getattr(cls, "model_config", None) or getattr(cls, "__pydantic_config__",
                                                           None) or {}
    return config.get("title") or cls.__name__


def _find_encrypted(metadata: list[Any], annotation: Any) -> tuple[Encrypted, str] | None:
    """The field's :class:`Encrypted` annotation and the kind of the type it wraps."""

    def scan(items: list[Any]) -> tuple[Encrypted, str] | None:
        kind = "text"
        found = None
        for m in items:
            if isinstance(m, PIIAnnotation):
                kind = m.kind
            elif isinstance(m, Encrypted):
                found = (m, kind)
        return found

    hit = scan(metadata)
    if hit is not None:
        return hit
    stack = [annotation]
    while stack:  # e.g. optional(encrypted(...)): Annotated[X | None, Field(repr=False)]
        tp = stack.pop()
        if get_origin(tp) is Annotated:
            args = get_args(tp)
            hit = scan(_flatten(args))
            if hit is not None:
                return hit
            stack.append(args[0])
        else:
            stack.extend(a for a in get_args(tp) if a is not type(None))
    return None


def _flatten(args: tuple[Any, ...]) -> list[Any]:
    """Metadata of ``Annotated[base, *meta]`` including that of nested ``Annotated``."""
    base, *meta = args
    inner = _flatten(get_args(base)) if get_origin(base) is Annotated else []
    return inner + [m for m in meta if not isinstance(m, FieldInfo)]


class _EncryptedField(NamedTuple):
    """What :func:`reveal` needs of one encrypted field of a model class."""

    annotation: Encrypted
    kind: str
    cipher: FieldCipher


def _lookup(cls: type, field: str) -> _EncryptedField:
    fields = getattr(cls, "__pydantic_fields__", None) or {}
    info = fields.get(field)
    if info is None:
        raise ConfigurationError(f"{cls.__name__} has no field {field!r}")
    found = _find_encrypted(list(info.metadata), info.annotation)
    if found is None:
        raise ConfigurationError(f"{cls.__name__}.{field} is not an encrypted field")
    enc, kind = found
    return _EncryptedField(enc, kind, enc.cipher(_title_of(cls), field))


#: model class -> {field: _EncryptedField}; weak, so that model classes made on the fly
#: can be collected.
_FIELDS: weakref.WeakKeyDictionary[type, dict[str, _EncryptedField]] = \
    weakref.WeakKeyDictionary()


def reveal(model: Any, field: str, *, row_key: Any = None) -> str | None:
    """What the role in effect may see of an encrypted field of ``model``.

    Decrypts under the field's Guard and applies its masking policy
    (:func:`~piiguard.masking.view.render`): no policy → the plaintext; ``reveal`` →
    the plaintext and one audited reveal (``column`` = ``Model.field``, ``row_key`` if
    given); other masks → a :class:`~piiguard.masking.view.MaskedStr` (masks that need
    no plaintext decrypt nothing). ``None`` stays ``None``. A value that does not
    authenticate raises :class:`~piiguard.errors.DecryptionError`.

    >>> reveal(object(), "national_id")
    Traceback (most recent call last):
        ...
    piiguard.errors.ConfigurationError: object has no field 'national_id'
    """
    cls = type(model)
    if not isinstance(field, str):
        raise ConfigurationError("reveal() takes a field name")
    try:
        per_cls = _FIELDS.get(cls)
    except TypeError:  # not weak-referenceable: not a model class
        per_cls = None
    found = per_cls.get(field) if per_cls is not None else None
    if found is None:
        found = _lookup(cls, field)
        if per_cls is None:
            per_cls = _FIELDS.setdefault(cls, {})
        per_cls[field] = found
    cipher = found.cipher
    value = getattr(model, field)
    if value is None:
        return None
    if type(value) is not str:
        raise EnvelopeFormatError("not a piiguard text envelope", column=cipher.label,
                                  operation="reveal")
    try:
        blob = decode_text(value)
        key_id = key_id_of(blob)
    except EnvelopeFormatError as exc:
        raise EnvelopeFormatError(exc.reason, column=cipher.label,
                                  operation="reveal") from None
    return render(found.annotation.guard, kind=found.kind, column=cipher.label,
                  plaintext_fn=lambda: cipher.decrypt(blob).decode("utf-8"),
                  row_key=row_key, key_id=key_id)
