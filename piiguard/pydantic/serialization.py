"""Role-aware serialisation for the pydantic types: ``model_dump``, ``model_dump_json``
and FastAPI responses show what the role in effect may see.

(It lives here, in the pydantic layer, because it is pydantic's: :mod:`piiguard.masking`
below it knows nothing of pydantic and only provides :func:`~piiguard.masking.view.render`.)

The pydantic types (:mod:`piiguard.pydantic`) are plain annotations: they do not hold a
Guard. When a model is serialised, each piiguard field looks for the Guard whose policy
applies, in this order:

1. the serialisation context: ``model.model_dump(context={"piiguard": guard})``
   (``{"piiguard": None}`` serialises the values as they are, for internal use);
2. a Guard bound to the field type: ``Annotated[NationalId, Masked(guard)]``;
3. the Guard in effect: ``with masking(guard): ...`` (a context variable, so it is
   per thread and per asyncio task; a FastAPI dependency sets it for a request).

With no Guard found, or a Guard without a policy, values are serialised as they are
(like a Guard in encryption-only mode). Otherwise the value goes through
:func:`~piiguard.masking.view.render` with the field's kind and ``Model.field`` as its
column name (so a policy can have ``"Customer.national_id"`` rules), under the role in
effect *at serialisation time*; reveals are audited like reads from the database.

A value read from an encrypted column while a policy is set, and held as it was read
(a :class:`~piiguard.sqlalchemy.Sealed` in a SQLModel table model's fields, which
pydantic reads without going through the ORM attribute) is serialised as its view for
the role in effect, under its own column's Guard and policy, whatever the context says:
a stored value is never dumped as it is.

A masked value (:class:`~piiguard.masking.view.MaskedStr`, e.g. read from a masked ORM
attribute) is kept as it is on validation and on serialisation: a response model can be
built from masked data, and nothing is masked twice. A revealed value whose reveal is
already on record (:class:`~piiguard.masking.view.RevealedStr`, what an encrypted ORM
attribute gives a ``reveal`` role, recorded there with its key id and row key) keeps its
marker through validation and is serialised without a second audit event: one reveal,
one event.

>>> from pydantic import BaseModel
>>> from sqlalchemy import create_engine
>>> from piiguard import Guard, LocalKMS, MaskingPolicy, acting_as
>>> from piiguard.pydantic import NationalId
>>> class Customer(BaseModel):
...     national_id: NationalId
>>> guard = Guard(kms=LocalKMS.generate()).bind(create_engine("sqlite://"))
>>> guard.policy = MaskingPolicy.from_dict({"national_id": {"support": "partial:1:2"}})
>>> c = Customer(national_id="100 000 001 46")
>>> c.model_dump()
{'national_id': '10000000146'}
>>> with masking(guard), acting_as("support"):
...     c.model_dump_json()
'{"national_id":"1********46"}'
>>> with masking(guard):
...     c.model_dump(), c.model_dump(context={"piiguard": None})
({'national_id': '[REDACTED]'}, {'national_id': '10000000146'})
"""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import Callable
from typing import Any, Protocol, Self, TypeVar, cast, runtime_checkable

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

from piiguard.errors import ConfigurationError
from piiguard.masking.host import MaskingHost
from piiguard.masking.view import MaskedStr, RevealedStr, render

__all__ = [
    "CONTEXT_KEY",
    "KIND_KEY",
    "Masked",
    "StoredValue",
    "current_guard",
    "field_label",
    "keep_masked",
    "kind_in",
    "masking",
    "serializer_schema",
]

F = TypeVar("F", bound=Callable[..., Any])

_guard: contextvars.ContextVar[MaskingHost | None] = contextvars.ContextVar(
    "piiguard_masking_guard", default=None)
_entries: contextvars.ContextVar[tuple[tuple[Any, contextvars.Token[Any]], ...]] = \
    contextvars.ContextVar("piiguard_masking_entries", default=())
_UNSET: Any = object()
#: The serialisation-context key that names the Guard: ``context={"piiguard": guard}``.
CONTEXT_KEY = "piiguard"
#: The core-schema metadata key under which a piiguard type records its PII kind.
KIND_KEY = "piiguard_kind"


@runtime_checkable
class StoredValue(Protocol):
    """A value read from an encrypted column and shown only as its view for the role in
    effect (what :class:`piiguard.sqlalchemy.Sealed` is; the pydantic layer does not
    import the SQLAlchemy one)."""

    def view(self, *, row_key: Any = None) -> str | None: ...


def current_guard() -> MaskingHost | None:
    """The Guard set by :class:`masking` here, or None."""
    return _guard.get()


def _check_guard(guard: Any) -> MaskingHost | None:
    if guard is not None and not isinstance(guard, MaskingHost):
        raise ConfigurationError("masking() needs a piiguard Guard (or None)")
    return guard


def kind_in(schema: Any) -> str | None:
    """The PII kind a piiguard type recorded in ``schema`` (or in a schema it wraps),
    else None.

    >>> from pydantic import TypeAdapter
    >>> from piiguard.pydantic import PhoneValue
    >>> kind_in(TypeAdapter(PhoneValue).core_schema), kind_in({"type": "str"})
    ('phone', None)
    """
    while isinstance(schema, dict):
        kind = (schema.get("metadata") or {}).get(KIND_KEY)
        if kind:
            return kind
        schema = schema.get("schema")
    return None


