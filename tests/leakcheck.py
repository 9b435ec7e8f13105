"""Looking for values in what an error leaves behind: its message, its ``repr``, its
attributes, every exception chained to it and the local variables of every frame its
traceback keeps (what an error tracker that captures locals would record).

Values are found by ASCII *markers*: every plaintext a test writes carries one (a T.C.
number is its own marker), because ``repr()`` escapes a lone surrogate and a substring
search for the raw value would miss its escaped form.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from piiguard.errors import chained

#: Modules whose frames are checked (the test's own frames hold its values, of course).
LIBRARIES = ("piiguard", "sqlalchemy", "sqlmodel", "fastapi", "starlette", "pydantic")


def _text(obj: Any) -> str:
    if isinstance(obj, bytes):
        return obj.decode("latin-1")
    if isinstance(obj, str):
        return obj.encode("utf-8", "backslashreplace").decode("utf-8")
    try:
        return repr(obj)
    except Exception:  # noqa: BLE001 - a repr that fails shows nothing
        return ""


def found_in(obj: Any, markers: Iterable[str], depth: int = 0,
             seen: set[int] | None = None) -> str | None:
    """The first marker in ``obj`` (containers walked, other objects by ``repr``)."""
    seen = set() if seen is None else seen
    if id(obj) in seen or depth > 8:
        return None
    seen.add(id(obj))
    if isinstance(obj, dict):
        items: Iterable[Any] = [*obj.keys(), *obj.values()]
    elif isinstance(obj, (list, tuple, set, frozenset)):
        items = obj
    else:
        text = _text(obj)
        return next((m for m in markers if m in text), None)
    for item in items:
        hit = found_in(item, markers, depth + 1, seen)
        if hit:
            return hit
    return None


def leaks(exc: BaseException, markers: Iterable[str],
          libraries: tuple[str, ...] = LIBRARIES) -> list[str]:
    """Where a marker shows in ``exc``: messages, reprs, attributes and ``args`` of every
    chained exception, and locals of their frames in ``libraries``."""
    markers = [m for m in markers if m]
    out = []
    for e in chained(exc):
        name = type(e).__name__
        for what, obj in (("str", str(e)), ("repr", repr(e)), ("args", e.args),
                          ("attributes", dict(getattr(e, "__dict__", {})))):
            hit = found_in(obj, markers)
            if hit:
                out.append(f"{name} {what}: {hit}")
        for attr in ("object", "params", "statement", "orig", "body", "input"):
            if attr in getattr(e, "__dict__", {}) or hasattr(type(e), attr):
                hit = found_in(getattr(e, attr, None), markers)
                if hit:
                    out.append(f"{name}.{attr}: {hit}")
        tb = e.__traceback__
        while tb is not None:
            frame = tb.tb_frame
            tb = tb.tb_next
            module = frame.f_globals.get("__name__") or ""
            if module.partition(".")[0] not in libraries:
                continue
            for key, value in frame.f_locals.items():
                hit = found_in(value, markers)
                if hit:
                    out.append(f"{name} frame {module}:{frame.f_code.co_name} "
                               f"local {key}: {hit}")
    return out
