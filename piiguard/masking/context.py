"""The role in effect: ``acting_as(role, purpose=..., principal=...)``, on ``contextvars``.

Correct across threads and asyncio tasks: each task sees the role it set. Works as a
context manager (``with``, ``async with``) and as a decorator of functions, coroutine
functions, generator functions and async generator functions::

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

**A role never escapes the block that set it.**

- One ``acting_as`` object may be entered by many tasks or threads at once, and nested
  in itself: what each entry must undo is kept in the context of the code that entered
  it (a context variable), not on the object.
- A generator that enters ``acting_as`` and then yields would leave its *caller*
  running under that role while the generator is suspended. So ``with acting_as(...)``
  inside a generator (or ``async with`` inside an async generator) is refused with a
  :class:`~piiguard.errors.ConfigurationError`; decorate the generator function
  instead: ``@acting_as(role)`` sets the role around each resume of the generator and
  never across a ``yield``. Generators driven by ``contextlib.contextmanager`` /
  ``asynccontextmanager`` (and FastAPI dependencies with ``yield``, which are built on
  them) are context managers: their ``yield`` *is* the body, so the role is meant to be
  in effect there, and they are allowed.

    >>> def rows():
    ...     with acting_as("admin"):
    ...         yield current_role()
    >>> next(rows())
    Traceback (most recent call last):
        ...
    piiguard.errors.ConfigurationError: acting_as('admin') entered inside the generator
    rows(): the role would stay in effect in the caller while the generator is suspended
    at a yield; decorate the generator function with @acting_as('admin') instead (the
    role is then set around each resume)
    >>> @acting_as("admin")
    ... def rows():
    ...     yield current_role()
    ...     yield current_role()
    >>> gen = rows()
    >>> next(gen), current_role(), next(gen)
    ('admin', None, 'admin')

``principal`` names who is acting (a user id, an API client; opaque, never PII): the
search rate limit is kept per principal, and per role when none is given.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import sys
from collections.abc import AsyncGenerator, Callable, Generator
from types import CodeType, FrameType
from typing import Any, NamedTuple, Self, TypeVar

from piiguard.errors import ConfigurationError

__all__ = ["acting_as", "current_principal", "current_purpose", "current_role",
           "register_exit_hook", "unregister_exit_hook"]

F = TypeVar("F", bound=Callable[..., Any])

_role: contextvars.ContextVar[str | None] = contextvars.ContextVar("piiguard_role",
                                                                  default=None)
_purpose: contextvars.ContextVar[str | None] = contextvars.ContextVar("piiguard_purpose",
                                                                     default=None)
_principal: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "piiguard_principal", default=None)


class _Entry(NamedTuple):
    """What one entry of an ``acting_as`` block must undo (kept per context)."""

    owner: acting_as
    role: contextvars.Token[str | None]
    purpose: contextvars.Token[str | None]
    principal: contextvars.Token[str | None]


#: The acting_as blocks entered in this context, innermost last.
_entries: contextvars.ContextVar[tuple[_Entry, ...]] = contextvars.ContextVar(
    "piiguard_acting_as", default=())

# Called when an acting_as block ends; filled through register_exit_hook().
_exit_hooks: list[Callable[[], None]] = []

#: ``current_role()``: the role in effect here, or ``None`` when no role was set.
#: (The context variable's own ``get``: it runs for every value read under a policy,
#: so no wrapper frame.)
current_role: Callable[[], str | None] = _role.get

#: ``current_purpose()``: the purpose given to the ``acting_as`` in effect, or ``None``.
current_purpose: Callable[[], str | None] = _purpose.get

#: ``current_principal()``: who is acting (``principal=`` of the ``acting_as`` in
#: effect), or ``None``.
current_principal: Callable[[], str | None] = _principal.get

_GENERATOR_FLAGS = inspect.CO_GENERATOR | inspect.CO_ASYNC_GENERATOR


@contextlib.contextmanager
def _probe() -> Generator[None, None, None]:
    yield


@contextlib.asynccontextmanager
async def _async_probe() -> AsyncGenerator[None, None]:
    yield


#: Frames that drive a generator as a context manager (its yield is the with-body):
#: the ``__enter__`` / ``__aenter__`` code of contextlib's wrappers, found through the
#: public decorators.
_CONTEXT_MANAGER_CODES: frozenset[CodeType] = frozenset({
    type(_probe()).__enter__.__code__,
    type(_async_probe()).__aenter__.__code__,
})


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


def _run_exit_hooks() -> None:
    for hook in _exit_hooks:
        hook()


class acting_as:
    """Run the enclosed code (or the decorated function) as ``role``."""

    __slots__ = ("principal", "purpose", "role")

    def __init__(self, role: str, *, purpose: str | None = None,
                 principal: str | None = None) -> None:
        if not isinstance(role, str) or not role:
            raise ConfigurationError("acting_as needs a non-empty role name")
        for name, value in (("purpose", purpose), ("principal", principal)):
            if value is not None and not isinstance(value, str):
                raise ConfigurationError(f"acting_as {name}= takes a string")
        self.role = role
        self.purpose = purpose
        self.principal = principal

    def __repr__(self) -> str:
        return f"acting_as({self.role!r}, purpose={self.purpose!r})"

    # -- context manager -------------------------------------------------------------------
    def __enter__(self) -> Self:
        self._refuse_in_generator(sys._getframe(1))
        self._push()
        return self

    def __exit__(self, *exc: object) -> None:
        self._pop()

    async def __aenter__(self) -> Self:
        self._refuse_in_generator(sys._getframe(1))
        self._push()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._pop()

    def _refuse_in_generator(self, frame: FrameType | None) -> None:
        if frame is None or not frame.f_code.co_flags & _GENERATOR_FLAGS:
            return
        caller = frame.f_back
        if caller is not None and caller.f_code in _CONTEXT_MANAGER_CODES:
            return
        raise ConfigurationError(
            f"acting_as({self.role!r}) entered inside the generator "
            f"{frame.f_code.co_name}(): the role would stay in effect in the "
            "caller while the generator is suspended at a yield; decorate the generator "
            f"function with @acting_as({self.role!r}) instead (the role is then set "
            "around each resume)")

    def _push(self) -> None:
        entry = _Entry(self, _role.set(self.role), _purpose.set(self.purpose),
                       _principal.set(self.principal))
        _entries.set((*_entries.get(), entry))

    def _pop(self) -> None:
        entries = _entries.get()
        if not entries or entries[-1].owner is not self:
            raise ConfigurationError(f"{self!r} left out of order: acting_as blocks "
                                     "must be exited innermost first, in the task or "
                                     "thread that entered them")
        entry = entries[-1]
        try:
            _run_exit_hooks()
        finally:
            _entries.set(entries[:-1])
            _principal.reset(entry.principal)
            _purpose.reset(entry.purpose)
            _role.reset(entry.role)

    def _set(self) -> tuple[contextvars.Token[str | None], ...]:
        return (_role.set(self.role), _purpose.set(self.purpose),
                _principal.set(self.principal))

    @staticmethod
    def _reset(tokens: tuple[contextvars.Token[str | None], ...]) -> None:
        role, purpose, principal = tokens
        _principal.reset(principal)
        _purpose.reset(purpose)
        _role.reset(role)

    # -- decorator -------------------------------------------------------------------------
    def __call__(self, fn: F) -> F:
        if inspect.isgeneratorfunction(fn):
            return self._wrap_generator(fn)  # type: ignore[return-value]
        if inspect.isasyncgenfunction(fn):
            return self._wrap_async_generator(fn)  # type: ignore[return-value]
        role, purpose, principal = self.role, self.purpose, self.principal
        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with acting_as(role, purpose=purpose, principal=principal):
                    return await fn(*args, **kwargs)
            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with acting_as(role, purpose=purpose, principal=principal):
                return fn(*args, **kwargs)
        return wrapper  # type: ignore[return-value]

    def _wrap_generator(self, fn: Callable[..., Generator[Any, Any, Any]]
                        ) -> Callable[..., Generator[Any, Any, Any]]:
        """Each resume of the generator runs under the role; its caller never does."""
        scope = self

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
            gen = fn(*args, **kwargs)
            sent: Any = None
            thrown: BaseException | None = None
            try:
                while True:
                    tokens = scope._set()
                    try:
                        item = gen.send(sent) if thrown is None else gen.throw(thrown)
                    except StopIteration as stop:
                        _run_exit_hooks()
                        return stop.value
                    finally:
                        scope._reset(tokens)
                    try:
                        sent, thrown = (yield item), None
                    except GeneratorExit:
                        raise
                    except BaseException as exc:  # noqa: BLE001 - passed on to gen
                        sent, thrown = None, exc
            finally:
                tokens = scope._set()
                try:
                    gen.close()
                finally:
                    scope._reset(tokens)
        return wrapper

    def _wrap_async_generator(self, fn: Callable[..., AsyncGenerator[Any, Any]]
                              ) -> Callable[..., AsyncGenerator[Any, Any]]:
        scope = self

        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
            gen = fn(*args, **kwargs)
            sent: Any = None
            thrown: BaseException | None = None
            try:
                while True:
                    tokens = scope._set()
                    try:
                        item = await (gen.asend(sent) if thrown is None
                                      else gen.athrow(thrown))
                    except StopAsyncIteration:
                        _run_exit_hooks()
                        return
                    finally:
                        scope._reset(tokens)
                    try:
                        sent, thrown = (yield item), None
                    except GeneratorExit:
                        raise
                    except BaseException as exc:  # noqa: BLE001 - passed on to gen
                        sent, thrown = None, exc
            finally:
                tokens = scope._set()
                try:
                    await gen.aclose()
                finally:
                    scope._reset(tokens)
        return wrapper
