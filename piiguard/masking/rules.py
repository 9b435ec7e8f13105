"""The access rules of a masking policy: who may search, write and clear which column,
and how fast anyone may try search candidates.

A policy's mask rules say what a role *sees*; these sections say what it may *do*::

    [search]                    # roles that may search, besides those that may reveal
    national_id = ["support"]

    [write]                     # roles that may write (default: every role)
    default = ["admin", "support"]
    "customers.national_id" = ["admin"]

    [clear]                     # roles that may set NULL, besides those that may reveal
    phone = ["support"]

    [limits]                    # search rate limit per principal (default 600/hour)
    search = "600/hour"         # or {default = "600/hour", importer = "20000/hour"}

Each section maps ``default``, a kind or a ``table.column`` to a list of roles; the most
specific entry wins (column, then kind, then ``default``), like the mask rules.

>>> rules = AccessRules.parse("write", {"default": ["admin"], "phone": ["admin", "ops"]})
>>> sorted(rules.roles(kind="phone", column="customers.phone"))
['admin', 'ops']
>>> sorted(rules.roles(kind="email", column="customers.email"))
['admin']
>>> SearchLimit.parse("600/hour")
SearchLimit('600/hour', burst=60)
>>> SearchLimit.parse("600/hour").tries_per_day()
14460
>>> SearchLimit.parse("lots")
Traceback (most recent call last):
    ...
piiguard.errors.PolicyError: bad search limit 'lots': write N/second, N/minute, N/hour or
N/day (e.g. '600/hour'), or 'unlimited'
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from piiguard.errors import PolicyError
from piiguard.kinds import kind_names

__all__ = ["ACCESS_SECTIONS", "DEFAULT_SEARCH_LIMIT", "AccessRules", "SearchLimit",
           "SearchLimits"]

#: The policy sections that hold access rules (top-level keys of a policy).
ACCESS_SECTIONS = ("search", "write", "clear", "limits")

_DEFAULT = "default"
_ROLE_RE = re.compile(r"[^\s\x00-\x1f]{1,128}")
_COLUMN_RE = re.compile(r"[^.\s]+\.[^.\s]+")
_RATE_RE = re.compile(r"\s*(\d{1,9})\s*/\s*(second|minute|hour|day)\s*")
_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


def _where(*path: str) -> str:
    return "policy" + "".join(f"[{p!r}]" for p in path)


class AccessRules:
    """One access section (``search``, ``write`` or ``clear``): target -> roles."""

    __slots__ = ("_columns", "_default", "_kinds", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self._default: frozenset[str] | None = None
        self._kinds: dict[str, frozenset[str]] = {}
        self._columns: dict[str, frozenset[str]] = {}

    @classmethod
    def parse(cls, name: str, value: Any, kinds: tuple[str, ...] | None = None
              ) -> AccessRules:
        """The section ``name`` of a policy; ``kinds``: the kind names it may use."""
        known = kinds if kinds is not None else kind_names()
        rules = cls(name)
        if not isinstance(value, Mapping):
            raise PolicyError(f"{_where(name)}: a table of kind or table.column = [roles], "
                              f"not a {type(value).__name__}")
        for target, roles in value.items():
            if not isinstance(target, str):
                raise PolicyError(f"{_where(name)}: keys are strings")
            role_set = cls._roles(roles, name, target)
            if target == _DEFAULT:
                rules._default = role_set
            elif target in known:
                rules._kinds[target] = role_set
            elif _COLUMN_RE.fullmatch(target):
                rules._columns[target] = role_set
            else:
                raise PolicyError(f"{_where(name, target)}: unknown kind {target!r} "
                                  f"(kinds: {', '.join(known)}; or a table.column, or "
                                  "default)")
        return rules

    @staticmethod
    def _roles(value: Any, *path: str) -> frozenset[str]:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not all(
                isinstance(r, str) and _ROLE_RE.fullmatch(r) and r != _DEFAULT
                for r in items):
            raise PolicyError(f"{_where(*path)}: a list of role names (1-128 printable "
                              "characters without spaces)")
        return frozenset(items)

    def roles(self, *, kind: str, column: str | None) -> frozenset[str] | None:
        """The roles this section names for ``kind`` / ``column`` (None: no rule)."""
        if column is not None:
            found = self._columns.get(column)
            if found is not None:
                return found
        found = self._kinds.get(kind)
        return found if found is not None else self._default

    def targets(self) -> dict[str, frozenset[str]]:
        """Every entry: ``{target: roles}`` (``default``, kinds, then columns)."""
        out: dict[str, frozenset[str]] = {}
        if self._default is not None:
            out[_DEFAULT] = self._default
        out.update(self._kinds)
        out.update(self._columns)
        return out

    def to_dict(self) -> dict[str, list[str]]:
        return {t: sorted(r) for t, r in self.targets().items()}

    def __bool__(self) -> bool:
        return bool(self._default is not None or self._kinds or self._columns)


@dataclass(frozen=True)
class SearchLimit:
    """A token bucket: ``per_second`` candidates refill, ``burst`` at most at once.
    ``None`` rate: unlimited."""

    spec: str
    per_second: float | None
    burst: int

    @classmethod
    def parse(cls, value: Any, *path: str) -> SearchLimit:
        """``'600/hour'`` (burst: a tenth of the hourly rate, at least 1),
        ``{rate = '600/hour', burst = 20}`` or ``'unlimited'``."""
        burst: Any = None
        rate = value
        if isinstance(value, Mapping):
            unknown = set(value) - {"rate", "burst"}
            if unknown or "rate" not in value:
                raise PolicyError(f"{_where(*path)}: a limit is 'N/unit' or a table with "
                                  "rate = 'N/unit' and an optional burst = N")
            rate, burst = value["rate"], value.get("burst")
        if rate == "unlimited":
            return cls("unlimited", None, 0)
        m = _RATE_RE.fullmatch(rate) if isinstance(rate, str) else None
        if m is None:
            where = f"{_where(*path)}: " if path else ""
            raise PolicyError(f"{where}bad search limit {rate!r}: write N/second, "
                              "N/minute, N/hour or N/day (e.g. '600/hour'), or 'unlimited'")
        count, unit = int(m.group(1)), m.group(2)
        per_second = count / _SECONDS[unit]
        if burst is None:
            burst = max(1, math.floor(per_second * 360))     # six minutes' worth
        if type(burst) is not int or burst < 1:
            raise PolicyError(f"{_where(*path)}: burst is a whole number >= 1")
        return cls(f"{count}/{unit}", per_second, burst)

    @property
    def unlimited(self) -> bool:
        return self.per_second is None

    def tries_per_day(self) -> float:
        """The most candidates one principal can try in 24 hours (a full bucket, then
        the refill rate); infinite when unlimited."""
        if self.per_second is None:
            return math.inf
        return self.burst + math.floor(self.per_second * 86400)

    def to_spec(self) -> Any:
        if self.per_second is None:
            return "unlimited"
        default_burst = max(1, math.floor(self.per_second * 360))
        return self.spec if self.burst == default_burst else \
            {"rate": self.spec, "burst": self.burst}

    def __repr__(self) -> str:
        return f"SearchLimit({self.spec!r}, burst={self.burst})"


#: The search rate limit when a policy sets none: 600 candidate values an hour per
#: principal, 60 at once (docs/masking.md shows why this is safe for partial masks).
DEFAULT_SEARCH_LIMIT = SearchLimit.parse("600/hour")


class SearchLimits:
    """The ``limits`` section: the search limit of each role."""

    __slots__ = ("_default", "_roles")

    def __init__(self, default: SearchLimit = DEFAULT_SEARCH_LIMIT,
                 roles: Mapping[str, SearchLimit] | None = None) -> None:
        self._default = default
        self._roles = dict(roles or {})

    @classmethod
    def parse(cls, value: Any) -> SearchLimits:
        if not isinstance(value, Mapping) or set(value) - {"search"}:
            raise PolicyError(f"{_where('limits')}: a table with one entry, search = "
                              "'N/unit' (or a table of role = 'N/unit')")
        search = value.get("search", "600/hour")
        if isinstance(search, Mapping) and "rate" not in search:
            roles = {}
            default = DEFAULT_SEARCH_LIMIT
            for role, spec in search.items():
                if not isinstance(role, str) or not _ROLE_RE.fullmatch(role):
                    raise PolicyError(f"{_where('limits', 'search')}: role names are "
                                      "1-128 printable characters without spaces")
                limit = SearchLimit.parse(spec, "limits", "search", role)
                if role == _DEFAULT:
                    default = limit
                else:
                    roles[role] = limit
            return cls(default, roles)
        return cls(SearchLimit.parse(search, "limits", "search"))

    def for_role(self, role: str | None) -> SearchLimit:
        if role is not None:
            found = self._roles.get(role)
            if found is not None:
                return found
        return self._default

    def to_dict(self) -> dict[str, Any]:
        if not self._roles:
            return {"search": self._default.to_spec()}
        return {"search": {_DEFAULT: self._default.to_spec(),
                           **{r: lim.to_spec() for r, lim in self._roles.items()}}}

    def is_default(self) -> bool:
        return not self._roles and self._default == DEFAULT_SEARCH_LIMIT
