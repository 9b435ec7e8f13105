"""MaskingPolicy: which mask each role gets for each kind of PII or each column.

A policy is a mapping, usually written as a dict or a TOML file::

    default = "redact"                      # every role not named below, and no role

    [national_id]                           # a PII kind ...
    admin = "reveal"
    support = "partial:1:2"

    [phone]
    admin = "reveal"
    support = "partial:0:2"
    analyst = "pseudonym"

    ["customers.address"]                   # ... or one column (table.column / Model.field)
    support = "city"
    default = "null"                        # every other role, for this column only

Top-level keys are ``default``, the access sections ``search``, ``write``, ``clear``
and ``limits`` (who may search, write and clear which column, and how fast anyone may
try search candidates: :mod:`piiguard.masking.rules`), a kind (``national_id``,
``tax_id``, ``phone``, ``address``, ``email``, ``name``, ``text``) or a
``table.column`` / ``Model.field``. A
kind or column rule is either a mask (for every role) or a table from role to mask, with
an optional ``default`` for the roles it does not name. Masks are listed in
:mod:`piiguard.masking.masks`; custom masks are plain functions registered by name.

**Which rule applies** (the most specific rule with an answer wins):

1. the column rule's entry for the role, then the column rule's ``default``;
2. the kind rule's entry for the role, then the kind rule's ``default``;
3. the policy's ``default`` (``redact`` when the policy does not say).

A role that no rule names, and code running with no role at all (``acting_as`` not in
effect), get the ``default`` of the most specific rule that has one.

>>> policy = MaskingPolicy.from_dict({
...     "default": "redact",
...     "national_id": {"admin": "reveal", "support": "partial:1:2"},
...     "customers.national_id": {"auditor": "pseudonym"},
... })
>>> policy.mask_for(kind="national_id", column="customers.national_id", role="support")
Mask('partial:1:2')
>>> policy.mask_for(kind="national_id", column="customers.national_id", role="auditor")
Mask('pseudonym')
>>> policy.mask_for(kind="national_id", column="customers.national_id", role="intern")
Mask('redact')
>>> policy.mask_for(kind="phone", column=None, role=None)
Mask('redact')
>>> MaskingPolicy.from_dict({"national_id": {"support": "partial:1"}})
Traceback (most recent call last):
    ...
piiguard.errors.PolicyError: policy['national_id']['support']: bad mask 'partial:1': partial
takes two numbers, partial:FIRST:LAST (e.g. partial:1:2)
>>> MaskingPolicy.from_dict({"nationalid": {"support": "reveal"}})
Traceback (most recent call last):
    ...
piiguard.errors.PolicyError: policy['nationalid']: unknown kind 'nationalid' (kinds: national_id,
tax_id, phone, address, email, name, text, date, datetime, integer, decimal, json, bytes; or a
table.column)
"""

from __future__ import annotations

import os
import re
import threading
import tomllib
import warnings
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from piiguard.errors import PolicyError
from piiguard.kinds import kind_names
from piiguard.masking import masks as _masks
from piiguard.masking.masks import BUILTIN_MASKS, Mask, parse_spec, pseudonym_scope
from piiguard.masking.recovery import ANALYSED_KINDS, candidates_left, recovery_risk
from piiguard.masking.rules import ACCESS_SECTIONS, AccessRules, SearchLimit, SearchLimits

__all__ = ["KINDS", "MaskingPolicy", "PolicyWarning"]

#: The PII kinds a policy can name (the registry's: :mod:`piiguard.kinds`).
KINDS = kind_names()

_DEFAULT = "default"
_COLUMN_RE = re.compile(r"[^.\s]+\.[^.\s]+")
_ROLE_RE = re.compile(r"[^\s\x00-\x1f]{1,128}")
_CACHE_MAX = 4096
_YES, _NO = object(), object()   # cached answers of _decide (None means "not cached")


def _where(*path: str) -> str:
    return "policy" + "".join(f"[{p!r}]" for p in path)


class PolicyWarning(UserWarning):
    """A policy piiguard cannot fully check (a custom mask on a searchable number)."""


