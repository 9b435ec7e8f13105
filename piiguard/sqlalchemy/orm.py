"""The ORM side: attributes of encrypted columns render the masked view when read and
refuse masked values when set; row-bound (``key_scope=``, ``bound_to=``) and searchable
columns get per-mapper ``before_update`` / ``after_update`` listeners (for row-bound
ones, :class:`~.rows.MapperBinding`: values move with their row).

:func:`on_mapper_configured` runs for every mapper (installed by :mod:`.hooks`). For each
mapped encrypted column it turns the class attribute (an ``InstrumentedAttribute``) into
an :class:`EncryptedAttribute` of a subclass made for that column, which carries the
column's state as a class attribute. The state lives exactly as long as the attribute
(no registry keyed by ``id()``: nothing to prune, no confusion when an id is reused), and
reading it is a plain attribute look-up on the hot read path.
"""

from __future__ import annotations

from typing import Any, ClassVar

from sqlalchemy import Column, event
from sqlalchemy.orm import Mapper
from sqlalchemy.orm.attributes import (
    InstrumentedAttribute,
    get_history,
    instance_dict,
    instance_state,
)

from piiguard.errors import MaskedValueError
from piiguard.masking.view import MaskedStr, render
from piiguard.sqlalchemy import reveals
from piiguard.sqlalchemy._sa_private import class_attribute, swap_class
from piiguard.sqlalchemy.rows import MapperBinding
from piiguard.sqlalchemy.sealed import Sealed
from piiguard.sqlalchemy.state import AttachedColumn, attached_column_of
from piiguard.sqlalchemy.writes import check_assignment

__all__ = ["EncryptedAttribute", "on_instrument_class", "on_mapper_configured"]


class EncryptedAttribute(InstrumentedAttribute):
    """InstrumentedAttribute of an encrypted column: a :class:`Sealed` value held by the
    instance is rendered for the role in effect whenever the attribute is read, and so is
    a plaintext loaded before a masking policy was set."""

    __slots__ = ()
    inherit_cache = True
    #: set on the per-column subclass made by :func:`_attribute_class`
    column_state: ClassVar[AttachedColumn]

    def __get__(self, instance: Any, owner: Any) -> Any:
        if instance is None:
            return self
        dict_ = instance.__dict__
        key = self.key
        if key in dict_:
            value = dict_[key]
        else:
            value = InstrumentedAttribute.__get__(self, instance, owner)
        if type(value) is Sealed:
            ident = instance_state(instance).identity
            return value.view(row_key=None if ident is None else
                              ",".join(str(i) for i in ident))
        if type(value) is str:
            # Loaded (or assigned) before a policy was set: the plaintext is here, but
            # the policy now in force still decides what this role may see.
            st = self.column_state
            if st.guard.policy is not None:
                ident = instance_state(instance).identity
                return render(st.guard, kind=st.kind, column=st.label,
                              plaintext_fn=lambda: value,
                              row_key=None if ident is None else
                              ",".join(str(i) for i in ident))
        return value

    def __set__(self, instance: Any, value: Any) -> None:
        if type(value) is not str and value is not None:
            self._check(value)
        st = self.column_state
        if st.guard.policy is not None:
            # write rule, masked views compared as values, clearing (see .writes)
            check_assignment(st, instance, self.key, value)
        # QueryableAttribute.impl (see _sa_private): inline, this runs for every value set
        self.impl.set(instance_state(instance), instance_dict(instance), value, None)

    def _check(self, value: Any) -> None:
        st = self.column_state
        if isinstance(value, MaskedStr):
            raise MaskedValueError("masked", column=st.label,
                                   detail="a masked view cannot be written back")
        if isinstance(value, Sealed) and value.origin is not st:
            raise MaskedValueError("sealed", column=st.label,
                                   detail="a sealed value of another column")


def _attribute_class(st: AttachedColumn) -> type[EncryptedAttribute]:
    """The EncryptedAttribute subclass of one column (its state as a class attribute)."""
    return type("EncryptedAttribute", (EncryptedAttribute,),
                {"__slots__": (), "inherit_cache": True, "column_state": st,
                 "__module__": __name__})


def _encrypted_state(prop: Any) -> AttachedColumn | None:
    cols = getattr(prop, "columns", None)
    if not cols:
        return None
    return attached_column_of(getattr(cols[0], "type", None))


def on_mapper_configured(mapper: Mapper, class_: type) -> None:
    """Give the mapper's encrypted columns their attributes and update listeners."""
    bound: list[tuple[str, AttachedColumn]] = []
    indexed: list[tuple[str, AttachedColumn]] = []
    encrypted: list[tuple[str, AttachedColumn]] = []
    for prop in mapper.column_attrs:
        st = _encrypted_state(prop)
        if st is None:
            continue
        encrypted.append((prop.key, st))
        attr = class_attribute(mapper, prop.key)
        if type(attr) is InstrumentedAttribute or (
                isinstance(attr, EncryptedAttribute) and attr.column_state is not st):
            swap_class(attr, _attribute_class(st))
        if st.binding is not None:
            bound.append((prop.key, st))
        elif st.search is not None:
            indexed.append((prop.key, st))
    if bound or indexed:
        _orm_update_events(mapper, bound, indexed)
    if encrypted:
        reveals.listen(mapper, encrypted)   # durable audit: one record per loaded result


def on_instrument_class(mapper: Mapper, class_: type) -> None:
    """A pydantic model being mapped (a SQLModel table model): have its encrypted
    fields validated, dumped and hidden as their columns say
    (:func:`piiguard.pydantic.tables.protect_table_model`)."""
    model_fields = getattr(class_, "__pydantic_fields__", None)
    if model_fields is None:
        return
    table = getattr(mapper, "local_table", None)
    fields = []
    for col in getattr(table, "columns", ()):
        st = attached_column_of(col.type)
        if st is None or st.column is not col:
            continue
        name = col.key if col.key in model_fields else col.name
        fields.append((name, st))
    if not fields:
        return
    # (late: plain SQLAlchemy applications never load the pydantic layer)
    from piiguard.pydantic.tables import EncryptedField, protect_table_model
    protect_table_model(class_, [EncryptedField(name, st.kind, st.validate, st.label)
                                 for name, st in fields])


def _orm_update_events(mapper: Mapper, bound: list[tuple[str, AttachedColumn]],
                       indexed: list[tuple[str, AttachedColumn]]) -> None:
    """A flushed UPDATE goes through the ORM's own statement: give a row-bound value its
    row (and move it when its row's binding changes), and a changed searchable value its
    new blind index."""

    def attr_of_column(col: Column | None) -> str | None:
        if col is None:
            return None
        try:
            return mapper.get_property_by_column(col).key
        except Exception:  # noqa: BLE001 - not mapped
            return None

    index_attrs = {key: attr_of_column(st.index_column) for key, st in indexed}
    binding = MapperBinding(mapper, bound) if bound else None

    def before_update(mapper_: Mapper, connection: Any, target: Any) -> None:
        if binding is not None:
            binding.before_update(target)
        dict_ = instance_dict(target)
        for key, st in indexed:
            index_attr = index_attrs[key]
            if index_attr is None or not get_history(target, key).added:
                continue
            setattr(target, index_attr, st.index_of_value(dict_.get(key)))

    def after_update(mapper_: Mapper, connection: Any, target: Any) -> None:
        if binding is not None:
            binding.after_update(target)

    event.listen(mapper, "before_update", before_update)
    event.listen(mapper, "after_update", after_update)
