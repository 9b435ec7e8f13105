"""The role in effect: ``acting_as(role, purpose=...)``, built on ``contextvars``.

Correct across threads and asyncio tasks: each task sees the role it set. Works as a
context manager and as a decorator::

    >>> current_role() is None
    True
    >>> with acting_as("support", purpose="ticket-42"):
    ...     current_role(), current_purpose()
    ('support', 'ticket-42')
    >>> @acting_as("admin")
    ... def f():
    ...     return current_role()
    >>> f(), current_role()
    ('admin', None)
"""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import Callable
from typing import Any, Self, TypeVar

from piiguard.errors import ConfigurationError

__all__ = ["acting_as", "current_purpose", "current_role", "register_exit_hook",
           "unregister_exit_hook"]

F = TypeVar("F", bound=Callable[..., Any])

_role: contextvars.ContextVar[str | None] = contextvars.ContextVar("piiguard_role",
                                                                  default=None)
_purpose: contextvars.ContextVar[str | None] = contextvars.ContextVar("piiguard_purpose",
                                                                     default=None)

# Called when an acting_as block ends; filled through register_exit_hook().
_exit_hooks: list[Callable[[], None]] = []

#: ``current_role()``: the role in effect here, or ``None`` when no role was set.
#: (The context variable's own ``get``: it runs for every value read under a policy,
#: so no wrapper frame.)
current_role: Callable[[], str | None] = _role.get

#: ``current_purpose()``: the purpose given to the ``acting_as`` in effect, or ``None``.
current_purpose: Callable[[], str | None] = _purpose.get


def register_exit_hook(hook: Callable[[], None]) -> Callable[[], None]:
    """Call ``hook()`` whenever an :class:`acting_as` block ends, while its role is still
    in effect (the audit trail flushes its pending reveal counts there). A hook must not
    raise. Registering the same hook again does nothing; returns ``hook``.

    >>> seen = []
    >>> hook = register_exit_hook(lambda: seen.append(current_role()))
    >>> with acting_as("ops"):
    ...     pass
    >>> seen
    ['ops']
    >>> unregister_exit_hook(hook)
    """
    if hook not in _exit_hooks:
        _exit_hooks.append(hook)
    return hook


def unregister_exit_hook(hook: Callable[[], None]) -> None:
    """Stop calling ``hook`` (registered with :func:`register_exit_hook`); no error if
    it is not registered."""
    if hook in _exit_hooks:
        _exit_hooks.remove(hook)


class acting_as:
    """Run the enclosed code (or the decorated function) as ``role``."""

    def __init__(self, role: str, *, purpose: str | None = None) -> None:
        if not isinstance(role, str) or not role:
            raise ConfigurationError("acting_as needs a non-empty role name")
        self.role = role
        self.purpose = purpose
        self._tokens: list[tuple[contextvars.Token, contextvars.Token]] = []

    def __repr__(self) -> str:
        return f"acting_as({self.role!r}, purpose={self.purpose!r})"

    def __enter__(self) -> Self:
        self._tokens.append((_role.set(self.role), _purpose.set(self.purpose)))
        return self

    def __exit__(self, *exc: object) -> None:
        role_token, purpose_token = self._tokens.pop()
        try:
            for hook in _exit_hooks:
                hook()
        finally:
            _purpose.reset(purpose_token)
            _role.reset(role_token)

    async def __aenter__(self) -> Self:
        return self.__enter__()

    async def __aexit__(self, *exc: object) -> None:
        self.__exit__(*exc)

    def __call__(self, fn: F) -> F:
        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with acting_as(self.role, purpose=self.purpose):
                    return await fn(*args, **kwargs)
            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with acting_as(self.role, purpose=self.purpose):
                return fn(*args, **kwargs)
        return wrapper  # type: ignore[return-value]