class MaskingPolicy:
    """Rules from PII kind or column, and role, to a :class:`~piiguard.masking.masks.Mask`.

    Build it with :meth:`from_dict` or :meth:`from_toml` (or the constructor, which takes
    the same mapping); it is checked completely when built, and immutable afterwards
    except for :meth:`register_mask`. Set it on a Guard: ``guard.policy = policy``.

    ``masks`` registers custom masks: ``{name: function}`` (the function gets the
    plaintext, and ``kind=`` if it accepts that keyword) or ``{name: Mask}``. Masks are
    per policy: there is no process-wide registry.

    >>> p = MaskingPolicy({"phone": "partial:0:2"},
    ...                   masks={"last4": lambda v: "…" + v[-4:]})
    >>> p.register_mask("stars", lambda v: "***", needs_plaintext=False)
    >>> p2 = p.with_rules({"phone": {"ops": "last4", "intern": "stars"}})
    >>> p2.mask_for(kind="phone", column="c.phone", role="ops")("+905321234567", kind="phone")
    '…4567'
    >>> p2.mask_for(kind="phone", column="c.phone", role="intern").needs_plaintext
    False
    """

    def __init__(self, rules: Mapping[str, Any] | None = None, *,
                 masks: Mapping[str, Callable[..., Any] | Mask] | None = None,
                 source: str | None = None) -> None:
        self._custom: dict[str, Mask] = {}
        for name, fn in (masks or {}).items():
            self._add_mask(name, fn, True)
        self.source = source
        self._raw = dict(rules or {})
        self._compile(self._raw)
        self._cache: dict[tuple, Any] = {}
        self._lock = threading.Lock()

    # -- building --------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, rules: Mapping[str, Any], *,
                  masks: Mapping[str, Callable[..., Any] | Mask] | None = None
                  ) -> MaskingPolicy:
        """A policy from a mapping (see the module docstring for its shape)."""
        if not isinstance(rules, Mapping):
            raise PolicyError(f"a policy is a mapping of rules, not a {type(rules).__name__}")
        return cls(rules, masks=masks)

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str], *,
                  masks: Mapping[str, Callable[..., Any] | Mask] | None = None
                  ) -> MaskingPolicy:
        """A policy from a TOML file (same shape as :meth:`from_dict`); errors name the
        file and the offending key."""
        name = os.fspath(path)
        try:
            with open(name, "rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError:
            raise PolicyError(f"{name}: policy file not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise PolicyError(f"{name}: not valid TOML ({exc})") from None
        try:
            return cls(data, masks=masks, source=name)
        except PolicyError as exc:
            raise PolicyError(f"{name}: {exc}") from None

    def with_rules(self, rules: Mapping[str, Any]) -> MaskingPolicy:
        """A new policy: these rules replace this policy's top-level entries of the same
        name; custom masks are kept."""
        merged = {**self._raw, **dict(rules)}
        return MaskingPolicy(merged, masks=dict(self._custom), source=self.source)

    def register_mask(self, name: str, fn: Callable[..., Any] | Mask, *,
                      needs_plaintext: bool = True) -> None:
        """Add a custom mask to this policy, usable by :meth:`with_rules` policies and by
        later rules. A name already in use (built-in or custom) is refused."""
        self._add_mask(name, fn, needs_plaintext)
        with self._lock:
            self._cache.clear()

    def _add_mask(self, name: str, fn: Callable[..., Any] | Mask,
                  needs_plaintext: bool) -> None:
        if name in self._custom:
            raise PolicyError(f"custom mask {name!r} is already registered")
        if isinstance(fn, Mask):
            if fn.spec != name:
                fn = fn.renamed(name)
            if fn.is_reveal or name in _masks.BUILTIN_MASKS:
                raise PolicyError(f"mask name {name!r} is a built-in mask")
            self._custom[name] = fn
        else:
            self._custom[name] = _masks.custom(name, fn, needs_plaintext=needs_plaintext)

    def _compile(self, rules: Mapping[str, Any]) -> None:
        self._default = parse_spec("redact")
        self._kinds: dict[str, tuple[dict[str, Mask], Mask | None]] = {}
        self._columns: dict[str, tuple[dict[str, Mask], Mask | None]] = {}
        self._access = {name: AccessRules(name) for name in ACCESS_SECTIONS[:3]}
        self._limits = SearchLimits()
        for key, value in rules.items():
            if not isinstance(key, str):
                raise PolicyError(f"policy keys are strings, not {type(key).__name__}")
            if key == "limits":
                self._limits = SearchLimits.parse(value)
            elif key in self._access:
                self._access[key] = AccessRules.parse(key, value, KINDS)
            elif key == _DEFAULT:
                self._default = self._mask(value, None, key)
            elif key in KINDS:
                self._kinds[key] = self._rule(value, key, key)
            elif _COLUMN_RE.fullmatch(key):
                self._columns[key] = self._rule(value, None, key)
            elif "." in key:
                raise PolicyError(f"{_where(key)}: {key!r} is not a table.column (one dot "
                                  "between two non-empty names)")
            else:
                raise PolicyError(f"{_where(key)}: unknown kind {key!r} (kinds: "
                                  f"{', '.join(KINDS)}; or a table.column)")
        for kind in ANALYSED_KINDS:
            self._check_recovery(kind, None)

    def _rule(self, value: Any, kind: str | None, key: str
              ) -> tuple[dict[str, Mask], Mask | None]:
        if isinstance(value, str):
            return {}, self._mask(value, kind, key)
        if not isinstance(value, Mapping):
            raise PolicyError(f"{_where(key)}: a rule is a mask or a table of role = mask, "
                              f"not a {type(value).__name__}")
        if not value:
            raise PolicyError(f"{_where(key)}: empty rule (name at least one role or "
                              "'default')")
        roles: dict[str, Mask] = {}
        default = None
        for role, spec in value.items():
            if not isinstance(role, str) or not _ROLE_RE.fullmatch(role):
                raise PolicyError(f"{_where(key)}: role names are 1-128 printable "
                                  "characters without spaces")
            if isinstance(spec, Mapping):
                raise PolicyError(f"{_where(key, role)}: a role takes a mask, not a table "
                                  "(rules are one level deep: kind or table.column, then "
                                  "role)")
            mask = self._mask(spec, kind, key, role)
            if role == _DEFAULT:
                default = mask
            else:
                roles[role] = mask
        return roles, default

    def _mask(self, spec: Any, kind: str | None, *path: str) -> Mask:
        try:
            mask = parse_spec(spec, self._custom)
        except PolicyError as exc:
            raise PolicyError(f"{_where(*path)}: {exc}") from None
        only = _masks.KIND_SPECIFIC.get(mask.name) if mask.spec not in self._custom else None
        if only is not None and kind is not None and kind != only:
            raise PolicyError(f"{_where(*path)}: mask {mask.spec!r} is for {only} values, "
                              f"not {kind}")
        return mask

    # -- reading ---------------------------------------------------------------------------
    def mask_for(self, *, kind: str, column: str | None, role: str | None) -> Mask:
        """The mask for ``role`` reading a value of ``kind`` in ``column``
        (``table.column`` or ``Model.field``; None when unknown). Cached."""
        k = (kind, column, role)
        try:
            return self._cache[k]
        except KeyError:
            pass
        mask = self._resolve(kind, column, role)
        with self._lock:
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[k] = mask
        return mask

    def _resolve(self, kind: str, column: str | None, role: str | None) -> Mask:
        for rule in (self._columns.get(column) if column else None, self._kinds.get(kind)):
            if rule is None:
                continue
            roles, default = rule
            if role is not None and role != _DEFAULT:
                m = roles.get(role)
                if m is not None:
                    return m
            if default is not None:
                return default
        return self._default

    # -- what a role may do ----------------------------------------------------------------
    def may_search(self, *, kind: str, column: str | None, role: str | None) -> bool:
        """May ``role`` search ``column`` (``==``, ``in_()``, ``lookup()``)? Roles that
        may reveal it, and those the ``search`` section names."""
        return self._decide("search", kind, column, role)

    def may_write(self, *, kind: str, column: str | None, role: str | None) -> bool:
        """May ``role`` write a value to ``column``? Every role, unless the ``write``
        section names the roles that may."""
        return self._decide("write", kind, column, role)

    def may_clear(self, *, kind: str, column: str | None, role: str | None) -> bool:
        """May ``role`` set a stored value to NULL? Roles that may write it and either
        may reveal it or are named in the ``clear`` section."""
        return self._decide("clear", kind, column, role)

    def search_limit(self, role: str | None) -> SearchLimit:
        """The search rate limit of ``role`` (per principal): the ``limits`` section."""
        return self._limits.for_role(role)

    def _decide(self, action: str, kind: str, column: str | None, role: str | None
                ) -> bool:
        k = (action, kind, column, role)
        found = self._cache.get(k)
        if found is not None:
            return found is _YES
        if action == "write":
            named = self._access["write"].roles(kind=kind, column=column)
            ok = named is None or (role is not None and role in named)
        else:
            named = self._access[action].roles(kind=kind, column=column) or frozenset()
            ok = self.mask_for(kind=kind, column=column, role=role).is_reveal or (
                role is not None and role in named)
            if action == "clear":
                ok = ok and self._decide("write", kind, column, role)
        with self._lock:
            self._cache[k] = _YES if ok else _NO
        return ok

    def masks_for_column(self, *, kind: str, column: str | None) -> tuple[Mask, ...]:
        """Every mask other than ``reveal`` that some role (or no role) gets for
        ``column``: the views a value written back must not equal."""
        k = ("views", kind, column)
        found = self._cache.get(k)
        if found is not None:
            return found
        masks = {self._default.spec: self._default}
        for rule in (self._columns.get(column) if column else None, self._kinds.get(kind)):
            if rule is not None:
                roles, default = rule
                for m in [*roles.values(), *([default] if default else [])]:
                    masks.setdefault(m.spec, m)
        out = tuple(m for m in masks.values() if not m.is_reveal)
        with self._lock:
            self._cache[k] = out
        return out

    def check_columns(self, columns: list[tuple[str, str]]) -> None:
        """Check the search rules against known columns (``[(table.column, kind)]``,
        what a Guard knows once its columns are attached): column rules could not be
        checked when the policy was built."""
        for label, kind in columns:
            if kind in ANALYSED_KINDS:
                self._check_recovery(kind, label)

    def _check_recovery(self, kind: str, column: str | None) -> None:
        """Refuse a role that may search ``kind`` values it sees partly, when its search
        limit lets it try enough candidates to recover one within a day."""
        named = self._access["search"].roles(kind=kind, column=column) or frozenset()
        for role in sorted(named):
            mask = self._resolve(kind, column, role)
            if mask.is_reveal:
                continue
            builtin = mask.name in BUILTIN_MASKS and mask.spec not in self._custom
            first, last = (mask.args if mask.name == "partial" else (0, 0))
            cands = candidates_left(kind, mask.name, first, last) if builtin else None
            where = _where("search", column or kind)
            if cands is None:
                warnings.warn(f"{where}: role {role!r} may search {kind} values it sees "
                              f"through the custom mask {mask.spec!r}, which piiguard "
                              "cannot analyse: make sure it hides enough digits for the "
                              "search limit", PolicyWarning, stacklevel=4)
                continue
            limit = self._limits.for_role(role)
            risk = recovery_risk(cands, limit.tries_per_day())
            if risk.too_high:
                raise PolicyError(
                    f"{where}: role {role!r} may search {kind} values it sees as "
                    f"{mask.spec!r} at the search limit {limit.to_spec()!r}: "
                    f"{risk.describe()}; show fewer characters, lower limits.search for "
                    "this role, or do not let it search")

    @property
    def default(self) -> Mask:
        """The mask for roles and kinds no rule names."""
        return self._default

    @property
    def rules(self) -> Mapping[str, Any]:
        """The rules as given (read-only)."""
        return MappingProxyType(self._raw)

    def roles(self) -> set[str]:
        """Every role some rule names."""
        return {r for rules in (self._kinds, self._columns) for roles, _ in rules.values()
                for r in roles}

    def masks(self) -> list[Mask]:
        """Every mask the policy uses (each once)."""
        found = {self._default.spec: self._default}
        for rules in (self._kinds, self._columns):
            for roles, default in rules.values():
                for m in [*roles.values(), *([default] if default else [])]:
                    found.setdefault(m.spec, m)
        return list(found.values())

    def pseudonym_scopes(self) -> set[str]:
        """Key scopes of the ``pseudonym`` masks in use (their keys are kind
        ``pseudonym`` in the key table, separate from DEKs and blind-index keys)."""
        return {s for m in self.masks() if (s := pseudonym_scope(m)) is not None}

    def to_dict(self) -> dict[str, Any]:
        """The policy as a plain dict of mask specs (``from_dict(p.to_dict())`` is
        an equal policy)."""
        out: dict[str, Any] = {_DEFAULT: self._default.spec}
        for name, section in self._access.items():
            if section:
                out[name] = section.to_dict()
        if not self._limits.is_default():
            out["limits"] = self._limits.to_dict()
        for rules in (self._kinds, self._columns):
            for key, (roles, default) in rules.items():
                d = {r: m.spec for r, m in roles.items()}
                if default is not None:
                    d[_DEFAULT] = default.spec
                out[key] = d
        return out

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MaskingPolicy) and other.to_dict() == self.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        where = f", source={self.source!r}" if self.source else ""
        return (f"MaskingPolicy(default={self._default.spec!r}, kinds={sorted(self._kinds)}, "
                f"columns={sorted(self._columns)}{where})")
