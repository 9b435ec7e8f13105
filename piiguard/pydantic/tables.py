"""SQLModel table models: pydantic models whose fields are encrypted columns.

A SQLModel table model is both a pydantic model and a mapped class: its fields are
validated by pydantic (``model_validate``), dumped by pydantic (``model_dump``, FastAPI
responses) and stored through the column types of :mod:`piiguard.sqlalchemy`::

    class Customer(SQLModel, table=True):
        id: int | None = Field(default=None, primary_key=True)
        national_id: str = Field(sa_type=EncryptedNationalId(guard, searchable=True))
        name: str = Field(sa_type=EncryptedString(guard, kind="name"))

When such a class is mapped, :mod:`piiguard.sqlalchemy` calls :func:`protect_table_model`
with its encrypted fields, which makes pydantic's side agree with the column's:

- each field is **validated** by its column's own validator (with the column's options)
  at ``model_validate``, so an invalid T.C. number is refused there, not at flush; a
  field annotated with a piiguard type already (``national_id: NationalId``) keeps its
  annotation, which must name the same kind (:class:`~piiguard.errors.ConfigurationError`
  otherwise);
- each field is **dumped** as the view the role in effect may see (a value read while a
  policy is set is held as a :class:`~piiguard.sqlalchemy.Sealed`, and pydantic reads
  fields without going through the ORM attribute), so the table model can be a FastAPI
  ``response_model``;
- each field is left out of ``repr()``, and the model's validation errors never quote
  their input (``hide_input_in_errors``).

The model's pydantic schema is rebuilt once, when the class is mapped (at class
creation), before any instance exists.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from types import NoneType, UnionType
from typing import Annotated, Any, ClassVar, NamedTuple, Union, get_args, get_origin

from pydantic.fields import FieldInfo

from piiguard.errors import ConfigurationError
from piiguard.pydantic.types import PIIAnnotation

__all__ = ["ColumnRules", "EncryptedField", "kind_of_field", "protect_table_model"]


class EncryptedField(NamedTuple):
    """One field of a table model that maps an encrypted column."""

    name: str                       # the pydantic field name
    kind: str                       # the column's PII kind
    validate: Callable[[Any], str]  # the column's validator (with its options)
    label: str                      # table.column


class ColumnRules(PIIAnnotation):
    """Validation and role-aware serialisation of one encrypted column's values, with
    the column's own validator: what :func:`protect_table_model` gives a field that has
    no piiguard type. Make it with :meth:`of`.

    >>> from pydantic import TypeAdapter
    >>> from typing import Annotated
    >>> rules = ColumnRules.of("national_id", str.strip, "customers.national_id")
    >>> TypeAdapter(Annotated[str, rules]).validate_python(" 10000000146 ")
    '10000000146'
    >>> rules
    ColumnRules('customers.national_id', kind='national_id')
    """

    _classes: ClassVar[dict[str, type[ColumnRules]]] = {}

    def __init__(self, column_validate: Callable[[Any], str], label: str) -> None:
        self._column_validate = column_validate
        self.label = label

    @classmethod
    def of(cls, kind: str, validate: Callable[[Any], str], label: str) -> ColumnRules:
        """Rules for a column of ``kind`` validated by ``validate``."""
        sub = cls._classes.get(kind)
        if sub is None:
            sub = cls._classes[kind] = type(f"ColumnRules_{kind}", (cls,), {"kind": kind})
        return sub(validate, label)

    def check(self, value: str) -> str:
        return self._column_validate(value)

    def serializer(self, label: str | None = None) -> Any:
        # policy rules name the column (table.column), not the model field
        return super().serializer(self.label)

    def __repr__(self) -> str:
        return f"ColumnRules({self.label!r}, kind={self.kind!r})"


def _annotations_in(tp: Any) -> Iterator[Any]:
    """Every ``Annotated`` metadata item found in ``tp`` (through unions and nesting)."""
    origin = get_origin(tp)
    if origin is Annotated:
        base, *meta = get_args(tp)
        yield from meta
        yield from _annotations_in(base)
    elif origin in (Union, UnionType):
        for arg in get_args(tp):
            yield from _annotations_in(arg)


def kind_of_field(info: FieldInfo) -> str | None:
    """The PII kind of the piiguard type a field is annotated with, or None.

    >>> from piiguard.pydantic import NationalId, Phone, optional
    >>> [kind_of_field(FieldInfo.from_annotation(tp))
    ...  for tp in (NationalId, optional(Phone), str)]
    ['national_id', 'phone', None]
    """
    for item in [*info.metadata, *_annotations_in(info.annotation)]:
        if isinstance(item, PIIAnnotation):
            return item.kind
    return None


def _with_rules(annotation: Any, rules: ColumnRules) -> Any:
    """``annotation`` with ``rules`` applied to its non-None part (``str | None`` ->
    ``Annotated[str, rules] | None``)."""
    if get_origin(annotation) in (Union, UnionType):
        args = get_args(annotation)
        if NoneType in args:
            rest = [a for a in args if a is not NoneType]
            inner = rest[0] if len(rest) == 1 else Union[tuple(rest)]  # noqa: UP007
            return Annotated[inner, rules] | None
    return Annotated[annotation, rules]


def protect_table_model(cls: Any, fields: Sequence[EncryptedField]) -> None:
    """Make the pydantic side of table model ``cls`` validate, dump and hide its
    encrypted ``fields`` as the module docstring says (the schema is rebuilt once)."""
    model_fields: dict[str, FieldInfo] = getattr(cls, "__pydantic_fields__", None) or {}
    changed = False
    for f in fields:
        info = model_fields.get(f.name)
        if info is None:
            continue
        declared = kind_of_field(info)
        if declared is not None and declared != f.kind:
            raise ConfigurationError(
                f"{cls.__name__}.{f.name} is annotated with a piiguard {declared} type "
                f"but maps an encrypted {f.kind} column: annotate it with the {f.kind} "
                "type, or plain str", column=f.label)
        if declared is None:
            info.annotation = _with_rules(info.annotation, ColumnRules.of(
                f.kind, f.validate, f.label))
            changed = True
        if info.repr:
            info.repr = False
            changed = True
    config = getattr(cls, "model_config", None)
    if fields and isinstance(config, dict) and not config.get("hide_input_in_errors"):
        config["hide_input_in_errors"] = True
        changed = True
    if changed:
        cls.model_rebuild(force=True)
