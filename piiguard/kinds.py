"""The one registry of PII kinds: how each kind is validated, stored, shown and described.

A kind (``national_id``, ``phone`` …) is what a masking policy names, what an encrypted
column or a pydantic type declares, and what decides the validator, the longest stored
value, whether the plaintext is padded to hide its length, the default mask and the JSON
schema. The SQLAlchemy column types, the pydantic types and masking all read it here, so
a new kind is one entry in :data:`KINDS` (plus its validator module).

>>> kind("national_id").validate("100 000 001 46")
'10000000146'
>>> kind("phone").max_bytes, kind("address").padded, kind("text").validator
(16, True, None)
>>> kind("passport")
Traceback (most recent call last):
...
piiguard.errors.ConfigurationError: unknown PII kind 'passport'; expected one of national_id, ...
"""

from __future__ import annotations

import importlib
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from piiguard.errors import ConfigurationError, InvalidFormatError

__all__ = ["KINDS", "Kind", "kind", "kind_names", "text_canonical"]


def text_canonical(value: Any) -> str:
    """The canonical form of free text: NFC (ASCII text as it is).

    >>> text_canonical("Şükrü") == "Şükrü"
    True
    """
    if type(value) is not str and not isinstance(value, str):
        raise InvalidFormatError("type", detail="text must be a string")
    return value if value.isascii() else unicodedata.normalize("NFC", value)


@dataclass(frozen=True)
class Kind:
    """One PII kind.

    - ``validator``: module under :mod:`piiguard.validators` whose ``validate`` gives
      the canonical form (``None``: free text, NFC only);
    - ``max_bytes``: longest canonical value in UTF-8 bytes (``None``: unbounded), which
      sizes ``VARBINARY``/``VARCHAR`` columns;
    - ``padded``: pad the plaintext to size buckets by default (free text, whose length
      would say something);
    - ``canonical_never_envelope``: no canonical value can parse as an envelope (digits,
      E.164, upper-case addresses), so encryption may skip that check;
    - ``default_mask``: what a policy shows for it when no rule names the role;
    - ``error_prefix`` and ``json_*``: how pydantic names its errors and describes it.
    """

    name: str
    validator: str | None = None
    max_bytes: int | None = None
    padded: bool = False
    canonical_never_envelope: bool = False
    default_mask: str = "redact"
    error_prefix: str = ""
    json_format: str = ""
    json_pattern: str | None = None
    json_example: str = ""
    description: str = ""
    _validate: list[Callable[..., str]] = field(default_factory=list, repr=False,
                                                compare=False)

    @property
    def validate(self) -> Callable[..., str]:
        """The kind's validator: ``validate(value) -> canonical str`` (imported once)."""
        if not self._validate:
            if self.validator is None:
                fn: Callable[..., str] = text_canonical
            else:
                mod = importlib.import_module(f"piiguard.validators.{self.validator}")
                fn = mod.validate
            self._validate.append(fn)
        return self._validate[0]


KINDS: Mapping[str, Kind] = {k.name: k for k in (
    Kind("national_id", "tckn", max_bytes=11, canonical_never_envelope=True,
         error_prefix="tckn", json_format="tckn", json_pattern="^[1-9][0-9]{10}$",
         json_example="10000000146",
         description="T.C. Kimlik No (11 digits with check digits)"),
    Kind("tax_id", "vkn", max_bytes=10, canonical_never_envelope=True,
         error_prefix="vkn", json_format="vkn", json_pattern="^[0-9]{10}$",
         json_example="1234567890",
         description="Vergi Kimlik Numarası (10 digits with a check digit)"),
    Kind("phone", "phone", max_bytes=16, canonical_never_envelope=True,
         error_prefix="phone", json_format="phone", json_pattern=r"^\+[1-9][0-9]{6,14}$",
         json_example="+905321234567", description="Phone number, stored in E.164"),
    Kind("address", "address", max_bytes=500 * 4, padded=True,
         canonical_never_envelope=True, error_prefix="address", json_format="tr-address",
         json_example="BAĞDAT CAD. NO:1, 34728 KADIKÖY/İSTANBUL",
         description="Turkish postal address ending with [postal code] "
                     "[district/]province"),
    Kind("email", "email", max_bytes=254 * 4, padded=True, error_prefix="email",
         json_format="email", json_example="ali.veli@example.com",
         description="E-mail address"),
    Kind("name", "name", padded=True, error_prefix="name",
         description="A person's name"),
    Kind("text", padded=True, description="Free text"),
)}


def kind_names() -> tuple[str, ...]:
    """The registered kind names, in registry order."""
    return tuple(KINDS)


def kind(name: str) -> Kind:
    """The registered kind ``name``; :class:`ConfigurationError` for an unknown one."""
    found = KINDS.get(name) if isinstance(name, str) else None
    if found is None:
        raise ConfigurationError(f"unknown PII kind {name!r}; expected one of "
                                 f"{', '.join(KINDS)}")
    return found