class masking:
    """Serialise piiguard pydantic fields under ``guard``'s policy in the enclosed code
    (context manager, ``async with``, or decorator of sync and async functions)."""

    def __init__(self, guard: MaskingHost | None) -> None:
        self.guard = _check_guard(guard)

    def __repr__(self) -> str:
        return f"masking({self.guard!r})"

    def __enter__(self) -> Self:
        # The token is kept in the entering context, not on the object: one masking
        # object may be entered by overlapping tasks and threads (like acting_as).
        _entries.set((*_entries.get(), (self, _guard.set(self.guard))))
        return self

    def __exit__(self, *exc: object) -> None:
        entries = _entries.get()
        if not entries or entries[-1][0] is not self:
            raise ConfigurationError(f"{self!r} left out of order: masking blocks must be "
                                     "exited innermost first, where they were entered")
        _entries.set(entries[:-1])
        _guard.reset(entries[-1][1])

    async def __aenter__(self) -> Self:
        return self.__enter__()

    async def __aexit__(self, *exc: object) -> None:
        self.__exit__(*exc)

    def __call__(self, fn: F) -> F:
        guard = self.guard
        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with masking(guard):
                    return await fn(*args, **kwargs)
            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with masking(guard):
                return fn(*args, **kwargs)
        return wrapper  # type: ignore[return-value]


def field_label(handler: Any) -> str | None:
    """``Model.field`` for the field whose schema ``handler`` is building (or the field
    name alone, or None for a bare ``TypeAdapter``)."""
    name = getattr(handler, "field_name", None)
    model = None
    # The one private pydantic API piiguard uses: pydantic keeps the model being built
    # on a stack with no public accessor. Without it labels degrade to the field name,
    # which tests of Model.field policy rules (test_masking_pydantic) would show.
    try:
        model = handler._generate_schema.model_type_stack.get()
    except Exception:  # noqa: BLE001 - private API: degrade to the field name
        model = None
    if name and model is not None:
        return f"{model.__name__}.{name}"
    return name or None


def serializer_schema(kind: str, label: str | None, guard: MaskingHost | None = None
                      ) -> core_schema.SerSchema:
    """The pydantic-core serialisation schema that masks a ``kind`` value by role."""
    bound = _check_guard(guard)

    def serialize(value: Any, info: core_schema.SerializationInfo) -> Any:
        if value is None or type(value) is MaskedStr:
            return value
        if not isinstance(value, str):
            # a stored value (SQLModel table models hold them as read): its view, under
            # its own column's policy; never the stored value itself
            return value.view() if isinstance(value, StoredValue) else value
        ctx = info.context
        g: MaskingHost | None = (ctx.get(CONTEXT_KEY, _UNSET) if isinstance(ctx, dict)
                                 else _UNSET)
        if g is _UNSET:
            g = bound if bound is not None else _guard.get()
        if not g or g.policy is None:
            return value
        return render(g, kind=kind, column=label, plaintext_fn=lambda: value,
                      audited=type(value) is RevealedStr)

    return core_schema.plain_serializer_function_ser_schema(
        serialize, info_arg=True, when_used="always",
        return_schema=core_schema.nullable_schema(core_schema.str_schema()))


def keep_masked(schema: core_schema.CoreSchema, metadata: dict[str, Any] | None = None
                ) -> core_schema.CoreSchema:
    """Wrap a validation schema so that a :class:`MaskedStr` passes as it is (it is a
    masked view, not input to check), and a :class:`RevealedStr` that validates to
    itself keeps its marker (its reveal is on record), keeping the schema's
    serialisation."""

    def validate(value: Any, handler: core_schema.ValidatorFunctionWrapHandler) -> Any:
        if type(value) is MaskedStr:
            return value
        out = handler(value)
        if type(value) is RevealedStr and out == value:
            return value
        return out

    return core_schema.no_info_wrap_validator_function(
        validate, schema, metadata=metadata, serialization=schema.get("serialization"))


class Masked:
    """Bind a Guard (and optionally a column name for policy rules) to a piiguard
    pydantic type: ``Annotated[NationalId, Masked(guard)]``. Put it after the piiguard
    type in ``Annotated``.

    >>> Masked("not a guard")
    Traceback (most recent call last):
        ...
    piiguard.errors.ConfigurationError: masking() needs a piiguard Guard (or None)
    """

    def __init__(self, guard: MaskingHost | None = None, *, column: str | None = None
                 ) -> None:
        self.guard = _check_guard(guard)
        self.column = column

    def __repr__(self) -> str:
        return f"Masked(column={self.column!r})"

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler
                                     ) -> core_schema.CoreSchema:
        schema = handler(source)
        kind = kind_in(schema)
        if kind is None:
            raise ConfigurationError("Masked() goes after a piiguard pydantic type, e.g. "
                                     "Annotated[NationalId, Masked(guard)]")
        out = dict(schema)
        out["serialization"] = serializer_schema(kind, self.column or field_label(handler),
                                                 self.guard)
        return cast(core_schema.CoreSchema, out)
