"""FastAPI integration: ``install(app, guard, role=...)``.

One call gives a FastAPI application what piiguard needs around each request:

- **role scoping** that works for ``async def`` and plain ``def`` endpoints alike. The
  role comes from ``role``, any FastAPI dependency (a sync or async callable, with its
  own ``Header``/``Depends`` parameters) returning a role name, ``None`` (no role: the
  policy's default applies) or an :class:`~piiguard.acting_as` (to give a purpose or a
  principal too). piiguard enters it in an *async* dependency of its own: that runs in
  the request's task, so the role is in effect for the endpoint (a sync endpoint runs
  in a worker thread with a copy of that context), for the response serialisation and
  for the audit trail, and ends with the request. A role set in a plain ``def``
  dependency would be set in a worker thread and lost: that mistake is not possible
  here, because your dependency only *returns* the role;
- role-aware serialisation of piiguard pydantic types under ``guard``'s policy
  (:class:`piiguard.pydantic.masking`);
- error responses for what the policy refuses, never echoing a value:
  :class:`~piiguard.errors.AccessDeniedError` → 403,
  :class:`~piiguard.errors.SearchLimitError` → 429 (with ``Retry-After``),
  :class:`~piiguard.errors.MaskedValueError` → 422,
  :class:`~piiguard.errors.AuditError` → 503 (the reveal was refused because it could
  not be recorded). Handlers the application registered itself are kept.

Call it right after creating the app, before declaring routes (FastAPI fixes a route's
dependencies when the route is added; a route declared earlier is refused with a
:class:`~piiguard.errors.ConfigurationError` rather than left unscoped)::

    from fastapi import FastAPI, Header
    from piiguard import acting_as
    import piiguard.fastapi

    app = FastAPI()

    def caller_role(authorization: str | None = Header(None)) -> str | None:
        return roles_by_token.get(token_of(authorization))   # your authentication

    piiguard.fastapi.install(app, guard, role=caller_role)

    @app.get("/customers/{id}", response_model=CustomerOut)
    def get_customer(id: int): ...        # runs as the caller's role
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from piiguard.errors import (
    AccessDeniedError,
    AuditError,
    ConfigurationError,
    MaskedValueError,
    SearchLimitError,
)
from piiguard.masking.context import acting_as
from piiguard.masking.host import MaskingHost
from piiguard.pydantic.serialization import masking

__all__ = ["install", "scope_of"]


def scope_of(actor: Any) -> acting_as | None:
    """The :class:`acting_as` for what a role dependency returned (a role name, ``None``
    or an ``acting_as``).

    >>> scope_of("support"), scope_of(None), scope_of("")
    (acting_as('support', purpose=None), None, None)
    >>> scope_of(42)
    Traceback (most recent call last):
        ...
    piiguard.errors.ConfigurationError: the role dependency returned a int: return a role
    name, None or an acting_as
    """
    if actor is None or actor == "":
        return None
    if isinstance(actor, acting_as):
        return actor
    if isinstance(actor, str):
        return acting_as(actor)
    raise ConfigurationError(f"the role dependency returned a {type(actor).__name__}: "
                             "return a role name, None or an acting_as")


def _error(status: int, exc: Exception, headers: dict[str, str] | None = None
           ) -> JSONResponse:
    # piiguard messages name the rule, column and role, never a value
    return JSONResponse(status_code=status, content={"detail": str(exc)}, headers=headers)


async def _access_denied(request: Request, exc: Exception) -> JSONResponse:
    return _error(403, exc)


async def _search_limited(request: Request, exc: Exception) -> JSONResponse:
    return _error(429, exc, {"Retry-After": "60"})


async def _masked_value(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(status_code=422, content={"detail": [
        {"msg": str(exc), "type": "piiguard_masked", "rule": getattr(exc, "rule", None)}]})


async def _audit_failed(request: Request, exc: Exception) -> JSONResponse:
    return _error(503, exc)


_HANDLERS: dict[type[Exception], Callable[..., Any]] = {
    AccessDeniedError: _access_denied,
    SearchLimitError: _search_limited,
    MaskedValueError: _masked_value,
    AuditError: _audit_failed,
}


def install(app: FastAPI, guard: MaskingHost, *, role: Callable[..., Any]) -> None:
    """Scope every request of ``app`` to the role ``role`` gives, mask responses under
    ``guard``'s policy, and answer policy refusals with 403/429/422/503 (see the module
    docstring)."""
    if not isinstance(app, FastAPI):
        raise ConfigurationError("piiguard.fastapi.install() takes a FastAPI application")
    if not isinstance(guard, MaskingHost):
        raise ConfigurationError("piiguard.fastapi.install() needs a piiguard Guard")
    if not callable(role):
        raise ConfigurationError("role= must be a callable or FastAPI dependency giving "
                                 "the caller's role")
    if getattr(app.state, "piiguard_guard", None) is not None:
        raise ConfigurationError("piiguard.fastapi.install() was already called for this "
                                 "app")
    early = [r.path for r in app.router.routes if isinstance(r, APIRoute)]
    if early:
        raise ConfigurationError(
            "piiguard.fastapi.install() must be called before routes are declared "
            f"(already declared: {', '.join(early[:3])}{' …' if len(early) > 3 else ''}): "
            "FastAPI fixes a route's dependencies when it is added, and these would run "
            "without the caller's role")

    # (a default, not Annotated[..., Depends(role)]: with postponed annotations FastAPI
    # could not resolve the local name ``role`` in a string annotation)
    async def piiguard_scope(actor: Any = Depends(role)) -> AsyncIterator[None]:  # noqa: B008
        # An async dependency: it runs in the request's task, so what it sets is in
        # effect for the endpoint (sync ones get a copy of this context) and for the
        # response serialisation.
        scope = scope_of(actor)
        with masking(guard):
            if scope is None:
                yield
            else:
                async with scope:
                    yield

    app.router.dependencies.append(Depends(piiguard_scope))
    for exc_type, handler in _HANDLERS.items():
        if exc_type not in app.exception_handlers:
            app.add_exception_handler(exc_type, handler)
    app.state.piiguard_guard = guard
