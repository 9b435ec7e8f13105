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
    - ``error_prefix`` and ``json_*``: how pydantic names its errors and describes it;
    - ``function``: the validator module's function that gives the stored form
      (``validate``; addresses: ``as_written``, the user's text);
    - ``search``: the validator module's function that gives the form blind indexes,
      masks and comparisons use, when it is not the stored form (addresses:
      ``search_form``, the canonical text); None: the stored form itself;
    - ``decoder``: the validator module's function that turns the stored text back
      into a Python value (typed kinds: ``date_value`` …); None: the text itself;
    - ``searchable``: whether a column of the kind may keep a blind index.
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
    function: str = "validate"
    search: str | None = None
    decoder: str | None = None
    searchable: bool = True
    _validate: list[Callable[..., str]] = field(default_factory=list, repr=False,
                                                compare=False)

    @property
    def validate(self) -> Callable[..., str]:
        """The kind's validator: ``validate(value) -> canonical str`` (imported once)."""
        if not self._validate:
            if self.validator is None:
                fn: Callable[..., str] = text_canonical
            else:
                fn = self._function(self.function)
            self._validate.append(fn)
        return self._validate[0]

    @property
    def search_form(self) -> Callable[[str], str] | None:
        """``search_form(stored) -> str``: the form searched and masked by (None: the
        stored form itself).

        >>> kind("address").search_form("moda cad. no:5 kadıköy/istanbul")
        'MODA CAD. NO:5, KADIKÖY/İSTANBUL'
        >>> kind("phone").search_form is None
        True
        """
        return None if self.search is None else self._function(self.search)

    @property
    def decode(self) -> Callable[[str], Any] | None:
        """``decode(stored text) -> value`` of a typed kind (None: text kinds).

        >>> kind("date").decode("1990-01-31")
        datetime.date(1990, 1, 31)
        """
        return None if self.decoder is None else self._function(self.decoder)

    def _function(self, name: str) -> Callable[..., Any]:
        mod = importlib.import_module(f"piiguard.validators.{self.validator}")
        fn: Callable[..., str] = getattr(mod, name)
        return fn


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
    # Stored as the user wrote it (NFC, whitespace collapsed), so it may be any text,
    # an envelope's too: not canonical_never_envelope. Searched by its canonical text.
    Kind("address", "address", max_bytes=500 * 4, padded=True,
         error_prefix="address", json_format="tr-address",
         json_example="Bağdat Cad. No:1, 34728 Kadıköy/İstanbul",
         description="Turkish postal address ending with [postal code] "
                     "[district/]province, kept as written",
         function="as_written", search="search_form"),
    Kind("email", "email", max_bytes=254 * 4, padded=True, error_prefix="email",
         json_format="email", json_example="ali.veli@example.com",
         description="E-mail address"),
    Kind("name", "name", padded=True, error_prefix="name",
         description="A person's name"),
    Kind("text", padded=True, description="Free text"),
    # Typed values (piiguard.validators.typed): written as one canonical text each.
    Kind("date", "typed", max_bytes=10, function="date_text", decoder="date_value",
         description="A calendar date"),
    Kind("datetime", "typed", max_bytes=32, function="datetime_text",
         decoder="datetime_value", description="An instant (aware datetime, in UTC)"),
    Kind("integer", "typed", max_bytes=41, padded=True, function="integer_text",
         decoder="integer_value", description="An integer"),
    Kind("decimal", "typed", max_bytes=80, padded=True, function="decimal_text",
         decoder="decimal_value", search="decimal_search", description="A decimal number"),
    Kind("json", "typed", padded=True, function="json_text", decoder="json_value",
         searchable=False, description="A JSON document"),
    Kind("bytes", "typed", padded=True, function="bytes_text", decoder="bytes_value",
         description="Binary data"),
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
